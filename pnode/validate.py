"""Argument checks, run before PETSc is touched; each error names the argument."""
import math
import numbers
import re

import torch

from .methods import OPTION_KEYS

INT32_MAX = 2**31 - 1  # PETSc's indices (PetscInt) are 32-bit in this build
DEFAULT_MAX_STEPS = 10**6  # a finite default, so an absurd step size cannot run forever
JACOBIANS = ("auto", "block", "matrix-free", "dense")  # auto (= None): blocks where the field allows
NORMS = ("rms", "max")  # options["norm"] -> PETSc's -ts_adapt_wnormtype 2 / infinity


def _times(values):
    """Finite times as a sorted list of floats (any order, any 1-D container)."""
    if isinstance(values, torch.Tensor):
        if values.dim() > 1:
            raise ValueError(f"got shape {tuple(values.shape)}")
        values = values.detach().to(torch.float64).cpu().reshape(-1).tolist()
    out = sorted(float(x) for x in values)
    if not all(math.isfinite(x) for x in out):
        raise ValueError("not finite")
    return out


def check_t(t):
    """``t`` as a list of Python floats; must be 1-D, finite and strictly monotone."""
    if isinstance(t, torch.Tensor):
        if t.is_complex():
            raise TypeError(f"t must be real, got {t.dtype}")
        if t.dim() != 1:
            raise ValueError(f"t must be a 1-D tensor of times, got shape {tuple(t.shape)}")
        if t.requires_grad:
            t = t.detach()
        times = [float(x) for x in t.to(torch.float64).cpu()]
    else:
        try:
            times = [float(x) for x in t]
        except (TypeError, ValueError):
            raise TypeError(f"t must be a 1-D tensor or sequence of times, got {type(t).__name__}") from None
    if not times:
        raise ValueError("t must contain at least one time")
    if not all(math.isfinite(x) for x in times):
        raise ValueError("t must be finite")
    if len(times) > 1:
        d = [b - a for a, b in zip(times, times[1:])]
        if not (all(x > 0 for x in d) or all(x < 0 for x in d)):
            raise ValueError("t must be strictly increasing or strictly decreasing")
    return times


def check_tolerance(value, name):
    """A positive finite float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return value


def check_options(options, method):
    """Validate the ``options`` dict against ``method``; returns a copy."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    unknown = set(options) - set(OPTION_KEYS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; valid keys: {', '.join(OPTION_KEYS)}")
    out = dict(options)
    for key in ("step_size", "first_step"):
        if key in out:
            v = out[key]
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (v > 0 and math.isfinite(v)):
                raise ValueError(f"options['{key}'] must be a positive number (the direction follows t), got {v!r}")
            out[key] = float(v)
    for key in ("min_step", "max_step"):
        if key in out:
            v = out[key]
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v >= 0 or math.isnan(v):
                raise ValueError(f"options['{key}'] must be a non-negative number, got {v!r}")
            out[key] = float(v)
    if out.get("min_step", 0) > out.get("max_step", math.inf):
        raise ValueError(f"options['min_step']={out['min_step']} exceeds options['max_step']={out['max_step']}")
    for key in ("step_t", "jump_t"):
        if key in out:
            try:
                out[key] = _times(out[key])
            except (TypeError, ValueError) as err:
                raise ValueError(f"options['{key}'] must be a 1-D tensor or sequence of finite times: {err}") from None
    if "perturb" in out and not isinstance(out["perturb"], bool):
        raise TypeError(f"options['perturb'] must be True or False, got {out['perturb']!r}")
    if "grid_constructor" in out:
        if not callable(out["grid_constructor"]):
            raise TypeError("options['grid_constructor'] must be callable: grid_constructor(func, y0, t) -> times")
        if "step_size" in out:
            raise ValueError("options['grid_constructor'] and options['step_size'] both set the steps: give one")
    if "norm" in out and out["norm"] not in NORMS:
        what = "a callable" if callable(out["norm"]) else repr(out["norm"])
        raise ValueError(f"options['norm'] must be one of {', '.join(map(repr, NORMS))} (PETSc's weighted error norms: "
                         f"RMS, torchdiffeq's default, or max), got {what}; PETSc's step controller cannot call a "
                         "Python norm: TSAdapt measures the error with its own weighted norm (-ts_adapt_wnormtype) "
                         "and petsc4py has no Python TSAdapt to replace it (see docs/guides/from_torchdiffeq.md)")
    if "dtype" in out and out["dtype"] not in (torch.float32, torch.float64):
        raise TypeError(f"options['dtype'] must be torch.float32 or torch.float64, got {out['dtype']!r} (pnode "
                        "keeps times in float64 whatever it is)")
    if "interp" in out and out["interp"] not in ("linear", "cubic"):
        raise ValueError(f"options['interp'] must be 'linear' or 'cubic', got {out['interp']!r} (pnode steps onto "
                         "every output time, so nothing is interpolated)")
    if "max_num_steps" in out:
        v = out["max_num_steps"]
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 1 <= v <= INT32_MAX:
            raise ValueError(f"options['max_num_steps'] must be a positive int below 2**31, got {v!r}")
    if "theta" in out:
        v = out["theta"]
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < v <= 1:
            raise ValueError(f"options['theta'] must be a number in (0, 1], got {v!r}")
    if "endpoint" in out and not isinstance(out["endpoint"], bool):
        raise TypeError(f"options['endpoint'] must be True or False, got {out['endpoint']!r}")
    if out.get("jacobian") not in (None,) + JACOBIANS:
        raise ValueError(f"options['jacobian'] must be one of {', '.join(JACOBIANS)}, got {out['jacobian']!r}")
    if "mass" in out and isinstance(out["mass"], torch.Tensor) and not out["mass"].is_floating_point():
        raise TypeError(f"options['mass'] must be a real floating-point tensor, got {out['mass'].dtype}")
    if "preconditioner" in out and not callable(out["preconditioner"]):
        raise TypeError("options['preconditioner'] must be callable: prec(t, y, shift, r, transpose) -> z")
    if "func_explicit" in out and not callable(out["func_explicit"]):
        raise TypeError("options['func_explicit'] must be callable")
    for key in out:
        if key not in method.option_keys:
            raise ValueError(f"options['{key}'] needs an implicit method, not {method.name!r}")
    return out


def check_prefix(prefix):
    """A PETSc options prefix: letters, digits and underscores, not starting with a digit."""
    if prefix is None:
        return None
    if not isinstance(prefix, str):
        raise TypeError("prefix must be a string")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise ValueError(f"prefix={prefix!r} is not a PETSc options prefix: use letters, digits and "
                         "underscores, without the leading dash (e.g. 'enc_')")
    return prefix


def check_end_time(t1, name="t1"):
    """A finite, non-zero end time."""
    if isinstance(t1, bool) or not isinstance(t1, numbers.Real):
        raise TypeError(f"{name} must be a number, got {t1!r}")
    t1 = float(t1)
    if not math.isfinite(t1) or t1 == 0:
        raise ValueError(f"{name} must be finite and non-zero, got {t1!r}")
    return t1
