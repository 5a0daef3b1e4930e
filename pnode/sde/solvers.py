"""Fixed-step SDE steppers.

Every stepper takes ``(sde, ta, tb, state, noise)`` and returns the new state, a tuple
whose first entry is ``y`` (shape ``(b, d)``) and whose rest is the method's extra state
(torchsde's ``extra_solver_state``). ``sde`` is a :class:`~pnode.sde.functions.SDEFunctions`;
``ta``/``tb`` are floats, ``h = tb - ta``; ``noise`` is what the method declares it needs
(:mod:`pnode.sde.methods`): the increment ``W`` over ``[ta, tb]``, ``(W, U)`` with the
space-time integral ``U = int_ta^tb (W_s - W_ta) ds``, or ``(W, A)`` with the Lévy area.
The same functions serve ``sdeint`` (under autograd) and the forward and re-stepping
passes of ``sdeint_adjoint`` (so both produce identical numbers).
"""

from __future__ import annotations

import math

from .functions import NOISE_TYPES, SDE_TYPES, SDEFunctions, noise_product, noise_vjp  # noqa: F401
from .tableaus import SRA1, SRID2


def single_state_init(sde, t0, y0):
    """State ``(y0,)`` of the one-state methods."""
    return (y0,)


# ---------------------------------------------------------------------- Ito


def euler_step(sde, ta, tb, state, dw):
    """Euler–Maruyama (Itô): ``y + f h + g dW``. Strong order 0.5 (1.0 additive noise)."""
    (y,) = state
    f, gdw = sde.f_and_g_prod(ta, y, dw)
    return (y + f * (tb - ta) + gdw,)


def _milstein(sde, ta, tb, y, dw, ito, grad_free):
    """Milstein for commutative (diagonal, scalar, additive) noise.

    ``y + f h + g dW + 1/2 g g' v`` with ``v = dW^2 - h`` (Itô) or ``dW^2``
    (Stratonovich). The derivative-free variant replaces ``g g'`` by the finite
    difference ``(g(y + [f h] + g sqrt(h)) - g(y)) / sqrt(h)`` (Kloeden & Platen 11.1).
    """
    h = tb - ta
    v = dw * dw - h if ito else dw * dw
    if grad_free and sde.noise_type != "additive":
        f, g = sde.f_and_g(ta, y)
        g_ = g.squeeze(-1) if sde.noise_type == "scalar" else g
        sqrt_h = math.sqrt(h)
        y_prime = y + (f * h if ito else 0.0) + g_ * sqrt_h
        g_prime = sde.g(ta, y_prime)
        correction = sde.prod(g_prime - g, v) / (2 * sqrt_h)
        gdw = sde.prod(g, dw)
    else:
        f, gdw = sde.f_and_g_prod(ta, y, dw)
        correction = sde.gdg_prod(ta, y, 0.5 * v)
    return y + f * h + gdw + correction


def milstein_ito_step(sde, ta, tb, state, dw, grad_free=False):
    """Milstein (Itô), strong order 1.0 for commutative noise."""
    return (_milstein(sde, ta, tb, state[0], dw, True, grad_free),)


def milstein_strat_step(sde, ta, tb, state, dw, grad_free=False):
    """Milstein (Stratonovich), strong order 1.0 for commutative noise."""
    return (_milstein(sde, ta, tb, state[0], dw, False, grad_free),)


def srk_step(sde, ta, tb, state, noise):
    """Rößler's stochastic Runge–Kutta (Itô): SRA1 for additive noise (strong order 1.5),
    SRID2 for diagonal and scalar noise (strong order 1.0). ``noise`` is ``(W, U)``."""
    if sde.noise_type == "additive":
        return (_sra(sde, ta, tb, state[0], *noise),)
    return (_srid(sde, ta, tb, state[0], *noise),)


def _srid(sde, ta, tb, y, w, u):
    tab = SRID2
    h = tb - ta
    sqrt_h = math.sqrt(h)
    i0 = u / h                              # I_(k,0) / h
    ikk = (w * w - h) * 0.5                 # I_(k,k)
    ikkk = (w * w * w - 3 * h * w) / 6      # I_(k,k,k)
    scalar = sde.noise_type == "scalar"
    fs, gs = [], []
    y1 = y
    for s in range(tab.stages):
        h0, h1 = y, y
        for j in range(s):
            h0 = h0 + tab.a0[s][j] * fs[j] * h + tab.b0[s][j] * gs[j] * i0
            h1 = h1 + tab.a1[s][j] * fs[j] * h + tab.b1[s][j] * gs[j] * sqrt_h
        f = sde.f(ta + tab.c0[s] * h, h0)
        g = sde.g(ta + tab.c1[s] * h, h1)
        g = g.squeeze(-1) if scalar else g
        fs.append(f)
        gs.append(g)
        weight = (tab.beta1[s] * w + tab.beta2[s] * ikk / sqrt_h + tab.beta3[s] * i0
                  + tab.beta4[s] * ikkk / h)
        y1 = y1 + tab.alpha[s] * f * h + g * weight
    return y1


