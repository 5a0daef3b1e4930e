"""``sdeint`` and ``sdeint_adjoint``: the public entry points and the problem assembly."""

from __future__ import annotations

import torch

from . import validate
from .adjoint import reversible_heun_adjoint
from .brownian import BrownianInterval
from .grid import TimeGrid
from .problem import Problem

__all__ = ["sdeint", "sdeint_adjoint"]


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
            ``"euler_maruyama"``); declared, with their orders, in
            :mod:`pnode.sde.methods`.
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
    return torch.stack([y0] + [state[0] for _, state in prob.outputs(y0)])


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
    prob = _prepare(sde, y0, ts, bm, method, dt, adaptive, names)
    validate.check_adjoint_method(prob.method, method, adjoint_method)
    adjoint_params = validate.check_adjoint_params(adjoint_params, sde)
    if len(prob.ts) == 1:
        return y0.unsqueeze(0).clone()
    return reversible_heun_adjoint(prob, adjoint_params)


def _prepare(sde, y0, ts, bm, method, dt, adaptive, names):
    """Check the arguments (in the order the messages are documented) and assemble
    the :class:`Problem`."""
    y0 = validate.check_y0(y0)
    ts, eps = validate.check_ts(ts)
    dt = validate.check_dt(dt)
    validate.check_adaptive(adaptive)
    method = validate.check_method(method)
    noise_type, sde_type = validate.check_sde(sde)
    validate.check_method_fits(method, sde_type)
    funcs = validate.CheckedFunctions(sde, noise_type, y0, validate.check_names(names))
    prob = Problem(funcs, y0, ts, TimeGrid(ts, dt, eps), method)
    if len(ts) > 1:
        prob.bm = _default_bm(prob) if bm is None else validate.check_bm(bm, ts)
        if isinstance(prob.bm, BrownianInterval):
            # A hint-less interval would bisect down to float resolution at every
            # non-dyadic step; a tree node on every step of our grid makes each query
            # O(1). It declines when the interval has its own dt or was already queried.
            prob.bm._adopt_grid(prob.grid)
    return prob


def _default_bm(prob):
    """``bm=None``: a fresh path over ``[ts[0], ts[-1]]``, seeded from torch's global
    generator so that ``torch.manual_seed`` reproduces it."""
    size = prob.brownian_shape()
    entropy = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    return BrownianInterval(prob.ts[0], prob.ts[-1], size=size, dtype=prob.y0.dtype,
                            device=prob.y0.device, entropy=entropy)
