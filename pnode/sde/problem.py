"""A validated SDE solve, and the forward stepping loop shared by both APIs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .grid import TimeGrid
from .methods import SDEMethod
from .validate import CheckedFunctions, check_increment


@dataclass
class Problem:
    """Everything the stepping loops need, checked.

    Attributes:
        funcs: drift and diffusion of ``sde``, checked on first evaluation.
        y0: initial state, shape ``(b, d)``.
        ts: output times, strictly increasing floats (time units of the caller's ``ts``).
        grid: the fixed steps between them.
        method: the stepper.
        bm: callable ``bm(ta, tb) -> dW``; ``None`` until assembled (unused when
            ``len(ts) == 1``).
    """

    funcs: CheckedFunctions
    y0: torch.Tensor
    ts: list
    grid: TimeGrid
    method: SDEMethod
    bm: object = None
    _dw_checked: bool = field(default=False, init=False, repr=False)

    def brownian_shape(self):
        """Shape ``(b, m)`` of one Brownian increment for ``funcs.noise_type``."""
        b, d = self.y0.shape
        nt = self.funcs.noise_type
        if nt == "diagonal":
            return (b, d)
        if nt == "scalar":
            return (b, 1)
        if self.funcs.m is None:  # m is g's last dimension: evaluate g once to learn it
            with torch.no_grad():
                self.funcs.g(self.ts[0], self.y0)
        return (b, self.funcs.m)

    def increment(self, ta, tb):
        """Brownian increment over ``[ta, tb]``, checked on first use."""
        dw = self.bm(ta, tb)
        if not self._dw_checked:
            check_increment(dw, self.brownian_shape(), self.funcs.noise_type, self.y0)
            self._dw_checked = True
        return dw

    def outputs(self, y0):
        """Step from ``y0`` over the grid, yielding ``(i, state)`` at each output time
        ``ts[i]`` (``i >= 1``; ``state[0]`` is ``y``). The last yield is the final state.
        """
        funcs, step = self.funcs, self.method.step
        state = self.method.init(funcs, self.ts[0], y0)
        for ta, tb, i in self.grid.steps():
            state = step(funcs, ta, tb, state, self.increment(ta, tb))
            if i is not None:
                yield i, state
