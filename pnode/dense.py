"""torchdiffeq's ``odeint_dense``: the solution at any time of ``[t0, t1]``, differentiable.

torchdiffeq 0.2.5 keeps dopri5's continuous extension of every accepted step and returns
a function evaluating it. pnode does the same on its own solve: a first solve (no graph)
finds the accepted steps, a second one returns the states at every step boundary with
PETSc's exact discrete adjoint, and on each step the interpolant is torchdiffeq's: the
quartic through ``y_i``, ``y_{i+1}``, their slopes and dopri5's midpoint value (Shampine's
coefficients), the midpoint from a dopri5 step taken in torch from ``y_i``. Gradients
reach ``y0``, the parameters of ``func`` and ``t_eval``.
"""
import torch

from .functional import cached_solver

# Dormand-Prince (torchdiffeq's dopri5): nodes, stage weights and the weights of the
# solution at the step's midpoint (Shampine), for the continuous extension.
_ALPHA = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_BETA = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_C_MID = (6025192743 / 30085553152 / 2, 0.0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
          187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2)


def odeint_dense(func, y0, t0, t1, *, rtol=1e-7, atol=1e-9, method=None, options=None, **kwargs):
    """Solve ``dy/dt = func(t, y)`` from ``y0`` at ``t0`` to ``t1``; return a function
    giving the solution anywhere in between (torchdiffeq's ``odeint_dense``).

    Args:
        func: the vector field ``func(t, y)``.
        y0: initial state, a Tensor (as in torchdiffeq, not a tuple).
        t0, t1: start and end times (0-d tensors or floats; ``t1 < t0`` integrates
            backwards). Not differentiated.
        rtol, atol, method, options: as for :func:`pnode.odeint` (default ``dopri5``);
            any method works, the interpolant is dopri5's on the steps taken.
        **kwargs: the other keywords of :func:`pnode.odeint` (``adjoint_params``,
            ``checkpoint``, ``petsc_options``).

    Returns:
        ``dense_output_fn(t_eval)``: ``t_eval`` a 0-d tensor (or float) in ``[t0, t1]``
        gives a tensor shaped like ``y0``; a 1-D tensor of times gives
        ``(len(t_eval), *y0.shape)``. Differentiable with respect to ``y0``, the
        parameters of ``func`` and ``t_eval``. Costs two solves plus six evaluations of
        ``func`` per step (the midpoints), all kept for the backward pass.
    """
    if not isinstance(y0, torch.Tensor):
        raise TypeError("odeint_dense: y0 must be a Tensor (tuple states are not supported, as in torchdiffeq)")
    a, b = float(t0), float(t1)
    if a == b:
        raise ValueError(f"odeint_dense: t0 and t1 must differ, got t0={a}, t1={b}")
    # the second solve returns the states on the first one's steps: it must stop on them
    options = {**(options or {}), "interpolate": False}
    solver = cached_solver(func, caller="odeint_dense", rtol=rtol, atol=atol, method=method, options=options,
                           **kwargs)
    with torch.no_grad():
        solver(y0.detach(), torch.tensor([a, b], dtype=torch.float64))
    grid = solver.step_times.to(torch.float64)
    return _Dense(func, grid, solver(y0, grid))


class _Dense:
    """The piecewise quartic of :func:`odeint_dense` over ``grid`` (monotone, float64)."""

    def __init__(self, func, grid, ys):
        t = grid.to(ys.dtype)
        slopes = [func(t[i], ys[i]) for i in range(len(t))]
        self.coeffs = [_quartic(func, t[i], t[i + 1], ys[i], ys[i + 1], slopes[i], slopes[i + 1])
                       for i in range(len(t) - 1)]
        self.increasing = bool(grid[-1] > grid[0])
        self.grid = grid if self.increasing else grid.flip(0)  # increasing, for searchsorted
        self.dtype = ys.dtype

    def __call__(self, t_eval):
        t_eval = torch.as_tensor(t_eval, dtype=torch.float64 if not isinstance(t_eval, torch.Tensor) else None)
        if t_eval.dim() > 1:
            raise ValueError(f"t_eval must be a 0-d or 1-D tensor of times, got shape {tuple(t_eval.shape)}")
        lo, hi = float(self.grid[0]), float(self.grid[-1])
        values = t_eval.detach().reshape(-1).to(torch.float64).cpu()
        if bool(((values < lo) | (values > hi)).any()):
            raise ValueError(f"t_eval must lie between t0 and t1 ([{lo}, {hi}]), got {values.tolist()}")
        k = (torch.searchsorted(self.grid, values, side="right") - 1).clamp(0, len(self.grid) - 2)
        if not self.increasing:
            k = len(self.grid) - 2 - k  # interval index in solve order
        out = [self._at(int(i), x) for i, x in zip(k, t_eval.reshape(-1))]
        return out[0] if t_eval.dim() == 0 else torch.stack(out)

    def _at(self, i, t):
        t_a, t_b, coeffs = self.coeffs[i]
        x = ((t - t_a) / (t_b - t_a)).to(self.dtype)
        total, power = coeffs[0], x
        for c in coeffs[1:]:
            total = total + power * c
            power = power * x
        return total


def _quartic(func, t_a, t_b, y_a, y_b, f_a, f_b):
    """torchdiffeq's ``_interp_fit``: coefficients ``[e, d, c, b, a]`` of the quartic in
    ``x = (t - t_a)/(t_b - t_a)`` through ``y_a``, ``y_b`` with slopes ``f_a``, ``f_b`` and
    dopri5's midpoint value."""
    dt = t_b - t_a
    y_mid = _dopri5_midpoint(func, t_a, dt, y_a, f_a)
    a = 2 * dt * (f_b - f_a) - 8 * (y_b + y_a) + 16 * y_mid
    b = dt * (5 * f_a - 3 * f_b) + 18 * y_a + 14 * y_b - 32 * y_mid
    c = dt * (f_b - 4 * f_a) - 11 * y_a - 5 * y_b + 16 * y_mid
    d = dt * f_a
    return t_a, t_b, [y_a, d, c, b, a]


def _dopri5_midpoint(func, t_a, dt, y_a, f_a):
    """y at the step's midpoint from dopri5's stages of the step ``t_a -> t_a + dt``."""
    k = [f_a]
    for alpha, beta in zip(_ALPHA, _BETA):
        y_stage = y_a + dt * sum(w * kj for w, kj in zip(beta, k) if w != 0.0)
        k.append(func(t_a + alpha * dt, y_stage))
    return y_a + dt * sum(w * kj for w, kj in zip(_C_MID, k) if w != 0.0)
