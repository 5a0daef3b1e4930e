"""torchsde's other Brownian motions, each a thin layer over :class:`BrownianInterval`.

- :class:`BrownianPath` and :class:`BrownianTree`: a point query ``bm(t)`` returns the
  value ``w0 + W(t) - W(t0)`` rather than an increment (their historical API);
- :class:`ReverseBrownian`: the same path in reversed time, ``bm(ta, tb)`` is the base
  motion's increment over ``[-tb, -ta]`` (to solve an SDE backwards in time);
- :func:`brownian_interval_like`: an interval shaped like a given tensor.
"""

from __future__ import annotations

from .brownian import BrownianInterval
from .brownian_base import BaseBrownian

__all__ = ["BaseBrownian", "BrownianPath", "BrownianTree", "ReverseBrownian",
           "brownian_interval_like"]


class _Wrapped(BaseBrownian):
    """A Brownian motion delegating to ``self._base``."""

    __slots__ = ()

    @property
    def dtype(self):
        return self._base.dtype

    @property
    def device(self):
        return self._base.device

    @property
    def shape(self):
        return self._base.shape

    @property
    def levy_area_approximation(self):
        return self._base.levy_area_approximation


class ReverseBrownian(_Wrapped):
    """``base`` in reversed time: ``bm(ta, tb) == base(-tb, -ta)`` (not negated: an SDE
    solved backwards negates its drift and diffusion instead, as torchsde does).

    Args:
        base_brownian: any :class:`BaseBrownian`.
    """

    __slots__ = ("_base",)

    def __init__(self, base_brownian):
        self._base = base_brownian

    @property
    def base_brownian(self):
        """The wrapped motion."""
        return self._base

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None:
            raise ValueError("ReverseBrownian takes interval queries bm(ta, tb)")
        return self._base(-tb, -ta, return_U=return_U, return_A=return_A)

    def __repr__(self):
        return f"ReverseBrownian(base_brownian={self._base!r})"


class _ValueQueries(_Wrapped):
    """A :class:`BrownianInterval` whose point queries return ``w0 + W(t) - W(t0)``."""

    __slots__ = ("_base", "_w0")

    def __call__(self, t, tb=None, return_U=False, return_A=False):
        out = self._base(t, tb, return_U=return_U, return_A=return_A)
        if tb is None and not return_U and not return_A:
            out = out + self._w0
        return out

    def __repr__(self):
        return f"{type(self).__name__}(interval={self._base!r})"


class BrownianPath(_ValueQueries):
    """Brownian motion on ``[t0, t0 + 1]`` started at ``w0`` (torchsde's
    ``BrownianPath``), keeping every computed value (unbounded cache); an interval with
    the default tree, split at the queries (the path depends on their order).

    Args:
        t0: initial time.
        w0: initial value; its shape, dtype and device are the motion's.
        window_size: unused (torchsde's deprecated argument).
    """

    def __init__(self, t0, w0, window_size=8):
        t0 = float(t0)
        self._w0 = w0
        self._base = BrownianInterval(t0=t0, t1=t0 + 1, size=w0.shape, dtype=w0.dtype,
                                      device=w0.device, cache_size=None)


class BrownianTree(_ValueQueries):
    """Brownian motion from ``(t0, w0)`` to ``(t1, w1)`` determined by ``entropy`` alone,
    whatever the order of the queries (torchsde's ``BrownianTree``: an interval with
    ``halfway_tree=True``; slower per new point than :class:`BrownianPath`).

    Args:
        t0, w0: initial time and value (``w0`` fixes shape, dtype, device).
        t1: terminal time (default ``t0 + 1``).
        w1: value at ``t1`` (default: drawn).
        entropy: integer seed (default: drawn from torch's generator).
        tol: resolution of the search in time.
        pool_size, cache_depth, safety: unused (torchsde's tuning knobs).
    """

    def __init__(self, t0, w0, t1=None, w1=None, entropy=None, tol=1e-6, pool_size=24,
                 cache_depth=9, safety=None):
        t0 = float(t0)
        t1 = t0 + 1 if t1 is None else float(t1)
        self._w0 = w0
        self._base = BrownianInterval(t0=t0, t1=t1, size=w0.shape, dtype=w0.dtype,
                                      device=w0.device, entropy=entropy, tol=tol,
                                      pool_size=pool_size, halfway_tree=True,
                                      W=None if w1 is None else w1 - w0)


def brownian_interval_like(y, t0=0.0, t1=1.0, size=None, dtype=None, device=None, **kwargs):
    """A :class:`BrownianInterval` with ``y``'s shape, dtype and device (each
    overridable); ``kwargs`` go to the constructor."""
    return BrownianInterval(t0=t0, t1=t1, size=y.shape if size is None else size,
                            dtype=y.dtype if dtype is None else dtype,
                            device=y.device if device is None else device, **kwargs)
