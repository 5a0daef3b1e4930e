"""The fixed-step time grid of the SDE solvers.

Steps sit at ``t0 + k*dt`` (``t0 = ts[0]``), computed by multiplication so that round-off
does not accumulate and the points coincide bit for bit with a BrownianInterval built with
the same ``t0`` and ``dt``. Within each output interval ``[ts[i], ts[i+1]]`` the last step
is shortened to land exactly on ``ts[i+1]``. A grid point that coincides with an output
time at the precision of ``ts`` (or within ``1e-9*dt``) is merged with it rather than
producing a step of round-off length: float32 ``ts`` such as ``torch.linspace(0, 1, 11)``
differ from the float64 grid ``k*0.1`` by about 1e-8.

The grid is generated lazily (O(len(ts)) numbers), so iterating over it costs no memory
however many steps there are.
"""

from __future__ import annotations

import bisect
import math


class TimeGrid:
    """The steps of a fixed-step solve.

    Args:
        ts: strictly increasing output times (list of floats).
        dt: step size (> 0).
        eps: relative precision of ``ts`` (``1e-13`` for float64 times; about 4 ulp of
            the dtype for lower precision), used to merge grid points with output times.
    """

    def __init__(self, ts, dt, eps=1e-13):
        self.ts = list(ts)
        self.dt = float(dt)
        self.t0 = self.ts[0]
        tol = max(1e-9 * self.dt, eps * max(abs(self.ts[0]), abs(self.ts[-1])))
        # For each output interval, the k whose grid points lie strictly inside it.
        self.inner = [_inner_range(self.t0, self.dt, s, e, tol)
                      for s, e in zip(self.ts, self.ts[1:])]
        # Index of the first step of each output interval.
        self._starts = [0]
        for r in self.inner:
            self._starts.append(self._starts[-1] + len(r) + 1)

    def point(self, k):
        """Grid point ``t0 + k*dt``."""
        return self.t0 + k * self.dt

    def steps(self, start=0):
        """Forward steps ``(ta, tb, i)``, from the ``start``-th on; ``i`` is the index of
        the output time equal to ``tb``, or ``None`` when ``tb`` is an interior grid
        point. Starting late costs O(log len(ts)), not the skipped steps."""
        t0, dt, ts = self.t0, self.dt, self.ts
        first = max(0, bisect.bisect_right(self._starts, start) - 1)
        for i in range(first, len(self.inner)):
            inner = self.inner[i]
            skip = max(0, start - self._starts[i])
            ta = ts[i] if skip == 0 else t0 + inner[skip - 1] * dt
            for k in inner[skip:]:
                tb = t0 + k * dt
                yield ta, tb, None
                ta = tb
            if skip <= len(inner):
                yield ta, ts[i + 1], i + 1

    def steps_reversed(self):
        """The steps in reverse order, as ``(ta, tb, i)``; here ``i`` is the index of the
        output time equal to ``ta`` (a backward sweep reaches ``ta`` after undoing the
        step), or ``None``."""
        t0, dt, ts = self.t0, self.dt, self.ts
        for i in range(len(ts) - 2, -1, -1):
            tb = ts[i + 1]
            for k in reversed(self.inner[i]):
                ta = t0 + k * dt
                yield ta, tb, None
                tb = ta
            yield ts[i], tb, i

    def __len__(self):
        """Number of steps."""
        return self._starts[-1]


def _inner_range(t0, dt, s, e, tol):
    """Range of k with ``s + tol < t0 + k*dt < e - tol``."""
    k_lo = max(1, math.floor((s - t0) / dt))
    while t0 + k_lo * dt <= s + tol:
        k_lo += 1
    while k_lo > 1 and t0 + (k_lo - 1) * dt > s + tol:
        k_lo -= 1
    k_hi = max(k_lo - 1, math.ceil((e - t0) / dt))
    while k_hi >= k_lo and t0 + k_hi * dt >= e - tol:
        k_hi -= 1
    while t0 + (k_hi + 1) * dt < e - tol:
        k_hi += 1
    return range(k_lo, k_hi + 1)
