"""Neural SDEs: BrownianInterval, sdeint, and the reversible Heun adjoint."""

import gc
import json
import math
import os
import random
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import pnode
from reference import sde_solve

D, B = 3, 5
M = {"diagonal": D, "scalar": 1, "additive": 2, "general": 2}


class NeuralSDE(nn.Module):
    """Small SDE with state- and time-dependent drift and diffusion, every noise type."""

    def __init__(self, noise_type, sde_type="stratonovich", d=D, m=None, hidden=8):
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type
        self.d = d
        self.m = M[noise_type] if m is None else m
        self.f_net = nn.Sequential(nn.Linear(d + 1, hidden), nn.Tanh(), nn.Linear(hidden, d))
        gout = {"diagonal": d, "scalar": d, "general": d * self.m}.get(noise_type, 0)
        self.g_net = nn.Linear(d + 1, gout) if gout else None
        self.g_const = nn.Parameter(0.3 * torch.randn(d, self.m))

    def f(self, t, y):
        ty = torch.cat([t.expand(y.shape[0], 1), y], dim=1)
        return self.f_net(ty)

    def g(self, t, y):
        b = y.shape[0]
        if self.noise_type == "additive":
            return (self.g_const * (1 + t)).expand(b, self.d, self.m)
        ty = torch.cat([t.expand(b, 1), y], dim=1)
        out = 0.4 * torch.tanh(self.g_net(ty))
        if self.noise_type == "diagonal":
            return out
        if self.noise_type == "scalar":
            return out.unsqueeze(-1)
        return out.view(b, self.d, self.m)


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=True)


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


# ====================================================================== BrownianInterval


def _random_intervals(rng, n, t0=0.0, t1=1.0):
    out = []
    for _ in range(n):
        a, b = sorted(rng.uniform(t0, t1) for _ in range(2))
        out.append((a, b))
    return out


@pytest.mark.parametrize("dt", [None, 0.01])
def test_brownian_repeatable_any_order(dt):
    rng = random.Random(1)
    queries = _random_intervals(rng, 40) + [(k * 0.01, (k + 1) * 0.01) for k in range(30)]
    bm = pnode.BrownianInterval(0.0, 1.0, size=(4, 2), entropy=123, dt=dt)
    first = [bm(a, b) for a, b in queries]
    # Same object, repeated and shuffled queries.
    order = list(range(len(queries)))
    rng.shuffle(order)
    for k in order:
        assert torch.equal(bm(*queries[k]), first[k])
    # A fresh path with the same entropy, queried in reverse order, is the same path.
    bm2 = pnode.BrownianInterval(0.0, 1.0, size=(4, 2), entropy=123, dt=dt)
    for k in reversed(range(len(queries))):
        assert torch.equal(bm2(*queries[k]), first[k])
    # A different entropy is a different path.
    bm3 = pnode.BrownianInterval(0.0, 1.0, size=(4, 2), entropy=124, dt=dt)
    assert not torch.allclose(bm3(*queries[0]), first[0])
    assert bm(0.3, 0.3).abs().max() == 0
    assert torch.equal(bm(0.4), bm(0.0, 0.4))


@pytest.mark.parametrize("levy", ["none", "space-time"])
@pytest.mark.parametrize("dt", [None, 0.03])
def test_brownian_additive(levy, dt):
    rng = random.Random(2)
    bm = pnode.BrownianInterval(-1.0, 2.0, size=(3, 4), entropy=5, dt=dt,
                                levy_area_approximation=levy)
    # The space-time area is split node by node (four normals per level): fewer points.
    n_triples, n_points = (20, 200) if levy == "none" else (8, 60)
    for _ in range(n_triples):
        a, b, c = sorted(rng.uniform(-1.0, 2.0) for _ in range(3))
        if levy == "none":
            wac, wab, wbc = bm(a, c), bm(a, b), bm(b, c)
            assert (wac - wab - wbc).abs().max() <= 1e-12
        else:
            wac, hac = bm(a, c, return_H=True)
            wab, hab = bm(a, b, return_H=True)
            wbc, hbc = bm(b, c, return_H=True)
            assert (wac - wab - wbc).abs().max() <= 1e-12
            h1, h2 = b - a, c - b
            combined = (h1 * hab + h2 * hbc + 0.5 * (h2 * wab - h1 * wbc)) / (h1 + h2)
            assert (combined - hac).abs().max() <= 1e-12
            w, u = bm(a, c, return_U=True)
            assert torch.equal(w, wac)
            assert (u - (c - a) * (0.5 * wac + hac)).abs().max() <= 1e-14
    # A fine partition (a solver's pattern) adds up to the whole.
    pts = [-1.0] + sorted(rng.uniform(-1.0, 2.0) for _ in range(n_points)) + [2.0]
    total = sum(bm(a, b) if levy == "none" else bm(a, b, return_H=True)[0]
                for a, b in zip(pts, pts[1:]))
    whole = bm(-1.0, 2.0) if levy == "none" else bm(-1.0, 2.0, return_H=True)[0]
    assert (total - whole).abs().max() <= 1e-12


