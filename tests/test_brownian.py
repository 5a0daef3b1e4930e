"""BrownianInterval: a repeatable path in any query order, additivity (and the space-time
Levy area's), N(0, h) statistics, sequential queries local and memory-bounded, and
argument errors."""
import gc
import math
import random

import pytest
import torch

import pnode

pytestmark = pytest.mark.usefixtures("float64_default")


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
    bm = pnode.BrownianInterval(0.0, 1.0, size=(4, 2), entropy=123, dt=dt, halfway_tree=True)
    first = [bm(a, b) for a, b in queries]
    # Same object, repeated and shuffled queries.
    order = list(range(len(queries)))
    rng.shuffle(order)
    for k in order:
        assert torch.equal(bm(*queries[k]), first[k])
    # A fresh path with the same entropy, queried in reverse order, is the same path.
    bm2 = pnode.BrownianInterval(0.0, 1.0, size=(4, 2), entropy=123, dt=dt, halfway_tree=True)
    for k in reversed(range(len(queries))):
        assert torch.equal(bm2(*queries[k]), first[k])
    # A different entropy is a different path.
    bm3 = pnode.BrownianInterval(0.0, 1.0, size=(4, 2), entropy=124, dt=dt, halfway_tree=True)
    assert not torch.allclose(bm3(*queries[0]), first[0])
    assert bm(0.3, 0.3).abs().max() == 0
    assert torch.equal(bm(0.4), bm(0.0, 0.4))


@pytest.mark.parametrize("halfway", [False, True])
@pytest.mark.parametrize("levy", ["none", "space-time"])
@pytest.mark.parametrize("dt", [None, 0.03])
def test_brownian_additive(levy, dt, halfway):
    rng = random.Random(2)
    bm = pnode.BrownianInterval(-1.0, 2.0, size=(3, 4), entropy=5, dt=dt,
                                levy_area_approximation=levy, halfway_tree=halfway)
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


@pytest.mark.parametrize("halfway", [False, True])
@pytest.mark.parametrize("levy", ["none", "space-time"])
def test_brownian_statistics(levy, halfway):
    n = 20000
    bm = pnode.BrownianInterval(0.0, 2.0, size=(n,), entropy=7, dt=0.1,
                                levy_area_approximation=levy, halfway_tree=halfway)
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
    bm = pnode.BrownianInterval(0.0, 1.0, size=(2,), entropy=3, dt=dt, cache_size=32,
                                halfway_tree=True)
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
    fast = pnode.BrownianInterval(0.0, 1.0, size=(3,), entropy=8, dt=0.1, halfway_tree=True)
    slow = pnode.BrownianInterval(0.0, 1.0, size=(3,), entropy=8, dt=0.1, halfway_tree=True)
    slow._by_points = False
    for a, b in queries:
        assert (fast(a, b) - slow(a, b)).abs().max() <= 1e-12


def test_brownian_errors():
    with pytest.raises(ValueError, match="t0"):
        pnode.BrownianInterval(1.0, 0.0, size=(2,))
    with pytest.raises(TypeError, match="dtype"):
        pnode.BrownianInterval(0.0, 1.0, size=(2,), dtype=torch.float16)
    with pytest.raises(ValueError, match="levy_area_approximation"):
        pnode.BrownianInterval(0.0, 1.0, size=(2,), levy_area_approximation="bogus")
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


