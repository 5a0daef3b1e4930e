"""The reversible Heun adjoint: exact gradients at memory independent of the step count.

Forward (Kidger et al. 2021, Algorithm 1), with ``f_n, g_n`` evaluated at ``z_n``::

    z_{n+1} = 2 y_n - z_n + f_n h + g_n dW_n
    y_{n+1} = y_n + (f_n + f_{n+1}) h/2 + (g_n + g_{n+1}) dW_n / 2

Only the final ``(y_N, z_N)`` is kept. The backward pass walks the steps in reverse; each
step is undone algebraically (Algorithm 2)::

    z_n = 2 y_{n+1} - z_{n+1} - f_{n+1} h - g_{n+1} dW_n
    y_n = y_{n+1} - (f_n + f_{n+1}) h/2 - (g_n + g_{n+1}) dW_n / 2

where ``f_n, g_n`` are re-evaluated at the reconstructed ``z_n``, under autograd so that
the same evaluation later gives the vector-Jacobian product at ``z_n``. Reverse-mode
through one step, with cotangents ``a_y, a_z`` of ``y_{n+1}, z_{n+1}`` and ``a_f, a_g``
accumulated for ``f_{n+1}, g_{n+1}``::

    a_f += a_y h/2,  a_g += (a_y / 2) (x) dW_n        # y_{n+1} depends on f_{n+1}, g_{n+1}
    a_z += VJP of (f, g) at z_{n+1} with (a_f, a_g)   # and parameter gradients
    a_f <- (a_y/2 + a_z) h,  a_g <- (a_y/2 + a_z) (x) dW_n     # for f_n, g_n
    a_y <- a_y + 2 a_z,  a_z <- -a_z

This is the chain rule of the forward computation itself (a discretise-then-optimise
adjoint), so the gradients match backpropagation through :func:`pnode.sdeint` up to the
round-off of the reconstruction. One drift/diffusion evaluation and one VJP per step;
the tensors alive at any time are one step's worth, whatever the number of steps.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .functions import noise_vjp
from .solvers import reversible_heun_step, reversible_heun_unstep_y, reversible_heun_unstep_z

__all__ = ["reversible_heun_adjoint"]


def reversible_heun_adjoint(prob, params):
    """Solve ``prob`` (a validated reversible Heun problem) with the reversible adjoint.

    ``params``: tensors to return gradients for, besides ``prob.y0``. Returns ``ys`` of
    shape ``(len(ts), *y0.shape)``.
    """
    # backward undoes exactly this step (reversible_heun_unstep_*)
    assert prob.method.step is reversible_heun_step, prob.method.name
    return _ReversibleHeunAdjoint.apply(prob, prob.y0, *params)


class _ReversibleHeunAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, prob, y0, *params):
        ys = y0.new_empty((len(prob.ts), *y0.shape))
        ys[0] = y0
        state = prob.init_state(y0)
        for _, _, i, state in prob.march(state):
            if i is not None:
                ys[i] = state[0]
        ctx.prob = prob
        # f and g at z_N are re-evaluated under autograd in backward; keep only y, z.
        ctx.final = (state[0], state[3])
        # Saved through torch, so that changing a parameter in place before backward
        # raises torch's in-place error instead of giving a wrong gradient.
        ctx.save_for_backward(*params)
        return ys

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ys):
        prob, params = ctx.prob, ctx.saved_tensors
        y, z = ctx.final
        funcs, nt, ts = prob.funcs, prob.funcs.noise_type, prob.ts
        wanted = [p.requires_grad for p in params]
        diff_params = [p for p, w in zip(params, wanted) if w]
        param_grads = [None] * len(diff_params)

        z_req, f1, g1 = _eval_at(funcs, ts[-1], z)
        a_y = grad_ys[-1].clone()
        a_z = torch.zeros_like(y)
        a_f = torch.zeros_like(f1)
        a_g = torch.zeros_like(g1)

        for ta, tb, i in prob.grid.steps_reversed():
            h = tb - ta
            dw = prob.noise(ta, tb)
            f1d, g1d = f1.detach(), g1.detach()
            z0 = reversible_heun_unstep_z(funcs, ta, tb, y, z, f1d, g1d, dw)
            z0_req, f0, g0 = _eval_at(funcs, ta, z0)
            y0 = reversible_heun_unstep_y(funcs, ta, tb, y, f0.detach(), g0.detach(), f1d, g1d, dw)

            a_f = a_f + (0.5 * h) * a_y
            a_g = a_g + noise_vjp(nt, 0.5 * a_y, dw)
            a_z = _vjp(f1, g1, a_f, a_g, z_req, a_z, diff_params, param_grads)
            c = 0.5 * a_y + a_z
            a_f = h * c
            a_g = noise_vjp(nt, c, dw)
            a_y = a_y + 2 * a_z
            a_z = -a_z

            y, z, z_req, f1, g1 = y0, z0, z0_req, f0, g0
            if i is not None:
                a_y = a_y + grad_ys[i]

        a_z = _vjp(f1, g1, a_f, a_g, z_req, a_z, diff_params, param_grads)
        grad_y0 = a_y + a_z  # z_0 = y_0

        it = iter(param_grads)
        grads = [next(it) if w else None for w in wanted]
        return (None, grad_y0, *grads)


def _eval_at(funcs, t, z):
    """``f, g`` at ``z`` under autograd; returns ``(z as a leaf, f, g)``.

    The one evaluation serves twice: detached, to rebuild ``y`` before the step, and,
    one step later in the sweep, for the vector-Jacobian product at ``z``.
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        f, g = funcs.f_and_g(t, z)
    return z, f, g


def _vjp(f, g, a_f, a_g, z, a_z, params, param_grads):
    """Add ``(a_f, a_g) . d(f, g)/dparams`` into ``param_grads``; return ``a_z`` plus
    ``(a_f, a_g) . d(f, g)/dz``.

    Outputs that do not depend on anything differentiable (a constant diffusion, say) are
    skipped.
    """
    outs, cots = [], []
    for o, c in ((f, a_f), (g, a_g)):
        if o.requires_grad:
            outs.append(o)
            cots.append(c)
    if not outs:
        return a_z
    grads = torch.autograd.grad(outs, [z, *params], cots, allow_unused=True)
    for k, gp in enumerate(grads[1:]):
        if gp is not None:
            # autograd may hand back a cotangent itself (identity ops): copy
            # before accumulating in place.
            param_grads[k] = gp.clone() if param_grads[k] is None else param_grads[k].add_(gp)
    return a_z if grads[0] is None else a_z + grads[0]
