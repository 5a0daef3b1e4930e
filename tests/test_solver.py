"""ODESolver behaviour: no-grad forwards, stats and step_times, and output-time handling
(changing their number, a short first interval with fixed steps, times PETSc reaches only
to within its tolerance)."""
import pytest
import torch
from torch import nn

import pnode
from helpers import T01, TanhField, decay


def test_no_grad_forward_keeps_no_trajectory_and_matches():
    f = TanhField()
    x = torch.randn(4, 3, dtype=torch.float64)
    with pnode.ODESolver(f, method="dopri5") as s:
        with torch.no_grad():
            a = s(x, T01)
        b = s(x, T01)
        assert torch.equal(a, b) and not a.requires_grad and b.requires_grad


def test_stats_and_step_times():
    with pnode.ODESolver(TanhField(), method="dopri5") as s:
        ys = s(torch.randn(2, 3, dtype=torch.float64), torch.linspace(0, 1, 3, dtype=torch.float64))
        ys.sum().backward()
        st = s.stats
        for key in ("steps", "rejected_steps", "rhs_evals", "jvp_evals", "vjp_evals", "newton_iterations",
                    "linear_iterations", "adjoint_steps", "recomputed_steps", "checkpoints",
                    "checkpoint_bytes"):
            assert key in st
        assert st["adjoint_steps"] == st["steps"] == len(s.step_times) - 1
        assert s.step_times[0] == 0.0 and s.step_times[-1] == 1.0
        assert st["rhs_evals"] >= 6 * st["steps"] and st["vjp_evals"] > 0


def test_changing_the_number_of_output_times():
    """PETSc 3.26 cannot resize evaluation times in place (it crashed): pnode rebuilds."""
    y0 = torch.ones(3, dtype=torch.float64)
    for n in (2, 6, 3):
        ys = pnode.odeint(decay, y0, torch.linspace(0, 1, n, dtype=torch.float64))
        assert ys.shape == (n, 3) and abs(float(ys[-1, 0]) - 0.36787944117) < 1e-6


@pytest.mark.parametrize("decreasing", [False, True])
def test_changing_the_number_of_output_times_with_fixed_steps(decreasing):
    """latent_ode's ODE-RNN solves with euler (one step per output interval) over 2 output
    times, then over 4, on one solver: the fixed steps land on every output time, and a
    workspace kept for 2 evaluation times must not be given 4 (PETSc crashed). Euler on
    y' = -y gives prod(1 - h_i) exactly (1e-12), with the gradient d/dy0 of the sum."""
    W = torch.ones(1, dtype=torch.float64, requires_grad=True)

    def f(t, y):
        return -W * y
    for n in (2, 4, 2, 3):
        t = torch.linspace(0.0, 1.0, n, dtype=torch.float64) ** 2
        t = 2.0 - t if decreasing else t
        y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
        ys = pnode.odeint(f, y0, t, method="euler")
        want = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.float64), 1 - (t[1:] - t[:-1])]), 0)
        assert ys.shape == (n, 2) and float((ys.detach()[:, 0] - want).abs().max()) < 1e-12
        ys.sum().backward()
        assert abs(float(y0.grad[0]) - float(want.sum())) < 1e-12


def test_fixed_step_survives_a_short_first_output_interval():
    with pnode.ODESolver(decay, method="rk4", options={"step_size": 0.1}) as s:
        s(torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 0.001, 1.0], dtype=torch.float64))
        assert s.stats["steps"] == 11  # 0.001, then full 0.1 steps, the last one shortened
    with pnode.ODESolver(decay, method="rk4") as s:  # no step_size: one step per interval
        s(torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 0.01, 1.0], dtype=torch.float64))
        assert s.stats["steps"] == 2