@pytest.mark.parametrize("levy", ["none", "space-time"])
@pytest.mark.parametrize("dt", [None, 0.03])
def test_brownian_split_at_queries(levy, dt):
    """torchsde's default tree: additive, repeatable for the same queries in the same
    order (also after the value cache has evicted them), one normal draw per new point."""
    rng = random.Random(6)
    kw = dict(size=(3, 4), entropy=5, dt=dt, levy_area_approximation=levy,
              split_at_queries=True, cache_size=8)
    bm = pnode.BrownianInterval(-1.0, 2.0, **kw)
    queries = []
    for _ in range(20):
        a, b, c = sorted(rng.uniform(-1.0, 2.0) for _ in range(3))
        queries += [(a, c), (a, b), (b, c)]
    vals = [bm(a, b, return_H=True) if levy != "none" else (bm(a, b),) for a, b in queries]
    for k in range(0, len(queries), 3):
        (wac, *hac), (wab, *hab), (wbc, *hbc) = vals[k:k + 3]
        assert (wac - wab - wbc).abs().max() <= 1e-12
        if levy != "none":
            (a, b), (_, c) = queries[k + 1], queries[k + 2]
            h = ((b - a) * hab[0] + (c - b) * hbc[0] + 0.5 * ((c - b) * wab - (b - a) * wbc)) / (c - a)
            assert (h - hac[0]).abs().max() <= 1e-12
    for (a, b), v in zip(reversed(queries), reversed(vals)):  # evicted long ago: rebuilt
        assert torch.equal(bm(a, b), v[0])
    fresh = pnode.BrownianInterval(-1.0, 2.0, **kw)
    assert all(torch.equal(fresh(a, b), v[0]) for (a, b), v in zip(queries, vals))
    # A new point inside a known interval (value cached) is one bridge sample: one
    # normal draw, where the order-independent tree draws one per bisection level.
    bm = pnode.BrownianInterval(-1.0, 2.0, **dict(kw, cache_size=None))
    bm(0.121, 0.149)
    calls = []
    orig = bm._normals
    bm._normals = lambda *args, **kws: calls.append(1) or orig(*args, **kws)
    bm(0.1234567891, 0.1456789)
    assert len(calls) == 2


def test_brownian_split_at_queries_statistics_and_memory():
    bm = pnode.BrownianInterval(0.0, 1.0, size=(20000,), entropy=11, split_at_queries=True)
    rng = random.Random(7)
    for a, b in _random_intervals(rng, 10):
        bm(a, b)
    x, y = bm(0.3, 0.31), bm(0.31, 0.7)
    assert _z_var(x, 0.01) < 4.5 and _z_var(y, 0.39) < 4.5 and _z_mean(x, 0.01) < 4.5
    assert abs(torch.corrcoef(torch.stack([x, y]))[0, 1].item()) < 4.5 / math.sqrt(20000)
    # A solver that only queries its grid splits no cell: nothing is kept.
    grid = pnode.BrownianInterval(0.0, 1.0, size=(2,), entropy=3, dt=1.0 / 4096,
                                  split_at_queries=True, cache_size=32)
    for k in range(4096):
        grid(k / 4096, (k + 1) / 4096)
    assert not grid._qroots and len(grid._cache) <= 32


@pytest.mark.parametrize("size", [(), (0,), (5,), (2, 3)])
def test_brownian_point_queries_any_size(size):
    """Off-grid points of a scalar (size ()) or empty motion have the motion's shape
    (torchsde's test_shape); with a coarse tol the point is interpolated."""
    for tol, halfway in ((0.0, False), (0.0, True), (0.5, True)):
        bm = pnode.BrownianInterval(0.0, 1.0, size=size, entropy=1, tol=tol, halfway_tree=halfway)
        w = bm(0.3, 0.77)
        assert w.shape == torch.Size(size)
        assert torch.allclose(bm(0.3) + w, bm(0.77), atol=1e-12)


def test_brownian_default_tree_is_torchsdes():
    """torchsde's defaults: BrownianInterval and BrownianPath split at the queries (the
    path depends on their order), BrownianTree and halfway_tree=True do not."""
    from pnode.sde import BrownianPath, BrownianTree

    def two_orders(make):
        a, b = make(), make()
        wa = a(0.3, 0.7)
        b(0.0, 0.5)
        return wa, b(0.3, 0.7)

    kw = dict(size=(64,), entropy=5)
    w1, w2 = two_orders(lambda: pnode.BrownianInterval(0.0, 1.0, **kw))
    assert (w1 - w2).abs().max() > 1e-3
    assert pnode.BrownianInterval(0.0, 1.0, **kw).split_at_queries
    w1, w2 = two_orders(lambda: pnode.BrownianInterval(0.0, 1.0, halfway_tree=True, **kw))
    assert torch.equal(w1, w2)
    w1, w2 = two_orders(lambda: BrownianTree(0.0, torch.zeros(64), entropy=5))
    assert torch.equal(w1, w2)
    assert BrownianPath(0.0, torch.zeros(3))._base.split_at_queries
    assert not pnode.BrownianInterval(0.0, 1.0, split_at_queries=False, **kw).split_at_queries
    with pytest.raises(ValueError, match="split_at_queries"):
        pnode.BrownianInterval(0.0, 1.0, halfway_tree=True, split_at_queries=True, **kw)


