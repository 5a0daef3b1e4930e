"""``sdeint`` and ``sdeint_adjoint``: argument checking and the backprop solve."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn

from .brownian import BrownianInterval
from .grid import TimeGrid
from .methods import SDEMethod, get_method, methods_for, reversible_methods
from .solvers import NOISE_TYPES, SDE_TYPES, SDEFunctions

__all__ = ["sdeint", "sdeint_adjoint"]

@dataclass
class Problem:
    """A validated solve: everything the stepping loops need."""

    funcs: SDEFunctions
    y0: torch.Tensor
    ts: list          # output times, strictly increasing floats
    grid: TimeGrid    # the steps
    method: SDEMethod
    bm: object        # callable (ta, tb) -> dW
    dw_shape: tuple = None

    def increment(self, ta, tb):
        """Brownian increment over ``[ta, tb]``, checked on first use."""
        dw = self.bm(ta, tb)
        if self.dw_shape is None:
            expected = self._expected_dw_shape()
            if not isinstance(dw, torch.Tensor):
                raise TypeError(f"bm must return a torch.Tensor, got {type(dw).__name__}")
            if tuple(dw.shape) != expected:
                raise ValueError(
                    f"bm returned increments of shape {tuple(dw.shape)} but noise_type="
                    f"{self.funcs.noise_type!r} with y0 of shape {tuple(self.y0.shape)} "
                    f"needs {expected}")
            if dw.dtype != self.y0.dtype:
                raise TypeError(f"bm has dtype {dw.dtype} but y0 has dtype {self.y0.dtype}")
            self.dw_shape = expected
        return dw

    def _expected_dw_shape(self):
        b, d = self.y0.shape
        nt = self.funcs.noise_type
        if nt == "diagonal":
            return (b, d)
        if nt == "scalar":
            return (b, 1)
        if self.funcs.m is None:  # g not evaluated yet: do it to learn m
            with torch.no_grad():
                self.funcs.g(self.ts[0], self.y0)
        return (b, self.funcs.m)


def sdeint(sde, y0, ts, bm=None, method="reversible_heun", dt=1e-3, *, adaptive=False,
           names=None):
    """Solve an SDE with fixed steps and backpropagate through the solver's operations.

    Args:
        sde: object (usually an ``nn.Module``) with ``f(t, y)`` (drift, shape ``(b, d)``),
            ``g(t, y)`` (diffusion; shape by noise type, see :mod:`pnode.sde.solvers`),
            and attributes ``noise_type`` (``"diagonal"``, ``"additive"``, ``"scalar"``,
            ``"general"``) and ``sde_type`` (``"stratonovich"`` or ``"ito"``).
        y0: initial state, shape ``(b, d)``, float32 or float64.
        ts: strictly increasing 1-D tensor (or sequence) of output times.
        bm: Brownian motion: any callable ``bm(ta, tb)`` returning the increment
            ``W(tb) - W(ta)`` of shape ``(b, m)`` (``m = d`` for diagonal, 1 for scalar
            noise), e.g. :class:`pnode.BrownianInterval` or torchsde's. ``None`` makes a
            ``BrownianInterval`` over ``[ts[0], ts[-1]]`` seeded from torch's global
            generator.
        method: ``"reversible_heun"`` (default), ``"euler_heun"``, ``"midpoint"``
            (Stratonovich) or ``"euler"`` (Euler–Maruyama, Ito; alias
            ``"euler_maruyama"``).
        dt: step size (> 0, time units of ``ts``). Steps sit at ``ts[0] + k*dt``; the
            last step before each output time is shortened to land on it.
        adaptive: accepted for torchsde compatibility; only ``False`` is supported.
        names: optional torchsde-style renaming of the methods, e.g.
            ``{"drift": "h", "diffusion": "sigma"}``.

    Returns:
        Tensor of shape ``(len(ts), b, d)``, ``ys[0] == y0``.
    """
    prob = _prepare(sde, y0, ts, bm, method, dt, adaptive, names)
    if len(prob.ts) == 1:
        return y0.unsqueeze(0).clone()
    return solve(prob, prob.y0)


def sdeint_adjoint(sde, y0, ts, bm=None, method="reversible_heun", dt=1e-3, *,
                   adjoint_method=None, adjoint_params=None, adaptive=False, names=None):
    """Like :func:`sdeint`, with gradients from the reversible Heun adjoint.

    The backward pass runs the reversible Heun step algebraically backwards to recover
    the forward trajectory (Kidger et al. 2021, Algorithm 2), so its gradients equal
    ``sdeint``'s to round-off while memory does not grow with the number of steps.

    Args:
        method: must be ``"reversible_heun"``; other methods have no algebraically
            reversible adjoint, so they raise ``ValueError`` (use :func:`sdeint`).
        adjoint_method: ``None``, ``"reversible_heun"`` or torchsde's
            ``"adjoint_reversible_heun"`` (all the same thing).
        adjoint_params: tensors to differentiate with respect to (besides ``y0``);
            default ``sde.parameters()``. Tensors used by ``sde`` but not listed get no
            gradient.

    The other arguments are as for :func:`sdeint`.

    Returns:
        Tensor of shape ``(len(ts), b, d)``.
    """
    from .adjoint import reversible_heun_adjoint

    prob = _prepare(sde, y0, ts, bm, method, dt, adaptive, names)
    if not prob.method.reversible:
        use = " or ".join(f"method={n!r}" for n in reversible_methods())
        raise ValueError(
            f"sdeint_adjoint: method={method!r} has no algebraically reversible adjoint; "
            f"use {use}, or sdeint(...) to backpropagate through {method!r}")
    if adjoint_method not in prob.method.adjoint_names:
        raise ValueError(f"sdeint_adjoint: adjoint_method must be one of "
                         f"{list(prob.method.adjoint_names)}, got {adjoint_method!r}")
    if adjoint_params is None:
        adjoint_params = tuple(sde.parameters()) if isinstance(sde, nn.Module) else ()
    else:
        adjoint_params = tuple(adjoint_params)
        for p in adjoint_params:
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"adjoint_params must contain tensors, got {type(p).__name__}")
    if len(prob.ts) == 1:
        return y0.unsqueeze(0).clone()
    return reversible_heun_adjoint(prob, adjoint_params)


def solve(prob, y0):
    """Run ``prob``'s stepper from ``y0``; returns the states at the output times."""
    funcs, step = prob.funcs, prob.method.step
    state = prob.method.init(funcs, prob.ts[0], y0)
    outs = [y0]
    for ta, tb, i in prob.grid.steps():
        state = step(funcs, ta, tb, state, prob.increment(ta, tb))
        if i is not None:
            outs.append(state[0])
    return torch.stack(outs)


