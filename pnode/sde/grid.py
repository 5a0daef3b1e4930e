"""The fixed-step time grid of the SDE solvers.

Steps sit at ``t0 + k*dt`` (``t0 = ts[0]``), computed by multiplication so that round-off
does not accumulate and the points coincide bit for bit with a BrownianInterval built with
the same ``t0`` and ``dt``. Within each output interval ``[ts[i], ts[i+1]]`` the last step
is shortened to land exactly on ``ts[i+1]``. Grid points closer to an output time than a
tiny tolerance are dropped rather than producing a step of round-off length.

The grid is generated lazily (a few Python numbers per output interval), so iterating over
it costs no memory however many steps there are.
"""

from __future__ import annotations

import math


def _tolerance(ts, dt):
    # Relative to dt, and to the magnitude of the times for far-from-zero origins.
    return max(1e-9 * dt, 1e-13 * max(abs(ts[0]), abs(ts[-1])))


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


def steps(ts, dt):
    """Forward steps ``(ta, tb, i)`` over the whole grid.

    ``ts`` is a list of strictly increasing floats, ``dt > 0``. ``i`` is the index of the
    output time equal to ``tb``, or ``None`` when ``tb`` is an interior grid point.
    """
    t0 = ts[0]
    tol = _tolerance(ts, dt)
    for i in range(len(ts) - 1):
        s, e = ts[i], ts[i + 1]
        ta = s
        for k in _inner_range(t0, dt, s, e, tol):
            tb = t0 + k * dt
            yield ta, tb, None
            ta = tb
        yield ta, e, i + 1


def steps_reversed(ts, dt):
    """The steps of :func:`steps` in reverse order, as ``(ta, tb, i)``.

    Here ``i`` is the index of the output time equal to ``ta`` (or ``None``), since a
    backward sweep reaches ``ta`` when it has undone the step.
    """
    t0 = ts[0]
    tol = _tolerance(ts, dt)
    for i in range(len(ts) - 2, -1, -1):
        s, e = ts[i], ts[i + 1]
        tb = e
        for k in reversed(_inner_range(t0, dt, s, e, tol)):
            ta = t0 + k * dt
            yield ta, tb, None
            tb = ta
        yield s, tb, i


def count_steps(ts, dt):
    """Number of steps :func:`steps` takes (without iterating over them)."""
    t0 = ts[0]
    tol = _tolerance(ts, dt)
    return sum(len(_inner_range(t0, dt, ts[i], ts[i + 1], tol)) + 1 for i in range(len(ts) - 1))
