"""Argument checks of ``sdeint`` and ``sdeint_adjoint``.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind,
wrong value) with a message that starts from the argument's name (``y0``, ``ts``, ``dt``,
``method``, ``sde.noise_type``, ``bm``, ...), so the caller knows what to fix. Checks of
what ``sde`` and ``bm`` *return* run on their first evaluation
(:class:`CheckedFunctions`, :func:`check_increment`), since only then is it known.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch import nn

from .functions import NAME_KEYS, NOISE_TYPES, SDE_TYPES, SDEFunctions
from .methods import get_method, is_torchsde_name, methods_for

DEFAULT_MAX_STEPS = 10**6  # as for ODEs: a finite default, so an absurd dt cannot run forever


def check_y0(y0):
    """``y0``: a float32/float64 tensor of shape ``(batch, d)``; returned unchanged."""
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"y0 must be a torch.Tensor, got {type(y0).__name__}")
    if y0.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"y0 must have dtype torch.float32 or torch.float64, got {y0.dtype}")
    if y0.dim() != 2:
        raise ValueError(f"y0 must have shape (batch, d), got shape {tuple(y0.shape)}")
    return y0


def check_ts(ts):
    """``ts``: strictly increasing finite real times (1-D tensor or sequence).

    Returns ``(times, eps)``: the times as a list of floats, and their relative precision
    (for :class:`pnode.sde.grid.TimeGrid` to merge grid points with them).
    """
    if not isinstance(ts, torch.Tensor):
        try:
            ts = torch.as_tensor(ts, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"ts must be a 1-D tensor or sequence of times, got {ts!r}") from None
    if ts.dim() != 1:
        raise ValueError(f"ts must be 1-D, got shape {tuple(ts.shape)}")
    if ts.numel() == 0:
        raise ValueError("ts must contain at least one time")
    if ts.is_complex() or ts.dtype == torch.bool:
        raise TypeError(f"ts must be real, got dtype {ts.dtype}")
    # Times given in low precision are only known to that precision: grid points that
    # coincide with them at it are merged (see grid.TimeGrid).
    low_precision = ts.is_floating_point() and ts.dtype != torch.float64
    eps = 4 * torch.finfo(ts.dtype).eps if low_precision else 1e-13
    values = ts.detach().to("cpu", torch.float64).tolist()
    if not all(math.isfinite(t) for t in values):
        raise ValueError("ts must be finite")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError("ts must be strictly increasing (SDEs are solved forward in time)")
    return values, eps


def check_dt(dt):
    """``dt``: a positive finite step (number or one-element tensor); returns a float."""
    if isinstance(dt, torch.Tensor) and dt.numel() == 1:
        dt = dt.item()
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real):
        raise TypeError(f"dt must be a positive number, got {dt!r}")
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be positive and finite, got {dt}")
    return dt


def check_tolerances(adaptive, rtol, atol, dt_min):
    """``rtol``/``atol``/``dt_min``: positive finite numbers, checked when ``adaptive``;
    returns them as floats."""
    out = []
    for name, v in (("rtol", rtol), ("atol", atol), ("dt_min", dt_min)):
        if isinstance(v, torch.Tensor):
            if v.requires_grad:
                raise ValueError(f"{name} must not require gradient")
            v = v.item() if v.numel() == 1 else v
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must be a positive number, got {v!r}")
        v = float(v)
        if adaptive and not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be positive and finite, got {v}")
        out.append(v)
    return out


def check_options(options, method):
    """``options``: ``None`` or a dict of the method's options (``grad_free``) and
    ``max_num_steps``; returns ``(stepper keyword arguments, max_num_steps)``."""
    try:
        options = dict(options or {})
    except (TypeError, ValueError):
        raise TypeError(f"options must be a dict, got {options!r}") from None
    max_steps = options.pop("max_num_steps", DEFAULT_MAX_STEPS)
    if isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral) or max_steps < 1:
        raise ValueError(f"options['max_num_steps'] must be a positive int, got {max_steps!r}")
    step_options = {}
    for key, value in options.items():
        if key in method.options:
            step_options[key] = bool(value)
        elif key != "grad_free":  # torchsde ignores grad_free for methods without it
            warnings.warn(f"options[{key!r}] is not used by method={method.name!r}", stacklevel=4)
    return step_options, int(max_steps)


def check_step_count(grid, max_steps, dt):
    """A fixed-step solve needs at most ``max_steps`` steps (like the ODE solvers'
    ``max_num_steps``), so a tiny ``dt`` fails at once instead of running forever."""
    n = len(grid)
    if n > max_steps:
        span = grid.ts[-1] - grid.ts[0]
        raise ValueError(f"dt={dt:.6g} implies {n} steps over a span of {span:.6g}, more than "
                         f"max_num_steps={max_steps}: use a larger dt, or raise "
                         "options['max_num_steps']")


def check_method(method, sde_type, noise_type):
    """``method``: a registered name or alias, or ``None`` for torchsde's default by
    ``sde_type`` and ``noise_type``; returns its :class:`SDEMethod`."""
    from .methods import default_method
    if method is None:
        method = default_method(sde_type, noise_type)
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {method!r}")
    return get_method(method, sde_type)


def check_sde(sde):
    """``sde.noise_type`` and ``sde.sde_type``; returns them."""
    noise_type = getattr(sde, "noise_type", None)
    sde_type = getattr(sde, "sde_type", None)
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"sde.noise_type must be one of {list(NOISE_TYPES)}, got {noise_type!r}")
    if sde_type not in SDE_TYPES:
        raise ValueError(f"sde.sde_type must be one of {list(SDE_TYPES)}, got {sde_type!r}")
    return noise_type, sde_type


def check_method_fits(method, sde_type, noise_type):
    """The :class:`SDEMethod` ``method`` converges to ``sde_type`` (Itô/Stratonovich)
    and handles ``noise_type``."""
    if method.sde_type != sde_type:
        name = "milstein" if method.name == "milstein_stratonovich" else method.name
        raise ValueError(
            f"method={name!r} solves {method.sde_type} SDEs but sde.sde_type="
            f"{sde_type!r}; use one of {methods_for(sde_type)} for {sde_type} SDEs")
    if noise_type not in method.noise_types:
        raise ValueError(f"method={method.name!r} handles noise types {list(method.noise_types)}, "
                         f"but sde.noise_type={noise_type!r}")


def check_bm_levy_area(bm, method):
    """``bm`` provides what ``method`` needs (the space-time or full Lévy area)."""
    have = getattr(bm, "levy_area_approximation", None)
    if method.needs != "W" and have not in method.levy_areas:
        raise ValueError(f"method={method.name!r} needs a Brownian motion with "
                         f"levy_area_approximation in {list(method.levy_areas)}, but bm has "
                         f"{have!r}")


def check_names(names):
    """``names``: ``None`` or a mapping (torchsde's renaming of ``f``/``g``/...); returns
    a dict."""
    try:
        names = dict(names or {})
    except (TypeError, ValueError) as e:
        raise type(e)(f"names must be a mapping such as {{'drift': 'h'}}, got {names!r}") from None
    for key in NAME_KEYS:
        if key in names and not isinstance(names[key], str):
            raise TypeError(f"names[{key!r}] must be the name of a method of sde, "
                            f"got {names[key]!r}")
    return names


def check_bm(bm, ts):
    """``bm``: callable as ``bm(ta, tb)`` and, when it says so, covering ``ts``."""
    if not callable(bm):
        raise TypeError(f"bm must be callable as bm(ta, tb), got {type(bm).__name__}")
    t0, t1 = getattr(bm, "t0", None), getattr(bm, "t1", None)
    if t0 is not None and t1 is not None:
        if float(t0) > ts[0] or float(t1) < ts[-1]:
            raise ValueError(f"bm covers [{float(t0)}, {float(t1)}] but ts spans "
                             f"[{ts[0]}, {ts[-1]}]")
    return bm


def check_increment(dw, expected, noise_type, y0):
    """What ``bm`` returned: a tensor of shape ``expected`` and ``y0``'s dtype."""
    if not isinstance(dw, torch.Tensor):
        raise TypeError(f"bm must return a torch.Tensor, got {type(dw).__name__}")
    if tuple(dw.shape) != expected:
        raise ValueError(
            f"bm returned increments of shape {tuple(dw.shape)} but noise_type="
            f"{noise_type!r} with y0 of shape {tuple(y0.shape)} needs {expected}")
    if dw.dtype != y0.dtype:
        raise TypeError(f"bm has dtype {dw.dtype} but y0 has dtype {y0.dtype}")


def check_adjoint_method(adjoint_method):
    """``adjoint_method``: ``None`` or one of torchsde's method names. pnode's adjoint
    re-steps the forward method exactly (or reverses reversible Heun), so the name is
    only checked, never used to pick another solver."""
    if adjoint_method is not None and not is_torchsde_name(adjoint_method):
        raise ValueError(f"adjoint_method must be None or a torchsde method name, got "
                         f"{adjoint_method!r}")


def check_adjoint_params(adjoint_params, sde):
    """``adjoint_params``: tensors (default ``sde.parameters()``); returns a tuple."""
    if adjoint_params is None:
        if not isinstance(sde, nn.Module):
            raise ValueError("sde must be an nn.Module for sdeint_adjoint to find its parameters; "
                             "otherwise pass adjoint_params=(...) (or adjoint_params=() for none)")
        return tuple(sde.parameters())
    adjoint_params = tuple(adjoint_params)
    for p in adjoint_params:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"adjoint_params must contain tensors, got {type(p).__name__}")
    return adjoint_params


