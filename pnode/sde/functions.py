"""A user SDE's drift and diffusion behind one interface, and the noise algebra.

Shapes (``b`` batch, ``d`` state size, ``m`` Brownian size):

================  ==============  =============  ==================
noise_type        g(t, y)         dW             g(t, y) . dW
================  ==============  =============  ==================
``diagonal``      ``(b, d)``      ``(b, d)``     elementwise product
``scalar``        ``(b, d, 1)``   ``(b, 1)``     ``g[..., 0] * dW``
``additive``      ``(b, d, m)``   ``(b, m)``     batched mat-vec
``general``       ``(b, d, m)``   ``(b, m)``     batched mat-vec
================  ==============  =============  ==================

A user SDE may define any of torchsde's spellings: ``f`` and ``g``, ``f_and_g``,
``g_prod(t, y, v)`` (the product ``g . v`` without forming ``g``), ``f_and_g_prod``, and
``h`` (the prior drift, for ``logqp``); ``names`` renames them. :class:`SDEFunctions`
derives the rest from what is there, so every method sees the same five calls.
"""

from __future__ import annotations

import torch

NOISE_TYPES = ("diagonal", "additive", "scalar", "general")
SDE_TYPES = ("stratonovich", "ito")

# torchsde's ``names`` keys and the attribute each renames.
NAME_KEYS = {"drift": "f", "diffusion": "g", "prior_drift": "h", "diffusion_prod": "g_prod",
             "drift_and_diffusion": "f_and_g", "drift_and_diffusion_prod": "f_and_g_prod"}


def noise_product(noise_type, g, dw):
    """``g . dW``: the diffusion applied to a Brownian increment, shape ``(b, d)``."""
    if noise_type == "diagonal":
        return g * dw
    if noise_type == "scalar":
        return g.squeeze(-1) * dw
    return torch.bmm(g, dw.unsqueeze(-1)).squeeze(-1)


def noise_vjp(noise_type, a, dw):
    """Cotangent of ``g`` given the cotangent ``a`` (shape ``(b, d)``) of ``g . dW``."""
    if noise_type == "diagonal":
        return a * dw
    return a.unsqueeze(-1) * dw.unsqueeze(-2)


