"""``sdeint`` and ``sdeint_adjoint``: torchsde 0.2.6's entry points, and the problem assembly."""

from __future__ import annotations

import warnings

import torch

from . import validate
from .adjoint import reversible_heun_adjoint
from .brownian import BrownianInterval
from .checkpointed import checkpointed_solve
from .functions import SDEFunctions
from .grid import TimeGrid
from .logqp import LogqpSDE, split_output
from .problem import Problem

__all__ = ["sdeint", "sdeint_adjoint", "pnode_sdeint", "pnode_sdeint_adjoint"]


def sdeint(sde, y0, ts, bm=None, method=None, dt=1e-3, adaptive=False, rtol=1e-5, atol=1e-4,
           dt_min=1e-5, options=None, names=None, logqp=False, extra=False,
           extra_solver_state=None, **unused_kwargs):
    """Solve an SDE and backpropagate through the solver's operations (torchsde's ``sdeint``).

    Args:
        sde: object (usually an ``nn.Module``) with a drift and a diffusion: ``f(t, y)``
            and ``g(t, y)``, or ``f_and_g``, ``g_prod(t, y, v)``, ``f_and_g_prod`` (see
            :mod:`pnode.sde.functions` for shapes), and attributes ``noise_type``
            (``"diagonal"``, ``"additive"``, ``"scalar"``, ``"general"``) and
            ``sde_type`` (``"ito"`` or ``"stratonovich"``).
        y0: initial state, shape ``(b, d)``, float32 or float64.
        ts: strictly increasing 1-D tensor (or sequence) of output times.
        bm: Brownian motion, called as ``bm(ta, tb)`` (and with ``return_U``/``return_A``
            for ``srk``/``log_ode``), returning increments of shape ``(b, m)``; e.g.
            :class:`BrownianInterval` or torchsde's. ``None`` makes a ``BrownianInterval``
            over ``[ts[0], ts[-1]]`` (seeded from torch's generator) with the Lévy area
            the method needs.
        method: ``None`` (torchsde's default: ``srk`` for Itô SDEs with diagonal, scalar
            or additive noise, ``euler`` for Itô with general noise, ``midpoint`` for
            Stratonovich), or one of ``euler``, ``milstein``, ``srk`` (Itô),
            ``midpoint``, ``heun``, ``euler_heun``, ``reversible_heun``, ``milstein``,
            ``log_ode`` (Stratonovich); see :mod:`pnode.sde.methods`.
        dt: step size (> 0, time units of ``ts``); the first step when ``adaptive``.
            Fixed steps sit at ``ts[0] + k*dt``, shortened to land on each output time.
        adaptive: step-doubling error control with ``rtol``, ``atol`` and the smallest
            step ``dt_min`` (steps of ``dt_min`` are accepted whatever their error).
        options: method options: ``grad_free`` (derivative-free Milstein), and pnode's
            ``max_num_steps`` (default 10**6; more fixed steps, or adaptive attempts,
            raise ``ValueError``).
        names: torchsde's renaming of the SDE's methods, keys ``drift``, ``diffusion``,
            ``prior_drift``, ``diffusion_prod``, ``drift_and_diffusion``,
            ``drift_and_diffusion_prod``.
        logqp: also return the log-ratio penalty increments (needs ``sde.h``, the prior
            drift): ``(ys, log_ratio)`` with ``log_ratio`` of shape ``(len(ts) - 1, b)``.
        extra: also return the solver's extra state at ``ts[-1]`` (reversible Heun:
            ``(f, g, z)``; ``()`` for the other methods).
        extra_solver_state: that extra state at ``ts[0]`` (to continue a solve).
        **unused_kwargs: warned about and ignored, as torchsde does.

    Returns:
        ``ys`` of shape ``(len(ts), b, d)`` (``ys[0] == y0``), then ``log_ratio`` if
        ``logqp`` and the extra state if ``extra``, as a tuple.
    """
    _warn_unused(unused_kwargs, "sdeint")
    prob, user_y0 = _prepare(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options,
                             names, logqp)
    state = prob.init_state(prob.y0, _extras(extra_solver_state))
    ys = [state[0]]
    for _, _, i, state in prob.march(state):
        if i is not None:
            ys.append(state[0])
    return _finish(torch.stack(ys), tuple(state[1:]), logqp, extra)


