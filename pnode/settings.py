"""The user's ``options`` dict (torchdiffeq's interface), validated once and resolved into
typed, immutable settings; no other module reads the raw dict.

:func:`resolve` checks every key against the method (each error names the key) and
returns :class:`Settings`: the step control (:class:`StepSettings`), the forced step
boundaries (:class:`GridSettings`), the implicit solve (:class:`ImplicitSettings`) and
the IMEX split (``func_explicit``).
"""
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import torch

from .methods import OPTION_KEYS

INT32_MAX = 2**31 - 1  # the largest step count PETSc's 32-bit PetscInt can count
DEFAULT_MAX_STEPS = 10**6  # a finite default, so an absurd step size cannot run forever
JACOBIANS = ("auto", "block", "matrix-free", "dense")  # auto: blocks where the field allows
NORMS = ("rms", "max")  # -> PETSc's -ts_adapt_wnormtype 2 / infinity


@dataclass(frozen=True)
class StepSettings:
    """How steps are chosen (user time units).

    Attributes:
        step_size: fixed step, or None for the method's default (adaptive if it can).
        first_step: the first adaptive step, or None for the initial-step heuristic.
        max_num_steps: the most steps a solve may take.
        min_step, max_step: adaptive step limits (0 and inf: none).
        norm: ``"rms"``/``"max"`` error norm, or None for PETSc's default (RMS).
    """

    step_size: Optional[float] = None
    first_step: Optional[float] = None
    max_num_steps: int = DEFAULT_MAX_STEPS
    min_step: float = 0.0
    max_step: float = math.inf
    norm: Optional[str] = None


@dataclass(frozen=True)
class GridSettings:
    """Where steps end: forced step boundaries (torchdiffeq's ``step_t``, ``jump_t``,
    ``grid_constructor``, ``perturb``; times sorted, user units) and whether adaptive
    explicit solves interpolate output times inside their steps (``interpolate``: None
    for the default, see :mod:`pnode.interpolation`)."""

    step_t: Tuple[float, ...] = ()
    jump_t: Tuple[float, ...] = ()
    grid_constructor: Optional[Callable] = None
    perturb: bool = False
    interpolate: Optional[bool] = None

    def interpolates(self, t_grad):
        """Whether a solve interpolates inner output times (when its steps are adaptive
        and explicit): by default unless steps are forced onto given times or ``t``
        needs a gradient; ``options["interpolate"] = True`` with either is an error."""
        forced = bool(self.step_t or self.jump_t or self.grid_constructor is not None or self.perturb)
        if self.interpolate is None:
            return not (forced or t_grad)
        if self.interpolate and forced:
            raise ValueError("options['interpolate']=True cannot be combined with step_t, jump_t, grid_constructor "
                             "or perturb (they place the steps themselves): drop one")
        if self.interpolate and t_grad:
            raise ValueError("options['interpolate']=True with a t that requires grad: gradients with respect to the "
                             "output times need the solver to stop on them (leave options['interpolate'] unset)")
        return self.interpolate


@dataclass(frozen=True, eq=False)
class ImplicitSettings:
    """The implicit solve: theta method, Jacobian, preconditioner, mass matrix, structure.

    Attributes:
        theta, endpoint: the theta method's theta in (0, 1] and endpoint form.
        jacobian: ``"auto"``, ``"block"``, ``"dense"`` or ``"matrix-free"``.
        preconditioner: ``prec(t, y, shift, r, transpose) -> z``, or None.
        mass: ``M`` in ``M y' = f`` (a tensor), or None for the identity.
        linear: the implicit part is declared linear in y with a constant Jacobian
            (checked once per call at a second point): its operator is built and
            factored once per call and shift, and Newton is one linear solve.
        sparsity: the per-sample Jacobian pattern (:class:`Sparsity`), or None.
    """

    theta: float = 0.5
    endpoint: bool = False
    jacobian: str = "auto"
    preconditioner: Optional[Callable] = None
    mass: Optional[Any] = None
    linear: bool = False
    sparsity: Optional["Sparsity"] = None


@dataclass(frozen=True)
class Sparsity:
    """The per-sample Jacobian pattern of ``options["sparsity"]`` (one of two forms).

    Attributes:
        grid: the per-sample grid shape (1-D or 2-D, row-major), or None for an explicit pattern.
        stencil: the stencil's half-width ``s``: point ``i`` may depend on every point
            within ``s`` grid steps along each axis (a box stencil).
        periodic: per axis, whether the grid wraps around.
        rows, cols: the explicit pattern (0-based indices within one sample), or None.
    """

    grid: Optional[Tuple[int, ...]] = None
    stencil: int = 1
    periodic: Tuple[bool, ...] = ()
    rows: Optional[Tuple[int, ...]] = None
    cols: Optional[Tuple[int, ...]] = None


