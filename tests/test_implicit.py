"""Implicit, IMEX and DAE integrators: gradients against independent references.

- Theta family (backward Euler, Crank-Nicolson, theta midpoint/endpoint), fixed steps:
  autograd through a plain-torch implementation of the same scheme whose nonlinear solve
  is a dense Newton iteration converged to 1e-14 (tests/reference/theta.py); tolerance 1e-8
  relative.
- ARKIMEX: every one of PETSc's tableaus against central finite differences of its own
  discrete solve (fixed steps, directional derivative), tolerance 1e-6 relative.
"""
import pytest
import torch
from torch import nn

import pnode
from helpers import decay, rel_err
from reference import theta_solve

ARKIMEX_TABLEAUS = ["1bee", "a2", "l2", "ars122", "2c", "2d", "2e", "prssp2", "3", "bpr3",
                    "ars443", "4", "5"]


class Stiffish(nn.Module):
    """dy/dt = A y + tanh(W y + b): a fixed dissipative linear part plus a small MLP."""

    def __init__(self, dim=3, seed=0, stiff=(1.0, 5.0, 30.0)):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(dim, dim).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(dim, dim, generator=g, dtype=torch.float64) * 0.5)
            self.lin.bias.copy_(torch.randn(dim, generator=g, dtype=torch.float64) * 0.1)
        self.register_buffer("decay", torch.tensor(stiff, dtype=torch.float64))

    def forward(self, t, y):
        return -self.decay * y + torch.tanh(self.lin(y)) + 0.1 * torch.sin(t)


THETA_CASES = [
    ("implicit_euler", {}, 1.0, True),
    ("crank_nicolson", {}, 0.5, True),
    ("trapezoid", {}, 0.5, True),
    ("theta", {}, 0.5, False),
    ("theta", {"theta": 0.7}, 0.7, False),
    ("theta", {"theta": 0.6, "endpoint": True}, 0.6, True),
]


@pytest.mark.parametrize("jacobian", ["block", "matrix-free", "dense"])
@pytest.mark.parametrize("method, extra, theta, endpoint", THETA_CASES,
                         ids=[f"{c[0]}-{c[2]}-{'end' if c[3] else 'mid'}" for c in THETA_CASES])
def test_theta_family_matches_plain_torch(method, extra, theta, endpoint, jacobian):
    func = Stiffish()
    params = list(func.parameters())
    y0 = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)  # loss on several outputs
    w = torch.randn(4, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    opts = {"step_size": 0.1, "jacobian": jacobian, **extra}
    with pnode.ODESolver(func, method=method, options=opts) as solver:
        ya = y0.clone().requires_grad_(True)
        ys = solver(ya, t)
        ga = torch.autograd.grad((w * ys).sum(), [ya] + params)
        yb = y0.clone().requires_grad_(True)
        ref = theta_solve(func, yb, solver.step_times, t, theta, endpoint)
        gb = torch.autograd.grad((w * ref).sum(), [yb] + params)
        assert solver.stats["newton_iterations"] > 0
    assert rel_err(ys.detach(), ref.detach()) <= 1e-8
    for a, b in zip(ga, gb):
        assert rel_err(a, b) <= 1e-8


def directional_check(make_solver, func, y0, t, eps=1e-5):
    """pnode's gradient along a random direction vs central differences of the solve."""
    params = list(func.parameters())
    g = torch.Generator().manual_seed(3)
    dy = torch.randn(y0.shape, generator=g, dtype=torch.float64)
    dps = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    w = torch.randn(len(t), *y0.shape, generator=g, dtype=torch.float64)
    with make_solver() as solver:
        y = y0.clone().requires_grad_(True)
        grads = torch.autograd.grad((w * solver(y, t)).sum(), [y] + params)
        analytic = float((grads[0] * dy).sum() + sum((gp * d).sum() for gp, d in zip(grads[1:], dps)))
        vals = []
        with torch.no_grad():
            base = [p.clone() for p in params]
            for sign in (1.0, -1.0):
                for p, b, d in zip(params, base, dps):
                    p.copy_(b + sign * eps * d)
                vals.append(float((w * solver(y0 + sign * eps * dy, t)).sum()))
            for p, b in zip(params, base):
                p.copy_(b)
    fd = (vals[0] - vals[1]) / (2 * eps)
    return analytic, fd


@pytest.mark.parametrize("tableau", ARKIMEX_TABLEAUS + ["sdirk2", "trbdf2"])  # + pnode's DIRK tableaus
def test_every_arkimex_tableau_matches_finite_differences(tableau):
    func = Stiffish(seed=4)
    y0 = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)

    def make():
        return pnode.ODESolver(func, method="arkimex", options={"step_size": 0.1, "jacobian": "dense"},
                               petsc_options={"ts_arkimex_type": tableau})
    a, fd = directional_check(make, func, y0, t)
    assert abs(a - fd) <= 1e-6 * abs(fd), (a, fd)