def sdeint_adjoint(sde, y0, ts, bm=None, method=None, adjoint_method=None, dt=1e-3, adaptive=False,
                   adjoint_adaptive=False, rtol=1e-5, adjoint_rtol=1e-5, atol=1e-4,
                   adjoint_atol=1e-4, dt_min=1e-5, options=None, adjoint_options=None,
                   adjoint_params=None, names=None, logqp=False, extra=False,
                   extra_solver_state=None, **unused_kwargs):
    """Like :func:`sdeint`, with exact gradients at bounded memory.

    The gradient is that of the forward computation itself (discretise-then-optimise), so
    it equals backpropagation through :func:`sdeint` to round-off, for every method:

    - ``reversible_heun`` (fixed steps, no ``extra_solver_state``): the step is undone
      algebraically on the way back (Kidger et al. 2021), memory independent of the
      number of steps;
    - every other case: the forward pass keeps the state at about ``sqrt(N)``
      checkpoints out of ``N`` steps; the backward pass re-takes each segment from its
      checkpoint with the same Brownian increments (the Brownian motion reconstructs
      them exactly) and backpropagates through it. Memory: about ``2 sqrt(N)`` states
      plus one segment's graph; cost: one extra forward pass.

    torchsde solves an adjoint SDE backwards instead, whose gradient only approximates
    this one. Its arguments are accepted: ``adjoint_method`` must be ``None`` or one of
    torchsde's method names, and it, ``adjoint_adaptive``, ``adjoint_rtol``,
    ``adjoint_atol`` and ``adjoint_options`` are checked but not used, as there is no
    adjoint SDE to solve.

    Args:
        adjoint_params: tensors to differentiate with respect to (besides ``y0`` and
            ``extra_solver_state``); default ``sde.parameters()``. Tensors used by
            ``sde`` but not listed get no gradient. Changing one in place between the
            forward and the backward pass raises torch's in-place ``RuntimeError``.
        adjoint_options: ``checkpoints``: the number of checkpoints to keep (default
            about ``sqrt(N)``).

    The other arguments and the return value are as for :func:`sdeint`.
    """
    _warn_unused(unused_kwargs, "sdeint_adjoint")
    validate.check_adjoint_method(adjoint_method)
    validate.check_tolerances(adjoint_adaptive, adjoint_rtol, adjoint_atol, dt_min)
    adjoint_params = validate.check_adjoint_params(adjoint_params, sde)
    checkpoints = _checkpoints_option(adjoint_options)
    prob, _ = _prepare(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options,
                       names, logqp)
    params = tuple(p for p in adjoint_params if p.requires_grad)
    extras = _extras(extra_solver_state)
    if prob.method.reversible and not prob.adaptive and extras is None and not extra:
        ys = reversible_heun_adjoint(prob, params)
        state_extra = ()
    else:
        ys, state_extra = checkpointed_solve(prob, extras, params, checkpoints)
    return _finish(ys, state_extra, logqp, extra)


def _warn_unused(unused_kwargs, where):
    if unused_kwargs:
        warnings.warn(f"{where}: unexpected arguments {sorted(unused_kwargs)} are ignored",
                      stacklevel=3)


def _extras(extra_solver_state):
    if extra_solver_state is None:
        return None
    if isinstance(extra_solver_state, torch.Tensor):
        return (extra_solver_state,)
    return tuple(extra_solver_state)


def _checkpoints_option(adjoint_options):
    opts = dict(adjoint_options or {})
    n = opts.get("checkpoints")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"adjoint_options['checkpoints'] must be a positive int, got {n!r}")
    return n


def _finish(ys, state_extra, logqp, extra):
    out = split_output(ys) if logqp else (ys,)
    if extra:
        out = (*out, tuple(state_extra))
    return out[0] if len(out) == 1 else out


