"""The checkpointed discrete adjoint: exact gradients for every method at O(sqrt(N)) memory.

Forward, without autograd, the state is stored at checkpoints every ``K`` macro steps
(``K ~ sqrt(N)``: a two-level schedule; with ``N`` unknown in advance, as with adaptive
steps, the checkpoints are thinned to every other one and ``K`` doubled whenever there
are more than the budget). Backward walks the segments in reverse: each is re-taken from
its checkpoint under autograd, with the same times and the same Brownian increments
(Brownian intervals answer repeated queries bit for bit), then backpropagated with the
cotangent of its final state and of the outputs inside it. Every operation is the one
``sdeint`` records, so the gradient is backpropagation's up to the order of summation of
parameter cotangents; memory is the checkpoints plus one segment's graph.

The initial state is recomputed as part of the first segment (reversible Heun's
``f(y0), g(y0)`` depend on ``y0``), so ``y0`` gets the full gradient.
"""

from __future__ import annotations

import math

import torch

__all__ = ["checkpointed_solve"]


def checkpointed_solve(prob, extras, params, checkpoints=None):
    """Solve ``prob`` with the checkpointed adjoint.

    Args:
        prob: a validated :class:`~pnode.sde.problem.Problem`.
        extras: the caller's ``extra_solver_state`` tuple, or ``None`` (method's init).
        params: tensors requiring grad to return gradients for.
        checkpoints: the number of checkpoints to aim for (default ``sqrt(N)``).

    Returns:
        ``(ys, final_extras)``: ``ys`` of shape ``(len(ts), b, d)`` and the method's
        extra state at ``ts[-1]`` (a tuple), both differentiable.
    """
    extras = () if extras is None else tuple(extras)
    out = _CheckpointedSolve.apply(prob, len(extras), checkpoints, prob.y0, *extras, *params)
    return out[0], tuple(out[1:])


def _segment_length(prob, checkpoints):
    """Macro steps per segment, from the expected step count."""
    if prob.adaptive:
        n = max(1.0, (prob.ts[-1] - prob.ts[0]) / prob.dt)
    else:
        n = max(1, len(prob.grid))
    budget = checkpoints or max(1, math.isqrt(int(n)))
    return max(1, math.ceil(n / budget)), budget


class _CheckpointedSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, prob, n_extra, checkpoints, y0, *inputs):
        extras, params = inputs[:n_extra], inputs[n_extra:]
        k, budget = _segment_length(prob, checkpoints)
        with torch.no_grad():
            state = prob.init_state(y0, extras if n_extra else None)
            ys = [state[0]]
            saved = [(0, None)]  # (macro-step index, state before it); None: recompute init
            n = 0
            for _, _, i, state in prob.march(state):
                n += 1
                if i is not None:
                    ys.append(state[0])
                if n % k == 0:
                    saved.append((n, tuple(s.detach() for s in state)))
                    if len(saved) > 2 * budget + 1:
                        # More steps than foreseen (adaptive): keep every other checkpoint.
                        k *= 2
                        saved = [c for c in saved if c[0] % k == 0]
        ctx.prob, ctx.n_extra, ctx.n_steps = prob, n_extra, n
        ctx.checkpoints = saved
        ctx.y0_extras = (y0.detach(), *(e.detach() for e in extras))
        # Parameters go through save_for_backward so that an in-place change before
        # backward raises torch's error rather than giving a silently wrong gradient.
        ctx.save_for_backward(*params)
        ys = torch.stack(ys)
        final_extra = tuple(s.detach().clone() for s in state[1:])
        ctx.n_final = len(final_extra)
        return (ys, *final_extra)

    @staticmethod
    def backward(ctx, grad_ys, *grad_final):
        prob, params = ctx.prob, ctx.saved_tensors
        diff_params = [p for p in params if p.requires_grad]
        param_grads = [None] * len(diff_params)  # None: unused, as backprop reports it
        # Cotangent of the state after the current segment: (y, *extra).
        a_state = [None] + [g for g in grad_final]
        bounds = [c[0] for c in ctx.checkpoints] + [ctx.n_steps]
        grad_inputs = None
        for s in range(len(ctx.checkpoints) - 1, -1, -1):
            start, saved = ctx.checkpoints[s]
            count = bounds[s + 1] - start
            with torch.enable_grad():
                if saved is None:
                    leaves = [x.requires_grad_(True) for x in _fresh(ctx.y0_extras)]
                    state = prob.init_state(leaves[0], leaves[1:] if ctx.n_extra else None)
                else:
                    leaves = [x.requires_grad_(True) for x in _fresh(saved)]
                    state = tuple(leaves)
                outs, cots = [], []
                if saved is None:  # ys[0] is the initial y
                    outs.append(state[0])
                    cots.append(grad_ys[0])
                for _, _, i, state in prob.replay(start, count, state):
                    if i is not None:
                        outs.append(state[0])
                        cots.append(grad_ys[i])
                for x, a in zip(state, a_state):
                    if a is not None:
                        outs.append(x)
                        cots.append(a)
                outs, cots = _differentiable(outs, cots)
                grads = (torch.autograd.grad(outs, leaves + diff_params, cots, allow_unused=True)
                         if outs else [None] * (len(leaves) + len(diff_params)))
            for j, g in enumerate(grads[len(leaves):]):
                if g is not None:
                    param_grads[j] = g if param_grads[j] is None else param_grads[j] + g
            a_state = list(grads[:len(leaves)])
            grad_inputs = a_state
        it = iter(param_grads)
        pgrads = [next(it) if p.requires_grad else None for p in params]
        return (None, None, None, *grad_inputs, *pgrads)


def _fresh(tensors):
    return [t.detach().clone() for t in tensors]


def _differentiable(outs, cots):
    """Drop outputs that do not depend on anything differentiable (a constant diffusion,
    say) and cotangents that are absent."""
    keep = [(o, c) for o, c in zip(outs, cots) if o.requires_grad and c is not None]
    return [o for o, _ in keep], [c for _, c in keep]