def test_imex_split_gives_gradients_to_both_parts():
    stiff = Stiffish(seed=6)
    explicit = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    y0 = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    both = nn.ModuleList([stiff, explicit])
    g_fn = lambda t, y: explicit(y)  # noqa: E731

    def make():
        return pnode.ODESolver(stiff, method="kencarp4", options={"step_size": 0.1, "func_explicit": g_fn},
                               adjoint_params=list(both.parameters()))
    a, fd = directional_check(make, both, y0, t)
    assert abs(a - fd) <= 1e-6 * abs(fd), (a, fd)
    with make() as solver:
        solver(y0, t).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in both.parameters())


def test_matrix_free_arkimex_matches_finite_differences():
    func = Stiffish(seed=8)
    y0 = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    t = torch.tensor([0.0, 0.4, 0.8], dtype=torch.float64)
    a, fd = directional_check(lambda: pnode.ODESolver(func, method="kencarp3", options={"step_size": 0.1}),
                              func, y0, t)
    assert abs(a - fd) <= 1e-6 * abs(fd), (a, fd)


def test_mass_matrix_dae_matches_plain_torch():
    """Index-1 DAE: x' = -x + z, 0 = z - sin(x) + p*y ... written as M u' = f(u), M singular."""
    class DAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.tensor([0.7, -0.3], dtype=torch.float64))

        def forward(self, t, u):
            x, y, z = u[..., 0], u[..., 1], u[..., 2]
            return torch.stack([-x + z, -self.p[0] * y + x * z, z - torch.sin(x) - self.p[1] * y], -1)

    func = DAE()
    mass = torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    x0, y0_ = torch.tensor(0.5, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    u0 = torch.stack([x0, y0_, torch.sin(x0) + func.p[1].detach() * y0_]).reshape(1, 3)  # consistent
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    for method, theta, endpoint in (("implicit_euler", 1.0, True), ("crank_nicolson", 0.5, True)):
        with pnode.ODESolver(func, method=method, options={"step_size": 0.05, "mass": mass}) as solver:
            ua = u0.clone().requires_grad_(True)
            us = solver(ua, t)
            ga = torch.autograd.grad(us[1:].pow(2).sum(), [ua, func.p])
            ub = u0.clone().requires_grad_(True)
            ref = theta_solve(func, ub, solver.step_times, t, theta, endpoint, mass=mass)
            gb = torch.autograd.grad(ref[1:].pow(2).sum(), [ub, func.p])
        assert rel_err(us.detach(), ref.detach()) <= 1e-8
        # the algebraic constraint holds along the solution
        assert (us[1:, 0, 2] - torch.sin(us[1:, 0, 0]) - func.p[1] * us[1:, 0, 1]).abs().max() < 1e-8
        for a, b in zip(ga, gb):
            assert rel_err(a, b) <= 1e-8


def test_mass_matrix_refused_for_arkimex():
    with pytest.raises(ValueError, match="mass.*ARKIMEX"):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0]),
                     method="kencarp4", options={"mass": torch.eye(2, dtype=torch.float64)})


