"""sdeint: every method against a plain-torch loop on the same Brownian increments
(tests/reference/sde.py; outputs and backprop gradients to 1e-10), the step grid, the
default Brownian path, strong convergence on geometric Brownian motion, and argument
errors (sdeint and sdeint_adjoint)."""
import math

import pytest
import torch
from torch import nn

import pnode
from helpers import NOISE_CHANNELS as M, SDE_BATCH as B, SDE_DIM as D, NeuralSDE, grads
from reference import sde_solve

pytestmark = pytest.mark.usefixtures("float64_default")


@pytest.mark.parametrize("method,noise_type", [
    ("reversible_heun", "diagonal"), ("reversible_heun", "general"),
    ("reversible_heun", "scalar"), ("euler_heun", "diagonal"), ("euler", "general"),
])
def test_sdeint_matches_plain_loop(method, noise_type):
    sde_type = "ito" if method == "euler" else "stratonovich"
    sde = NeuralSDE(noise_type, sde_type)
    y0 = torch.randn(B, D, requires_grad=True)
    ts = [0.0, 0.25, 0.6, 1.0]
    dt = 0.07  # not a divisor of the output spacing: exercises the shortened steps
    bm = pnode.BrownianInterval(0.0, 1.0, size=(B, M[noise_type]), entropy=11)
    ys = pnode.sdeint(sde, y0, torch.tensor(ts), bm=bm, method=method, dt=dt)
    ref = sde_solve(sde, y0, ts, dt, bm, method)
    assert ys.shape == (len(ts), B, D)
    assert (ys - ref).abs().max() <= 1e-10
    params = [y0] + list(sde.parameters())
    w = torch.randn_like(ys)
    g1 = grads((ys * w).sum(), params, allow_unused=True)
    g2 = grads((ref * w).sum(), params, allow_unused=True)
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            assert (a - b).abs().max() <= 1e-10


