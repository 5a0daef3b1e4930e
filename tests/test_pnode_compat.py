"""PNODE v1.1's interface (``from pnode import petsc_adjoint``): ``ODEPetsc.setupTS`` /
``odeint`` / ``odeint_adjoint`` as PNODE's programs call them, against plain-torch
references (classical RK4 by backprop; backward Euler by a dense Newton solve)."""
import math

import pytest
import torch

from pnode import petsc_adjoint
from reference import rk4, theta_solve

f64 = torch.float64


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=f64))

    def forward(self, t, y):
        return y @ self.A.T


def test_fixed_step_rk4_and_its_gradient_match_plain_torch():
    """setupTS(method="rk4", step_size=h): fixed steps of h; states and gradients (y0 and
    the parameters) as plain-torch classical RK4 with backprop, to 1e-10."""
    func = Linear()
    y0 = torch.tensor([[2.0, 0.0], [0.5, 1.0]], dtype=f64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=f64)
    ode = petsc_adjoint.ODEPetsc()
    ode.setupTS(y0, func, step_size=0.05, method="rk4")
    ys = ode.odeint_adjoint(y0, t)
    assert ys.shape == (3, 2, 2) and ode.solver.stats["steps"] == 20
    loss = ys[1].pow(2).sum() + ys[2].sum()
    got = torch.autograd.grad(loss, (y0, func.A))
    y0r = y0.detach().clone().requires_grad_(True)
    field = lambda s, y: (func(s, y[0]),)  # noqa: E731
    (mid,) = rk4(field, (y0r,), 0.0, 0.5, 10)
    (end,) = rk4(field, (mid,), 0.5, 1.0, 10)
    assert float((ys[2].detach() - end.detach()).abs().max()) < 1e-10
    want = torch.autograd.grad(mid.pow(2).sum() + end.sum(), (y0r, func.A))
    for g, w in zip(got, want):
        assert float((g - w).abs().max()) < 1e-10


def test_list_of_steps_with_backward_euler_and_a_single_time():
    """A list step_size (ROBER.py's) gives those step boundaries, landing on the outputs;
    backward Euler ('beuler', implicit_form) on them equals a plain-torch backward Euler;
    a single time t solves from 0 to t; odeint gives no graph."""
    func = Linear()
    y0 = torch.tensor([1.0, 0.0], dtype=f64)
    steps = [0.1, 0.1, 0.2, 0.2, 0.4]  # boundaries 0.1 0.2 0.4 0.6 1.0
    ode = petsc_adjoint.ODEPetsc()
    ode.setupTS(y0, func, step_size=steps, method="beuler", implicit_form=True, enable_adjoint=False)
    ys = ode.odeint(y0, torch.tensor([0.0, 0.4, 1.0], dtype=f64))
    assert not ys.requires_grad
    assert ode.solver.step_times.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.4, 0.6, 1.0], abs=1e-12)
    grid = torch.tensor([0.0, 0.1, 0.2, 0.4, 0.6, 1.0], dtype=f64)
    with torch.no_grad():
        want = theta_solve(func, y0, grid, [1.0], theta=1.0, endpoint=True)
    assert float((ys[-1] - want[-1]).abs().max()) < 1e-8
    one = ode.odeint(y0, torch.tensor([1.0], dtype=f64))
    assert one.shape == (1, 2) and float((one[0] - ys[-1]).abs().max()) < 1e-12


def test_adaptive_dopri5_uses_petscs_tolerances_and_refuses_plain_functions():
    """dopri5 with a float step_size adapts with PETSc's default tolerances (1e-4), as in
    PNODE; odeint_adjoint needs an nn.Module, as in PNODE."""
    func = Linear()
    y0 = torch.tensor([1.0, 0.0], dtype=f64)
    t = torch.linspace(0.0, 2.0, 3, dtype=f64)
    ode = petsc_adjoint.ODEPetsc()
    ode.setupTS(y0, func, step_size=0.01)
    ys = ode.odeint_adjoint(y0, t)
    exact = torch.linalg.matrix_exp(2.0 * func.A.detach()) @ y0
    assert 1e-8 < float((ys[-1].detach() - exact).abs().max()) < 1e-3  # loose: PETSc's 1e-4 tolerances
    assert ode.solver.rtol == ode.solver.atol == 1e-4
    ode.setupTS(y0, lambda s, y: -y, step_size=0.01)
    with pytest.raises(ValueError, match="nn.Module"):
        ode.odeint_adjoint(y0, t)
    assert float(ode.odeint(y0, t)[-1, 0]) == pytest.approx(math.exp(-2.0), rel=1e-3)
    with pytest.raises(ValueError, match="PNODE's names"):
        ode.setupTS(y0, func, method="tsit5")
