"""Argument checks, run before PETSc is touched; each error names the argument."""
import math
import numbers

import torch

from .methods import OPTION_KEYS


def check_t(t):
    """``t`` as a list of Python floats; must be 1-D, finite and strictly monotone."""
    if isinstance(t, torch.Tensor):
        if t.dim() != 1:
            raise ValueError(f"t must be a 1-D tensor of times, got shape {tuple(t.shape)}")
        if t.requires_grad:
            t = t.detach()
        times = [float(x) for x in t.to(torch.float64).cpu()]
    else:
        try:
            times = [float(x) for x in t]
        except TypeError:
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
    if "max_num_steps" in out:
        v = out["max_num_steps"]
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"options['max_num_steps'] must be a positive int, got {v!r}")
    if "func_explicit" in out and not callable(out["func_explicit"]):
        raise TypeError("options['func_explicit'] must be callable")
    for key in out:
        if key not in method.option_keys:
            raise ValueError(f"options['{key}'] needs an implicit method, not {method.name!r}")
    return out