def test_adaptive_kencarp4_on_stiff_problem_beats_dopri5():
    """Van der Pol-like stiff linear part (eigenvalues to -1e4): kencarp4 takes far fewer steps."""
    func = Stiffish(seed=10, stiff=(1.0, 100.0, 1e4))
    y0 = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    steps = {}
    for method in ("kencarp4", "dopri5"):
        with pnode.ODESolver(func, method=method, rtol=1e-5, atol=1e-7,
                             options={"jacobian": "dense"} if method == "kencarp4" else None) as s:
            y = y0.clone().requires_grad_(True)
            ys = s(y, t)
            g = torch.autograd.grad(ys[-1].sum(), [y])[0]
            steps[method] = s.stats["steps"]
            assert s.stats["adjoint_steps"] == s.stats["steps"]
            out = ys.detach()
        steps[method + "_y"] = out
        steps[method + "_g"] = g
    assert steps["kencarp4"] * 10 <= steps["dopri5"], steps
    assert rel_err(steps["kencarp4_y"], steps["dopri5_y"]) < 1e-3
    assert rel_err(steps["kencarp4_g"], steps["dopri5_g"]) < 1e-3


def test_methods_without_adjoint_are_forward_only():
    f = decay
    y0 = torch.ones(2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        ys = pnode.odeint(f, y0, t, method="bdf", rtol=1e-8, atol=1e-10)
    assert abs(float(ys[-1, 0]) - torch.exp(torch.tensor(-1.0)).item()) < 1e-5
    with pytest.raises(ValueError, match="no discrete adjoint.*kencarp4"):
        pnode.odeint(f, y0.clone().requires_grad_(True), t, method="bdf")


def test_user_preconditioner_hook_is_used():
    func = Stiffish(seed=12, stiff=(1.0, 50.0, 500.0))
    calls = {"apply": 0, "transpose": 0}

    def jacobi(t, y, shift, r, transpose):
        calls["transpose" if transpose else "apply"] += 1
        return r / (shift + func.decay)  # diagonal of shift*I - J, ignoring the MLP part

    y0 = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pnode.ODESolver(func, method="implicit_euler", options={"step_size": 0.1, "preconditioner": jacobi}) as s:
        y = y0.clone().requires_grad_(True)
        g = torch.autograd.grad(s(y, t)[-1].sum(), [y])[0]
    with pnode.ODESolver(func, method="implicit_euler", options={"step_size": 0.1, "jacobian": "dense"}) as s:
        y = y0.clone().requires_grad_(True)
        g_ref = torch.autograd.grad(s(y, t)[-1].sum(), [y])[0]
    assert calls["apply"] > 0 and calls["transpose"] > 0
    assert rel_err(g, g_ref) <= 1e-8


def test_float32_model_with_implicit_method():
    """Newton tolerances follow the model's precision: a float32 model converges."""
    out = []
    for dtype in (torch.float64, torch.float32):
        func = Stiffish(seed=14).to(dtype)
        y = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(15)).to(dtype)
        y.requires_grad_(True)
        ys = pnode.odeint(func, y, torch.tensor([0.0, 1.0], dtype=dtype), method="crank_nicolson",
                          options={"step_size": 0.1})
        out.append(torch.autograd.grad(ys[-1].pow(2).sum(), [y])[0].double())
    assert rel_err(out[1], out[0]) <= 1e-4


class BatchCoupled(nn.Module):
    """Stiffish plus a coupling of every sample to the batch mean: the Jacobian is not
    block-diagonal, so per-sample blocks may only precondition it."""

    def __init__(self):
        super().__init__()
        self.inner = Stiffish()
        self.c = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, t, y):
        return self.inner(t, y) + self.c * torch.tanh(y.mean(0, keepdim=True))


