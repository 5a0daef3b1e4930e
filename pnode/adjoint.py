"""The autograd Function that connects a solve to torch's backward pass.

Its forward runs :meth:`Integrator.forward <pnode.integrator.Integrator.forward>`; its
backward runs :meth:`Integrator.backward <pnode.integrator.Integrator.backward>` (PETSc's
discrete adjoint, :mod:`pnode.sweep`) and turns the flat gradients into the parameters'
shapes, adding d loss / d t when ``t`` requires grad. This module sits above the
integrator; the PETSc sweep sits below it.
"""
import torch

from .bridge import PETSC_DTYPE
from .errors import SolverError


class _ODEAdjoint(torch.autograd.Function):
    """Forward: PETSc solve. Backward: PETSc discrete adjoint."""

    @staticmethod
    def forward(ctx, integrator, layout, grid, record, interpolate, t, y0_flat, *params):
        ys, rec = integrator.forward(layout, y0_flat, list(grid.times), list(params), record=record,
                                     jumps=grid.jumps, interpolate=interpolate)
        ctx.outputs = grid.outputs
        ctx.integrator, ctx.layout, ctx.rec = integrator, layout, rec
        ctx.t_like = t if t is not None and t.requires_grad else None
        ctx.ys = ys if ctx.t_like is not None else None
        ctx.step_times = integrator.step_times
        # saved through torch so that an in-place change before backward (an optimizer
        # step on a shared parameter) raises torch's own error, not a wrong gradient
        ctx.save_for_backward(y0_flat, *params)
        ctx.fingerprint = _fingerprint(params)
        return ys.to(device=layout.device, dtype=layout.dtype)

    @staticmethod
    def backward(ctx, grad_ys):
        integrator, layout, rec = ctx.integrator, ctx.layout, ctx.rec
        if torch.is_grad_enabled():
            raise RuntimeError("pnode's adjoint is not differentiable: backward(create_graph=True) and "
                               "higher derivatives through odeint/ODESolver are not supported")
        y0_flat = ctx.saved_tensors[0]  # checks the version counters of everything saved
        if _fingerprint(rec.params) != ctx.fingerprint:  # changed through .data: no version bump
            raise RuntimeError("one of the parameters needed for gradient computation has been modified "
                               "(through .data) after pnode's forward solve; call backward before changing "
                               "the parameters")
        if not integrator.holds(rec):
            # The trajectory belongs to another call (the same solver ran again before
            # this backward, or ran without recording): re-solve this call first. Same
            # inputs, same accepted steps, so the gradient is this call's.
            _, rec = integrator.forward(layout, y0_flat, rec.times, rec.params, record=True, jumps=rec.jumps,
                                        interpolate=rec.interpolate)
            if not torch.equal(integrator.step_times, ctx.step_times):
                raise SolverError(_mismatch(integrator.step_times, ctx.step_times), reason="RESOLVE_MISMATCH",
                                  steps=len(integrator.step_times) - 1)
            integrator.stats.recomputed(integrator.stats["steps"])
        grad_y0, grad_p = integrator.backward(rec, grad_ys)
        grad_t = None
        if ctx.t_like is not None:
            grad_t = time_gradient(integrator, layout, rec.times, ctx.ys, grad_ys, grad_y0)[list(ctx.outputs)]
            grad_t = grad_t.to(device=ctx.t_like.device, dtype=ctx.t_like.dtype)
        grads, offset = [], 0
        for p in rec.params:
            k = p.numel()
            grads.append(grad_p[offset:offset + k].reshape(p.shape).to(device=p.device, dtype=p.dtype))
            offset += k
        return (None, None, None, None, None, grad_t, grad_y0.to(device=layout.device, dtype=layout.dtype), *grads)