def test_node_normals_torch_route_keyed_by_64_bits():
    """Large draws come from torch's generator keyed through its whole state: a seed
    change above bit 32 (which manual_seed ignores) gives a different, independent draw;
    the same seed repeats; the numbers are N(0, 1); the thread count does not matter."""
    from pnode.sde import normals

    assert normals._check_torch_layout()  # else every draw would take the numpy route
    n = 1 << 16
    assert n >= normals.TORCH_MIN_NUMEL
    gen = normals.NodeNormals(stream=12345, dtype=torch.float64)
    s = 0x1234_5678_9ABC
    a = gen.draw(s, (n,))
    b = gen.draw(s + (1 << 32), (n,))
    c = gen.draw(s ^ (1 << 63), (n,))
    assert torch.equal(gen.draw(s, (n,)), a)
    other = normals.NodeNormals(stream=12346, dtype=torch.float64)
    d = other.draw(s, (n,))
    for x in (b, c, d):
        assert abs(torch.corrcoef(torch.stack([a, x]))[0, 1].item()) * math.sqrt(n) < 4.5
    for x in (a, b, c, d):
        assert _z_mean(x, 1.0) < 4.5 and _z_var(x, 1.0) < 4.5
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert torch.equal(gen.draw(s, (n,)), a)
    finally:
        torch.set_num_threads(threads)
    rows = gen.draw_rows([s, s + (1 << 32)], (256, 256))
    assert torch.equal(rows[0].reshape(-1), a) and torch.equal(rows[1].reshape(-1), b)


def test_brownian_large_point_shortcut_is_node_bisection():
    """The point shortcut draws its levels with draw_rows; on the torch route (a large
    motion) it must still be the path of node-by-node bisection."""
    rng = random.Random(5)
    kw = dict(size=(48, 48), entropy=8, dt=0.1, halfway_tree=True)
    fast, slow = pnode.BrownianInterval(0.0, 1.0, **kw), pnode.BrownianInterval(0.0, 1.0, **kw)
    slow._by_points = False
    for a, b in _random_intervals(rng, 4):
        assert (fast(a, b) - slow(a, b)).abs().max() <= 1e-12


def test_brownian_split_tree_sequential_sweeps_stay_shallow():
    """A hint-less split tree queried step by step (an adaptive solve, then its adjoint's
    backward sweep) costs O(1) normal draws per query: splitting at the points alone
    would chain the remainders and rebuild evicted values from the root (~23 draws per
    query at 1000 steps, O(N^2) in all)."""
    n = 1000
    bm = pnode.BrownianInterval(0.0, 1.0, size=(3,), entropy=2)
    calls = []
    orig = bm._normals
    bm._normals = lambda *args, **kws: calls.append(1) or orig(*args, **kws)
    steps = [(k / n, (k + 1) / n) for k in range(n)]
    first = [bm(a, b) for a, b in steps]
    back = [bm(a, b) for a, b in reversed(steps)]
    assert all(torch.equal(x, y) for x, y in zip(first, reversed(back)))
    assert len(calls) / (2 * n) < 2.5
    assert (sum(first) - bm(0.0, 1.0)).abs().max() <= 1e-12


def test_brownian_draws_on_cpu_whatever_the_default_device():
    """Node normals are drawn on the CPU (then moved to ``device``) even when torch's
    default device is another one (here "meta", which computes nothing)."""
    want = [pnode.BrownianInterval(0.0, 1.0, size=(48, 48), entropy=1, halfway_tree=hw)(0.1, 0.3)
            for hw in (False, True)]
    before = torch.get_default_device()
    try:
        torch.set_default_device("meta")
        got = [pnode.BrownianInterval(0.0, 1.0, size=(48, 48), entropy=1, device="cpu",
                                      halfway_tree=hw)(0.1, 0.3) for hw in (False, True)]
    finally:
        torch.set_default_device(before)
    for w, g in zip(want, got):
        assert g.device.type == "cpu" and torch.equal(w, g)
