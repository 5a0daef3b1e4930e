"""A validated SDE solve: the stepping loops shared by ``sdeint`` and ``sdeint_adjoint``.

Fixed steps follow a :class:`~pnode.sde.grid.TimeGrid` (steps land on every output
time). Adaptive steps use step doubling, as torchsde does: each attempt takes one step
of size ``h`` and two of size ``h/2`` from the same state, the difference estimates the
local error against ``atol + rtol * |y|``, an accepted attempt keeps the two half steps,
and the next ``h`` follows from the error. Either way a solve is a sequence of *macro
steps* ``(ta, tb, i)`` that :meth:`Problem.advance` can take again from a stored state,
bit for bit, which is what the checkpointed adjoint relies on.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from .grid import TimeGrid
from .methods import SDEMethod
from .validate import CheckedFunctions, check_increment

# Step-size controller of the adaptive mode (step doubling; see module docstring).
SAFETY, FAC_MIN, FAC_MAX = 0.9, 0.2, 1.4


@dataclass
class Problem:
    """Everything the stepping loops need, checked.

    Attributes:
        funcs: drift and diffusion of ``sde`` (augmented when ``logqp``).
        y0: initial state, shape ``(b, d)``.
        ts: output times, strictly increasing floats (time units of the caller's ``ts``).
        grid: the fixed steps between them (``None`` when adaptive).
        method: the stepper.
        dt: the fixed step, or the first step when adaptive.
        adaptive, rtol, atol, dt_min: adaptive stepping (see module docstring).
        step_options: keyword arguments of the stepper (``grad_free``).
        max_steps: refuse solves needing more steps (attempts, when adaptive).
        bm: callable ``bm(ta, tb, ...)``; ``None`` until assembled.
    """

    funcs: CheckedFunctions
    y0: torch.Tensor
    ts: list
    grid: TimeGrid
    method: SDEMethod
    dt: float
    adaptive: bool = False
    rtol: float = 1e-5
    atol: float = 1e-4
    dt_min: float = 1e-5
    step_options: dict = field(default_factory=dict)
    max_steps: int = 10**6
    bm: object = None
    accepted: list = field(default_factory=list, repr=False)
    _dw_checked: bool = field(default=False, init=False, repr=False)

    def brownian_shape(self):
        """Shape ``(b, m)`` of one Brownian increment for ``funcs.noise_type``."""
        b, d = self.y0.shape
        nt = self.funcs.noise_type
        if nt == "diagonal":
            return (b, d)
        if nt == "scalar":
            return (b, 1)
        m = getattr(self.funcs, "m", None)
        if m is None and self.funcs.has_g:  # m is g's last dimension: evaluate g once
            with torch.no_grad():
                m = self.funcs.g(self.ts[0], self.y0).shape[-1]
        if m is None:
            shape = getattr(self.bm, "shape", None)
            if shape is None:
                raise ValueError("cannot infer the number of Brownian channels: pass bm, or "
                                 "define sde.g or sde.f_and_g")
            m = tuple(shape)[-1]
        return (b, m)

    def noise(self, ta, tb):
        """What the method needs from the Brownian motion over ``[ta, tb]``."""
        needs = self.method.needs
        if needs == "W":
            out = self.bm(ta, tb)
            dw = out
        else:
            out = self.bm(ta, tb, return_U=True) if needs == "WU" else self.bm(ta, tb, return_A=True)
            dw = out[0]
        if not self._dw_checked:
            check_increment(dw, self.brownian_shape(), self.funcs.noise_type, self.y0)
            self._dw_checked = True
        return out

    def step(self, ta, tb, state):
        """One step of the method over ``[ta, tb]``."""
        return self.method.step(self.funcs, ta, tb, state, self.noise(ta, tb), **self.step_options)

    def advance(self, ta, tb, state):
        """One macro step: the step itself, or the two half steps of an accepted
        adaptive attempt."""
        if not self.adaptive:
            return self.step(ta, tb, state)
        tm = ta + 0.5 * (tb - ta)
        return self.step(tm, tb, self.step(ta, tm, state))

    def init_state(self, y0, extra=None):
        """The method's state at ``ts[0]``: its own init, or ``(y0, *extra)``."""
        if extra is None:
            return self.method.init(self.funcs, self.ts[0], y0)
        return (y0, *extra)

    def march(self, state):
        """Step from ``state`` to ``ts[-1]``, yielding ``(ta, tb, i, state)`` after every
        macro step (``i``: index of the output time equal to ``tb``, or ``None``).
        Adaptive solves record their macro steps in :attr:`accepted`."""
        if not self.adaptive:
            for ta, tb, i in self.grid.steps():
                state = self.step(ta, tb, state)
                yield ta, tb, i, state
            return
        yield from self._march_adaptive(state)

    def replay(self, start, count, state):
        """Re-take ``count`` macro steps from the ``start``-th, from ``state``; yields
        like :meth:`march`."""
        steps = (self.grid.steps(start) if not self.adaptive
                 else iter(self.accepted[start:start + count]))
        for _, (ta, tb, i) in zip(range(count), steps):
            state = self.advance(ta, tb, state)
            yield ta, tb, i, state

    def _march_adaptive(self, state):
        self.accepted = []
        h, prev_ratio, attempts, warned = self.dt, None, 0, False
        for i in range(1, len(self.ts)):
            t, end = self.ts[i - 1], self.ts[i]
            while t < end:
                attempts += 1
                if attempts > self.max_steps:
                    raise ValueError(f"adaptive stepping needed more than max_num_steps="
                                     f"{self.max_steps} attempts before t={end}: loosen rtol/atol, "
                                     "raise dt_min, or raise options['max_num_steps']")
                tb = end if t + h >= end - 1e-12 * max(1.0, abs(end)) else t + h
                full = self.step(t, tb, state)
                tm = t + 0.5 * (tb - t)
                half = self.step(tm, tb, self.step(t, tm, state))
                err = _error_ratio(full[0], half[0], self.rtol, self.atol)
                h_used = tb - t
                h, prev_ratio = _next_step(err, h_used if err > 1 else h, prev_ratio)
                if h < self.dt_min:
                    if not warned:
                        warnings.warn("adaptive stepping hit dt_min; steps of dt_min are "
                                      "accepted whatever their error", stacklevel=4)
                        warned = True
                    h, prev_ratio = self.dt_min, None
                if err <= 1 or h_used <= self.dt_min * (1 + 1e-12):
                    state, t = half, tb
                    i_out = i if tb == end else None
                    self.accepted.append((tb - h_used, tb, i_out))
                    yield tb - h_used, tb, i_out, state


def _error_ratio(y_full, y_half, rtol, atol):
    """RMS of the step-doubling difference over ``atol + rtol * |y|``."""
    with torch.no_grad():
        tol = (rtol * torch.max(y_full.abs(), y_half.abs()) + atol).clamp_min(1e-7)
        r = ((y_full - y_half) / tol).pow(2).mean().sqrt().clamp_min(1e-7).item()
    if not math.isfinite(r):
        raise ValueError("adaptive stepping: the error estimate is not finite (the solution "
                         "blew up or produced NaN); try a smaller dt or tighter tolerances")
    return r


def _next_step(err, h, prev_ratio):
    """Next step size from the error ratio: a PI controller on accepted steps, plain
    shrinking on rejected ones; returns ``(h, ratio memory)``."""
    ratio = SAFETY / err
    if prev_ratio is None:
        prev_ratio = ratio
    if err > 1:
        factor = max(FAC_MIN, min(1.0, ratio ** (2 / 3)))
        return h * factor, prev_ratio
    factor = ratio ** (1 / 4.5) * (ratio / prev_ratio) ** 0.13
    return h * min(FAC_MAX, max(1.0, factor)), ratio
