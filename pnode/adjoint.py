"""The autograd Function that connects an ODESolver to torch's backward pass."""
import torch

from .bridge import PETSC_DTYPE
from .errors import SolverError


class _ODEAdjoint(torch.autograd.Function):
    """Forward: PETSc solve. Backward: PETSc discrete adjoint (TSAdjointSolve)."""

    @staticmethod
    def forward(ctx, solver, layout, times, record, y0_flat, *params):
        ys = solver.forward(layout, y0_flat, times, record=record)
        ctx.solver, ctx.layout, ctx.times = solver, layout, times
        ctx.run = solver._run
        ctx.step_times = solver.step_times
        ctx.save_for_backward(y0_flat)
        return ys.to(device=layout.device, dtype=layout.dtype)

    @staticmethod
    def backward(ctx, grad_ys):
        solver, layout = ctx.solver, ctx.layout
        if solver._run != ctx.run or not solver._record:
            # The solver's trajectory belongs to another call (the same solver ran again
            # before this backward, or ran without recording): re-solve this call first.
            # Same inputs, same accepted steps, so the gradient is this call's.
            (y0_flat,) = ctx.saved_tensors
            solver.forward(layout, y0_flat, ctx.times, record=True)
            if not torch.equal(solver.step_times, ctx.step_times):
                raise SolverError(
                    f"re-solving for the backward pass took {len(solver.step_times) - 1} steps where the "
                    f"forward took {len(ctx.step_times) - 1} (did the parameters change in between?)",
                    reason="RESOLVE_MISMATCH", steps=len(solver.step_times) - 1)
            solver.stats["recomputed_steps"] += solver.stats["steps"]
        grad_y0, grad_p = solver.backward(grad_ys.to(PETSC_DTYPE))
        # The trajectory has served its one adjoint: free it now rather than at the next
        # forward (with recompute_forward, L blocks would otherwise all hold theirs).
        solver._drop_trajectory()
        params = solver._dyn.params
        grads, offset = [], 0
        for p in params:
            k = p.numel()
            grads.append(grad_p[offset:offset + k].reshape(p.shape).to(device=p.device, dtype=p.dtype))
            offset += k
        return (None, None, None, None, grad_y0.to(device=layout.device, dtype=layout.dtype), *grads)


def solve(solver, layout, y0, times, record=True):
    """Run ``solver`` on ``y0`` at ``times``; differentiable when anything needs a gradient.

    With ``record=False`` the forward pass keeps no trajectory and backward re-solves
    first (block-level recomputation).
    """
    y0_flat = layout.flatten(y0)
    params = solver.params
    needs_grad = torch.is_grad_enabled() and (y0_flat.requires_grad or bool(params))
    if needs_grad:
        ys = _ODEAdjoint.apply(solver, layout, times, record, y0_flat, *params)
    else:
        ys = solver.forward(layout, y0_flat, times, record=False)
        ys = ys.to(device=layout.device, dtype=layout.dtype)
    return layout.unflatten(ys)
