"""Interpolated outputs (pnode.interpolation): adaptive explicit solves step freely and
interpolate the output times inside their steps; values and gradients against plain torch.

The reference integrates dopri5 in plain torch through the step boundaries pnode took
(``rk_solve``), then evaluates the Hermite interpolant by solving its confluent
Vandermonde system with ``torch.linalg.solve`` (pnode uses Lagrange-form weights), and
backpropagates through all of it.
"""
import pytest
import torch

import pnode
from reference.rk import rk_solve, rk_tableau


def _field(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).to(dtype)

    class Spiral(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.A = torch.nn.Parameter(torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=dtype))

        def forward(self, t, y):
            return y @ self.A + 0.1 * self.net(y)
    return Spiral()


def _hermite_reference(nodes, ys, fs, x):
    """Value at ``x`` of the polynomial of degree 2m-1 with values ``ys`` and slopes ``fs``
    at the m ``nodes`` (times shifted to the first node for conditioning)."""
    m = len(nodes)
    z = [float(v) - float(nodes[0]) for v in nodes]
    rows = [[zj ** k for k in range(2 * m)] for zj in z]
    rows += [[k * zj ** (k - 1) if k else 0.0 for k in range(2 * m)] for zj in z]
    V = torch.tensor(rows, dtype=torch.float64)
    rhs = torch.stack(list(ys) + list(fs)).reshape(2 * m, -1)
    coef = torch.linalg.solve(V, rhs)
    xs = x - float(nodes[0])
    return sum(coef[k] * xs ** k for k in range(2 * m)).reshape(ys[0].shape)


def _reference_outputs(func, y0, steps, t):
    """Plain-torch dopri5 through ``steps``, interpolated at ``t`` (nodes: the step holding
    the output and the boundary before it, or the first three, or the one step's two)."""
    st = [float(x) for x in steps]
    ys = rk_solve(func, y0, st, st, rk_tableau("5dp"))
    n = len(st) - 1
    out = []
    for x in [float(v) for v in t]:
        if x in st:
            out.append(ys[st.index(x)])
            continue
        m = next(k for k in range(1, n + 1) if (st[k] - x) * (st[-1] - st[0]) > 0)
        nodes = [m - 2, m - 1, m] if m >= 2 else ([0, 1, 2] if n >= 2 else [0, 1])
        fs = [func(torch.tensor(st[j], dtype=torch.float64), ys[j]) for j in nodes]
        out.append(_hermite_reference([st[j] for j in nodes], [ys[j] for j in nodes], fs, x))
    return torch.stack(out)


def _loss_and_grads(ys, y0, params, weights):
    loss = (ys * weights).sum()
    return torch.autograd.grad(loss, [y0] + params)