def _z_mean(x, var):
    return abs(x.mean().item()) / math.sqrt(var / x.numel())


def _z_var(x, var):
    # (n-1) s^2 / var ~ chi^2_{n-1}, approximately N(n-1, 2(n-1)) for large n.
    n = x.numel()
    return abs((n - 1) * x.var().item() / var - (n - 1)) / math.sqrt(2 * (n - 1))


@pytest.mark.parametrize("levy", ["none", "space-time"])
def test_brownian_statistics(levy):
    n = 20000
    bm = pnode.BrownianInterval(0.0, 2.0, size=(n,), entropy=7, dt=0.1,
                                levy_area_approximation=levy)
    # Whole cells, unions of cells, and intervals deep inside a cell.
    intervals = [(0.0, 2.0), (0.3, 0.4), (0.3, 1.7), (0.31, 0.312), (0.1234, 0.1235),
                 (1.0, 1.0 + 1e-6)]
    prev = None
    for a, b in intervals:
        if levy == "none":
            w = bm(a, b)
        else:
            w, hh = bm(a, b, return_H=True)
            assert _z_mean(hh, (b - a) / 12) < 4.5
            assert _z_var(hh, (b - a) / 12) < 4.5
            # H is independent of W: correlation ~ N(0, 1/n).
            r = torch.corrcoef(torch.stack([w, hh]))[0, 1].item()
            assert abs(r) * math.sqrt(n) < 4.5
        assert _z_mean(w, b - a) < 4.5, (a, b)
        assert _z_var(w, b - a) < 4.5, (a, b)
        prev = w
    # Increments over disjoint intervals are independent.
    w1, w2 = bm(0.5, 0.55), bm(0.55, 0.61)
    r = torch.corrcoef(torch.stack([w1, w2]))[0, 1].item()
    assert abs(r) * math.sqrt(n) < 4.5
    assert prev is not None


def test_brownian_statistics_can_fail():
    """The statistical checks above reject a path with the wrong variance."""
    x = torch.randn(20000) * math.sqrt(1.1)
    assert _z_var(x, 1.0) > 4.5
    assert _z_mean(x + 0.1, 1.0) > 4.5


def test_brownian_sequential_is_local_and_memory_bounded():
    from pnode.sde import brownian

    n = 4096
    dt = 1.0 / n
    bm = pnode.BrownianInterval(0.0, 1.0, size=(2,), entropy=3, dt=dt, cache_size=32)
    calls = {"children": 0}
    orig = bm._children

    def counting(node, m):
        calls["children"] += 1
        return orig(node, m)

    bm._children = counting
    for k in range(n):
        bm(k * dt, (k + 1) * dt if k + 1 < n else 1.0)
    for k in reversed(range(n)):
        bm(k * dt, (k + 1) * dt if k + 1 < n else 1.0)
    # Searching from the last queried node costs O(1) splits per query; searching from
    # the root would cost ~log2(n) = 12 per query.
    assert calls["children"] / (2 * n) < 3
    assert len(bm._cache) <= 32
    gc.collect()
    live = sum(type(o) is brownian._Node for o in gc.get_objects())
    assert live < 200


def test_brownian_point_shortcut_is_node_bisection():
    """Inside a cell, points are resolved on coefficients (one contraction); that must be
    the same path as splitting the cell node by node."""
    rng = random.Random(4)
    queries = _random_intervals(rng, 30)
    fast = pnode.BrownianInterval(0.0, 1.0, size=(3,), entropy=8, dt=0.1)
    slow = pnode.BrownianInterval(0.0, 1.0, size=(3,), entropy=8, dt=0.1)
    slow._by_points = False
    for a, b in queries:
        assert (fast(a, b) - slow(a, b)).abs().max() <= 1e-12


def test_brownian_errors():
    with pytest.raises(ValueError, match="t0"):
        pnode.BrownianInterval(1.0, 0.0, size=(2,))
    with pytest.raises(TypeError, match="dtype"):
        pnode.BrownianInterval(0.0, 1.0, size=(2,), dtype=torch.float16)
    with pytest.raises(ValueError, match="levy_area_approximation"):
        pnode.BrownianInterval(0.0, 1.0, size=(2,), levy_area_approximation="davie")
    bm = pnode.BrownianInterval(0.0, 1.0, size=(2,), entropy=0)
    with pytest.raises(ValueError, match="ta"):
        bm(0.5, 0.4)
    with pytest.raises(ValueError, match="outside"):
        bm(0.5, 1.5)
    with pytest.raises(ValueError, match="space-time"):
        bm(0.1, 0.2, return_U=True)
    assert bm(0.1, 0.2).dtype == torch.float64
    bm32 = pnode.BrownianInterval(0.0, 1.0, size=(2,), dtype=torch.float32, entropy=0)
    assert bm32(0.1, 0.2).dtype == torch.float32


# ====================================================================== sdeint


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
    g1 = _grads((ys * w).sum(), params)
    g2 = _grads((ref * w).sum(), params)
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


