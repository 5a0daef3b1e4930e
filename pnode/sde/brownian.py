"""Brownian motion sampled on demand from a binary tree of intervals.

The tree's upper levels split ``[t0, t1]`` on cell boundaries, balanced over the cells:
``t0 + k*dt`` for a step hint ``dt``; every step of a pnode solver's grid (output times
included) for an interval that a solver adopted before its first query; a single cell
otherwise. Inside a cell there are two trees, as in torchsde:

- split at the queries (the default, torchsde's ``halfway_tree=False``): a cell is split
  at the first query point falling in it, each half at the next one, and so on (a node
  over 8 times longer than the query is bisected first, which keeps the depth
  logarithmic); a new point costs about one normal draw, and the path depends on the
  order of the queries;
- order-independent (``halfway_tree=True``): every cell is bisected at floating-point
  midpoints down to float64 resolution, so ``W(tb) - W(ta)`` is a fixed function of
  ``entropy``, ``t0``, ``t1``, the cell grid and the query, whatever came before; a
  point inside a cell costs one normal draw per bisection level (about 45).

A node's increment is drawn from the Brownian bridge conditioned on its parent's
increment, with normals keyed by a 64-bit hash of the node's position in the tree (and
a word of the entropy; see :mod:`pnode.sde.normals`); in both trees repeated queries
agree bit for bit and increments over adjacent intervals add up (to round-off).

Node increments live in an LRU cache of ``cache_size`` entries; a node is rebuilt from
its parent when needed. The order-independent tree stores nothing else (only the
ancestors of the last queried node are alive); the split tree keeps the structure of the
cells it has split (memory grows with the distinct query points). Queries are answered by
searching from the last queried node rather than from the root (Kidger et al. 2021), so
the sequential pattern of a fixed-step solver costs O(1) node splits per step.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict

import numpy as np
import torch

from .brownian_base import BaseBrownian
from .normals import NodeNormals

__all__ = ["BrownianInterval"]

_MASK64 = (1 << 64) - 1
# Distinct constants per child side so the two children of a node get unrelated seeds.
_LEFT = 0x243F6A8885A308D3
_RIGHT = 0x13198A2E03707344
_ROOT = 0xA4093822299F31D0

# Below a cell, bisection stops after this many levels (dt * 2**-100, far below float64
# resolution of any realistic time); a query inside such a node falls back to linear
# interpolation, which keeps additivity exact but is only an approximation of the law.
_MAX_SUBCELL_LEVEL = 100

# In a tree split at the queries, a node longer than this many query lengths is bisected
# instead (see BrownianInterval._query_split).
_SPLIT_SPAN = 8

_LEVY_AREA_APPROXIMATIONS = ("none", "space-time", "davie", "foster")
_AREA = 0xB7E151628AED2A6A  # seed offset of a node's Lévy-area noise


def _mix64(x: int) -> int:
    """SplitMix64 finaliser: a bijection on 64-bit words with full avalanche."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class _Node:
    """One interval [a, b] of the canonical tree.

    ``i``/``j`` are cell indices when the node spans whole cells (``j - i >= 1``), else
    ``None``; ``level`` counts bisections below the cell level.
    """

    __slots__ = ("a", "b", "i", "j", "level", "seed", "parent", "split", "kids")

    def __init__(self, a, b, i, j, level, seed, parent):
        self.split = self.kids = None  # in-cell node of a split_at_queries tree: kept
        self.a = a
        self.b = b
        self.i = i
        self.j = j
        self.level = level
        self.seed = seed
        self.parent = parent