def test_output_times_reached_within_petsc_tolerance():
    """Adaptive steps may reach an output time to within PETSc's tolerance, not bit-exactly
    (here 0.025025...); outputs and the adjoint's segments must still line up."""
    t = torch.linspace(0.0, 25.0, 1000, dtype=torch.float64)[:10]
    torch.manual_seed(0)  # some initial weights make y**3 blow up before t = 0.225
    f = nn.Linear(2, 2).double()
    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    with pnode.ODESolver(lambda t, y: f(y ** 3), method="dopri5", rtol=1e-6, atol=1e-8,
                         adjoint_params=list(f.parameters())) as s:
        ys = s(y0, t)
        ys.sum().backward()
        assert ys.shape == (10, 1, 2) and s.stats["adjoint_steps"] == s.stats["steps"]


def test_progress_bar_and_step_callback(capsys):
    """progress=True draws a tqdm bar over t (on stderr); callback(t, y, stats) sees every
    accepted step in order, with a copy of the state and the counters so far."""
    seen = []
    solver = pnode.ODESolver(decay, method="rk4", options={"step_size": 0.1}, progress=True,
                             callback=lambda t, y, stats: seen.append((t, y, stats["rhs_evals"])))
    ys = solver(torch.ones(3, dtype=torch.float64), torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    assert [round(t, 12) for t, _, _ in seen] == [round(0.1 * k, 12) for k in range(1, 11)]
    assert torch.allclose(seen[4][1], ys[1]) and seen[-1][1].shape == (3,)
    assert seen[0][2] < seen[-1][2]
    assert "pnode" in capsys.readouterr().err
    with pytest.raises(TypeError, match="callback"):
        pnode.ODESolver(decay, callback=3)
    with pytest.raises(TypeError, match="progress"):
        pnode.ODESolver(decay, progress="yes")


def _bare_petsc_steps(rate, y0, t_end, first_step, rtol, atol):
    """The accepted step boundaries of PETSc's own RK 5dp with its basic adaptor on
    ``y' = rate(t) y``: a petsc4py TS built by hand, no evaluation times, landing on the
    end time exactly as pnode asks (``MATCHSTEP``)."""
    from petsc4py import PETSc
    u = PETSc.Vec().createSeq(len(y0))
    u.setArray(y0)
    ts = PETSc.TS().create(comm=PETSc.COMM_SELF)
    ts.setType("rk")
    ts.setRKType("5dp")
    ts.setRHSFunction(lambda ts, t, U, F: F.setArray(rate(t) * U.getArray(readonly=True)), u.duplicate())
    ts.setTolerances(rtol=rtol, atol=atol)
    ts.setTime(0.0)
    ts.setTimeStep(first_step)
    ts.setMaxTime(t_end)
    ts.setMaxSteps(10**6)
    ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
    times = [0.0]
    ts.setPostStep(lambda ts: times.append(ts.getTime()))
    try:
        ts.solve(u)
        return times
    finally:
        ts.destroy()
        u.destroy()


def test_two_time_adaptive_solve_takes_petsc_own_steps():
    """A solve over [t0, t1] takes exactly the steps PETSc's adaptive RK takes by itself.

    The reference is a bare petsc4py TS (same tableau, tolerances, first step, end time).
    Given evaluation times instead, PETSc's adaptor remembers a step it cut to land on
    the end and re-proposes it after later rejections (``dt_eval_times_cached``): on this
    field, idle until t = 0.5 and then stiff (so an early step overshoots the end and is
    cut), that cost 48 rejected steps against PETSc's own 31."""
    def rate(t):
        return -1000.0 * min(max((t - 0.5) * 20, 0.0), 1.0)

    y0 = torch.ones(1, 3, dtype=torch.float64)
    solver = pnode.ODESolver(lambda t, y: rate(float(t)) * y, method="dopri5", rtol=1e-6, atol=1e-8,
                             options={"first_step": 1e-6})
    with torch.no_grad():
        solver(y0, torch.tensor([0.0, 1.0], dtype=torch.float64))
    reference = _bare_petsc_steps(rate, y0.reshape(-1).numpy(), 1.0, 1e-6, 1e-6, 1e-8)
    assert solver.step_times.tolist() == reference  # the same steps, bit for bit
    assert solver.stats["rejected_steps"] <= 40  # PETSc's own: 31 (48 with evaluation times)