@dataclass(frozen=True, eq=False)
class Settings:
    """Everything ``options`` said, resolved (see :func:`resolve`).

    Attributes:
        steps, grid, implicit: :class:`StepSettings`, :class:`GridSettings`,
            :class:`ImplicitSettings`.
        func_explicit: the explicit part of an IMEX split, or None.
    """

    steps: StepSettings = StepSettings()
    grid: GridSettings = GridSettings()
    implicit: ImplicitSettings = ImplicitSettings()
    func_explicit: Optional[Callable] = None


def _times(values):
    """Finite times as a sorted tuple of floats (any order, any 1-D container)."""
    if isinstance(values, torch.Tensor):
        if values.dim() > 1:
            raise ValueError(f"got shape {tuple(values.shape)}")
        values = values.detach().to(torch.float64).cpu().reshape(-1).tolist()
    out = sorted(float(x) for x in values)
    if not all(math.isfinite(x) for x in out):
        raise ValueError("not finite")
    return tuple(out)


def _positive(out, key):
    v = out[key]
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (v > 0 and math.isfinite(v)):
        raise ValueError(f"options['{key}'] must be a positive number (the direction follows t), got {v!r}")
    return float(v)


def _non_negative(out, key):
    v = out[key]
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v >= 0 or math.isnan(v):
        raise ValueError(f"options['{key}'] must be a non-negative number, got {v!r}")
    return float(v)


