"""Fixed-step SDE steppers and the noise algebra they share.

Shapes (``b`` batch, ``d`` state size, ``m`` Brownian size):

================  ==============  =============  ==================
noise_type        g(t, y)         dW             g(t, y) . dW
================  ==============  =============  ==================
``diagonal``      ``(b, d)``      ``(b, d)``     elementwise product
``scalar``        ``(b, d, 1)``   ``(b, 1)``     ``g[..., 0] * dW``
``additive``      ``(b, d, m)``   ``(b, m)``     batched mat-vec
``general``       ``(b, d, m)``   ``(b, m)``     batched mat-vec
================  ==============  =============  ==================

Every stepper takes ``(sde, ta, tb, state, dw)`` and returns the new state, a tuple whose
first entry is ``y``. ``sde`` is an :class:`SDEFunctions`; ``ta``/``tb`` are floats; the
step is ``h = tb - ta``. The same functions serve ``sdeint`` (under autograd) and the
forward pass of the reversible adjoint (under ``no_grad``), so both produce identical
numbers.
"""

from __future__ import annotations

import torch

NOISE_TYPES = ("diagonal", "additive", "scalar", "general")
SDE_TYPES = ("stratonovich", "ito")


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
    """Drift and diffusion of a torchsde-style module, evaluated at float times.

    ``sde.f(t, y)`` and ``sde.g(t, y)`` (or the names given in ``names`` under the keys
    ``"drift"``, ``"diffusion"``, ``"drift_and_diffusion"``) receive ``t`` as a 0-dim
    tensor of the state's dtype and device, as torchsde passes it. A ``f_and_g`` method,
    when present, is used for the joint evaluation.
    """

    def __init__(self, sde, noise_type, dtype, device, names=None):
        names = dict(names or {})
        self.module = sde
        self.noise_type = noise_type
        self.dtype = dtype
        self.device = device
        self._f = getattr(sde, names.get("drift", "f"), None)
        self._g = getattr(sde, names.get("diffusion", "g"), None)
        self._fg = getattr(sde, names.get("drift_and_diffusion", "f_and_g"), None)
        if not callable(self._fg):
            self._fg = None
        if self._f is None or self._g is None:
            if self._fg is None:
                raise ValueError("sde must define drift f(t, y) and diffusion g(t, y) "
                                 "(or f_and_g(t, y))")

    def time(self, t):
        return torch.tensor(t, dtype=self.dtype, device=self.device)

    def f(self, t, y):
        if self._f is None:
            return self._fg(self.time(t), y)[0]
        return self._f(self.time(t), y)

    def g(self, t, y):
        if self._g is None:
            return self._fg(self.time(t), y)[1]
        return self._g(self.time(t), y)

    def f_and_g(self, t, y):
        tt = self.time(t)
        if self._fg is not None:
            return self._fg(tt, y)
        return self._f(tt, y), self._g(tt, y)

    def gdw(self, g, dw):
        return noise_product(self.noise_type, g, dw)


def single_state_init(sde, t0, y0):
    """State ``(y0,)`` of the one-state methods."""
    return (y0,)


# ---------------------------------------------------------------------- Ito


def euler_step(sde, ta, tb, state, dw):
    """Euler–Maruyama (Ito): ``y + f h + g dW``. Strong order 0.5 (1.0 additive noise)."""
    (y,) = state
    f, g = sde.f_and_g(ta, y)
    return (y + f * (tb - ta) + sde.gdw(g, dw),)


# ---------------------------------------------------------------------- Stratonovich


def euler_heun_step(sde, ta, tb, state, dw):
    """Euler–Heun (Stratonovich): the diffusion averaged over ``y`` and ``y + g dW``."""
    (y,) = state
    f, g = sde.f_and_g(ta, y)
    gdw = sde.gdw(g, dw)
    g_pred = sde.g(ta, y + gdw)
    return (y + f * (tb - ta) + 0.5 * (gdw + sde.gdw(g_pred, dw)),)


def midpoint_step(sde, ta, tb, state, dw):
    """Midpoint (Stratonovich): ``f`` and ``g`` evaluated at a half-step predictor."""
    (y,) = state
    h = tb - ta
    f, g = sde.f_and_g(ta, y)
    y_mid = y + 0.5 * (f * h + sde.gdw(g, dw))
    f_mid, g_mid = sde.f_and_g(ta + 0.5 * h, y_mid)
    return (y + f_mid * h + sde.gdw(g_mid, dw),)


def reversible_heun_init(sde, t0, y0):
    """State ``(y, z, f(t0, z), g(t0, z))`` with ``z0 = y0``."""
    f, g = sde.f_and_g(t0, y0)
    return (y0, y0, f, g)


def reversible_heun_step(sde, ta, tb, state, dw):
    """Reversible Heun (Stratonovich; Kidger et al. 2021, Algorithm 1).

    ``z' = 2y - z + f(z) h + g(z) dW``;
    ``y' = y + (f(z) + f(z')) h/2 + (g(z) + g(z')) dW/2``.
    One drift/diffusion evaluation per step (at ``z'``); the step can be undone exactly
    in exact arithmetic (see :func:`reversible_heun_unstep`).
    """
    y, z, f, g = state
    h = tb - ta
    z1 = 2 * y - z + f * h + sde.gdw(g, dw)
    f1, g1 = sde.f_and_g(tb, z1)
    y1 = y + (0.5 * h) * (f + f1) + 0.5 * sde.gdw(g + g1, dw)
    return (y1, z1, f1, g1)


def reversible_heun_unstep_z(sde, ta, tb, y1, z1, f1, g1, dw):
    """``z`` before a reversible Heun step, from the state after it (Algorithm 2)."""
    return 2 * y1 - z1 - f1 * (tb - ta) - sde.gdw(g1, dw)


def reversible_heun_unstep_y(sde, ta, tb, y1, f, g, f1, g1, dw):
    """``y`` before a reversible Heun step, given ``f``/``g`` re-evaluated at the old ``z``."""
    return y1 - (0.5 * (tb - ta)) * (f + f1) - 0.5 * sde.gdw(g + g1, dw)

