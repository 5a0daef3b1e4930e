"""torchdiffeq's step callbacks: methods of ``func`` that pnode calls while it solves.

``func.callback_step(t0, y0, dt)`` before each attempted step,
``func.callback_accept_step(t0, y0, dt)`` / ``func.callback_reject_step(t0, y0, dt)``
after it (adaptive methods only), and the same names with ``_adjoint`` appended during
the backward pass, called after each adjoint step with the adjoint state (the gradient of
the loss with respect to the state at that time) as ``y0``. ``t0`` is a 0-d tensor of user
time, ``dt`` a float (negative for a decreasing ``t``).

PETSc retries a rejected step inside one ``TSStep``, so the rejections of a step are
reported when it is accepted (a ``callback_reject_step`` and a ``callback_step`` for each
retry, with the accepted step's start and size).
"""
import warnings

import torch

from .errors import user_stacklevel
from .bridge import vec_view

FORWARD = ("callback_step", "callback_accept_step", "callback_reject_step")
ADJOINT = tuple(name + "_adjoint" for name in FORWARD)


class StepHooks:
    """The callbacks ``func`` defines, bound to one solve.

    Args:
        hooks: name -> callable.
        layout: the state's :class:`~pnode.bridge.StateLayout`.
        clock: the solve's :class:`~pnode.bridge.Clock`.
    """

    def __init__(self, hooks, layout, clock, progress=None, callback=None, stats=None):
        self.hooks, self.layout, self.clock = hooks, layout, clock
        self.progress, self.callback, self.stats = progress, callback, stats
        self._start = None

    @classmethod
    def of(cls, func, adaptive, layout, clock, progress=None, callback=None, stats=None):
        """The hooks of ``func`` plus the solver's ``progress`` bar (a :class:`Progress`)
        and per-step ``callback(t, y, stats)`` (None if there are none); warns about
        accept/reject hooks a fixed-step solve never calls, as torchdiffeq does."""
        hooks = {n: getattr(func, n) for n in FORWARD + ADJOINT if callable(getattr(func, n, None))}
        if not hooks and progress is None and callback is None:
            return None
        if not adaptive:
            unused = [n for n in hooks if "accept" in n or "reject" in n]
            if unused:
                warnings.warn(f"func defines {', '.join(unused)}, but fixed steps are never accepted or rejected: "
                              "only callback_step(_adjoint) is called", stacklevel=user_stacklevel())
        return cls(hooks, layout, clock, progress, callback, stats)

    @property
    def adjoint(self):
        """Whether any adjoint hook is defined."""
        return any(n in self.hooks for n in ADJOINT)

    def _state(self, vec):
        return self.layout.unflatten(self.layout.to_model(vec_view(vec, "r").clone()))

    def _call(self, name, *args):
        hook = self.hooks.get(name)
        if hook is not None:
            hook(*args)

    def before_step(self, ts):
        """PETSc's pre-step: the step from ``ts``'s time and solution is about to be tried."""
        if not self.hooks:
            return
        t0 = torch.tensor(self.clock.user(ts.getTime()), dtype=torch.float64)
        self._start = (t0, self._state(ts.getSolution()), ts.getStepRejections())
        self._call("callback_step", t0, self._start[1], self.clock.sign * ts.getTimeStep())

    def after_step(self, ts, dt):
        """PETSc's post-step: the step (of solver size ``dt``) was accepted."""
        if self.progress is not None:
            self.progress.update(ts.getTime())
        if self.callback is not None:
            self.callback(self.clock.user(ts.getTime()), self._state(ts.getSolution()), dict(self.stats or {}))
        if self._start is None:
            return
        t0, y0, rejections = self._start
        dt = self.clock.sign * dt
        for _ in range(ts.getStepRejections() - rejections):
            self._call("callback_reject_step", t0, y0, dt)
            self._call("callback_step", t0, y0, dt)
        self._call("callback_accept_step", t0, y0, dt)
        self._start = None

    def after_adjoint_step(self, s, dt, lam):
        """The adjoint reached solver time ``s`` after a step of size ``dt``; ``lam`` the
        adjoint state Vec."""
        t = torch.tensor(self.clock.user(s), dtype=torch.float64)
        lam_state = self._state(lam)
        self._call("callback_step_adjoint", t, lam_state, -self.clock.sign * dt)
        self._call("callback_accept_step_adjoint", t, lam_state, -self.clock.sign * dt)


class Progress:
    """A tqdm bar over the solve's time span (rank 0 only; quiet elsewhere).

    Args:
        span: ``|t[-1] - t[0]|`` (solver time runs from 0 to it).
        desc: the bar's label.
        enabled: False on the ranks that print nothing.
    """

    def __init__(self, span, desc="pnode", enabled=True):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=span, desc=desc, unit="t", leave=False,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| t {n:.4g}/{total:.4g} [{elapsed}<{remaining}]")
        self._at = 0.0

    def update(self, s):
        """The solve reached solver time ``s``."""
        if self.bar is not None:
            self.bar.update(s - self._at)
            self._at = s

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
