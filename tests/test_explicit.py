"""Explicit RK methods: outputs and gradients against plain-torch references.

Reference: autograd through a plain-torch RK integrator using PETSc's own Butcher tableau
(tests/reference/rk.py) over the same step boundaries (``solver.step_times``). Tolerances:
1e-10 relative for fixed steps, 1e-9 for adaptive dopri5 (float64).
"""
import pytest
import torch
from torch import nn

import pnode
from pnode.methods import METHODS
from helpers import grads, live_petsc_objects, rel_err, rss_mib
from reference import rk_solve, rk_tableau

EXPLICIT = [m for m in METHODS.values() if not m.implicit]


class MLP(nn.Module):
    def __init__(self, dim=3, hidden=8, seed=0, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = nn.Linear(dim + 1, hidden).to(dtype)
        self.l2 = nn.Linear(hidden, dim).to(dtype)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)

    def forward(self, t, y):
        tt = t.expand(*y.shape[:-1], 1).to(y.dtype)
        return self.l2(torch.tanh(self.l1(torch.cat([y, tt], -1))))


def compare(solver, func, y0, t, tableau, tol):
    """pnode vs reference: outputs and gradients w.r.t. y0 and all parameters."""
    params = list(func.parameters())
    weights = torch.randn(len(t), *y0.shape, dtype=y0.dtype, generator=torch.Generator().manual_seed(1))
    y0a = y0.clone().requires_grad_(True)
    ys = solver(y0a, t)
    ga = grads((weights * ys).sum(), [y0a] + params)

    y0b = y0.clone().requires_grad_(True)
    ref = rk_solve(func, y0b, solver.step_times, t, tableau)
    gb = grads((weights * ref).sum(), [y0b] + params)
    assert rel_err(ys.detach(), ref.detach()) <= tol
    for a, b in zip(ga, gb):
        assert rel_err(a, b) <= tol, rel_err(a, b)
    return ys


@pytest.mark.parametrize("method", EXPLICIT, ids=lambda m: m.name)
def test_fixed_step_gradients_match_plain_torch(method):
    func = MLP()
    y0 = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)  # loss on 4 output times
    with pnode.ODESolver(func, method=method.name, options={"step_size": 0.1}) as solver:
        compare(solver, func, y0, t, rk_tableau(method.subtype), 1e-10)
        # steps land on each output time: 0.1, 0.2, 0.25, 0.35, 0.45, 0.5, 0.6, ... 1.0
        assert solver.stats["steps"] == 11
        assert solver.stats["adjoint_steps"] == 11
        assert torch.allclose(solver.step_times[[0, 3, 6, 11]], t)


def test_adaptive_dopri5_matches_replay_of_its_steps():
    func = MLP(seed=3)
    y0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    # stopping on the outputs (interpolated outputs: tests/test_interpolation.py)
    with pnode.ODESolver(func, method="dopri5", rtol=1e-6, atol=1e-8, options={"interpolate": False}) as solver:
        compare(solver, func, y0, t, rk_tableau("5dp"), 1e-9)
        assert solver.stats["steps"] > 4  # adaptive: more steps than output intervals
        assert solver.stats["vjp_evals"] > 0


def test_tuple_state():
    lin = nn.Linear(2, 2).double()

    def func(t, state):
        x, v = state
        return v, -x + torch.tanh(lin(v))

    x0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor([[0.0, -0.3]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    solver = pnode.ODESolver(func, method="rk4", options={"step_size": 0.05},
                             adjoint_params=list(lin.parameters()))
    xs, vs = solver((x0, v0), t)
    assert xs.shape == (3, 1, 2) and vs.shape == (3, 1, 2)
    ga = grads(xs.sum() + (vs ** 2).sum(), [x0, v0, *lin.parameters()])
    rx, rv = rk_solve(func, (x0, v0), solver.step_times, t, rk_tableau("4"))
    gb = grads(rx.sum() + (rv ** 2).sum(), [x0, v0, *lin.parameters()])
    assert rel_err(xs.detach(), rx.detach()) <= 1e-10
    for a, b in zip(ga, gb):
        assert rel_err(a, b) <= 1e-10
    solver.close()


def test_decreasing_t():
    func = MLP(seed=5)
    y0 = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    t = torch.tensor([1.0, 0.6, 0.0], dtype=torch.float64)
    with pnode.ODESolver(func, method="bosh3", rtol=1e-8, atol=1e-10, options={"interpolate": False}) as solver:
        compare(solver, func, y0, t, rk_tableau("3bs"), 1e-9)
        assert solver.step_times[0] == 1.0 and solver.step_times[-1] == 0.0
        assert (solver.step_times.diff() < 0).all()


def test_float32_model_gradients_close_to_float64():
    f64 = MLP(seed=7)
    f32 = MLP(seed=7, dtype=torch.float32)
    y0 = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    t = torch.tensor([0.0, 1.0])
    out = []
    for func, dt in ((f64, torch.float64), (f32, torch.float32)):
        y = y0.to(dt).requires_grad_(True)
        ys = pnode.odeint(func, y, t.to(dt), method="rk4", options={"step_size": 0.1})
        assert ys.dtype == dt
        g = grads(ys[-1].pow(2).sum(), [y, *func.parameters()])
        out.append([x.double() for x in (ys.detach(), *g)])
    for a, b in zip(*out):
        assert rel_err(b, a) <= 1e-5  # float32 evaluation of the same scheme


def test_odeint_matches_solver_and_is_reused():
    func = MLP(seed=9)
    y0 = torch.randn(2, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5], dtype=torch.float64)
    a = pnode.odeint(func, y0, t, method="dopri5")
    b = pnode.odeint(func, y0, t, method="dopri5")
    assert torch.equal(a, b)
    with pnode.ODESolver(func, method="dopri5") as s:
        assert torch.equal(s(y0, t), a)


def test_backward_after_another_forward_resolves():
    """Two calls on one solver, then backward through both: each gets its own gradient."""
    func = MLP(seed=10)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pnode.ODESolver(func, method="rk4", options={"step_size": 0.1}) as solver:
        y1 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
        y2 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
        loss = solver(y1, t)[-1].sum() + solver(y2, t)[-1].pow(2).sum()
        g = grads(loss, [y1, y2])
        ref1 = rk_solve(func, y1, solver.step_times, t, rk_tableau("4"))[-1].sum()
        ref2 = rk_solve(func, y2, solver.step_times, t, rk_tableau("4"))[-1].pow(2).sum()
        r = grads(ref1 + ref2, [y1, y2])
        for a, b in zip(g, r):
            assert rel_err(a, b) <= 1e-10


def test_training_loop_does_not_leak():
    torch.manual_seed(0)
    func = MLP(dim=2, hidden=16)
    opt = torch.optim.Adam(func.parameters(), lr=1e-3)
    y0 = torch.randn(16, 2, dtype=torch.float64)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)

    def step():
        opt.zero_grad()
        loss = pnode.odeint(func, y0, t, method="dopri5", rtol=1e-5, atol=1e-7).pow(2).mean()
        loss.backward()
        opt.step()

    for _ in range(20):  # warm up allocators
        step()
    objs, rss = live_petsc_objects(), rss_mib()
    for _ in range(200):
        step()
    assert live_petsc_objects() <= objs
    assert rss_mib() - rss < 10.0  # MiB; a per-iteration leak of one state/graph shows
