"""Saving: the states at the output times of a finished forward solve, and where the
adjoint's output intervals begin and end."""
import torch
from petsc4py import PETSc

from .bridge import vec_view
from .errors import MaxStepsError, SolverError, reason_name


def collect(ts, s, times, clock, step_times, reducer, max_num_steps=None, start=None):
    """The outputs of a finished solve, checked.

    Args:
        ts: the TS after ``solve``.
        s: requested output times in solver time; ``times`` the user's.
        clock: the :class:`~pnode.bridge.Clock` between solver and user time.
        step_times: accepted step boundaries (solver time) from the post-step hook.
        reducer: the solver's :class:`~pnode.parallel.Reducer` (finiteness is agreed on).
        max_num_steps: the solver's step limit, if any (for the message).
        start: for a solve given no evaluation times (two output times), the initial state
            (flat float64): the outputs are it and the solution where the solve ended.

    Returns:
        ``(ys, segments)``: ``(len(t), n)`` float64 states and, for each output time, the
        index of the step that reached it.

    Raises:
        MaxStepsError: ``max_num_steps`` was reached before the last output time.
        SolverError: PETSc stopped early otherwise, or the solution is not finite.
    """
    time, steps = clock.user(ts.getTime()), ts.getStepNumber()
    reason = ts.getConvergedReason()
    if reason < 0:
        raise SolverError(f"PETSc forward solve failed ({reason_name(reason)}) at t={time:.6g} "
                          f"after {steps} steps", reason=reason_name(reason), time=time, steps=steps)
    if start is None:
        sol_times, sols = ts.getEvaluationSolutions()
        reached = len(sols) == len(s)
    else:
        sol_times, sols = [s[0], step_times[-1]], [None, ts.getSolution()]
        reached = reason == PETSc.TS.ConvergedReason.CONVERGED_TIME
    if not reached:
        where = f"PETSc forward solve stopped at t={time:.6g} before t[-1]={times[-1]:.6g}"
        if max_num_steps and steps >= max_num_steps:
            raise MaxStepsError.exceeded(steps, max_num_steps, where, time=time)
        raise SolverError(f"{where}: {len(sols) if start is None else 1} of {len(s)} output times reached",
                          reason="INCOMPLETE", time=time, steps=steps)
    ys = torch.stack([start if v is None else vec_view(v, "r").clone() for v in sols])
    if reducer.any(not bool(torch.isfinite(ys).all())):
        raise SolverError(f"the solution is not finite (NaN/Inf) by t={times[-1]:.6g}",
                          reason="NAN", time=time, steps=steps)
    # PETSc records an output at the step that reached it up to its tolerance (~1e-15
    # relative): locate the steps by the times it actually reached
    step_of = {x: k for k, x in enumerate(step_times)}
    return ys, [step_of[float(x)] for x in sol_times]
