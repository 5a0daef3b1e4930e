"""Fault tolerance: every callback kind raising at its first call, mid-solve and in the
backward pass leaves a solver whose next clean call reproduces a fresh solver's loss and
gradients (1e-12 relative), for explicit, revolve, replay, implicit, IMEX, dense-Jacobian
and preconditioned solves, each in its own process; and the regression cases of the
fault campaign (issue 17), each giving a correct result or a clear error."""
import math
import os
import sys

import pytest
import torch
from torch import nn

import pnode
from helpers import TESTS as HERE
from helpers import TanhField as Net
from helpers import decay, live_petsc_objects, run_python

F64 = torch.float64


def python(*args, timeout=180, ranks=None):
    return run_python(*args, timeout=timeout, ranks=ranks)


@pytest.mark.parametrize("config", ["explicit", "explicit-all", "revolve", "replay", "implicit", "imex", "dense",
                                    "preconditioned"])
def test_injected_faults_leave_the_solver_exact(config):
    out = python(os.path.join(HERE, "workers", "fault_worker.py"), config)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "cases=" in out.stdout and int(out.stdout.split("cases=")[1]) >= 5


def test_exception_in_the_initial_step_then_reuse_does_not_crash():
    code = """
import torch, pnode
calls = [0]
def f(t, x):
    calls[0] += 1
    if calls[0] == 1: raise KeyError("first call fails")
    return -x
s = pnode.ODESolver(f, method="dopri5")
for _ in range(3):
    try: y = s(torch.ones(3), torch.tensor([0., 1.]))[-1]
    except KeyError: pass
g = lambda t, x: -x
ex = [0]
def h(t, x):
    ex[0] += 1
    if ex[0] == 1: raise KeyError("explicit part")
    return 0 * x
s2 = pnode.ODESolver(g, method="kencarp4", options={"func_explicit": h})
for _ in range(2):
    try: z = s2(torch.ones(3, dtype=torch.float64), [0., 1.])[-1]
    except KeyError: pass
print(float(y[0]), float(z[0]))
"""
    out = python("-c", code)
    assert out.returncode == 0, out.stderr[-3000:]
    y, z = map(float, out.stdout.split())
    assert abs(y - math.exp(-1)) < 1e-6 and abs(z - math.exp(-1)) < 1e-6


def test_zero_dimensional_state_value_and_gradient():
    y0 = torch.tensor(2.0, dtype=F64, requires_grad=True)
    ys = pnode.odeint(decay, y0, torch.tensor([0.0, 1.0], dtype=F64))
    assert ys.shape == (2,)
    ys[-1].backward()
    assert abs(float(ys[-1].detach()) - 2 * math.exp(-1)) < 1e-7 and abs(float(y0.grad) - math.exp(-1)) < 1e-7


def test_empty_state_returns_empty_outputs():
    y0 = torch.zeros(0, dtype=F64, requires_grad=True)
    ys = pnode.odeint(decay, y0, [0.0, 1.0], method="kencarp4")
    assert ys.shape == (2, 0)
    ys.sum().backward()
    assert y0.grad.shape == (0,)


def loss_and_grad(func, net, y0, **kw):
    net.zero_grad()
    ys = pnode.odeint(func, y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64), **kw)
    ys.pow(2).sum().backward()
    return net.lin.weight.grad.clone()


def test_in_place_parameter_change_before_backward_raises():
    net, y0 = Net(), torch.randn(4, 3, dtype=F64)
    ys = pnode.odeint(net, y0, [0.0, 1.0])
    with torch.no_grad():
        net.lin.weight.mul_(3.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ys.sum().backward()
    ys = pnode.odeint(net, y0, [0.0, 1.0])
    net.lin.weight.data.mul_(0.5)  # no version bump: caught by the value fingerprint
    with pytest.raises(RuntimeError, match="modified"):
        ys.sum().backward()


def test_backward_after_close_recreates_the_solver():
    net, y0 = Net(), torch.randn(4, 3, dtype=F64)
    ref = loss_and_grad(net, net, y0)
    net.zero_grad()
    with pnode.ODESolver(net) as s:
        ys = s(y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64))
    ys.pow(2).sum().backward(retain_graph=True)
    assert torch.allclose(net.lin.weight.grad, ref, rtol=1e-12, atol=0)
    s.close()
    net.zero_grad()
    ys.pow(2).sum().backward()
    assert torch.allclose(net.lin.weight.grad, ref, rtol=1e-12, atol=0)


