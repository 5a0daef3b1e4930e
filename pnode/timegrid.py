"""The times a solve steps exactly onto: the output times plus the forced step boundaries
of ``options`` (torchdiffeq's ``step_t``, ``jump_t`` and ``grid_constructor``).

PETSc lands a step on every time of the grid (``TSSetEvaluationTimes`` with
``MATCHSTEP``); only the output times are returned. At a ``jump_t`` time the vector field
may be discontinuous, so evaluations there are nudged to the side of the step being taken
(:class:`Nudge`), as torchdiffeq's ``perturb`` does; ``options["perturb"]`` nudges at every
step boundary.
"""
import math
from dataclasses import dataclass
from typing import Tuple

import torch

from .validate import check_t


@dataclass(frozen=True)
class TimeGrid:
    """Attributes:
        times: every landing time (user time, monotone like ``t``).
        outputs: for each output time, its index in ``times``.
        jumps: the ``jump_t`` times inside the span (evaluations there are nudged).
    """

    times: Tuple[float, ...]
    outputs: Tuple[int, ...]
    jumps: frozenset

    @property
    def extra(self):
        """Whether the grid has times beyond the outputs."""
        return len(self.times) != len(self.outputs)

    @classmethod
    def of(cls, times, grid, func=None, y0=None, t=None):
        """The grid for output ``times`` (floats) under ``grid``, the solver's
        :class:`~pnode.settings.GridSettings`."""
        forced = set(grid.step_t) | set(grid.jump_t)
        jumps = set(grid.jump_t)
        if grid.grid_constructor is not None and len(times) > 1:
            forced.update(_constructed(grid.grid_constructor, func, y0, t, times))
        if len(times) < 2 or not forced:
            return cls(tuple(times), tuple(range(len(times))), frozenset())
        lo, hi = min(times[0], times[-1]), max(times[0], times[-1])
        inside = {x for x in forced if lo < x < hi} - set(times)
        merged = sorted(set(times) | inside, reverse=times[-1] < times[0])
        index = {x: i for i, x in enumerate(merged)}
        return cls(tuple(merged), tuple(index[x] for x in times), frozenset(x for x in jumps if lo < x < hi))


def _constructed(grid_constructor, func, y0, t, times):
    """torchdiffeq's ``grid_constructor(func, y0, t) -> grid``: its times become step
    boundaries (with one step between neighbours for fixed-step methods)."""
    t_arg = t if isinstance(t, torch.Tensor) else torch.tensor(times, dtype=torch.float64)
    grid = grid_constructor(func, y0, t_arg.detach())
    try:
        values = check_t(grid)
    except (TypeError, ValueError) as err:
        raise ValueError(f"options['grid_constructor'] must return a 1-D monotone tensor of times: {err}") from None
    if not (math.isclose(values[0], times[0], rel_tol=0, abs_tol=1e-12 * max(1.0, abs(times[0])))
            and math.isclose(values[-1], times[-1], rel_tol=0, abs_tol=1e-12 * max(1.0, abs(times[-1])))):
        raise ValueError(f"options['grid_constructor'] returned a grid from {values[0]} to {values[-1]}; it must "
                         f"start at t[0]={times[0]} and end at t[-1]={times[-1]}")
    return values[1:-1]


class Nudge:
    """Moves an evaluation at a step boundary one float inside the step being taken.

    PETSc's stage times of the step in progress lie between ``ts.getTime()`` and
    ``ts.getTime() + ts.getTimeStep()`` in the forward and in the adjoint alike (the
    adjoint runs from the step's end with a negative step), so the side is known from
    the TS alone.

    Args:
        ts: the PETSc TS.
        clock: the solve's :class:`~pnode.bridge.Clock`.
        at: user times to nudge at, or None for every step boundary.
    """

    def __init__(self, ts, clock, at=None):
        self.ts, self.clock = ts, clock
        self.at = None if at is None else [clock.solver(x) for x in at]

    def __call__(self, s, t):
        """``t`` (the 0-d user-time tensor of solver time ``s``), nudged if it is a
        boundary of the current step."""
        a = self.ts.getTime()
        b = a + self.ts.getTimeStep()
        if s == a:
            other = b
        elif s == b:
            other = a
        else:
            return t
        if self.at is not None and not hits(s, self.at):
            return t
        toward = torch.tensor(self.clock.user(other), dtype=t.dtype, device=t.device)
        return torch.nextafter(t, toward)


def hits(s, points):
    """Whether solver time ``s`` is one of ``points`` (solver times), to round-off (PETSc
    lands a step on an evaluation time up to the last bits)."""
    return any(abs(s - x) <= 1e-14 * max(1.0, abs(x)) for x in points)