def time_gradient(integrator, layout, times, ys, grad_ys, grad_y0):
    """d loss / d t for every output time, as for the exact flow ``y(t; t0, y0)``:
    ``dL/dt_k = g_k . f(t_k, y_k)`` for ``k >= 1`` (an output moves with its time), and
    ``dL/dt_0 = -(lambda_0 - g_0) . f(t_0, y_0)`` (shifting the start shifts every later
    output: ``dy(t)/dt_0 = -dy(t)/dy_0 f(t_0, y_0)``), where ``g_k`` is the loss gradient at
    output ``k``, ``lambda_0`` the total gradient with respect to ``y0`` and ``f`` is
    evaluated on the computed solution. This is torchdiffeq's definition; it differs from
    the derivative of the discrete solve by the method's local error.

    Returns:
        float64 tensor of ``len(times)`` entries.
    """
    # beside grad_y0 (a copy of the adjoint Vec: on the host unless PETSc has CUDA):
    # grad_ys and the rates are on the model's device, and CUDA (n,) - CPU (n,) is an error
    g = grad_ys.detach().to(device=grad_y0.device, dtype=PETSC_DTYPE)
    out = torch.zeros(len(times), dtype=PETSC_DTYPE)
    if len(times) == 1:
        return out
    f = integrator.rates(layout, times, ys).to(device=grad_y0.device)
    dots = (g[1:] * f[1:]).sum(1).tolist() + [-float(((grad_y0 - g[0]) * f[0]).sum())]
    dots = [integrator.reducer.sum(x) for x in dots]  # each rank holds its shard of the state
    out[1:] = torch.tensor(dots[:-1], dtype=PETSC_DTYPE)
    out[0] = dots[-1]
    return out


def _fingerprint(params):
    """Exact sums of the parameters' values and squares: a change made through ``.data``
    bumps no version counter, but alters these (O(n_params), small beside a solve)."""
    if not params:
        return None
    with torch.no_grad():
        return torch.stack([torch.stack((p.sum(), (p * p).sum())).double() for p in params]).tolist()


def _mismatch(again, first):
    """Why a re-solve for the backward pass is not the forward it replaces."""
    n, m = len(again) - 1, len(first) - 1
    if n != m:
        what = f"took {n} steps where the forward took {m}"
    else:
        k = int((again != first).nonzero()[0])
        what = (f"took the forward's {m} steps but step {k} ended at t={float(again[k]):.17g} instead of "
                f"{float(first[k]):.17g}")
    return f"re-solving for the backward pass {what} (did the parameters or func change in between?)"


def solve(integrator, layout, y0, grid, params, record=True, t=None, interpolate=False):
    """Run ``integrator`` on ``y0`` over the :class:`~pnode.timegrid.TimeGrid` ``grid``
    and return the states at its output times; differentiable when anything needs a
    gradient (``y0``, one of ``params``, or the output times tensor ``t``).

    With ``record=False`` the forward pass keeps no trajectory and backward re-solves
    first (block-level recomputation). With ``interpolate`` an adaptive explicit solve
    steps freely and the outputs inside its steps are interpolated from the boundary
    states it returns (:mod:`pnode.interpolation`), differentiably.
    """
    y0_flat = layout.flatten(y0)
    t_grad = isinstance(t, torch.Tensor) and t.requires_grad
    if torch.is_grad_enabled() and (y0_flat.requires_grad or bool(params) or t_grad):
        ys = _ODEAdjoint.apply(integrator, layout, grid, record, interpolate, t if t_grad else None, y0_flat,
                               *params)
    else:
        ys, _ = integrator.forward(layout, y0_flat, list(grid.times), params, record=False, jumps=grid.jumps,
                                   interpolate=interpolate)
        ys = ys.to(device=layout.device, dtype=layout.dtype)
    if integrator.stencil is not None:
        ys = integrator.stencil.outputs(ys, integrator.func, layout, params, integrator.stats)
    if grid.extra:
        ys = ys[list(grid.outputs)]
    return layout.unflatten(ys)
