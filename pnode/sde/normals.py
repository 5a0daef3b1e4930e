"""Standard normals of a Brownian tree node, a deterministic function of a 64-bit key.

Every node of a :class:`~pnode.sde.brownian.BrownianInterval` draws its normals from its
own stream, keyed by ``(node seed, path stream)`` (two 64-bit words), so that a node
evicted from the cache is redrawn identically and two nodes never share a stream.

Two generators, chosen by the number of normals in the draw (so a given interval
always makes the same choice for the same draw):

- fewer than :data:`TORCH_MIN_NUMEL`: numpy's counter-based Philox keyed by the two
  words, then numpy's ``standard_normal``: cheap to key (a few microseconds);
- from :data:`TORCH_MIN_NUMEL` on: torch's CPU generator (mt19937, vectorised
  Box-Muller), about 3x faster per normal than numpy's, keyed through its *whole*
  19937-bit state, filled from the same Philox stream. ``manual_seed`` would take only
  32 bits of seed (``manual_seed(s)`` and ``manual_seed(s + 2**32)`` are the same
  stream), so a path with 10^5 nodes would likely give two nodes the same normals.

The torch route writes torch's serialised generator state (``get_state``/``set_state``),
whose layout is checked once per process against ``manual_seed``; if the check fails
(another torch layout), every draw takes the numpy route. Torch's vectorised normals may
differ in the last bit between CPU instruction sets, so a path is reproducible on the
same machine and torch version (as torchsde's, which also draws with torch).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["NodeNormals", "TORCH_MIN_NUMEL"]

# Keying torch's generator costs ~8 us (state fill and set_state); numpy's normals cost
# ~6 ns each against torch's ~2-4 ns: the routes break even near 2,000 normals.
TORCH_MIN_NUMEL = 2048

_MT_N = 624  # mt19937 state words
_STATE_BYTES = 5056  # torch's CPUGeneratorImplState
# Offsets in CPUGeneratorImplStateLegacy: seed (u64), left (i32), seeded (i32), next (u64),
# state[624] (u64 slots holding u32 words), then the cached normals and their valid flags.
_LEFT, _SEEDED, _NEXT, _WORDS = 8, 12, 16, 24
_DOUBLE_VALID, _FLOAT_VALID = 5040, 5052  # flags of the cached Box-Muller partners

_torch_layout_ok = None


def _mt_init_words(seed):
    """mt19937's standard initialisation from a 32-bit seed (what manual_seed does)."""
    w = [seed & 0xFFFFFFFF]
    for j in range(1, _MT_N):
        w.append((1812433253 * (w[-1] ^ (w[-1] >> 30)) + j) & 0xFFFFFFFF)
    return np.array(w, np.uint32)


def _check_torch_layout():
    """Whether writing mt19937 words into the serialised state reproduces manual_seed."""
    g = torch.Generator(device="cpu")
    g.manual_seed(0)
    state = g.get_state()
    if state.numel() != _STATE_BYTES or state.dtype != torch.uint8:
        return False
    seed = 20260419
    _write_words(state.numpy(), _mt_init_words(seed))
    try:
        g.set_state(state)
    except RuntimeError:
        return False
    ref = torch.Generator(device="cpu")
    ref.manual_seed(seed)
    for n in (5, 64):  # the scalar and the vectorised normals
        mine = torch.randn(n, generator=g, device="cpu")
        if not torch.equal(mine, torch.randn(n, generator=ref, device="cpu")):
            return False
    return True


def _write_words(buf, words):
    """Put 624 mt19937 words in the serialised state ``buf``, ready to be twisted."""
    buf[_LEFT:_LEFT + 4].view(np.int32)[0] = 1  # twist before the first output
    buf[_SEEDED:_SEEDED + 4].view(np.int32)[0] = 1
    buf[_NEXT:_NEXT + 8].view(np.uint64)[0] = 0
    buf[_WORDS:_WORDS + 8 * _MT_N].view(np.uint64)[:] = words
    buf[_DOUBLE_VALID:_DOUBLE_VALID + 4].view(np.int32)[0] = 0  # no partner from a past draw
    buf[_FLOAT_VALID] = 0


def _torch_route_available():
    global _torch_layout_ok
    if _torch_layout_ok is None:
        _torch_layout_ok = _check_torch_layout()
    return _torch_layout_ok


class NodeNormals:
    """Draws ``torch`` tensors of standard normals keyed by ``(seed, stream)``.

    Args:
        stream: 64-bit word shared by all nodes of one path (from its entropy).
        dtype: ``torch.float32`` or ``torch.float64``.
    """

    def __init__(self, stream: int, dtype: torch.dtype):
        self._dtype = dtype
        self._np_dtype = np.float32 if dtype == torch.float32 else np.float64
        self._bitgen = np.random.Philox(key=0)
        self._npgen = np.random.Generator(self._bitgen)
        self._key = np.array([0, stream], np.uint64)
        # Built once; only the key's first word changes (the setter copies the dict).
        self._philox_state = {
            "bit_generator": "Philox",
            "state": {"counter": np.zeros(4, np.uint64), "key": self._key},
            "buffer": np.zeros(4, np.uint64), "buffer_pos": 4, "has_uint32": 0, "uinteger": 0,
        }
        self._torch_gen = self._torch_state = None

    def _key_philox(self, seed):
        self._key[0] = seed
        self._bitgen.state = self._philox_state

    def _key_torch(self, seed):
        if self._torch_gen is None:
            self._torch_gen = torch.Generator(device="cpu")
            self._torch_state = self._torch_gen.get_state()
        self._key_philox(seed)
        buf = self._torch_state.numpy()
        _write_words(buf, self._bitgen.random_raw(_MT_N // 2).view(np.uint32))
        self._torch_gen.set_state(self._torch_state)
        return self._torch_gen

    def draw(self, seed: int, shape) -> torch.Tensor:
        """A fresh CPU tensor of shape ``shape`` of independent N(0, 1) numbers, the same
        for the same ``seed`` and shape (on the CPU whatever torch's default device)."""
        shape = tuple(shape)
        if math.prod(shape) >= TORCH_MIN_NUMEL and _torch_route_available():
            return torch.randn(shape, generator=self._key_torch(seed), dtype=self._dtype,
                               device="cpu")
        self._key_philox(seed)
        return torch.from_numpy(self._npgen.standard_normal(shape, dtype=self._np_dtype))

    def draw_rows(self, seeds, shape) -> torch.Tensor:
        """``torch.stack([draw(s, shape) for s in seeds])``, drawn in place row by row;
        shape ``(len(seeds), *shape)``."""
        shape = tuple(shape)
        numel = math.prod(shape)
        if numel >= TORCH_MIN_NUMEL and _torch_route_available():
            out = torch.empty((len(seeds), numel), dtype=self._dtype, device="cpu")
            for k, seed in enumerate(seeds):
                torch.randn(numel, generator=self._key_torch(seed), dtype=self._dtype,
                            device="cpu", out=out[k])
            return out.reshape((len(seeds),) + shape)
        out = np.empty((len(seeds), numel), dtype=self._np_dtype)  # a row even for shape ()
        for k, seed in enumerate(seeds):
            self._key_philox(seed)
            self._npgen.standard_normal(out=out[k], dtype=self._np_dtype)
        return torch.from_numpy(out.reshape((len(seeds),) + shape))
