"""The adjoint sweep of one recorded forward call, on PETSc.

Runs PETSc's discrete adjoint (TSAdjointSolve, or pnode's replay) one output interval at
a time, the loss gradient at each output time added to the adjoint state in between, so
the gradients are those of the computed discrete solution. Everything it needs comes
from the forward's :class:`~pnode.integrator.Record`; :mod:`pnode.integrator` calls it.
"""
import torch

from .bridge import PETSC_DTYPE, cached_views, vec_view, vec_write
from .errors import SolverError


def sweep(rec, grad_ys, stats, reducer):
    """The adjoint of one recorded forward call.

    Args:
        rec: the forward's :class:`~pnode.integrator.Record`.
        grad_ys: ``(len(t), n)`` gradient of the loss w.r.t. each output (any float dtype).
        stats: the :class:`~pnode.stats.Stats` to add the adjoint's counts to.
        reducer: the :class:`~pnode.parallel.Reducer` (parameter gradient from rank 0).

    Returns:
        ``(grad_y0, grad_params)``: flat float64 tensors (``n`` and ``n_params`` long).
    """
    # one device->host copy of every output's loss gradient (they join host Vecs), not
    # one per output time, each with a device sync for its .any()
    g = grad_ys.detach().to(device="cpu", dtype=PETSC_DTYPE)
    if rec.trivial:  # y(t) = y0 at every output time
        return g.sum(0), torch.zeros(sum(p.numel() for p in rec.params), dtype=PETSC_DTYPE)
    ws = rec.workspace
    ts, lam, mu, n_p = ws.ts, ws.lam, ws.mu, ws.sizes.n_p
    vec_write(lam, g[-1])
    if mu is not None:
        mu.zeroEntries()
    output_at = {step: k for k, step in enumerate(rec.segments[:-1])}

    hooks = rec.hooks if rec.hooks is not None and rec.hooks.adjoint else None

    def forcing(step):  # the adjoint reached step boundary `step`
        if hooks is not None:
            hooks.after_adjoint_step(rec.step_times[step], rec.step_times[step + 1] - rec.step_times[step], lam)
        k = output_at.get(step)  # the loss gradient at an output time joins the adjoint state
        if k is not None and g[k].any():
            view = vec_view(lam, "rw")
            view += g[k].to(view.device)  # a CUDA Vec's view (PETSc with CUDA) is on the device
            lam.stateIncrease()
    rec.plan.prepare(ts)
    ts.setCostGradients([lam], [mu] if mu is not None else None)
    implicit = ws.wiring.implicit
    krylov_before = implicit.krylov_iterations if implicit is not None else 0
    with cached_views():  # one output interval per adjoint solve: the same Vecs in each
        adjoint_steps = rec.plan.backward(ts, rec, forcing, rec.call, each_step=hooks is not None)
    rec.plan.account(stats, stats["steps"], ws.sizes.n)
    ws.wiring.forget()
    stats.adjoint_done(adjoint_steps, implicit.krylov_iterations - krylov_before if implicit is not None else 0)
    grad_y0 = vec_view(lam, "r").clone()
    if mu is None:
        grad_p = torch.zeros(0, dtype=PETSC_DTYPE)
    else:  # the parameter gradient lives on rank 0; every rank gets it
        grad_p = vec_view(mu, "r").clone() if reducer.root else torch.zeros(n_p, dtype=PETSC_DTYPE)
        grad_p = reducer.broadcast(grad_p)
    finite_out = bool(torch.isfinite(grad_y0).all()) and bool(torch.isfinite(grad_p).all())
    if reducer.any(bool(torch.isfinite(g).all()) and not finite_out):  # NaN in, NaN out is torch's way
        time, steps = rec.clock.user(rec.s[0]), adjoint_steps
        raise SolverError(f"the adjoint is not finite (NaN/Inf) after {steps} adjoint steps: the vector "
                          "field's derivatives are not finite along the solution", reason="NAN",
                          time=time, steps=steps)
    return grad_y0, grad_p