@pytest.mark.parametrize("checkpoint", [None, "graphs", "solution"])
def test_interpolated_outputs_and_gradients_match_plain_torch(checkpoint):
    func = _field()
    params = list(func.parameters())
    y0 = torch.tensor([[2.0, 0.0], [1.0, -0.5], [0.3, 0.7]], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0.0, 3.0, 61, dtype=torch.float64)
    solver = pnode.ODESolver(func, method="dopri5", rtol=1e-6, atol=1e-8, checkpoint=checkpoint)
    ys = solver(y0, t)
    steps = solver.step_times
    assert len(steps) - 1 < len(t) - 1, "the solve should take fewer steps than output intervals"
    assert not set(t[1:-1].tolist()) <= set(steps.tolist()), "outputs should not all be step boundaries"
    ref = _reference_outputs(func, y0, steps, t)
    # same scheme, same steps: outputs agree to round-off
    assert torch.allclose(ys, ref, rtol=1e-12, atol=1e-12), float((ys - ref).abs().max())
    w = torch.randn(ys.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = _loss_and_grads(ys, y0, params, w)
    want = _loss_and_grads(ref, y0, params, w)
    for g, r in zip(got, want):
        assert torch.allclose(g, r, rtol=1e-10, atol=1e-11), float((g - r).abs().max())


def test_decreasing_t_interpolates_backwards_in_time():
    func = _field(4)
    params = list(func.parameters())
    y0 = torch.tensor([[1.0, -1.0], [0.2, 0.4]], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(2.0, 0.0, 41, dtype=torch.float64)
    solver = pnode.ODESolver(func, method="dopri5", rtol=1e-6, atol=1e-8)
    ys = solver(y0, t)
    assert (solver.step_times.diff() < 0).all() and len(solver.step_times) < len(t)
    st = [float(x) for x in solver.step_times]
    ref_states = rk_solve(func, y0, st, st, rk_tableau("5dp"))
    n = len(st) - 1
    ref = []
    for x in t.tolist():
        if x in st:
            ref.append(ref_states[st.index(x)])
            continue
        m = next(k for k in range(1, n + 1) if st[k] < x)
        nodes = [m - 2, m - 1, m] if m >= 2 else [0, 1, 2]
        fs = [func(torch.tensor(st[j], dtype=torch.float64), ref_states[j]) for j in nodes]
        ref.append(_hermite_reference([st[j] for j in nodes], [ref_states[j] for j in nodes], fs, x))
    ref = torch.stack(ref)
    assert torch.allclose(ys, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(ys.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for g, r in zip(_loss_and_grads(ys, y0, params, w), _loss_and_grads(ref, y0, params, w)):
        assert torch.allclose(g, r, rtol=1e-10, atol=1e-11)


def test_single_step_uses_the_cubic_and_its_gradient_is_exact():
    func = _field(1)
    params = list(func.parameters())
    y0 = torch.tensor([[0.5, 0.1]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.004, 0.01, 0.02], dtype=torch.float64)
    solver = pnode.ODESolver(func, method="dopri5", rtol=1e-3, atol=1e-3, options={"first_step": 0.02})
    ys = solver(y0, t)
    assert len(solver.step_times) == 2, solver.step_times
    ref = _reference_outputs(func, y0, solver.step_times, t)
    assert torch.allclose(ys, ref, rtol=1e-12, atol=1e-13)
    w = torch.ones_like(ys)
    for g, r in zip(_loss_and_grads(ys, y0, params, w), _loss_and_grads(ref, y0, params, w)):
        assert torch.allclose(g, r, rtol=1e-10, atol=1e-12)


def test_interpolation_error_is_within_the_solver_tolerance():
    """Against a solve at 1e-12 that stops on every output: interpolated outputs are as
    accurate as the tolerances ask (quintic Hermite, O(h^6))."""
    func = _field(2)
    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    t = torch.linspace(0.0, 6.0, 200, dtype=torch.float64)
    with torch.no_grad():
        free = pnode.ODESolver(func, rtol=1e-7, atol=1e-9)
        landing = pnode.ODESolver(func, rtol=1e-7, atol=1e-9, options={"interpolate": False})
        exact = pnode.ODESolver(func, rtol=1e-12, atol=1e-14, options={"interpolate": False})
        ys, yl, ye = free(y0, t), landing(y0, t), exact(y0, t)
    assert len(free.step_times) < len(landing.step_times) / 1.5
    err_free, err_landing = float((ys - ye).abs().max()), float((yl - ye).abs().max())

    scale = 1e-7 * float(ye.abs().max()) + 1e-9  # what the tolerances ask of one step
    assert err_free < 5 * scale, (err_free, scale)  # measured 1.5e-7 against a scale of 2e-7
    assert err_landing < err_free  # stopping on 200 outputs takes twice the steps: more accurate, slower


def test_float32_model_interpolates_and_trains():
    func = _field(3, torch.float32)
    y0 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    t = torch.linspace(0.0, 2.0, 21)
    ys = pnode.odeint(func, y0, t)
    assert ys.dtype == torch.float32 and ys.shape == (21, 1, 2)
    ys.pow(2).sum().backward()
    assert y0.grad is not None and all(p.grad is not None for p in func.parameters())


def test_interpolate_false_stops_on_every_output():
    func = _field()
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    solver = pnode.ODESolver(func, options={"interpolate": False})
    solver(torch.ones(1, 2, dtype=torch.float64), t)
    assert set(t.tolist()) <= set(solver.step_times.tolist())


def test_fixed_steps_and_forced_times_still_land():
    func = _field()
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    y0 = torch.ones(1, 2, dtype=torch.float64)
    fixed = pnode.ODESolver(func, method="rk4", options={"step_size": 0.3})
    fixed(y0, t)
    assert set(t.tolist()) <= set(fixed.step_times.tolist())
    forced = pnode.ODESolver(func, options={"step_t": [0.1]})
    forced(y0, t)
    assert set(t.tolist()) | {0.1} <= set(forced.step_times.tolist())


def test_time_gradients_stop_on_the_outputs_by_default():
    func = _field()
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64, requires_grad=True)
    solver = pnode.ODESolver(func)
    solver(torch.ones(1, 2, dtype=torch.float64), t).sum().backward()
    assert set(t.detach().tolist()) <= set(solver.step_times.tolist())
    assert t.grad is not None


@pytest.mark.parametrize("options, t_grad, error", [
    ({"interpolate": "yes"}, False, TypeError),
    ({"interpolate": True, "step_t": [0.5]}, False, ValueError),
    ({"interpolate": True, "perturb": True}, False, ValueError),
    ({"interpolate": True}, True, ValueError),
])
def test_interpolate_option_errors(options, t_grad, error):
    func = _field()
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64, requires_grad=t_grad)
    with pytest.raises(error, match="interpolate"):
        pnode.ODESolver(func, options=options)(torch.ones(1, 2, dtype=torch.float64), t)