class CheckedFunctions(SDEFunctions):
    """:class:`SDEFunctions` that checks ``sde.f``/``sde.g`` output shapes on every
    evaluation (a later wrong shape would otherwise broadcast silently), and records
    ``m``, the Brownian size (``None`` until ``g`` ran)."""

    def __init__(self, sde, noise_type, y0, names):
        super().__init__(sde, noise_type, y0.dtype, y0.device, names)
        self.m = None
        self._g_shape = None

    def _check_f(self, f, y):
        if not isinstance(f, torch.Tensor) or f.shape != y.shape:
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"sde.f returned shape {shape} but the state has shape "
                             f"{tuple(y.shape)}")

    def _check_g(self, g, y):
        nt = self.noise_type
        b, d = y.shape
        if not isinstance(g, torch.Tensor):
            raise ValueError(f"sde.g must return a tensor, got {type(g).__name__}")
        if nt == "diagonal":
            ok, want = g.shape == y.shape, f"(batch, d) = {(b, d)}"
        elif nt == "scalar":
            ok, want = tuple(g.shape) == (b, d, 1), f"(batch, d, 1) = {(b, d, 1)}"
        else:
            ok = g.dim() == 3 and tuple(g.shape[:2]) == (b, d)
            want = f"(batch, d, m) = {(b, d)} + (m,)"
        if not ok:
            raise ValueError(f"sde.g returned shape {tuple(g.shape)} but noise_type={nt!r} "
                             f"needs {want}")
        self.m = g.shape[-1] if nt in ("additive", "general") else (d if nt == "diagonal" else 1)
        self._g_shape = g.shape

    def _checked_f(self, f, y):
        if not (isinstance(f, torch.Tensor) and f.shape == y.shape):
            self._check_f(f, y)
        return f

    def _checked_g(self, g, y):
        if self._g_shape is None or not isinstance(g, torch.Tensor):
            self._check_g(g, y)
        elif g.shape != self._g_shape:
            raise ValueError(f"sde.g returned shape {tuple(g.shape)} but earlier {tuple(self._g_shape)}")
        return g

    def f(self, t, y):
        return self._checked_f(super().f(t, y), y)

    def g(self, t, y):
        return self._checked_g(super().g(t, y), y)

    def f_and_g(self, t, y):
        f, g = super().f_and_g(t, y)
        return self._checked_f(f, y), self._checked_g(g, y)

    def _checked_prod(self, gv, y):
        if not (isinstance(gv, torch.Tensor) and gv.shape == y.shape):
            shape = tuple(gv.shape) if isinstance(gv, torch.Tensor) else type(gv).__name__
            raise ValueError(f"sde.g_prod returned shape {shape} but the state has shape "
                             f"{tuple(y.shape)}")
        return gv

    def g_prod(self, t, y, v):
        return self._checked_prod(super().g_prod(t, y, v), y)

    def f_and_g_prod(self, t, y, v):
        f, gv = super().f_and_g_prod(t, y, v)
        return self._checked_f(f, y), self._checked_prod(gv, y)
