"""The torch <-> PETSc bridge's hot path: cached Vec views, conversions, the direct VJP."""
import torch
from petsc4py import PETSc

from pnode.bridge import StateLayout, cached_views, vec_view
from pnode.dynamics import flat_params, vjp_of


def test_views_are_made_once_per_vec_inside_a_petsc_call_and_share_memory():
    v = PETSc.Vec().createSeq(4)
    v.set(1.0)
    assert vec_view(v) is not vec_view(v)  # outside a call: a fresh view each time
    with cached_views():
        a = vec_view(v)
        assert vec_view(v, "w") is a
        v.set(3.0)  # PETSc writes after the view was made: the view sees them (same memory)
        assert torch.equal(a, torch.full((4,), 3.0, dtype=torch.float64))
        a.fill_(5.0)
        v.stateIncrease()
        assert v.getArray().tolist() == [5.0] * 4
        with cached_views():  # a call inside a longer span (an adjoint sweep) shares its table
            assert vec_view(v) is a
        assert vec_view(v) is a
    assert vec_view(v) is not a  # the table went with the call
    v.destroy()


def test_to_model_is_the_identity_for_float64_cpu_and_converts_otherwise():
    x = torch.arange(6, dtype=torch.float64)
    lay64 = StateLayout.of(torch.zeros(2, 3, dtype=torch.float64))
    assert lay64.to_model(x) is x and lay64.to_petsc(x) is x
    lay32 = StateLayout.of(torch.zeros(2, 3, dtype=torch.float32))
    y = lay32.to_model(x)
    assert y.dtype == torch.float32 and torch.equal(y.double(), x)
    assert lay32.to_petsc(y).dtype == torch.float64
    assert lay64.unflatten(x).shape == (2, 3)
    assert lay64.unflatten(torch.zeros(5, 6, dtype=torch.float64)).shape == (5, 2, 3)


def test_direct_vjp_equals_autograd_grad_including_unused_inputs():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 3).double()
    unused = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    u = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    out = torch.tanh(lin(u)).reshape(-1)
    v = torch.randn(12, dtype=torch.float64)
    inputs = [u, lin.weight, lin.bias, unused]
    want = torch.autograd.grad(out, inputs, v, retain_graph=True, allow_unused=True)
    got = vjp_of(out, inputs, v)
    assert got[3] is None and want[3] is None
    for g, w in zip(got[:3], want[:3]):
        assert torch.equal(g, w)
    # a cotangent of another dtype goes through the public function (which checks it)
    got32 = vjp_of(out, inputs[:1], v.float())
    assert torch.allclose(got32[0], want[0], rtol=1e-6, atol=1e-6)


def test_flat_params_fills_unused_parameters_with_zeros_in_float64():
    p1, p2 = torch.ones(2, 2), torch.ones(3)
    flat = flat_params([2 * p1, None], [p1, p2])
    assert flat.dtype == torch.float64
    assert flat.tolist() == [2.0] * 4 + [0.0] * 3
    assert flat_params([], []).numel() == 0
