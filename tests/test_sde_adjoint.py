"""sdeint_adjoint (reversible Heun adjoint): the same outputs as sdeint and its backprop
gradients to 1e-9 for every noise type, adjoint_params subsets and method errors, and
memory independent of the number of steps."""
import json
import textwrap

import pytest
import torch

import pnode
from helpers import NOISE_CHANNELS as M, SDE_BATCH as B, SDE_DIM as D, NeuralSDE, grads, rel_norm, run_python

pytestmark = pytest.mark.usefixtures("float64_default")


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar", "additive", "general"])
def test_adjoint_matches_backprop(noise_type):
    sde = NeuralSDE(noise_type)
    y0 = torch.randn(B, D, requires_grad=True)
    ts = torch.tensor([0.0, 0.3, 0.45, 1.0, 1.5])
    bm = pnode.BrownianInterval(0.0, 1.5, size=(B, M[noise_type]), entropy=3)
    dt = 0.01
    ys = pnode.sdeint(sde, y0, ts, bm=bm, dt=dt, method="reversible_heun")
    ys_adj = pnode.sdeint_adjoint(sde, y0, ts, bm=bm, dt=dt, method="reversible_heun")
    assert torch.equal(ys, ys_adj)
    params = [y0] + list(sde.parameters())
    w = torch.randn_like(ys)
    loss = lambda ys: (w * ys).sum() + (ys[2] ** 2).sum()  # noqa: E731
    g_bp = grads(loss(ys), params, allow_unused=True)
    g_adj = grads(loss(ys_adj), params, allow_unused=True)
    checked = 0
    for a, b in zip(g_bp, g_adj):
        assert (a is None) == (b is None)
        if a is not None:
            assert rel_norm(b, a) <= 1e-9
            checked += 1
    assert checked >= 4


def test_adjoint_params_subset_and_errors():
    sde = NeuralSDE("diagonal")
    y0 = torch.randn(B, D)
    ts = [0.0, 0.5]
    bm = pnode.BrownianInterval(0.0, 0.5, size=(B, D), entropy=4)
    first = list(sde.f_net.parameters())
    ys = pnode.sdeint_adjoint(sde, y0, ts, bm=bm, dt=0.05, adjoint_params=first)
    ys.sum().backward()
    assert all(p.grad is not None for p in first)
    assert all(p.grad is None for p in sde.g_net.parameters())
    ref = pnode.sdeint(sde, y0, ts, bm=bm, dt=0.05)
    g_ref = grads(ref.sum(), first, allow_unused=True)
    for p, g in zip(first, g_ref):
        assert rel_norm(p.grad, g) <= 1e-9
    with pytest.raises(ValueError, match="adjoint_method"):
        pnode.sdeint_adjoint(sde, y0, ts, bm=bm, dt=0.05, adjoint_method="rk4")
    # torchsde's adjoint_method names are accepted (pnode's adjoint re-steps the forward method)
    pnode.sdeint_adjoint(sde, y0, ts, bm=bm, dt=0.05, adjoint_method="adjoint_reversible_heun")
    pnode.sdeint_adjoint(sde, y0, ts, bm=bm, dt=0.05, adjoint_method="midpoint")


_MEMORY_SCRIPT = textwrap.dedent("""
    import json
    import torch
    from torch import nn
    import pnode
    from helpers import peak_rss_growth
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)

    class S(nn.Module):
        noise_type, sde_type = "diagonal", "stratonovich"
        def __init__(self):
            super().__init__()
            self.f_net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 4))
            self.g_net = nn.Linear(4, 4)
        def f(self, t, y):
            return self.f_net(y)
        def g(self, t, y):
            return 0.3 * torch.sigmoid(self.g_net(y))

    torch.manual_seed(0)
    sde = S()
    y0 = torch.randn(16, 4, requires_grad=True)

    def run(fn, steps):
        ys = fn(sde, y0, [0.0, 1.0], dt=1.0 / steps, method="reversible_heun")
        ys[-1].pow(2).sum().backward()

    run(pnode.sdeint_adjoint, 100)   # warm up allocator and imports
    # peak RSS during one solve + backward, above the RSS just before it
    adj_1k = peak_rss_growth(lambda: run(pnode.sdeint_adjoint, 1000))
    adj_10k = peak_rss_growth(lambda: run(pnode.sdeint_adjoint, 10000))
    bp_10k = peak_rss_growth(lambda: run(pnode.sdeint, 10000))
    print(json.dumps({"adj_1k": adj_1k, "adj_10k": adj_10k, "bp_10k": bp_10k}))
""")


def test_adjoint_memory_independent_of_steps():
    # Peak RSS growth during each solve (MiB): 10x more steps must not raise the
    # adjoint's, while backprop through the same solve must grow by tens of MiB.
    out = run_python("-c", _MEMORY_SCRIPT, timeout=120)
    assert out.returncode == 0, out.stderr
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    assert mem["adj_10k"] - mem["adj_1k"] < 3.0, mem
    assert mem["bp_10k"] > 50.0 + mem["adj_10k"], mem


def test_adjoint_backward_twice_with_retain_graph_doubles_the_gradient():
    torch.manual_seed(3)
    sde = NeuralSDE("diagonal")
    y0 = torch.randn(B, D)
    ys = pnode.sdeint_adjoint(sde, y0, torch.tensor([0.0, 0.5, 1.0]), dt=0.05)
    loss = ys.pow(2).sum()
    loss.backward(retain_graph=True)
    with_grad = [p for p in sde.parameters() if p.grad is not None]
    assert with_grad
    once = [p.grad.clone() for p in with_grad]
    loss.backward()
    for g1, p in zip(once, with_grad):
        assert torch.allclose(p.grad, 2 * g1, rtol=1e-6, atol=1e-7)