# ---------------------------------------------------------------------- validation


def _prepare(sde, y0, ts, bm, method, dt, adaptive, names):
    y0 = _check_y0(y0)
    ts, eps = _check_ts(ts)
    dt = _check_dt(dt)
    if adaptive:
        raise ValueError("adaptive=True is not supported: pnode's SDE solvers take fixed steps dt")
    method = _check_method(method)
    noise_type, sde_type = _check_sde(sde)
    if method.sde_type != sde_type:
        raise ValueError(
            f"method={method.name!r} solves {method.sde_type} SDEs but sde.sde_type="
            f"{sde_type!r}; use one of {methods_for(sde_type)} for {sde_type} SDEs")
    funcs = _CheckedFunctions(sde, noise_type, y0, names)
    prob = Problem(funcs, y0, ts, TimeGrid(ts, dt, eps), method, None)
    if len(ts) > 1:
        prob.bm = _check_bm(bm, prob)
    return prob


def _check_y0(y0):
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"y0 must be a torch.Tensor, got {type(y0).__name__}")
    if y0.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"y0 must have dtype torch.float32 or torch.float64, got {y0.dtype}")
    if y0.dim() != 2:
        raise ValueError(f"y0 must have shape (batch, d), got shape {tuple(y0.shape)}")
    return y0


def _check_ts(ts):
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


def _check_dt(dt):
    if isinstance(dt, torch.Tensor) and dt.numel() == 1:
        dt = dt.item()
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real):
        raise TypeError(f"dt must be a positive number, got {dt!r}")
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be positive and finite, got {dt}")
    return dt


def _check_method(method):
    return get_method(method)


def _check_sde(sde):
    noise_type = getattr(sde, "noise_type", None)
    sde_type = getattr(sde, "sde_type", None)
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"sde.noise_type must be one of {list(NOISE_TYPES)}, got {noise_type!r}")
    if sde_type not in SDE_TYPES:
        raise ValueError(f"sde.sde_type must be one of {list(SDE_TYPES)}, got {sde_type!r}")
    return noise_type, sde_type


def _check_bm(bm, prob):
    y0, ts = prob.y0, prob.ts
    if bm is None:
        b, d = y0.shape
        nt = prob.funcs.noise_type
        if nt == "diagonal":
            m = d
        elif nt == "scalar":
            m = 1
        else:
            with torch.no_grad():
                prob.funcs.g(ts[0], y0)
            m = prob.funcs.m
        entropy = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        bm = BrownianInterval(ts[0], ts[-1], size=(b, m), dtype=y0.dtype, device=y0.device,
                              entropy=entropy)
        bm._adopt_grid(prob.grid)  # a tree node on every step: O(1) work per query
        return bm
    if not callable(bm):
        raise TypeError(f"bm must be callable as bm(ta, tb), got {type(bm).__name__}")
    t0, t1 = getattr(bm, "t0", None), getattr(bm, "t1", None)
    if t0 is not None and t1 is not None:
        if float(t0) > ts[0] or float(t1) < ts[-1]:
            raise ValueError(f"bm covers [{float(t0)}, {float(t1)}] but ts spans "
                             f"[{ts[0]}, {ts[-1]}]")
    if isinstance(bm, BrownianInterval):
        # A hint-less interval would bisect down to float resolution at every
        # non-dyadic step; give it our grid if it has not been used yet.
        bm._adopt_grid(prob.grid)
    return bm


class _CheckedFunctions(SDEFunctions):
    """:class:`SDEFunctions` that checks output shapes on the first evaluations."""

    def __init__(self, sde, noise_type, y0, names):
        super().__init__(sde, noise_type, y0.dtype, y0.device, names)
        self.m = None
        self._f_ok = False
        self._g_ok = False

    def _check_f(self, f, y):
        if not isinstance(f, torch.Tensor) or f.shape != y.shape:
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"sde.f returned shape {shape} but the state has shape "
                             f"{tuple(y.shape)}")
        self._f_ok = True

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
        self._g_ok = True

    def f(self, t, y):
        out = super().f(t, y)
        if not self._f_ok:
            self._check_f(out, y)
        return out

    def g(self, t, y):
        out = super().g(t, y)
        if not self._g_ok:
            self._check_g(out, y)
        return out

    def f_and_g(self, t, y):
        f, g = super().f_and_g(t, y)
        if not self._f_ok:
            self._check_f(f, y)
        if not self._g_ok:
            self._check_g(g, y)
        return f, g
