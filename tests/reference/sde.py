"""Plain-torch SDE integrators on given Brownian increments, no pnode solver code.

``sde_solve`` steps on the grid that pnode's spec defines (``step_grid``: multiples of dt
from ts[0], plus every output time), drawing each increment dW = bm(ta, tb) from the same
Brownian path, with one of

- ``"euler"``: Euler-Maruyama (Ito), y1 = y + f(t, y) h + g(t, y) dW;
- ``"euler_heun"``: Euler-Heun (Stratonovich), y1 = y + f h + (g(y) + g(y + g(y) dW)) dW / 2;
- ``"reversible_heun"``: reversible Heun (Stratonovich, Kidger et al. 2021), with the
  auxiliary state z: z1 = 2 y - z + f(z) h + g(z) dW,
  y1 = y + (f(z) + f(z1)) h / 2 + (g(z) + g(z1)) dW / 2.

``g_dw`` is the diffusion-times-increment product for every noise type.
"""
import torch


def step_grid(ts, dt):
    """The step grid as the spec defines it, written out independently."""
    pts = [ts[0]]
    for s, e in zip(ts, ts[1:]):
        k = 1
        while ts[0] + k * dt <= s:
            k += 1
        while ts[0] + k * dt < e - 1e-9 * dt:
            pts.append(ts[0] + k * dt)
            k += 1
        pts.append(e)
    return pts


def g_dw(noise_type, g, dw):
    """g(t, y) dW for the noise type: diagonal (elementwise), scalar (one channel),
    additive or general (matrix-vector product)."""
    if noise_type == "diagonal":
        return g * dw
    if noise_type == "scalar":
        return g[..., 0] * dw
    return (g @ dw[..., None])[..., 0]


def sde_solve(sde, y0, ts, dt, bm, method):
    """Reference solvers written out directly on the same Brownian increments; returns
    the states at ``ts`` stacked."""
    nt = sde.noise_type
    pts = step_grid(ts, dt)
    T = lambda t: torch.tensor(t)  # noqa: E731
    outs = [y0]
    y = z = y0
    f, g = sde.f(T(pts[0]), z), sde.g(T(pts[0]), z)
    for ta, tb in zip(pts, pts[1:]):
        h, dw = tb - ta, bm(ta, tb)
        if method == "reversible_heun":
            z1 = 2 * y - z + f * h + g_dw(nt, g, dw)
            f1, g1 = sde.f(T(tb), z1), sde.g(T(tb), z1)
            y = y + (0.5 * h) * (f + f1) + 0.5 * g_dw(nt, g + g1, dw)
            z, f, g = z1, f1, g1
        elif method == "euler":
            y = y + sde.f(T(ta), y) * h + g_dw(nt, sde.g(T(ta), y), dw)
        elif method == "euler_heun":
            gdw = g_dw(nt, sde.g(T(ta), y), dw)
            y = y + sde.f(T(ta), y) * h + 0.5 * (gdw + g_dw(nt, sde.g(T(ta), y + gdw), dw))
        if tb in ts:
            outs.append(y)
    assert len(outs) == len(ts)
    return torch.stack(outs)