def _prepare(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp):
    """Check the arguments (in the order the messages are documented) and assemble the
    :class:`Problem`; returns it and the caller's ``y0``."""
    y0 = validate.check_y0(y0)
    ts, eps = validate.check_ts(ts)
    dt = validate.check_dt(dt)
    rtol, atol, dt_min = validate.check_tolerances(adaptive, rtol, atol, dt_min)
    noise_type, sde_type = validate.check_sde(sde)
    names = validate.check_names(names)
    method = validate.check_method(method, sde_type, noise_type)
    if adaptive and method.name == "euler" and noise_type != "additive":
        # Before the method/SDE checks, as torchsde warns even when those then fail.
        warnings.warn("adaptive stepping with the Euler-Maruyama method is not guaranteed to "
                      "converge to the right solution for non-additive noise", stacklevel=3)
    validate.check_method_fits(method, sde_type, noise_type)
    step_options, max_steps = validate.check_options(options, method)
    user_y0 = y0
    funcs = validate.CheckedFunctions(sde, noise_type, y0, names)
    if logqp:
        funcs = SDEFunctions(LogqpSDE(funcs), noise_type, y0.dtype, y0.device)
        y0 = torch.cat([y0, y0.new_zeros(y0.shape[0], 1)], dim=1)
    grid = None
    if not adaptive:
        grid = TimeGrid(ts, dt, eps)
        validate.check_step_count(grid, max_steps, dt)
    prob = Problem(funcs, y0, ts, grid, method, dt, bool(adaptive), rtol, atol, dt_min,
                   step_options, max_steps)
    if len(ts) > 1:
        prob.bm = _default_bm(prob) if bm is None else validate.check_bm(bm, ts)
        validate.check_bm_levy_area(prob.bm, method)
        if isinstance(prob.bm, BrownianInterval) and grid is not None:
            # A hint-less interval would bisect down to float resolution at every
            # non-dyadic step; a tree node on every step of our grid makes each query
            # O(1). It declines when the interval has its own dt or was already queried.
            prob.bm._adopt_grid(grid)
    return prob, user_y0


def _default_bm(prob):
    """``bm=None``: a fresh path over ``[ts[0], ts[-1]]`` with the Lévy area the method
    needs, seeded from torch's global generator so that ``torch.manual_seed`` reproduces
    it. Like torchsde's, its tree splits at the query points (the default
    ``halfway_tree=False``): an adaptive solve's off-grid points cost about one normal draw
    each, and the adjoint's re-queries find the same tree."""
    size = prob.brownian_shape()
    levy = {"W": "none", "WU": "space-time", "WA": "foster"}[prob.method.needs]
    entropy = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    return BrownianInterval(prob.ts[0], prob.ts[-1], size=size, dtype=prob.y0.dtype,
                            device=prob.y0.device, entropy=entropy, levy_area_approximation=levy)


def _pnode_default(sde, method):
    """pnode's own default method: reversible Heun for a Stratonovich SDE (exact adjoint in
    O(1) memory; pnode's default since its first release), torchsde's otherwise."""
    if method is None and getattr(sde, "sde_type", None) == "stratonovich":
        return "reversible_heun"
    return method


def pnode_sdeint(sde, y0, ts, bm=None, method=None, dt=1e-3, **kwargs):
    """``pnode.sdeint``: :func:`sdeint`, except that a Stratonovich SDE without ``method``
    is solved with reversible Heun (torchsde's default there is midpoint; use
    ``pnode.sde.sdeint`` for torchsde's defaults exactly)."""
    return sdeint(sde, y0, ts, bm, _pnode_default(sde, method), dt, **kwargs)


def pnode_sdeint_adjoint(sde, y0, ts, bm=None, method=None, dt=1e-3, **kwargs):
    """``pnode.sdeint_adjoint``: :func:`sdeint_adjoint`, except that a Stratonovich SDE
    without ``method`` gets reversible Heun and its O(1)-memory algebraic adjoint (torchsde's
    default there is midpoint; use ``pnode.sde.sdeint_adjoint`` for torchsde's defaults)."""
    return sdeint_adjoint(sde, y0, ts, bm, _pnode_default(sde, method), dt=dt, **kwargs)