def test_backward_retried_after_a_failure_gives_the_clean_gradient():
    net, y0 = Net(), torch.randn(4, 3, dtype=F64)
    ref = loss_and_grad(net, net, y0, options={"interpolate": False}, checkpoint="all")
    fail = [True]

    def f(t, y):
        if fail[0] and torch.is_grad_enabled() and y.requires_grad:
            fail[0] = False
            raise KeyError("backward once")
        return net(t, y)
    net.zero_grad()
    # stopping on every output and keeping no graphs: the only evaluations with a graph
    # are the adjoint's
    ys = pnode.odeint(f, y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64), adjoint_params=list(net.parameters()),
                      options={"interpolate": False}, checkpoint="all")
    loss = ys.pow(2).sum()
    with pytest.raises(KeyError):
        loss.backward(retain_graph=True)
    net.zero_grad()
    loss.backward()
    assert torch.allclose(net.lin.weight.grad, ref, rtol=1e-12, atol=0)


def test_lambda_without_adjoint_params_trains_the_module_it_uses():
    net, y0 = Net(), torch.randn(4, 3, dtype=F64)
    ref = loss_and_grad(lambda t, y: net(t, y), net, y0, adjoint_params=list(net.parameters()))
    got = loss_and_grad(lambda t, y: net(t, y), net, y0)
    assert torch.allclose(got, ref, rtol=1e-12, atol=0)


def test_fresh_lambda_per_iteration_does_not_accumulate_solvers():
    net, y0 = Net(), torch.randn(4, 3, dtype=F64)
    petsc_objects = live_petsc_objects
    for _ in range(20):
        pnode.odeint(lambda t, y: net(t, y), y0, [0.0, 1.0]).sum().backward()
    before = petsc_objects()
    for _ in range(200):
        pnode.odeint(lambda t, y: net(t, y), y0, [0.0, 1.0]).sum().backward()
        pnode.odeint(Net(), y0, [0.0, 1.0])  # a fresh module each time: bounded by the cache
    assert len(pnode.functional._CACHE) <= pnode.functional.CACHE_SIZE
    assert petsc_objects() <= before + 8 * 12


@pytest.mark.parametrize("options, t", [({"step_size": 1e-320}, [0.0, 1.0]), ({"step_size": 1e-17}, [1.0, 2.0])])
def test_absurd_fixed_step_is_refused(options, t):
    with pytest.raises(ValueError, match="implies .* steps"):
        pnode.odeint(decay, torch.ones(2, dtype=F64), t, method="rk4", options=options)


def test_negative_petsc_time_step_is_refused():
    y0 = torch.ones(2, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="ts_time_step must be positive"):
        pnode.odeint(decay, y0, [0.0, 1.0], method="rk4", petsc_options={"ts_time_step": -0.1})


@pytest.mark.parametrize("method", ["rk4", "dopri5", "bosh3", "kencarp4", "crank_nicolson"])
def test_outputs_exact_far_from_zero(method):
    opts = {"step_size": 0.1} if method in ("rk4", "crank_nicolson") else None
    ref = pnode.odeint(decay, torch.ones(1, dtype=F64), [0.0, 4.0], method=method, options=opts)[-1]
    for t0 in (1e6, 1.7e9):
        y = pnode.odeint(decay, torch.ones(1, dtype=F64), [t0, t0 + 4.0], method=method, options=opts)[-1]
        assert abs(float(y - ref)) <= 1e-6 * abs(float(ref)), (t0, float(y), float(ref))


def test_double_backward_raises():
    # a loss with another term in y0: the Hessian-vector product would silently drop the
    # ODE's term; it raises instead
    y0 = torch.ones(3, dtype=F64, requires_grad=True)
    ys = pnode.odeint(decay, y0, [0.0, 1.0])
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(ys[-1].sum() + (y0 ** 3).sum(), y0, create_graph=True)


def test_output_shape_and_dtype_checked_on_every_call():
    calls = [0]

    def later_wrong(kind):
        def f(t, y):
            calls[0] += 1
            if calls[0] < 3:
                return -y
            return {"shape": -y[:1], "reshaped": -y.reshape(2, 3), "dtype": -y.float(),
                    "none": None}[kind]
        return f
    for kind, err in (("shape", ValueError), ("reshaped", ValueError), ("dtype", TypeError), ("none", TypeError)):
        calls[0] = 0
        with pytest.raises(err):
            pnode.odeint(later_wrong(kind), torch.ones(3, 2, dtype=F64), [0.0, 1.0])
    with pytest.raises(TypeError, match="must return a Tensor"):
        pnode.odeint(lambda t, y: (y, y), torch.ones(3, 2, dtype=F64), [0.0, 1.0])
    with pytest.raises(TypeError, match="must return a Tensor"):
        pnode.odeint(lambda t, y: y.numpy(), torch.ones(3, dtype=F64), [0.0, 1.0])


def test_odeblock_with_tuple_state_returns_a_tuple():
    class Pair(nn.Module):
        def forward(self, t, y):
            return (-y[0], y[0] - y[1])
    out = pnode.ODEBlock(Pair())((torch.ones(2, dtype=F64), torch.zeros(2, dtype=F64)))
    assert isinstance(out, tuple) and len(out) == 2 and abs(float(out[0][0]) - math.exp(-1)) < 1e-7


