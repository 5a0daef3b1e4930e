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

import torch
from torch import nn

from .methods import get_method, methods_for, reversible_methods
from .solvers import NOISE_TYPES, SDE_TYPES, SDEFunctions

# The keys of torchsde's ``names`` that pnode resolves; torchsde's others (prior_drift,
# ...) serve solvers pnode does not have and pass unused.
_NAME_KEYS = ("drift", "diffusion", "drift_and_diffusion")


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


def check_adaptive(adaptive):
    """``adaptive``: accepted for torchsde's signature, but only falsy values work."""
    if adaptive:
        raise ValueError("adaptive=True is not supported: pnode's SDE solvers take fixed steps dt")


def check_method(method):
    """``method``: a registered name or alias; returns its :class:`SDEMethod`."""
    return get_method(method)


def check_sde(sde):
    """``sde.noise_type`` and ``sde.sde_type``; returns them."""
    noise_type = getattr(sde, "noise_type", None)
    sde_type = getattr(sde, "sde_type", None)
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"sde.noise_type must be one of {list(NOISE_TYPES)}, got {noise_type!r}")
    if sde_type not in SDE_TYPES:
        raise ValueError(f"sde.sde_type must be one of {list(SDE_TYPES)}, got {sde_type!r}")
    return noise_type, sde_type


def check_method_fits(method, sde_type):
    """The :class:`SDEMethod` ``method`` converges to ``sde_type`` (Ito/Stratonovich)."""
    if method.sde_type != sde_type:
        raise ValueError(
            f"method={method.name!r} solves {method.sde_type} SDEs but sde.sde_type="
            f"{sde_type!r}; use one of {methods_for(sde_type)} for {sde_type} SDEs")


def check_names(names):
    """``names``: ``None`` or a mapping (torchsde's renaming of ``f``/``g``); returns a dict."""
    try:
        names = dict(names or {})
    except (TypeError, ValueError) as e:
        raise type(e)(f"names must be a mapping such as {{'drift': 'h'}}, got {names!r}") from None
    for key in _NAME_KEYS:
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


def check_adjoint_method(method, given, adjoint_method):
    """``sdeint_adjoint``'s ``method`` (an :class:`SDEMethod`, spelled ``given`` by the
    caller) is reversible, and ``adjoint_method`` names its adjoint."""
    if not method.reversible:
        use = " or ".join(f"method={n!r}" for n in reversible_methods())
        raise ValueError(
            f"sdeint_adjoint: method={given!r} has no algebraically reversible adjoint; "
            f"use {use}, or sdeint(...) to backpropagate through {given!r}")
    if adjoint_method not in method.adjoint_names:
        raise ValueError(f"sdeint_adjoint: adjoint_method must be one of "
                         f"{list(method.adjoint_names)}, got {adjoint_method!r}")


def check_adjoint_params(adjoint_params, sde):
    """``adjoint_params``: tensors (default ``sde.parameters()``); returns a tuple."""
    if adjoint_params is None:
        return tuple(sde.parameters()) if isinstance(sde, nn.Module) else ()
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