def _sra(sde, ta, tb, y, w, u):
    tab = SRA1
    h = tb - ta
    i0 = u / h
    fs = []
    y1 = y
    for i in range(tab.stages):
        h0 = y
        for j in range(i):
            h0 = h0 + tab.a0[i][j] * fs[j] * h + sde.g_prod(ta + tab.c1[j] * h, y, tab.b0[i][j] * i0)
        f = sde.f(ta + tab.c0[i] * h, h0)
        fs.append(f)
        weight = tab.beta1[i] * w + tab.beta2[i] * i0
        y1 = y1 + tab.alpha[i] * f * h + sde.g_prod(ta + tab.c1[i] * h, y, weight)
    return y1


# ---------------------------------------------------------------------- Stratonovich


def euler_heun_step(sde, ta, tb, state, dw):
    """Euler–Heun (Stratonovich): the diffusion averaged over ``y`` and ``y + g dW``."""
    (y,) = state
    f, gdw = sde.f_and_g_prod(ta, y, dw)
    gdw_pred = sde.g_prod(ta, y + gdw, dw)
    return (y + f * (tb - ta) + 0.5 * (gdw + gdw_pred),)


def heun_step(sde, ta, tb, state, dw):
    """Heun (Stratonovich; Burrage, Burrage & Tian 2004): trapezoidal in drift and
    diffusion around an Euler predictor. Strong order 1.0 for commutative noise."""
    (y,) = state
    h = tb - ta
    f, gdw = sde.f_and_g_prod(ta, y, dw)
    y_pred = y + h * f + gdw
    f1, gdw1 = sde.f_and_g_prod(tb, y_pred, dw)
    return (y + 0.5 * (h * (f + f1) + gdw + gdw1),)


def midpoint_step(sde, ta, tb, state, dw):
    """Midpoint (Stratonovich): ``f`` and ``g`` evaluated at a half-step predictor."""
    (y,) = state
    h = tb - ta
    f, gdw = sde.f_and_g_prod(ta, y, dw)
    y_mid = y + 0.5 * (f * h + gdw)
    f_mid, gdw_mid = sde.f_and_g_prod(ta + 0.5 * h, y_mid, dw)
    return (y + f_mid * h + gdw_mid,)


def log_ode_step(sde, ta, tb, state, noise):
    """Log-ODE midpoint (Stratonovich): midpoint on the log-signature ``(W, A)``, i.e.
    the midpoint step plus the Lévy-area term ``g' g A`` (nonzero for general noise
    only). Strong order 1.0 with Davie's/Foster's area for commutative noise."""
    (y,) = state
    w, a = noise
    h = tb - ta
    f, gdw = sde.f_and_g_prod(ta, y, w)
    y_mid = y + 0.5 * (h * f + gdw)
    tm = ta + 0.5 * h
    f_mid, gdw_mid = sde.f_and_g_prod(tm, y_mid, w)
    return (y + h * f_mid + gdw_mid + sde.dg_ga_jvp(tm, y_mid, a),)


def reversible_heun_init(sde, t0, y0):
    """State ``(y, f(t0, z), g(t0, z), z)`` with ``z0 = y0`` (torchsde's extra state is
    ``state[1:]``)."""
    f, g = sde.f_and_g(t0, y0)
    return (y0, f, g, y0)


def reversible_heun_step(sde, ta, tb, state, dw):
    """Reversible Heun (Stratonovich; Kidger et al. 2021, Algorithm 1).

    ``z' = 2y - z + f(z) h + g(z) dW``;
    ``y' = y + (f(z) + f(z')) h/2 + (g(z) + g(z')) dW/2``.
    One drift/diffusion evaluation per step (at ``z'``); the step can be undone exactly
    in exact arithmetic (see :func:`reversible_heun_unstep_z`).
    """
    y, f, g, z = state
    h = tb - ta
    z1 = 2 * y - z + f * h + sde.prod(g, dw)
    f1, g1 = sde.f_and_g(tb, z1)
    y1 = y + (0.5 * h) * (f + f1) + 0.5 * sde.prod(g + g1, dw)
    return (y1, f1, g1, z1)


def reversible_heun_unstep_z(sde, ta, tb, y1, z1, f1, g1, dw):
    """``z`` before a reversible Heun step, from the state after it (Algorithm 2)."""
    return 2 * y1 - z1 - f1 * (tb - ta) - sde.prod(g1, dw)


def reversible_heun_unstep_y(sde, ta, tb, y1, f, g, f1, g1, dw):
    """``y`` before a reversible Heun step, given ``f``/``g`` re-evaluated at the old ``z``."""
    return y1 - (0.5 * (tb - ta)) * (f + f1) - 0.5 * sde.prod(g + g1, dw)
