"""``logqp=True``: the SDE augmented with the running KL penalty between two drifts.

For a posterior drift ``f``, a prior drift ``h`` and a shared diffusion ``g``, Girsanov's
theorem gives the log-ratio of the path measures as the integral of ``|u|^2 / 2`` with
``u = g^+ (f - h)`` (the pseudo-inverse; ``(f - h) / g`` elementwise for diagonal
noise). torchsde integrates it as one extra state column with that drift and zero
diffusion, and returns its increments between output times; so does pnode.
"""

from __future__ import annotations

import torch

# Diffusion entries smaller than this are replaced by +-EPS in (f - h) / g, as torchsde
# does, so a vanishing diffusion gives a large but finite penalty.
EPS = 1e-7


def stable_division(a, b, eps=EPS):
    """``a / b`` with ``|b|`` floored at ``eps`` (keeping its sign)."""
    b = torch.where(b.abs().detach() > eps, b, torch.full_like(b, eps) * b.sign())
    return a / b


class LogqpSDE:
    """The augmented SDE on states ``[y, log-ratio]`` of shape ``(b, d + 1)``.

    Args:
        base: :class:`~pnode.sde.functions.SDEFunctions` of the user's SDE; must have
            ``f``, ``g`` and ``h``. Times reach it as the 0-dim tensors the outer
            ``SDEFunctions`` makes.
    """

    def __init__(self, base):
        if not base.has_h or not base.has_g:
            raise ValueError("logqp=True needs sde.f, sde.g and the prior drift sde.h "
                             "(or names={'prior_drift': ...})")
        self.base = base
        self.noise_type = base.noise_type

    def _penalty(self, f, g, h):
        if self.noise_type == "diagonal":
            u = stable_division(f - h, g)
        else:
            u = torch.bmm(torch.linalg.pinv(g), (f - h).unsqueeze(-1)).squeeze(-1)
        return 0.5 * (u ** 2).sum(dim=1, keepdim=True)

    def _g_aug(self, g):
        if self.noise_type == "diagonal":
            return torch.cat([g, g.new_zeros(g.shape[0], 1)], dim=1)
        return torch.cat([g, g.new_zeros(g.shape[0], 1, g.shape[-1])], dim=1)

    def f_and_g(self, t, y):
        x = y[:, :-1]
        f, g = self.base.f_and_g(t, x)
        h = self.base.h(t, x)
        return torch.cat([f, self._penalty(f, g, h)], dim=1), self._g_aug(g)

    def f(self, t, y):
        return self.f_and_g(t, y)[0]

    def g(self, t, y):
        return self._g_aug(self.base.g(t, y[:, :-1]))


def split_output(ys):
    """``ys`` of the augmented SDE, shape ``(T, b, d + 1)``, as torchsde returns it:
    ``(ys[..., :d], log-ratio increments of shape (T - 1, b))``."""
    y, log_ratio = ys[..., :-1], ys[..., -1]
    return y, log_ratio[1:] - log_ratio[:-1]
