"""The functional API, a drop-in for torchdiffeq's ``odeint``/``odeint_adjoint``/``odeint_event``."""
import types
import warnings
from collections import OrderedDict

import torch

from .solver import ODESolver

_IGNORED = ("adjoint_rtol", "adjoint_atol", "adjoint_method", "adjoint_options")
# Solvers reused across calls with the same func and settings (a training loop calls
# odeint every iteration; creating PETSc objects each time would dominate tiny problems).
# A least-recently-used table of a few: a training loop that builds a fresh lambda or
# closure each iteration must not accumulate solvers.
_CACHE = OrderedDict()
CACHE_SIZE = 8


def _key(value):
    try:
        hash(value)
        return value
    except TypeError:
        if isinstance(value, dict):
            return tuple(sorted((k, _key(v)) for k, v in value.items()))
        if isinstance(value, (list, tuple)):
            return tuple(_key(v) for v in value)
        return ("id", id(value))


def _func_key(func):
    """Two plain functions with the same code, closure contents, defaults and globals
    compute the same field (``lambda t, y: net(y)`` made anew each iteration): one key.
    Anything else is keyed by identity; the cached solver keeps it alive, so its id
    cannot be reused by another object while the entry exists."""
    if isinstance(func, types.FunctionType):
        cells = tuple(_cell_id(c) for c in (func.__closure__ or ()))
        return ("function", func.__code__, cells, id(func.__globals__), _key(func.__defaults__))
    return ("object", id(func))


def _cell_id(cell):
    try:
        return id(cell.cell_contents)
    except ValueError:  # an empty cell
        return None


def _solver_for(func, settings):
    key = (_func_key(func), _key(settings))
    # an equal key computes the same field: the cached solver's own func will do
    solver = _CACHE.pop(key, None) or ODESolver(func, **settings)
    _CACHE[key] = solver
    while len(_CACHE) > CACHE_SIZE:
        _, old = _CACHE.popitem(last=False)
        old.close()
    return solver


def clear_cache():
    """Close and forget the solvers :func:`odeint` keeps for reuse."""
    while _CACHE:
        _CACHE.popitem()[1].close()


def cached_solver(func, *, caller="odeint", **settings):
    """The :class:`ODESolver` :func:`odeint` solves with for ``func`` and ``settings``
    (its keywords besides ``event_fn``), reused from the cache when one matches."""
    for name in list(settings):
        if name in _IGNORED:
            warnings.warn(f"pnode ignores {name}: its discrete adjoint replays the forward's own steps",
                          stacklevel=3)
            settings.pop(name)
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword arguments {unknown}")
    return _solver_for(func, {name: settings.get(name, default) for name, default in _SETTINGS.items()})


_SETTINGS = dict(rtol=1e-7, atol=1e-9, method=None, options=None, adjoint_params=None, checkpoint=None,
                 petsc_options=None, comm=None, progress=False, callback=None)


def odeint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None,
           adjoint_params=None, checkpoint=None, petsc_options=None, comm=None, progress=False, callback=None,
           **kwargs):
    """Solve ``dy/dt = func(t, y)`` from ``y0`` at ``t[0]``; return ``y`` at every ``t``.

    Args:
        func: ``nn.Module`` or callable ``func(t, y)``; ``t`` is a 0-d tensor.
        y0: Tensor of any shape or tuple of Tensors, float32 or float64.
        t: strictly monotone 1-D tensor of output times (increasing or decreasing); with
            ``t.requires_grad`` the loss gradient with respect to every time is computed
            (:func:`pnode.adjoint.time_gradient`).
        rtol, atol: adaptive step tolerances.
        method: integrator name (default ``dopri5``); see ``pnode.methods.METHODS``.
        options: torchdiffeq's ``step_size``, ``first_step``, ``max_num_steps``,
            ``min_step``, ``max_step``, ``step_t``, ``jump_t``, ``perturb``,
            ``grid_constructor``, ``norm`` (``"rms"``/``"max"``), ``dtype``, ``interp`` and,
            for implicit methods, ``theta``, ``endpoint``, ``func_explicit``, ``mass``,
            ``jacobian``, ``preconditioner`` (see :class:`pnode.ODESolver`).
        adjoint_params: tensors to differentiate (default: parameters of ``func``).
        checkpoint: :class:`pnode.Checkpoint` (default: ``"auto"``, see :class:`pnode.ODESolver`).
        event_fn: ``event_fn(t, y) -> scalar``: solve from ``t[0]`` in the direction of
            ``t[1]`` until it crosses zero and return ``(event_t, ys)`` with ``ys`` the
            states at ``t[0]`` and the event (see :mod:`pnode.events`).
        petsc_options: PETSc options used as defaults for this solve.
        progress, callback: a tqdm bar over ``t``, and ``callback(t, y, stats)`` after
            every accepted step (see :class:`pnode.ODESolver`).
        comm: MPI communicator for a data-parallel solve (each rank passes its shard of
            the batch; see :mod:`pnode.parallel`). Default: this process alone.

    Returns:
        Tensor ``(len(t), *y0.shape)`` (tuple of such for tuple ``y0``). Gradients come
        from PETSc's discrete adjoint: exact for the computed solution.
    """
    solver = cached_solver(func, rtol=rtol, atol=atol, method=method, options=options,
                           adjoint_params=adjoint_params, checkpoint=checkpoint, petsc_options=petsc_options,
                           comm=comm, progress=progress, callback=callback, **kwargs)
    if event_fn is not None:
        return solver.until_event(y0, t, event_fn)
    return solver(y0, t)


odeint_adjoint = odeint


def odeint_event(func, y0, t0, *, event_fn, reverse_time=False, odeint_interface=None, **kwargs):
    """Solve from ``t0`` until ``event_fn(t, y)`` crosses zero (torchdiffeq's signature).

    Args:
        func: the vector field ``func(t, y)``.
        y0: initial state (Tensor or tuple of Tensors).
        t0: start time (0-d tensor or float; may require grad).
        event_fn: ``event_fn(t, y) -> scalar``; the solve stops at its first zero.
        reverse_time: integrate towards decreasing ``t`` (``event_fn`` sees the true time).
        odeint_interface: ignored beyond pnode's own ``odeint`` (accepted for torchdiffeq
            compatibility).
        **kwargs: ``rtol``, ``atol``, ``method``, ``options``, ... as for
            :func:`pnode.odeint`.

    Returns:
        ``(event_t, ys)``: event time and the states at ``t0`` and at the event,
        ``(2, *y0.shape)``; both differentiable.
    """
    t0 = torch.as_tensor(t0, dtype=torch.float64 if not isinstance(t0, torch.Tensor) else t0.dtype).reshape(-1)
    t = torch.cat([t0, t0.detach() + (-1.0 if reverse_time else 1.0)])
    return odeint(func, y0, t, event_fn=event_fn, **kwargs)