# ====================================================================== adjoint


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar", "additive", "general"])
def test_adjoint_matches_backprop(noise_type):
    sde = NeuralSDE(noise_type)
    y0 = torch.randn(B, D, requires_grad=True)
    ts = torch.tensor([0.0, 0.3, 0.45, 1.0, 1.5])
    bm = pnode.BrownianInterval(0.0, 1.5, size=(B, M[noise_type]), entropy=3)
    dt = 0.01
    ys = pnode.sdeint(sde, y0, ts, bm=bm, dt=dt)
    ys_adj = pnode.sdeint_adjoint(sde, y0, ts, bm=bm, dt=dt)
    assert torch.equal(ys, ys_adj)
    params = [y0] + list(sde.parameters())
    w = torch.randn_like(ys)
    loss = lambda ys: (w * ys).sum() + (ys[2] ** 2).sum()  # noqa: E731
    g_bp = _grads(loss(ys), params)
    g_adj = _grads(loss(ys_adj), params)
    checked = 0
    for a, b in zip(g_bp, g_adj):
        assert (a is None) == (b is None)
        if a is not None:
            assert _rel(b, a) <= 1e-9
            checked += 1
    assert checked >= 4


def test_adjoint_params_subset_and_errors():
    sde = NeuralSDE("diagonal")
    y0 = torch.randn(B, D)
    ts = [0.0, 0.5]
    bm = pnode.BrownianInterval(0.0, 0.5, size=(B, D), entropy=4)
    first = list(sde.f_net.parameters())
    ys = pnode.sdeint_adjoint(sde, y0, ts, bm=bm, dt=0.05, adjoint_params=first)
    ys.sum().backward()
    assert all(p.grad is not None for p in first)
    assert all(p.grad is None for p in sde.g_net.parameters())
    ref = pnode.sdeint(sde, y0, ts, bm=bm, dt=0.05)
    g_ref = _grads(ref.sum(), first)
    for p, g in zip(first, g_ref):
        assert _rel(p.grad, g) <= 1e-9
    with pytest.raises(ValueError, match="method"):
        pnode.sdeint_adjoint(sde, y0, ts, bm=bm, dt=0.05, method="euler_heun")
    with pytest.raises(ValueError, match="adjoint_method"):
        pnode.sdeint_adjoint(sde, y0, ts, bm=bm, dt=0.05, adjoint_method="midpoint")
    pnode.sdeint_adjoint(sde, y0, ts, bm=bm, dt=0.05, adjoint_method="adjoint_reversible_heun")


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import torch
    from torch import nn
    import pnode
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)

    class S(nn.Module):
        noise_type, sde_type = "diagonal", "stratonovich"
        def __init__(self):
            super().__init__()
            self.f_net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 4))
            self.g_net = nn.Linear(4, 4)
        def f(self, t, y):
            return self.f_net(y)
        def g(self, t, y):
            return 0.3 * torch.sigmoid(self.g_net(y))

    import gc, threading, time

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    def growth(fn, steps):
        # peak RSS during one solve + backward, above the RSS just before it (sampled,
        # so the import-time peak that ru_maxrss would remember does not hide it)
        gc.collect()
        before = rss_mib()
        peak, stop = [before], threading.Event()
        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mib())
                time.sleep(0.0005)
        th = threading.Thread(target=sample)
        th.start()
        run(fn, steps)
        stop.set()
        th.join()
        return peak[0] - before

    torch.manual_seed(0)
    sde = S()
    y0 = torch.randn(16, 4, requires_grad=True)

    def run(fn, steps):
        ys = fn(sde, y0, [0.0, 1.0], dt=1.0 / steps)
        ys[-1].pow(2).sum().backward()

    run(pnode.sdeint_adjoint, 100)   # warm up allocator and imports
    adj_1k = growth(pnode.sdeint_adjoint, 1000)
    adj_10k = growth(pnode.sdeint_adjoint, 10000)
    bp_10k = growth(pnode.sdeint, 10000)
    print(json.dumps({"adj_1k": adj_1k, "adj_10k": adj_10k, "bp_10k": bp_10k}))
""")


def test_adjoint_memory_independent_of_steps():
    # Peak RSS growth during each solve (MiB): 10x more steps must not raise the
    # adjoint's, while backprop through the same solve must grow by tens of MiB.
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True,
                         text=True, timeout=120, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    assert mem["adj_10k"] - mem["adj_1k"] < 3.0, mem
    assert mem["bp_10k"] > 50.0 + mem["adj_10k"], mem


# ====================================================================== errors


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
        (dict(sde=ito), ValueError, "sde_type"),
        (dict(sde=sde, method="euler"), ValueError, "sde_type"),
        (dict(y0=y0.float().half()), TypeError, "y0"),
        (dict(y0=torch.zeros(B, D, dtype=torch.int64)), TypeError, "y0"),
        (dict(y0=torch.zeros(D)), ValueError, "y0"),
        (dict(sde=wrong_nt), ValueError, "noise_type"),
        (dict(sde=bad_g), ValueError, "sde.g"),
        (dict(bm=bm_wrong), ValueError, "bm"),
        (dict(bm=bm_short), ValueError, "bm"),
        (dict(adaptive=True), ValueError, "adaptive"),
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
