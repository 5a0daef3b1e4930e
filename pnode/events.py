"""Solving until an event: what ``odeint(..., event_fn=...)`` and ``odeint_event`` run.

The event time ``t*`` (where ``event_fn(t, y(t))`` crosses zero) is found by a
forward-only PETSc solve with TSEvent. The differentiable result is then a pnode solve
from ``t0`` to ``t*`` plus the implicit-function theorem for ``t*`` itself:
``dt*/dθ = -(dg/dθ at fixed t) / (dg/dt along the solution)`` with
``dg/dt = ∂g/∂t + ∂g/∂y · f(t*, y*)``, and the state at the event moves with it,
``dy*/dθ = dy(t*)/dθ + f(t*, y*) dt*/dθ``. Both are exact for the computed solution's
event; gradients flow to ``y0``, ``t0``, the parameters of ``func`` and of ``event_fn``.
"""
import math

import torch

from .bridge import StateLayout
from .validate import check_t

_FAR = 1e30  # how far the event search may integrate (no end time is given)
# An exact zero of event_fn as PETSc is shown it (see _event_time): above PETSc's value
# tolerance (the integrator's ts.setEventTolerances(1e-12), below which a value is zero).
_TINY = 1e-9
_EVENT_TOL = 1e-12  # the integrator's event tolerance in (solver) time


def _event_time(integrator, y0, t0, direction, event_fn):
    """``t*`` (a Python float): where ``event_fn`` first crosses zero after ``t0`` in
    ``direction`` (+1/-1), from a forward-only solve."""
    layout = StateLayout.of(y0)
    times = [t0, t0 + direction * _FAR]
    start, last, near = [], [_TINY], [0.0]  # sign at t0; last nonzero |value|; last time with that sign

    def event(s, u64):
        with torch.no_grad():
            t = torch.tensor(times[0] + direction * s, dtype=layout.dtype, device=layout.device)
            value = float(_scalar(event_fn(t, layout.unflatten(layout.to_model(u64))), "event_fn"))
        if not start:
            start.append(math.copysign(1.0, value) if value != 0.0 else 0.0)
        if value == 0.0 and start[0] != 0.0 and s - near[0] > _EVENT_TOL:
            # an exact zero at a step's end (a constant branch: torchdiffeq's
            # learn_physics.py returns zeros_like(t) past a terminal time) would be taken
            # as the event there, hiding an earlier crossing inside the step. Shown as the
            # far side of zero, as large as the value last seen (so that PETSc's secant
            # steps bisect the jump), it makes PETSc locate the first change of sign, as
            # torchdiffeq's bisection does; the zero itself is shown once the bracket is
            # below the event tolerance (a jump never gets small for PETSc to stop at).
            return -start[0] * last[0]
        if value != 0.0:
            last[0] = max(abs(value), _TINY)
            if math.copysign(1.0, value) == start[0]:
                near[0] = max(near[0], s)
        return value
    with torch.no_grad():
        t_star, _ = integrator.forward(layout, layout.flatten(y0).detach(), times, [], record=False, event=event)
    return t_star


def _scalar(value, name):
    value = torch.as_tensor(value)
    if value.numel() != 1:
        raise ValueError(f"{name} must return a scalar, got shape {tuple(value.shape)}")
    return value.reshape(())


def until_event(solver, integrator, y0, t, event_fn):
    """torchdiffeq's ``odeint(func, y0, t, event_fn=...)``: integrate from ``t[0]`` in the
    direction of ``t[1]`` (the rest of ``t`` is ignored) until ``event_fn`` crosses zero.

    Returns:
        ``(event_t, ys)``: the 0-d event time (``t``'s dtype) and ``ys`` of shape
        ``(2, *y0.shape)``, the states at ``t[0]`` and at the event (tuples for a tuple
        ``y0``); both differentiable (see the module docstring).
    """
    if not callable(event_fn):
        raise TypeError("event_fn must be callable: event_fn(t, y) -> scalar tensor")
    if solver.comm.getSize() > 1:
        raise ValueError("event_fn is not supported with an MPI communicator (each rank would see only its "
                         "shard of the state): solve events on one process")
    times = check_t(t)
    if len(times) < 2:
        raise ValueError("with event_fn, t must hold the start time and one more time giving the direction")
    t_like = t if isinstance(t, torch.Tensor) else torch.tensor(times, dtype=torch.float64)
    direction = 1.0 if times[1] > times[0] else -1.0
    t_star = _event_time(integrator, y0, times[0], direction, event_fn)
    t_pair = torch.stack([t_like[0], torch.tensor(t_star, dtype=t_like.dtype, device=t_like.device)])
    return _through_event(integrator, StateLayout.of(y0), event_fn, t_pair, solver(y0, t_pair))


def _through_event(integrator, layout, event_fn, t_pair, ys):
    """The event time and the states ``ys`` (solved to the located ``t_pair[1]``) with
    the implicit-function gradients of the module docstring attached."""
    t_star = float(t_pair[1].detach())
    y_fixed = tuple(m[-1] for m in ys) if layout.is_tuple else ys[-1]
    t_arg = t_pair[1].detach().to(layout.dtype)
    g = _scalar(event_fn(t_arg, y_fixed), "event_fn")
    # dg/dt along the solution at the event, evaluated without a graph to the inputs
    with torch.enable_grad():
        t_probe = t_arg.clone().requires_grad_(True)
        y_probe = tuple(m.detach().requires_grad_(True) for m in (y_fixed if layout.is_tuple else (y_fixed,)))
        g_probe = _scalar(event_fn(t_probe, y_probe if layout.is_tuple else y_probe[0]), "event_fn")
        # a branch that ignores (t, y) (torchdiffeq's learn_physics.py returns zeros_like(t)
        # past a terminal time) has no graph: both partial derivatives are zero
        grads = (torch.autograd.grad(g_probe, (t_probe,) + y_probe, allow_unused=True) if g_probe.requires_grad
                 else (None,) * (1 + len(y_probe)))
    f = layout.unflatten(integrator.rates(layout, [t_star], layout.flatten(y_fixed).detach().double()[None])[0])
    f = tuple(f) if layout.is_tuple else (f,)
    dgdt = sum(float((gy * fy).sum()) for gy, fy in zip(grads[1:], f) if gy is not None)
    dgdt += float(grads[0]) if grads[0] is not None else 0.0
    if not g.requires_grad:
        # g at the event depends on nothing differentiable (not on y0, t0 or any
        # parameter): neither does the event time (dt*/dθ = 0, as torchdiffeq's zero
        # event-function gradient gives), only the state reached moves
        return t_pair[1], ys
    if dgdt == 0.0:
        raise ValueError(f"event_fn's derivative along the solution is zero at the event t={t_star}: the event "
                         "time is not differentiable there (a tangential crossing)")
    shift = -(g - g.detach()) / dgdt  # value 0; gradient -(dg/dθ)/(dg/dt)
    event_t = t_pair[1] + shift.to(t_pair.dtype)
    moved = tuple(m + fm.to(m.dtype) * shift.to(m.dtype) for m, fm in
                  zip(y_fixed if layout.is_tuple else (y_fixed,), f))
    if layout.is_tuple:
        out = tuple(torch.stack([m[0], mv]) for m, mv in zip(ys, moved))
    else:
        out = torch.stack([ys[0], moved[0]])
    return event_t, out
