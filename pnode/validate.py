"""Argument checks, run before PETSc is touched; each error names the argument."""
import math
import numbers
import re

import torch

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