@pytest.mark.parametrize("field, block_diagonal", [(Stiffish, True), (BatchCoupled, False)])
@pytest.mark.parametrize("method, theta, endpoint", [("implicit_euler", 1.0, True), ("crank_nicolson", 0.5, True)])
def test_default_block_jacobian_is_exact(field, block_diagonal, method, theta, endpoint):
    """The default (per-sample block Jacobians) gives the plain-torch dense-Newton
    solution and gradient to 1e-8, for a block-diagonal field (blocks used as the
    operator: about one Krylov iteration per Newton step) and for one that couples the
    samples (blocks only precondition the exact matrix-free operator)."""
    func = field()
    params = list(func.parameters())
    y0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    w = torch.randn(3, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    with pnode.ODESolver(func, method=method, options={"step_size": 0.1}) as solver:
        ya = y0.clone().requires_grad_(True)
        ys = solver(ya, t)
        newton_its, krylov_its = solver.stats["newton_iterations"], solver.stats["linear_iterations"]
        ga = torch.autograd.grad((w * ys).sum(), [ya] + params)
        # the adjoint's transposed solves are counted (PETSc resets its own counter)
        assert solver.stats["adjoint_linear_iterations"] >= solver.stats["adjoint_steps"] > 0
        yb = y0.clone().requires_grad_(True)
        ref = theta_solve(func, yb, solver.step_times, t, theta, endpoint)
        gb = torch.autograd.grad((w * ref).sum(), [yb] + params)
    assert rel_err(ys.detach(), ref.detach()) <= 1e-8
    for a, b in zip(ga, gb):
        assert rel_err(a, b) <= 1e-8
    if block_diagonal:
        assert krylov_its <= 2 * newton_its, (krylov_its, newton_its)


def test_block_jacobian_refused_for_large_blocks():
    with pytest.raises(ValueError, match=r"jacobian'\]='block'"):
        pnode.ODESolver(lambda t, y: -y, method="implicit_euler", options={"jacobian": "block"})(
            torch.ones(200, dtype=torch.float64), [0.0, 1.0])


def robertson(t, y, log_k):
    k1, k2, k3 = log_k.exp()
    r1, r2, r3 = k1 * y[..., 0], k2 * y[..., 1] ** 2, k3 * y[..., 1] * y[..., 2]
    return torch.stack([-r1 + r3, r1 - r3 - r2, r2], dim=-1)


@pytest.mark.parametrize("method", ["kencarp3", "kencarp5"])
def test_robertson_default_gradient_equals_dense(method):
    """Robertson's kinetics (shift*I - J nearly singular: the species sum is conserved):
    unpreconditioned GMRES gave gradients off by ~1e-4 at converged-looking solves; the
    default block Jacobian gives the dense-LU gradient to 1e-8 with kencarp3 (1e-6 with
    kencarp5, whose adaptive steps differ from the dense run's by up to 3e-4 in time; the
    unpreconditioned matrix-free gradient is off by 4e-4 there)."""
    t = torch.cat([torch.zeros(1), torch.logspace(-5, 3, 9)]).double()
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    scale = torch.tensor([1.0, 1e4, 1.0], dtype=torch.float64)
    grads = {}
    for jac in (None, "dense"):
        log_k = torch.tensor([0.04, 3e7, 1e4], dtype=torch.float64).log().requires_grad_(True)
        opts = {"jacobian": jac} if jac else None
        ys = pnode.odeint(lambda t, y: robertson(t, y, log_k), y0, t, method=method, rtol=1e-8, atol=1e-10,
                          options=opts, adjoint_params=[log_k])
        (grads[jac],) = torch.autograd.grad((ys * scale).pow(2).sum(), [log_k])
    assert rel_err(grads[None], grads["dense"]) <= (1e-8 if method == "kencarp3" else 3e-6)


def test_linear_solve_that_cannot_converge_raises():
    """Unpreconditioned GMRES limited to 2 iterations on Robertson: the forward (fixed
    steps: the Newton solve fails) and the adjoint (adaptive: the forward recovers by
    shorter steps, the transposed solve cannot) raise SolverError, never a gradient."""
    t = torch.tensor([0.0, 1.0, 1e3], dtype=torch.float64)
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    log_k = torch.tensor([0.04, 3e7, 1e4], dtype=torch.float64).log().requires_grad_(True)
    f = lambda t, y: robertson(t, y, log_k)  # noqa: E731
    with pytest.raises(pnode.SolverError, match="NONLINEAR|LINEAR"):
        pnode.odeint(f, y0, t, method="implicit_euler", options={"step_size": 0.5, "jacobian": "matrix-free"},
                     petsc_options={"ksp_max_it": 1}, adjoint_params=[log_k])
    ys = pnode.odeint(f, y0, t, method="kencarp4", options={"jacobian": "matrix-free"},
                      petsc_options={"ksp_max_it": 3}, adjoint_params=[log_k])
    with pytest.raises(pnode.SolverError, match="LINEAR_SOLVE") as info:
        ys[:, 1].sum().backward()
    assert info.value.reason == "DIVERGED_LINEAR_SOLVE" and "preconditioner" in str(info.value)
