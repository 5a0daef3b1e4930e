"""Step control, resolved once per solve: fixed or adaptive steps, the first step, and
landing exactly on the output times.

Precedence follows :class:`~pnode.petsc_options.OptionSource`: ``-ts_adapt_type`` and
``-ts_time_step`` (command line or ``petsc_options``) win over ``options["step_size"]``,
``options["first_step"]`` and the method's own default (adaptive when it has an error
estimator).
"""
import math
import warnings

from .errors import user_stacklevel
from .clib import rk_type_has_embedded

_WARNED = set()  # tableaus already reported as fixed-step


class StepControl:
    """How the steps of one solve are chosen.

    Args:
        method: the :class:`~pnode.methods.Method`.
        steps: the solver's :class:`~pnode.settings.StepSettings`.
        source: the solver's :class:`~pnode.petsc_options.OptionSource`.
        rtol, atol: the solver's tolerances (for the initial-step heuristic).

    Attributes:
        adapt_type: PETSc's ``ts_adapt_type`` for the solve (``"none"`` = fixed steps).
        fixed: whether the steps are fixed.
        grid_dt: the fixed step the user asked for (``-ts_time_step`` or
            ``options["step_size"]``), else None.
    """

    def __init__(self, method, steps, source, rtol, atol, open_end=False, ts_type=None):
        self.method, self.steps, self.rtol, self.atol = method, steps, rtol, atol
        self.open_end = open_end  # an event ends the solve, not s[-1] (so no step count to check)
        self._adapt_given = source.get("ts_adapt_type") is not None
        # the tableau the command line chose cannot adapt (decided before PETSc is set up:
        # the workspace, the outputs and the trajectory all depend on it)
        self._no_estimator = not self._adapt_given and _tableau_without_estimator(source, ts_type)
        default_fixed = steps.step_size is not None or not method.adaptive or self._no_estimator
        self.adapt_type = source.get("ts_adapt_type") or ("none" if default_fixed else "basic")
        self.fixed = self.adapt_type == "none"
        self._dt_option = _step_option(source)
        for key in ("ts_rtol", "ts_atol"):  # PETSc accepts negative tolerances silently
            _positive(source, key)
        self.max_steps = steps.max_num_steps
        self.grid_dt = self._dt_option if self._dt_option is not None else steps.step_size
        self._out = None
        self._step = None

    def petsc_defaults(self):
        """The step options PETSc gets: tolerances are the solver's; ``min_step``,
        ``max_step`` and ``norm`` (torchdiffeq's options) are TSAdapt's step limits and
        weighted error norm."""
        opts = {"ts_adapt_type": self.adapt_type, "ts_rtol": self.rtol, "ts_atol": self.atol,
                "ts_max_steps": self.max_steps}
        if self.steps.min_step > 0:
            opts["ts_adapt_dt_min"] = self.steps.min_step
        if math.isfinite(self.steps.max_step):
            opts["ts_adapt_dt_max"] = self.steps.max_step
        if self.steps.norm is not None:
            opts["ts_adapt_wnormtype"] = {"rms": "2", "max": "infinity"}[self.steps.norm]
        return opts

    def first_step(self, s, y0, rhs, rms):
        """The first step size (solver time units) and remember the output times ``s``.

        Args:
            s: output times in solver time (increasing).
            y0: flat float64 initial state.
            rhs: ``rhs(s, u)`` evaluating the whole right-hand side without a graph.
            rms: ``rms(x)``, the global RMS norm (every rank must choose the same step).
        """
        self._out = s
        if self._dt_option is not None:
            dt = self._dt_option
        elif self.steps.step_size is not None:
            dt = self.steps.step_size
        elif self.steps.first_step is not None:
            dt = self.steps.first_step
        elif not self.method.adaptive or self._no_estimator:
            dt = s[-1] - s[0]  # one step per output interval, as torchdiffeq does
        else:
            dt = initial_step(s, y0, rhs, rms, self.rtol, self.atol, self.method.order)
            dt = min(max(dt, self.steps.min_step), self.steps.max_step, s[-1] - s[0])
        dt = float(dt)
        if self.fixed:
            self._check_count(s, dt)
        self._step = dt if self.fixed else None
        return dt

    def _check_count(self, s, dt):
        """Refuse fixed steps that could never finish: more than ``max_num_steps`` of
        them, or steps below the float spacing of the times (they would not advance)."""
        span = s[-1] - s[0]
        implied = span / dt
        too_many = not self.open_end and (implied > self.max_steps or s[-1] - dt == s[-1])
        if too_many or s[0] + dt == s[0]:
            raise ValueError(f"a fixed step of {dt:.6g} implies {implied:.3g} steps over a span of {span:.6g}, "
                             f"more than max_num_steps={self.max_steps} (or below the float resolution of "
                             "the times): use a larger options['step_size'] / -ts_time_step, or raise "
                             "options['max_num_steps']")

    def after_step(self, ts):
        """With fixed steps, PETSc keeps a step that was shortened to land on an output
        time; take the full step again, shortened only to land on the next output time."""
        if self._step is None:
            return
        t = ts.getTime()
        nxt = next((x for x in self._out if x > t), None)
        if nxt is not None:
            gap, h = nxt - t, self._step
            ts.setTimeStep(gap if h >= gap or abs(h - gap) <= 1e-12 * abs(gap) else h)


def _tableau_without_estimator(source, ts_type):
    """Whether the command line chose an RK tableau without an error estimator
    (``-ts_rk_type 4``): adaptive steps would fail at the first step, so the solve takes
    fixed steps instead, which is said once per tableau."""
    name = source.get("ts_rk_type") if ts_type == "rk" else None
    if name is None or rk_type_has_embedded(name):
        return False
    if name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(f"RK tableau {name!r} has no error estimator, so pnode takes fixed steps: one per output "
                      "interval, or -ts_time_step / options['step_size'] (pass -ts_adapt_type none to say so "
                      "yourself)", stacklevel=user_stacklevel())
    return True


def _positive(source, key):
    """Option ``key`` as a positive finite float, or None when it is not given."""
    value = source.get(key)
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"-{key} (petsc_options or command line) must be a number, got {value!r}") from None
    if not (x > 0 and math.isfinite(x)):
        raise ValueError(f"-{key} must be positive and finite (the direction follows t), got {value!r}")
    return x


def _step_option(source):
    """``-ts_time_step`` (or the deprecated ``-ts_dt``) as a positive float, or None."""
    dt = _positive(source, "ts_time_step")
    return dt if dt is not None else _positive(source, "ts_dt")


def initial_step(s, y0, rhs, rms, rtol, atol, order):
    """Hairer-Norsett-Wanner's starting step for an adaptive method of ``order``."""
    span = s[-1] - s[0]
    f0 = rhs(s[0], y0)
    scale = atol + rtol * y0.abs()
    d0, d1 = rms(y0 / scale), rms(f0 / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    f1 = rhs(s[0] + h0, y0 + h0 * f0)
    d2 = rms((f1 - f0) / scale) / h0
    if d2 <= 1e-15 and float(d1) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(float(d1), d2)) ** (1.0 / (order + 1))
    return min(100 * h0, h1, span)


def global_rms(reducer, count):
    """``rms(x)`` over all ranks' entries of ``x`` (``count`` entries in all)."""
    def rms(x):
        return math.sqrt(reducer.sum(float(x.pow(2).sum())) / count)
    return rms