def test_step_grid_lands_on_output_times():
    seen = []

    class Rec(nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            seen.append(t.item())
            return torch.zeros_like(y)

        def g(self, t, y):
            return torch.zeros_like(y)

    ts = [0.1, 0.35, 0.5, 0.93]
    dt = 0.1
    pnode.sdeint(Rec(), torch.zeros(1, 1), ts, method="euler", dt=dt)
    # Euler evaluates f at the start of every step.
    expected = [0.1, 0.1 + 1 * dt, 0.1 + 2 * dt, 0.35, 0.1 + 3 * dt, 0.5, 0.1 + 5 * dt,
                0.1 + 6 * dt, 0.1 + 7 * dt, 0.1 + 8 * dt]
    assert seen == expected

    # float32 output times are only known to float32 precision: linspace's 0.3 (which
    # is 0.30000001192...) is the grid point 3*0.1, not a separate step 1e-8 after it.
    seen.clear()
    ts32 = torch.linspace(0, 1, 11, dtype=torch.float32)
    bm = pnode.BrownianInterval(0.0, 1.0, size=(1, 1), entropy=0)
    ys = pnode.sdeint(Rec(), torch.zeros(1, 1), ts32, bm=bm, method="euler", dt=0.1)
    assert len(seen) == 10 and ys.shape == (11, 1, 1)
    # The hint-less interval adopted the solver's grid: one tree cell per step.
    assert bm._cells.count == 10
    seen.clear()
    pnode.sdeint(Rec(), torch.zeros(1, 1), ts32, method="euler", dt=0.03)
    assert len(seen) == 40  # ceil(0.1 / 0.03) = 4 steps per output interval


def test_default_bm_uses_torch_global_generator():
    sde = NeuralSDE("diagonal")
    y0 = torch.randn(B, D)
    ts = torch.linspace(0, 1, 5)
    torch.manual_seed(42)
    a = pnode.sdeint(sde, y0, ts, dt=0.05)
    torch.manual_seed(42)
    b = pnode.sdeint(sde, y0, ts, dt=0.05)
    torch.manual_seed(43)
    c = pnode.sdeint(sde, y0, ts, dt=0.05)
    assert torch.equal(a, b)
    assert not torch.allclose(a[-1], c[-1])
    assert torch.equal(a[0], y0)
    sde_g = NeuralSDE("general")
    torch.manual_seed(42)
    d = pnode.sdeint_adjoint(sde_g, y0, ts, dt=0.05)
    assert d.shape == (5, B, D)


class _GBM(nn.Module):
    """dY = mu Y dt + sigma Y dW (Ito) or with a Stratonovich integral."""

    noise_type = "scalar"

    def __init__(self, sde_type, mu=0.5, sigma=0.8):
        super().__init__()
        self.sde_type, self.mu, self.sigma = sde_type, mu, sigma

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        return (self.sigma * y).unsqueeze(-1)


@pytest.mark.parametrize("method", ["euler", "euler_heun", "reversible_heun", "midpoint"])
def test_gbm_strong_convergence(method):
    sde_type = "ito" if method == "euler" else "stratonovich"
    sde = _GBM(sde_type)
    n = 2000
    bm = pnode.BrownianInterval(0.0, 1.0, size=(n, 1), entropy=99)
    w1 = bm(0.0, 1.0)
    y0 = torch.ones(n, 1)
    # Ito: Y = exp((mu - sigma^2/2) t + sigma W); Stratonovich: Y = exp(mu t + sigma W).
    drift = sde.mu - (0.5 * sde.sigma**2 if sde_type == "ito" else 0.0)
    exact = torch.exp(drift + sde.sigma * w1)
    errs = []
    for k in (4, 6, 8):
        ys = pnode.sdeint(sde, y0, [0.0, 1.0], bm=bm, method=method, dt=2.0**-k)
        errs.append((ys[-1] - exact).abs().mean().item())
    order = math.log(errs[0] / errs[-1]) / math.log(2.0**4)
    # Strong order 0.5 for Euler–Maruyama; Euler–Heun and midpoint have order 1.0 on
    # scalar (commutative) noise. Reversible Heun is guaranteed order 0.5 in general
    # (it measures ~1.0 here).
    expected = {"euler": 0.5, "reversible_heun": 0.5, "euler_heun": 1.0, "midpoint": 1.0}[method]
    assert order > expected - 0.2, (errs, order)
    assert errs[-1] < (0.06 if method == "euler" else 0.01), errs


def _bad_calls():
    sde = NeuralSDE("diagonal")
    y0 = torch.randn(B, D)
    ts = torch.linspace(0, 1, 3)
    ito = NeuralSDE("diagonal", "ito")
    wrong_nt = NeuralSDE("diagonal")
    wrong_nt.noise_type = "full"
    bad_g = NeuralSDE("general")
    bad_g.noise_type = "diagonal"  # g returns (b, d, m) where (b, d) is needed
    bm_wrong = pnode.BrownianInterval(0.0, 1.0, size=(B, D + 1), entropy=0)
    bm_short = pnode.BrownianInterval(0.0, 0.5, size=(B, D), entropy=0)
    return [
        (dict(ts=torch.tensor([0.0, 0.5, 0.4])), ValueError, "ts"),
        (dict(ts=torch.tensor([1.0, 0.5])), ValueError, "ts"),
        (dict(ts=torch.zeros(2, 2)), ValueError, "ts"),
        (dict(method="rk4"), ValueError, "reversible_heun"),
        (dict(dt=0.0), ValueError, "dt"),
        (dict(dt=-0.1), ValueError, "dt"),
        (dict(sde=ito, method="midpoint"), ValueError, "sde_type"),
        (dict(sde=sde, method="euler"), ValueError, "sde_type"),
        (dict(y0=y0.float().half()), TypeError, "y0"),
        (dict(y0=torch.zeros(B, D, dtype=torch.int64)), TypeError, "y0"),
        (dict(y0=torch.zeros(D)), ValueError, "y0"),
        (dict(sde=wrong_nt), ValueError, "noise_type"),
        (dict(sde=bad_g), ValueError, "sde.g"),
        (dict(bm=bm_wrong), ValueError, "bm"),
        (dict(bm=bm_short), ValueError, "bm"),
        (dict(adaptive=True, rtol=0.0), ValueError, "rtol"),
        (dict(dt=1e-7), ValueError, "max_num_steps"),
        (dict(method="srk", sde=ito, bm=pnode.BrownianInterval(0.0, 1.0, size=(B, D), entropy=0)),
         ValueError, "levy_area_approximation"),
        (dict(method="milstein", sde=NeuralSDE("general", "ito")), ValueError, "noise"),
    ], sde, y0, ts


@pytest.mark.parametrize("fn", ["sdeint", "sdeint_adjoint"])
def test_bad_input_names_the_argument(fn):
    cases, sde, y0, ts = _bad_calls()
    solver = getattr(pnode, fn)
    for override, exc, word in cases:
        kwargs = dict(sde=sde, y0=y0, ts=ts, dt=0.1)
        kwargs.update(override)
        with pytest.raises(exc, match=word):
            solver(**kwargs)


def test_diffusion_shape_checked_on_every_call():
    class Later(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def __init__(self):
            super().__init__()
            self.calls = 0

        def f(self, t, y):
            return -y

        def g(self, t, y):
            self.calls += 1
            return torch.ones_like(y) if self.calls < 3 else torch.ones_like(y[:, :1])
    with pytest.raises(ValueError, match="sde.g returned shape"):
        pnode.sdeint(Later(), torch.ones(2, 3), torch.tensor([0.0, 1.0]), method="euler", dt=0.1)


def test_top_level_default_stays_reversible_heun_for_stratonovich():
    """pnode.sdeint keeps pnode's default (reversible Heun) for a Stratonovich SDE, while
    pnode.sde.sdeint follows torchsde (midpoint): same Brownian path, bitwise results."""
    import pnode.sde as tsde
    sde = NeuralSDE("diagonal")
    y0 = torch.ones(B, D)
    ts = torch.tensor([0.0, 0.5])
    bm = tsde.BrownianInterval(0.0, 0.5, size=(B, D), entropy=3)
    with torch.no_grad():
        top = pnode.sdeint(sde, y0, ts, bm=bm, dt=0.1)
        assert torch.equal(top, tsde.sdeint(sde, y0, ts, bm=bm, dt=0.1, method="reversible_heun"))
        assert not torch.equal(top, tsde.sdeint(sde, y0, ts, bm=bm, dt=0.1))