def resolve(options, method):
    """Validate ``options`` (a dict or None) against ``method`` and resolve it.

    Raises:
        TypeError/ValueError naming the offending key.
    """
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    unknown = set(options) - set(OPTION_KEYS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; valid keys: {', '.join(OPTION_KEYS)}")
    _check_accepted(options)
    settings = Settings(steps=_steps(options), grid=_grid(options), implicit=_implicit(options),
                        func_explicit=_callable(options, "func_explicit", "options['func_explicit'] must be callable"))
    for key in options:
        if key not in method.option_keys:
            raise ValueError(f"options['{key}'] needs an implicit method, not {method.name!r}")
    return settings


def _steps(out):
    kw = {k: _positive(out, k) for k in ("step_size", "first_step") if k in out}
    kw.update({k: _non_negative(out, k) for k in ("min_step", "max_step") if k in out})
    if kw.get("min_step", 0) > kw.get("max_step", math.inf):
        raise ValueError(f"options['min_step']={kw['min_step']} exceeds options['max_step']={kw['max_step']}")
    if "max_num_steps" in out:
        v = out["max_num_steps"]
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 1 <= v <= INT32_MAX:
            raise ValueError(f"options['max_num_steps'] must be a positive int below 2**31, got {v!r}")
        kw["max_num_steps"] = int(v)
    if "norm" in out:
        if out["norm"] not in NORMS:
            what = "a callable" if callable(out["norm"]) else repr(out["norm"])
            raise ValueError(f"options['norm'] must be one of {', '.join(map(repr, NORMS))} (PETSc's weighted error "
                             f"norms: RMS, torchdiffeq's default, or max), got {what}; PETSc's step controller "
                             "cannot call a Python norm: TSAdapt measures the error with its own weighted norm "
                             "(-ts_adapt_wnormtype) and petsc4py has no Python TSAdapt to replace it (see "
                             "docs/guides/from_torchdiffeq.md)")
        kw["norm"] = out["norm"]
    return StepSettings(**kw)


def _grid(out):
    kw = {}
    for key in ("step_t", "jump_t"):
        if key in out:
            try:
                kw[key] = _times(out[key])
            except (TypeError, ValueError) as err:
                raise ValueError(f"options['{key}'] must be a 1-D tensor or sequence of finite times: {err}") from None
    kw.update(_flags(out, "perturb", "interpolate"))
    if "grid_constructor" in out:
        kw["grid_constructor"] = _callable(out, "grid_constructor", "options['grid_constructor'] must be callable: "
                                                                    "grid_constructor(func, y0, t) -> times")
        if "step_size" in out:
            raise ValueError("options['grid_constructor'] and options['step_size'] both set the steps: give one")
    return GridSettings(**kw)


def _implicit(out):
    kw = {}
    if "theta" in out:
        v = out["theta"]
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < v <= 1:
            raise ValueError(f"options['theta'] must be a number in (0, 1], got {v!r}")
        kw["theta"] = float(v)
    kw.update(_flags(out, "endpoint"))
    if out.get("jacobian") is not None:
        if out["jacobian"] not in JACOBIANS:
            raise ValueError(f"options['jacobian'] must be one of {', '.join(JACOBIANS)}, got {out['jacobian']!r}")
        kw["jacobian"] = out["jacobian"]
    if "mass" in out:
        if isinstance(out["mass"], torch.Tensor) and not out["mass"].is_floating_point():
            raise TypeError(f"options['mass'] must be a real floating-point tensor, got {out['mass'].dtype}")
        kw["mass"] = out["mass"]
    kw.update(_flags(out, "linear"))
    if out.get("sparsity") is not None:
        kw["sparsity"] = _sparsity(out["sparsity"])
        if kw.get("jacobian", "auto") not in ("auto",):
            raise ValueError(f"options['sparsity'] assembles its own sparse Jacobian: leave options['jacobian'] at "
                             f"'auto', not {kw['jacobian']!r}")
        if out.get("preconditioner") is not None:
            raise ValueError("options['sparsity'] and options['preconditioner'] both precondition the implicit "
                             "solve: give one")
    kw["preconditioner"] = _callable(out, "preconditioner", "options['preconditioner'] must be callable: "
                                                            "prec(t, y, shift, r, transpose) -> z")
    return ImplicitSettings(**kw)


_SPARSITY_FORMS = ("options['sparsity'] must be a dict {'grid': (n,) or (n1, n2), 'stencil': s, 'periodic': bool} "
                   "or a pair (rows, cols) of per-sample indices")


def _sparsity(value):
    """:class:`Sparsity` of ``options["sparsity"]``, each error naming the key."""
    if isinstance(value, dict):
        return _grid_sparsity(value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        try:
            rows, cols = (tuple(int(i) for i in torch.as_tensor(v).reshape(-1).tolist()) for v in value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(_SPARSITY_FORMS) from None
        if len(rows) != len(cols) or not rows or min(rows + cols) < 0:
            raise ValueError("options['sparsity'] = (rows, cols) needs two equally long, non-empty sequences of "
                             "non-negative indices")
        return Sparsity(rows=rows, cols=cols)
    raise TypeError(f"{_SPARSITY_FORMS}, got {type(value).__name__}")


def _grid_sparsity(value):
    unknown = set(value) - {"grid", "stencil", "periodic"}
    if unknown or "grid" not in value:
        raise ValueError(f"{_SPARSITY_FORMS}; got keys {sorted(value)}")
    grid = value["grid"]
    grid = (grid,) if isinstance(grid, numbers.Integral) else grid
    if not isinstance(grid, (tuple, list)) or not 1 <= len(grid) <= 2 or \
            not all(isinstance(g, numbers.Integral) and not isinstance(g, bool) and g > 0 for g in grid):
        raise ValueError(f"options['sparsity']['grid'] must be a 1-D or 2-D shape of positive ints, got {grid!r}")
    stencil = value.get("stencil", 1)
    if isinstance(stencil, bool) or not isinstance(stencil, numbers.Integral) or stencil < 0:
        raise ValueError(f"options['sparsity']['stencil'] must be a non-negative int (the half-width), got {stencil!r}")
    periodic = value.get("periodic", False)
    periodic = (periodic,) * len(grid) if isinstance(periodic, bool) else tuple(periodic)
    if len(periodic) != len(grid) or not all(isinstance(p, bool) for p in periodic):
        raise ValueError(f"options['sparsity']['periodic'] must be a bool or one bool per axis, got {value['periodic']!r}")
    return Sparsity(grid=tuple(int(g) for g in grid), stencil=int(stencil), periodic=periodic)


def _flags(out, *keys):
    """The boolean options among ``keys`` that ``out`` sets, checked to be True or False."""
    flags = {}
    for key in keys:
        if key in out:
            if not isinstance(out[key], bool):
                raise TypeError(f"options['{key}'] must be True or False, got {out[key]!r}")
            flags[key] = out[key]
    return flags


def _callable(out, key, message):
    value = out.get(key)
    if value is not None and not callable(value):
        raise TypeError(message)
    return value


def _check_accepted(out):
    """torchdiffeq's keys pnode accepts without effect: checked, then dropped."""
    if "dtype" in out and out["dtype"] not in (torch.float32, torch.float64):
        raise TypeError(f"options['dtype'] must be torch.float32 or torch.float64, got {out['dtype']!r} (pnode "
                        "keeps times in float64 whatever it is)")
    if "interp" in out and out["interp"] not in ("linear", "cubic"):
        raise ValueError(f"options['interp'] must be 'linear' or 'cubic', got {out['interp']!r} (torchdiffeq's "
                         "fixed-grid interpolation; pnode's fixed steps land on every output time, and its "
                         "adaptive explicit solves interpolate by options['interpolate'])")