def test_nan_only_in_the_vjp_raises_solver_error():
    class NanGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y):
            return -y

        @staticmethod
        def backward(ctx, g):
            return g * float("nan")
    y0 = torch.ones(3, dtype=F64, requires_grad=True)
    ys = pnode.odeint(lambda t, y: NanGrad.apply(y), y0, [0.0, 1.0], method="rk4", options={"step_size": 0.1})
    with pytest.raises(pnode.SolverError, match="adjoint is not finite") as info:
        ys.sum().backward()
    assert info.value.reason == "NAN"


def test_petsc_options_do_not_leak_into_later_solvers():
    s = pnode.ODESolver(decay, method="rk4", petsc_options={"ts_dt": 0.01})
    s(torch.ones(1, dtype=F64), [0.0, 1.0])
    assert s.stats["steps"] == 100
    later = pnode.ODESolver(decay, method="rk4")
    later(torch.ones(1, dtype=F64), [0.0, 1.0])
    assert later.stats["steps"] == 1
    with pytest.raises(ValueError, match="ts_time_step"):
        pnode.ODESolver(decay, method="rk4", petsc_options={"ts_time_step": "abc"})(torch.ones(1, dtype=F64), [0., 1.])
    later(torch.ones(1, dtype=F64), [0.0, 1.0])
    assert later.stats["steps"] == 1


@pytest.mark.parametrize("t1", [float("nan"), float("inf"), 0.0])
def test_odeblock_end_time_must_be_finite_and_nonzero(t1):
    with pytest.raises(ValueError, match="t1"):
        pnode.ODEBlock(Net(), t1=t1)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(petsc_options={"ts_type": "nosuchtype"}), ValueError, "PETSc rejected"),
    (dict(petsc_options={"ksp_type": 3}, method="implicit_euler"), ValueError, "PETSc rejected"),
    (dict(petsc_options={"ts_max_steps": "abc"}), ValueError, "PETSc rejected"),
    (dict(petsc_options={"ts_rtol": -1}), ValueError, "ts_rtol must be positive"),
    (dict(options={"theta": float("nan")}, method="theta"), ValueError, "theta"),
    (dict(options={"theta": -1.0}, method="theta"), ValueError, "theta"),
    (dict(options={"theta": 2.0}, method="theta"), ValueError, "theta"),
    (dict(options={"jacobian": "sparse"}, method="implicit_euler"), ValueError, "jacobian"),
    (dict(options={"mass": torch.eye(2, dtype=torch.complex128)}, method="implicit_euler"), TypeError, "mass"),
    (dict(options={"max_num_steps": 2**31}), ValueError, "max_num_steps"),
    (dict(prefix="-x_"), ValueError, "prefix"),
    (dict(prefix="a b"), ValueError, "prefix"),
])
def test_bad_settings_raise_clear_errors(kwargs, err, match):
    with pytest.raises(err, match=match):
        pnode.ODESolver(decay, **kwargs)(torch.ones(2, dtype=F64), [0.0, 1.0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_ram=2**31), "max_ram"), (dict(max_ram=4, max_disk=True), "max_disk"),
    (dict(max_memory="1e400TB"), "max_memory"), (dict(max_memory="99999999999999999999TB"), "too large"),
])
def test_bad_checkpoint_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pnode.Checkpoint("binomial", **kwargs)


def test_meta_device_and_complex_t_raise_type_errors():
    with pytest.raises(TypeError, match="meta"):
        pnode.odeint(decay, torch.ones(2, device="meta"), [0.0, 1.0])
    with pytest.raises(TypeError, match="t must be real"):
        pnode.odeint(decay, torch.ones(2), torch.tensor([0.0, 1.0], dtype=torch.complex64))


def test_resolve_mismatch_message_names_the_difference():
    scale = [1.0]
    net = Net()
    blk = pnode.ODEBlock(lambda t, y: scale[0] * net(t, y), recompute_forward=True, method="dopri5",
                         adjoint_params=list(net.parameters()))
    out = blk(torch.randn(3, 3, dtype=F64))
    scale[0] = 5.0
    with pytest.raises(pnode.SolverError, match="re-solving for the backward pass") as info:
        out.sum().backward()
    assert "where the forward took" in str(info.value) or "instead of" in str(info.value)
    assert info.value.reason == "RESOLVE_MISMATCH"


def test_input_fuzz_gives_exact_results_or_clear_errors():
    out = python(os.path.join(HERE, "workers", "fuzz_worker.py"), timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    counts = dict(kv.split("=") for kv in out.stdout.split()[-3:])
    assert int(counts["ok"]) >= 100 and int(counts["clear"]) >= 1000, counts


def test_backward_faults_under_mpi_raise_on_every_rank_and_recover():
    out = python(os.path.join(HERE, "workers", "mpi_fault_worker.py"), ranks=2, timeout=240)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "cases=17" in out.stdout