class SDEFunctions:
    """Drift and diffusion of a torchsde-style SDE, evaluated at float times.

    The user's functions receive ``t`` as a 0-dim tensor of the state's dtype and device,
    as torchsde passes it.

    Args:
        sde: the user's object.
        noise_type: its ``noise_type``.
        dtype, device: of the state.
        names: torchsde's renaming, e.g. ``{"drift": "h"}`` (keys in :data:`NAME_KEYS`).
    """

    def __init__(self, sde, noise_type, dtype, device, names=None):
        names = dict(names or {})
        self.module = sde
        self.noise_type = noise_type
        self.dtype = dtype
        self.device = device
        user = {}
        for key, attr in NAME_KEYS.items():
            fn = getattr(sde, names.get(key, attr), None)
            user[attr] = fn if callable(fn) else None
        self._user = user
        has_f = any(user[k] for k in ("f", "f_and_g", "f_and_g_prod"))
        has_g = any(user[k] for k in ("g", "f_and_g", "g_prod", "f_and_g_prod"))
        if not has_f:
            raise ValueError("sde must define a drift: f(t, y), f_and_g(t, y) or f_and_g_prod(t, y, v)")
        if not has_g:
            raise ValueError("sde must define a diffusion: g(t, y), f_and_g(t, y), g_prod(t, y, v) "
                             "or f_and_g_prod(t, y, v)")

    @property
    def has_g(self):
        """Whether the diffusion matrix itself is available (``g`` or ``f_and_g``)."""
        return self._user["g"] is not None or self._user["f_and_g"] is not None

    @property
    def has_h(self):
        """Whether the prior drift ``h`` (for ``logqp``) is defined."""
        return self._user["h"] is not None

    def time(self, t):
        """``t`` as the 0-dim tensor the user's functions receive."""
        if isinstance(t, torch.Tensor):
            return t
        return torch.tensor(t, dtype=self.dtype, device=self.device)

    def f(self, t, y):
        """Drift at ``(t, y)``, shape ``(b, d)``."""
        u = self._user
        if u["f"] is not None:
            return u["f"](self.time(t), y)
        if u["f_and_g"] is not None:
            return u["f_and_g"](self.time(t), y)[0]
        raise ValueError("this method needs sde.f or sde.f_and_g (f_and_g_prod alone gives the drift "
                         "only together with a diffusion product)")

    def g(self, t, y):
        """Diffusion at ``(t, y)`` (shape by noise type, see the module docstring)."""
        u = self._user
        if u["g"] is not None:
            return u["g"](self.time(t), y)
        if u["f_and_g"] is not None:
            return u["f_and_g"](self.time(t), y)[1]
        raise ValueError("this method needs the diffusion matrix: define sde.g or sde.f_and_g "
                         "(g_prod alone is not enough)")

    def h(self, t, y):
        """Prior drift at ``(t, y)``, shape ``(b, d)``."""
        return self._user["h"](self.time(t), y)

    def f_and_g(self, t, y):
        """``(f, g)`` at ``(t, y)``."""
        u = self._user
        if u["f_and_g"] is not None:
            return u["f_and_g"](self.time(t), y)
        return self.f(t, y), self.g(t, y)

    def prod(self, g, v):
        """``g . v`` for this noise type."""
        return noise_product(self.noise_type, g, v)

    def g_prod(self, t, y, v):
        """``g(t, y) . v``, shape ``(b, d)``."""
        if self._user["g_prod"] is not None:
            return self._user["g_prod"](self.time(t), y, v)
        return self.prod(self.g(t, y), v)

    def f_and_g_prod(self, t, y, v):
        """``(f(t, y), g(t, y) . v)``."""
        u = self._user
        if u["f_and_g_prod"] is not None:
            return u["f_and_g_prod"](self.time(t), y, v)
        if u["g_prod"] is not None and (u["f"] is not None or u["f_and_g"] is not None):
            return self.f(t, y), self.g_prod(t, y, v)
        f, g = self.f_and_g(t, y)
        return f, self.prod(g, v)

    def gdg_prod(self, t, y, v):
        """The Milstein correction ``sum_j g_j dg/dy_j v`` for commutative noise, shape
        ``(b, d)``; ``v`` has the shape of ``dW``.

        Diagonal noise: ``g_i dg_i/dy_i v_i``; scalar noise: ``(J_g g) v`` (a Jacobian-
        vector product); additive noise: 0. Differentiable when grad mode is on.
        """
        if self.noise_type == "additive":
            return torch.zeros_like(y)
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            yy = y if y.requires_grad else y.detach().requires_grad_(True)
            g = self.g(t, yy)
            if not g.requires_grad:  # g does not depend on y (nor on anything else)
                return torch.zeros_like(y)
            if self.noise_type == "diagonal":
                # g_i depends on y_i only, so the vector-Jacobian product with g*v is the
                # diagonal of the Jacobian times g*v.
                out, = torch.autograd.grad(g, yy, g * v, create_graph=create, allow_unused=True)
            else:
                g0 = g.squeeze(-1)
                out = jvp(g0, yy, g0, create)
                out = out * v if out is not None else None
        return torch.zeros_like(y) if out is None else out

    def dg_ga_jvp(self, t, y, a):
        """Log-ODE correction ``sum_{j,k,l} dg_{il}/dy_j g_{jk} A_{kl}`` for general noise
        (``a``: Lévy area, shape ``(b, m, m)``); 0 for the other noise types, whose
        Lévy-area term vanishes (commutative noise)."""
        if self.noise_type != "general":
            return torch.zeros_like(y)
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            yy = y if y.requires_grad else y.detach().requires_grad_(True)
            g = self.g(t, yy)
            ga = torch.bmm(g, a)
            total = torch.zeros_like(y)
            for col in range(g.shape[-1]):
                out = jvp(g[..., col], yy, ga[..., col], create, retain=True)
                if out is not None:
                    total = total + out
        return total


def jvp(out, inp, direction, create_graph, retain=False):
    """Jacobian-vector product ``d out/d inp . direction`` by two reverse passes (the
    first with a dummy cotangent ``w``, linear in ``w``, then differentiated in ``w``);
    ``None`` when ``out`` does not depend on ``inp``."""
    if not out.requires_grad:
        return None
    w = torch.zeros_like(out, requires_grad=True)
    vjp, = torch.autograd.grad(out, inp, w, create_graph=True, allow_unused=True, retain_graph=True)
    if vjp is None or not vjp.requires_grad:
        return None
    res, = torch.autograd.grad(vjp, w, direction, create_graph=create_graph,
                               retain_graph=retain or create_graph, allow_unused=True)
    return res