class BrownianInterval(BaseBrownian):
    """Brownian motion on ``[t0, t1]`` answering increment queries ``W(tb) - W(ta)``.

    Args:
        t0, t1: start and end time of the path (floats, ``t0 < t1``).
        size: shape of ``W(t)`` for one time, e.g. ``(batch, m)`` (tuple or int).
        dtype: ``torch.float32`` or ``torch.float64`` (default: torch's default dtype).
        device: device of the returned tensors (default CPU).
        entropy: integer seed. The same entropy (with the same ``t0``, ``t1``, ``dt``,
            and, for the default tree, the same queries in the same order) gives the
            same path; ``None`` draws one from torch's global generator.
        dt: optional step hint. The tree then has nodes exactly on ``t0 + k*dt``, so a
            fixed-step solver starting at ``t0`` with step ``dt`` is served in O(1)
            splits per step. Without it ``[t0, t1]`` is a single cell. A hint-less
            interval that has not been queried yet and starts at the solver's ``ts[0]``
            adopts the grid of the first pnode solver using it (a node on every step,
            output times included).
        tol: time resolution: intervals shorter than ``tol`` are not bisected further
            (queries inside one interpolate linearly). 0 (default): float resolution.
        pool_size: accepted for torchsde compatibility (pnode draws every node's
            normals from its own counter-based stream; there is no pool).
        cache_size: number of node increments (and in-cell point values) kept in the
            LRU cache; bounds memory to about ``cache_size * prod(size)`` numbers,
            times 2 with the space-time Lévy area. ``None``: unbounded.
        halfway_tree: torchsde's switch between its two trees, with its meaning.
            ``False`` (default, as torchsde): the tree is split at the query points
            (see ``split_at_queries``): about one normal draw per new point; the path is
            a function of ``entropy`` *and of the locations and order of the
            queries*. ``True``: the order-independent tree described above, the path a
            function of ``entropy`` alone (torchsde's dyadic tree; unlike torchsde,
            pnode needs neither ``tol > 0`` nor ``dt=None`` for it).
        levy_area_approximation: ``"none"``, ``"space-time"``, ``"davie"`` or
            ``"foster"``. With ``"space-time"`` every node also carries its space-time
            Lévy area ``H`` (see ``__call__``); ``"davie"`` and ``"foster"`` add an
            approximation of the Lévy area ``A`` (Davie 2014; Foster 2020): the node's
            ``H (x) W - W (x) H`` plus an independent antisymmetric Gaussian correction of
            variance ``h^2/12`` (Davie) or ``h^2/20 + h/5 (H_i^2 + H_j^2)`` (Foster), so
            that ``A_ij`` has the exact variance ``h^2/4``; areas of unions of nodes
            follow Chen's relation.
        split_at_queries: the tree inside a cell, stated directly (pnode's spelling;
            ``None``, the default, means ``not halfway_tree``). ``True``: a cell is
            split at the query point that falls in it (after bisecting nodes over 8
            times longer than the query interval, so that sequential queries do not
            build a deep chain), so a new point costs about one bridge sample (one
            normal draw) instead of one per bisection level; repeated queries still
            agree bit for bit (also after cache eviction) and increments add up, but
            the path depends on the order of the queries, and the tree's structure is
            kept, so memory grows with the number of distinct query points. ``False``: the order-independent tree. ``True`` together with
            ``halfway_tree=True`` is a contradiction and raises ``ValueError``.
        W, H: the increment and space-time Lévy area over ``[t0, t1]`` (default:
            drawn). ``W`` also gives ``size``, ``dtype`` and ``device`` when they are
            not passed.

    Calling ``bm(ta, tb)`` returns a tensor of shape ``size``; ``bm(t)`` is
    ``bm(t0, t)``. Times are in the same units as ``t0``/``t1``; the increment over an
    interval of length ``h`` has mean 0 and variance ``h`` per entry.
    """

    def __init__(self, t0=0.0, t1=1.0, size=None, dtype=None, device=None, entropy=None,
                 dt=None, tol=0.0, pool_size=8, cache_size=45, halfway_tree=False,
                 levy_area_approximation="none", W=None, H=None, split_at_queries=None):
        t0 = _as_time(t0, "t0")
        t1 = _as_time(t1, "t1")
        if not t0 < t1:
            raise ValueError(f"BrownianInterval: t0 must be < t1, got t0={t0}, t1={t1}")
        if W is not None:
            if not isinstance(W, torch.Tensor):
                raise TypeError(f"BrownianInterval: W must be a tensor, got {type(W).__name__}")
            size = W.shape if size is None else size
            dtype = W.dtype if dtype is None else dtype
            device = W.device if device is None else device
        size = _check_size(size)
        dtype = _check_options(dtype, levy_area_approximation, cache_size)
        tol = _as_time(tol, "tol")
        if tol < 0:
            raise ValueError(f"BrownianInterval: tol must be non-negative, got {tol}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"BrownianInterval: pool_size must be a positive int, got {pool_size!r}")
        entropy = _check_entropy(entropy)
        dt, ncells = _check_step(t0, t1, dt)

        self._t0, self._t1, self._dt = t0, t1, dt
        self._cells = _UniformCells(t0, t1, dt, ncells)
        self._size = torch.Size(size)
        self._dtype = dtype
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._entropy = int(entropy)
        self._levy = levy_area_approximation
        self._have_H = levy_area_approximation != "none"
        self._have_A = levy_area_approximation in ("davie", "foster")
        self._cache_size = cache_size if cache_size is not None else float("inf")
        self._tol, self._pool_size, self._halfway_tree = tol, pool_size, bool(halfway_tree)
        self._given = (W, H)
        for name, v in (("W", W), ("H", H)):
            if v is not None and tuple(v.shape) != tuple(size):
                raise ValueError(f"BrownianInterval: {name} must have shape size={tuple(size)}, "
                                 f"got {tuple(v.shape)}")

        # SeedSequence hashes an arbitrary-size integer into well-mixed words: one word
        # keys the whole path's stream family, another seeds the root node.
        folded = abs(self._entropy) * 2 + (self._entropy < 0)  # SeedSequence wants >= 0
        words = np.random.SeedSequence(folded).generate_state(2, np.uint64)
        self._stream = int(words[0])
        root_seed = int(words[1])
        self._root = _Node(t0, t1, 0, self._cells.count, 0, root_seed, None)
        self._root_value = None
        self._last = self._root
        self._cache: OrderedDict = OrderedDict()
        self._queried = False
        self._qsplit = _check_tree(halfway_tree, split_at_queries)
        self._query_length = t1 - t0
        self._qroots = {}  # (a, b) -> the kept node of a cell split inside (split_at_queries)
        self._by_points = not self._have_H and not self._qsplit
        self._gen = NodeNormals(self._stream, dtype)

    # ------------------------------------------------------------------ properties
    @property
    def t0(self) -> float:
        """Start time of the path."""
        return self._t0

    @property
    def t1(self) -> float:
        """End time of the path."""
        return self._t1

    @property
    def dt(self):
        """The step hint (given at construction, or the step of the solver grid the
        interval adopted); ``None`` if neither."""
        return self._dt

    @property
    def shape(self) -> torch.Size:
        """Shape of one increment (the ``size`` argument)."""
        return self._size

    def size(self):
        """Shape of one increment (a method, as in torchsde)."""
        return self._size

    @property
    def tol(self):
        return self._tol

    @property
    def pool_size(self):
        return self._pool_size

    @property
    def cache_size(self):
        return None if self._cache_size == float("inf") else self._cache_size

    @property
    def split_at_queries(self) -> bool:
        """Whether cells are split at the query points (torchsde's default tree)."""
        return self._qsplit

    @property
    def halfway_tree(self):
        return self._halfway_tree

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def entropy(self) -> int:
        """The integer seed of this path."""
        return self._entropy

    @property
    def levy_area_approximation(self) -> str:
        return self._levy

    def __repr__(self):
        return (f"BrownianInterval(t0={self._t0}, t1={self._t1}, size={tuple(self._size)}, "
                f"dtype={self._dtype}, device={self._device}, entropy={self._entropy}, "
                f"dt={self._dt}, levy_area_approximation={self._levy!r})")

    # ------------------------------------------------------------------ queries
    def __call__(self, ta, tb=None, return_U=False, return_A=False, return_H=False):
        """Increment ``W(tb) - W(ta)`` of shape ``size``.

        ``bm(t)`` (one time) returns ``W(t) - W(t0)``. ``t0 <= ta <= tb <= t1`` is
        required. With a Lévy area approximation other than ``"none"``:

        - ``return_U=True`` also returns ``U = integral_ta^tb (W(s) - W(ta)) ds
          = h * (W/2 + H)`` with ``h = tb - ta`` (torchsde's spelling);
        - ``return_H=True`` (pnode's) also returns the space-time Lévy area
          ``H = (1/h) * integral_ta^tb (W(s) - W(ta) - (s - ta)/h * (W(tb) - W(ta))) ds``
          (mean 0, variance ``h/12``, independent of the increment);
        - ``return_A=True`` (``"davie"``/``"foster"``) also returns the Lévy area
          approximation ``A``, antisymmetric, of shape ``(*size, size[-1])``; zeros of
          shape ``size`` when ``size`` has fewer than 2 dimensions (a batch of scalar
          motions has no area).

        Returns ``W`` alone, or the tuple ``(W, U, H, A)`` restricted to the flags given.
        """
        if tb is None:
            ta, tb = self._t0, ta
        ta = _as_time(ta, "ta")
        tb = _as_time(tb, "tb")
        if (return_U or return_H) and not self._have_H:
            raise ValueError("BrownianInterval: return_U/return_H need levy_area_approximation "
                             "'space-time', 'davie' or 'foster'")
        if return_A and not self._have_A:
            raise ValueError("BrownianInterval: return_A needs levy_area_approximation "
                             "'davie' or 'foster'")
        if ta > tb:
            raise ValueError(f"BrownianInterval: ta must be <= tb, got ta={ta}, tb={tb}")
        if ta < self._t0 or tb > self._t1:
            raise ValueError(f"BrownianInterval: query [ta={ta}, tb={tb}] is outside "
                             f"[t0={self._t0}, t1={self._t1}]")
        self._queried = True
        if ta == tb:
            value = self._zero()
        else:
            value = self._increment(ta, tb)
        if not self._have_H:
            w = value
            if not (return_U or return_H or return_A):
                return w
        else:
            w = value[0]
        if not (return_U or return_H or return_A):
            return w
        out = [w]
        if return_U:
            out.append((tb - ta) * (0.5 * w + value[1]))
        if return_H:
            out.append(value[1])
        if return_A:
            out.append(value[2])
        return tuple(out)

    def _zero(self):
        w = torch.zeros(self._size, dtype=self._dtype, device=self._device)
        if not self._have_H:
            return w
        if not self._have_A:
            return w, torch.zeros_like(w)
        return w, torch.zeros_like(w), torch.zeros(self._area_shape(), dtype=self._dtype,
                                                   device=self._device)

    def _area_shape(self):
        if len(self._size) < 2:
            return self._size
        return (*self._size, self._size[-1])

    def _area(self, seed, w, h, length):
        """Davie's / Foster's approximation of a node's Lévy area from its ``(W, H)``."""
        if len(self._size) < 2:
            return torch.zeros_like(w)
        a = h.unsqueeze(-1) * w.unsqueeze(-2) - w.unsqueeze(-1) * h.unsqueeze(-2)
        # Antisymmetric normal noise of unit variance off the diagonal.
        z = self._normals(_mix64(seed ^ _AREA), 1, self._area_shape())[0]
        z = (z - z.transpose(-1, -2)) * math.sqrt(0.5)
        if self._levy == "foster":
            hh = h * h
            std = (length * length / 20 + (length / 5) * (hh.unsqueeze(-1) + hh.unsqueeze(-2))).sqrt()
        else:
            std = math.sqrt(length * length / 12)
        return a + std * z

    def _adopt_grid(self, time_grid):
        """Put cell boundaries on every step of a pnode solver's grid (before any query).

        ``time_grid`` is a :class:`pnode.sde.grid.TimeGrid` with ``ts[0] == t0`` and
        ``ts[-1] <= t1``: its steps are the output times and ``t0 + k*dt``. The tree then
        has a node on every step, so no query needs sub-cell bisection. Called by the
        solvers for intervals created without ``dt``; returns whether the grid was
        adopted. Once any query has been answered the tree is fixed.
        """
        ts = time_grid.ts
        if self._dt is not None or self._queried or ts[0] != self._t0 or ts[-1] > self._t1:
            return False
        cells = _SolverGridCells(time_grid, self._t1)
        if cells.count > 2**48:
            return False
        self._dt, self._cells = time_grid.dt, cells
        self._root = _Node(self._t0, self._t1, 0, cells.count, 0, self._root.seed, None)
        self._last = self._root
        return True

    # ------------------------------------------------------------------ tree structure
    def _mid(self, n, query=None):
        """Split point of node ``n``, or ``None`` if it cannot be split further.

        With ``split_at_queries``, an in-cell node keeps the split it was given first:
        ``query`` (a time strictly inside ``n``) when ``n`` has none yet."""
        if n.i is not None and n.j - n.i > 1:
            return self._cells.time((n.i + n.j) // 2)
        if self._qsplit:
            if n.split is None and n.i is not None and (n.a, n.b) in self._qroots:
                kept = self._qroots[(n.a, n.b)]  # n is a stale copy of a kept cell
                n.split, n.kids = kept.split, kept.kids
            if n.split is None and query is not None and n.a < query < n.b and n.b - n.a > self._tol:
                n.split = self._query_split(n, query)
                if n.i is not None:  # a cell's first split: keep its node from now on
                    self._qroots[(n.a, n.b)] = n
            return n.split
        if n.level >= _MAX_SUBCELL_LEVEL or n.b - n.a <= self._tol:
            return None
        m = n.a + 0.5 * (n.b - n.a)
        if not n.a < m < n.b:  # a and b are adjacent floats
            return None
        return m

    def _query_split(self, n, query):
        """Where a split tree splits ``n`` for a query point inside it: at the point,
        unless ``n`` is over ``_SPLIT_SPAN`` times longer than the query interval; then
        at its midpoint. Splitting sequential queries at their points alone would hang
        the remainders ``[t_k, b]`` one below the other, a chain whose depth (the cost of
        rebuilding an evicted value, so of a backward sweep) grows with the number of
        queries; bisecting first keeps the depth ~log2(length / query) + _SPLIT_SPAN, as
        torchsde's dependency tree does."""
        h = n.b - n.a
        if h > _SPLIT_SPAN * self._query_length:
            m = n.a + 0.5 * h
            if n.a < m < n.b:
                return m
        return query

    def _children(self, n, m):
        if self._qsplit:
            return self._kept_children(n, m)
        return self._new_children(n, m)

    def _kept_children(self, n, m):
        """Children in a split_at_queries tree: the node of a cell that has been split
        and every node inside it are created once and kept (their splits are the tree's
        structure); cells never split inside are rebuilt, so a solver that only queries
        its grid keeps no nodes."""
        if n.kids is not None:
            return n.kids
        left, right = self._new_children(n, m)
        kids = []
        for c in (left, right):
            if c.i is not None and c.j - c.i == 1:
                c = self._qroots.get((c.a, c.b), c)
            kids.append(c)
        if n.i is None or n.j - n.i == 1:  # in-cell: keep; above the cells: rebuilt
            n.kids = tuple(kids)
        return tuple(kids)

    def _new_children(self, n, m):
        if n.i is not None and n.j - n.i > 1:
            k = (n.i + n.j) // 2
            li, lj, ri, rj, level = n.i, k, k, n.j, 0
        else:
            li = lj = ri = rj = None
            level = n.level + 1
        left = _Node(n.a, m, li, lj, level, _mix64(n.seed ^ _LEFT), n)
        right = _Node(m, n.b, ri, rj, level, _mix64(n.seed ^ _RIGHT), n)
        return left, right

    # ------------------------------------------------------------------ values
    def _normals(self, seed, count, shape=None):
        shape = tuple(self._size) if shape is None else tuple(shape)
        x = self._gen.draw(seed, (count,) + shape)
        if self._device.type != "cpu":
            x = x.to(self._device)
        return x

    def _root_val(self):
        if self._root_value is None:
            h = self._t1 - self._t0
            z = self._normals(_mix64(self._root.seed ^ _ROOT), 2)
            w_given, h_given = self._given
            w = math.sqrt(h) * z[0] if w_given is None else self._as_value(w_given)
            if not self._have_H:
                self._root_value = w
            else:
                hh = math.sqrt(h / 12) * z[1] if h_given is None else self._as_value(h_given)
                self._root_value = (w, hh)
                if self._have_A:
                    self._root_value = (w, hh, self._area(self._root.seed, w, hh, h))
        return self._root_value

    def _as_value(self, x):
        return x.detach().to(device=self._device, dtype=self._dtype)

    def _cache_get(self, key):
        v = self._cache.get(key)
        if v is not None:
            self._cache.move_to_end(key)
        return v

    def _cache_put(self, key, v):
        self._cache[key] = v
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _split(self, n, m, v):
        """Children of ``n`` (split at ``m``) and their values, given ``n``'s value ``v``."""
        left, right = self._children(n, m)
        kl, kr = (n.a, m), (m, n.b)
        vl = self._cache_get(kl)
        vr = self._cache_get(kr)
        if vl is None or vr is None:
            vl, vr = self._bridge(n, m, v)
            if self._have_A:
                vl = (*vl, self._area(left.seed, vl[0], vl[1], m - n.a))
                vr = (*vr, self._area(right.seed, vr[0], vr[1], n.b - m))
            self._cache_put(kl, vl)
            self._cache_put(kr, vr)
        return left, vl, right, vr

    def _bridge(self, n, m, v):
        h = n.b - n.a
        u = m - n.a
        h2 = n.b - m
        if not self._have_H:
            # z is a fresh buffer, so scale it in place: two kernels instead of four.
            wl = self._normals(n.seed, 1)[0].mul_(math.sqrt(u * h2 / h)).add_(v, alpha=u / h)
            return wl, v - wl
        # Conditioning by Matheron's rule: sample the four independent quantities of
        # the two halves from their prior, then correct by the (exactly known) linear
        # map to the parent's (W, H), whose prior covariance is diag(h, h/12).
        w, hh = v[0], v[1]
        z = self._normals(n.seed, 4)
        w1 = math.sqrt(u) * z[0]
        w2 = math.sqrt(h2) * z[1]
        h1 = math.sqrt(u / 12) * z[2]
        h2_ = math.sqrt(h2 / 12) * z[3]
        dw = w - (w1 + w2)
        dh = hh - (u * h1 + h2 * h2_ + 0.5 * (h2 * w1 - u * w2)) / h
        w1 = w1 + (u / h) * dw + (6 * u * h2 / (h * h)) * dh
        h1 = h1 + (u / h) ** 2 * dh
        h2_ = h2_ + (h2 / h) ** 2 * dh
        return (w1, h1), (w - w1, h2_)

    def _value(self, n):
        """Value of node ``n``: from the cache, else rebuilt from its nearest cached ancestor."""
        path = []
        while n.parent is not None:
            v = self._cache_get((n.a, n.b))
            if v is not None:
                break
            path.append(n)
            n = n.parent
        else:
            v = self._root_val()
        for child in reversed(path):
            p = child.parent
            _, vl, _, vr = self._split(p, self._mid(p), v)
            v = vl if child.a == p.a else vr
        return v

    def _combine(self, left, hl, right, hr):
        """Value over the union of two adjacent intervals of lengths ``hl`` and ``hr``."""
        if left is None:
            return right
        if right is None:
            return left
        if not self._have_H:
            return left + right
        wl, Hl, wr, Hr = left[0], left[1], right[0], right[1]
        h = hl + hr
        out = (wl + wr, (hl * Hl + hr * Hr + 0.5 * (hr * wl - hl * wr)) / h)
        if not self._have_A:
            return out
        area = left[2] + right[2]
        if len(self._size) >= 2:  # Chen's relation: the antisymmetric part of W_l (x) W_r
            area = area + 0.5 * (wl.unsqueeze(-1) * wr.unsqueeze(-2) - wr.unsqueeze(-1) * wl.unsqueeze(-2))
        return (*out, area)

    def _partial(self, n, v, ta, tb):
        # Only reached below float resolution (see _MAX_SUBCELL_LEVEL): interpolate.
        frac = (tb - ta) / (n.b - n.a)
        if not self._have_H:
            return frac * v
        out = (frac * v[0], torch.zeros_like(v[1]))
        return out if not self._have_A else (*out, frac * v[2])

    def _increment(self, ta, tb):
        # Search from the last queried node: a fixed-step solver's next query sits next
        # to the previous one, so the common ancestor is usually a few levels up.
        self._query_length = tb - ta
        n = self._last
        while not (n.a <= ta and tb <= n.b):
            n = n.parent
        v = self._value(n)
        while True:
            if n.a == ta and n.b == tb:
                self._last = n
                return v
            if self._by_points and n.j is not None and n.j - n.i == 1:
                self._last = n
                xb = v if tb == n.b else self._point(n, v, tb)
                return xb if ta == n.a else xb - self._point(n, v, ta)
            m = self._mid(n, tb if n.a < tb < n.b else ta)
            if m is None:
                self._last = n
                return self._partial(n, v, ta, tb)
            left, vl, right, vr = self._split(n, m, v)
            if tb <= m:
                n, v = left, vl
            elif ta >= m:
                n, v = right, vr
            else:
                break
        # The query straddles m: cover [ta, m] along the left child's right spine and
        # [m, tb] along the right child's left spine.
        acc_l = self._cover_from(left, vl, ta)
        acc_r = self._cover_to(right, vr, tb)
        return self._combine(acc_l, m - ta, acc_r, tb - m)

    def _point(self, n, v, s):
        """``W(s) - W(n.a)`` for a cell ``n`` with value ``v`` and ``n.a < s < n.b``.

        The same bisection (Lévy's midpoint construction) as splitting the cell node by
        node, with the same node seeds, but done on the coefficients: each endpoint of
        the current interval is a linear combination of ``v`` and the normals of the
        nodes visited so far, so the ~45 levels to float resolution cost scalar
        arithmetic plus one normal draw per level, and a single tensor contraction.
        Only used with ``levy_area_approximation="none"`` (the space-time area needs
        the pairs (W, H) node by node).
        """
        key = (n.a, n.b, s)
        x = self._cache_get(key)
        if x is not None:
            return x
        # Lévy-Ciesielski form of the bisection: W(s) - W(n.a) is the interpolation of v
        # plus, for every node [lo, hi] on the way down to s, that node's midpoint normal
        # times its bridge standard deviation times the tent function at s (1 at the
        # midpoint, 0 at lo and hi): O(1) scalar work per level.
        lo, hi = n.a, n.b
        coef = [(s - lo) / (hi - lo)]  # on [v, xi_1, xi_2, ...]
        seeds = []
        seed, level = n.seed, n.level
        while True:
            m = lo + 0.5 * (hi - lo)
            if not lo < m < hi or level >= _MAX_SUBCELL_LEVEL or hi - lo <= self._tol:
                break  # below float (or the depth cap's) resolution: linear from here
            sd = math.sqrt((m - lo) * (hi - m) / (hi - lo))
            seeds.append(seed)
            if s == m:
                coef.append(sd)
                break
            if s < m:
                coef.append(sd * ((s - lo) / (m - lo)))
                hi, seed = m, _mix64(seed ^ _LEFT)
            else:
                coef.append(sd * ((hi - s) / (hi - m)))
                lo, seed = m, _mix64(seed ^ _RIGHT)
            level += 1
        xi = self._gen.draw_rows(seeds, self._size)
        c = torch.tensor(coef[1:len(seeds) + 1], dtype=self._dtype, device="cpu")
        x = torch.tensordot(c, xi, dims=1).to(self._device)
        x = x.add_(v, alpha=coef[0])
        self._cache_put(key, x)
        return x

    def _cover_from(self, n, v, ta):
        """Value over ``[ta, n.b]`` for ``n.a <= ta < n.b``."""
        acc, acc_len = None, 0.0
        while n.a != ta:
            if self._by_points and n.j is not None and n.j - n.i == 1:
                return self._combine(v - self._point(n, v, ta), n.b - ta, acc, acc_len)
            m = self._mid(n, ta)
            if m is None:
                piece = self._partial(n, v, ta, n.b)
                return self._combine(piece, n.b - ta, acc, acc_len)
            left, vl, right, vr = self._split(n, m, v)
            if ta >= m:
                n, v = right, vr
            else:
                acc = self._combine(vr, right.b - right.a, acc, acc_len)
                acc_len += right.b - right.a
                n, v = left, vl
        return self._combine(v, n.b - n.a, acc, acc_len)

    def _cover_to(self, n, v, tb):
        """Value over ``[n.a, tb]`` for ``n.a < tb <= n.b``; leaves ``_last`` at the end."""
        acc, acc_len = None, 0.0
        while n.b != tb:
            if self._by_points and n.j is not None and n.j - n.i == 1:
                self._last = n
                return self._combine(acc, acc_len, self._point(n, v, tb), tb - n.a)
            m = self._mid(n, tb)
            if m is None:
                piece = self._partial(n, v, n.a, tb)
                self._last = n
                return self._combine(acc, acc_len, piece, tb - n.a)
            left, vl, right, vr = self._split(n, m, v)
            if tb <= m:
                n, v = left, vl
            else:
                acc = self._combine(acc, acc_len, vl, left.b - left.a)
                acc_len += left.b - left.a
                n, v = right, vr
        self._last = n
        return self._combine(acc, acc_len, v, n.b - n.a)


class _UniformCells:
    """Cell boundaries ``t0 + k*dt`` for ``k < count`` and ``t1`` for ``k = count``."""

    __slots__ = ("t0", "t1", "dt", "count")

    def __init__(self, t0, t1, dt, count):
        self.t0, self.t1, self.dt, self.count = t0, t1, dt, count

    def time(self, k):
        return self.t1 if k == self.count else self.t0 + k * self.dt


class _SolverGridCells:
    """Cell boundaries on every step of a solver's :class:`~pnode.sde.grid.TimeGrid`
    (output times, and ``t0 + k*dt`` inside each output interval), then ``t1``.

    Stores O(len(ts)) numbers, never the steps themselves.
    """

    def __init__(self, time_grid, t1):
        self.grid, self.t1 = time_grid, t1
        self.starts = []
        count = 0
        for r in time_grid.inner:
            self.starts.append(count)
            count += len(r) + 1
        if t1 > time_grid.ts[-1]:  # one more cell, [ts[-1], t1]
            self.starts.append(count)
            count += 1
        self.count = count

    def time(self, k):
        if k == self.count:
            return self.t1
        i = bisect.bisect_right(self.starts, k) - 1
        o = k - self.starts[i]
        if o == 0:
            return self.grid.ts[i]
        return self.grid.point(self.grid.inner[i].start + o - 1)


def _check_size(size):
    """``size``: an int or a sequence of non-negative ints; returns a tuple."""
    if size is None:
        raise ValueError("BrownianInterval: size is required, e.g. size=(batch, m)")
    if isinstance(size, int):
        size = (size,)
    try:
        size = tuple(int(s) for s in size)
    except TypeError:
        raise TypeError(f"BrownianInterval: size must be a tuple of ints, "
                        f"got {size!r}") from None
    if any(s < 0 for s in size):
        raise ValueError(f"BrownianInterval: size must be non-negative, got {size}")
    return size


def _check_options(dtype, levy_area_approximation, cache_size):
    """``dtype`` (default torch's), ``levy_area_approximation``, ``cache_size``; returns
    the dtype."""
    if dtype is None:
        dtype = torch.get_default_dtype()
    if dtype not in (torch.float32, torch.float64):
        raise TypeError("BrownianInterval: dtype must be torch.float32 or torch.float64, "
                        f"got {dtype}")
    if levy_area_approximation not in _LEVY_AREA_APPROXIMATIONS:
        raise ValueError(
            "BrownianInterval: levy_area_approximation must be one of "
            f"{list(_LEVY_AREA_APPROXIMATIONS)}, got {levy_area_approximation!r}")
    if cache_size is not None and (not isinstance(cache_size, int) or cache_size < 4):
        raise ValueError("BrownianInterval: cache_size must be an int >= 4, "
                         f"got {cache_size!r}")
    return dtype


def _check_tree(halfway_tree, split_at_queries):
    """Whether cells split at the queries: ``split_at_queries``, or by default torchsde's
    ``halfway_tree=False`` (split) / ``True`` (order-independent)."""
    if split_at_queries is None:
        return not halfway_tree
    if split_at_queries and halfway_tree:
        raise ValueError("BrownianInterval: split_at_queries=True contradicts halfway_tree=True "
                         "(the order-independent tree); pass one of them")
    return bool(split_at_queries)


def _check_entropy(entropy):
    """``entropy``: an int; ``None`` draws one from torch's global generator."""
    if entropy is None:
        entropy = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    if not isinstance(entropy, (int, np.integer)) or isinstance(entropy, bool):
        raise TypeError(f"BrownianInterval: entropy must be an int, got {entropy!r}")
    return entropy


def _check_step(t0, t1, dt):
    """The ``dt`` hint: ``None`` or positive; returns ``(dt, number of cells)``."""
    if dt is None:
        return None, 1
    dt = _as_time(dt, "dt")
    if not dt > 0:
        raise ValueError(f"BrownianInterval: dt must be positive, got {dt}")
    ncells = _cell_count(t0, t1, dt)
    if ncells is None:
        raise ValueError(f"BrownianInterval: dt={dt} is too small for [{t0}, {t1}]")
    return dt, ncells


def _cell_count(t0, t1, dt):
    """Number of cells ``[t0 + k*dt, t0 + (k+1)*dt]`` covering ``[t0, t1]`` (None if absurd)."""
    ncells = max(1, math.ceil((t1 - t0) / dt))
    if ncells > 2**48:
        return None
    # Every cell must have positive length after rounding: the last boundary before t1
    # has to lie strictly below t1.
    while ncells > 1 and t0 + (ncells - 1) * dt >= t1:
        ncells -= 1
    return ncells


def _as_time(t, name):
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise ValueError(f"{name} must be a scalar time, got a tensor of shape "
                             f"{tuple(t.shape)}")
        t = t.item()
    try:
        t = float(t)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {t!r}") from None
    if not math.isfinite(t):
        raise ValueError(f"{name} must be finite, got {t}")
    return t
