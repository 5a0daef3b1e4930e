"""The torch <-> PETSc bridge: state layouts and zero-copy Vec views.

PETSc integrates one flat, double-precision Vec. Users hand pnode a tensor of any shape
(or a tuple of them), in float32 or float64, on any device. :class:`StateLayout` maps
between the two, and :func:`vec_view` / :func:`vec_write` move data through DLPack, so a
CPU Vec and a CPU float64 tensor share memory, and a CUDA Vec (PETSc built with CUDA)
shares memory with a CUDA tensor. Everything else (float32 models, CUDA models on a CPU
PETSc) is converted at this boundary and nowhere else.
"""
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from math import prod
from typing import Tuple

import torch

PETSC_DTYPE = torch.float64
_HOST_VEC_TYPES = frozenset({"seq", "mpi", "standard"})
_VIEWS_LIMIT = 256  # Vecs whose views one PETSc call keeps (stages, work and Krylov vectors)


class _Views(threading.local):
    table = None  # {Vec handle: (Vec, view or None)} while a PETSc call runs (see cached_views)


_views = _Views()


def vec_view(vec, mode="r"):
    """A 1-D torch tensor sharing ``vec``'s local memory.

    Args:
        vec: a PETSc Vec.
        mode: ``"r"`` for Vecs PETSc hands out read-locked (callback inputs), ``"w"`` or
            ``"rw"`` when the tensor will be written (then call ``vec.stateIncrease()``
            afterwards, which :func:`vec_write` does).
    """
    table = _views.table
    if table is None:
        return torch.from_dlpack(vec.toDLPack(mode))
    hit = table.get(vec.handle)
    if hit is not None and hit[1] is not None:
        return hit[1]
    view = torch.from_dlpack(vec.toDLPack(mode))
    if hit is None:
        if len(table) >= _VIEWS_LIMIT:
            table.clear()
        table[vec.handle] = (vec, view if vec.getType() in _HOST_VEC_TYPES else None)
    return view


@contextmanager
def cached_views():
    """While PETSc runs one call (a solve, an adjoint solve), or pnode one adjoint sweep
    of several such calls, make each Vec's view once.

    PETSc hands the same few Vecs (stage and work vectors) to thousands of callbacks, and
    a DLPack view costs ~2 us. A host Vec's view stays valid while the Vec lives and keeps
    its array: the table holds the Vec (PETSc cannot free it and reuse its address while
    we hold a reference) and is dropped when the call returns; the only PETSc code that
    swaps a Vec's array (``VecPlaceArray``) is on TS paths pnode does not use (cost
    integrals, second-order adjoints). A device Vec's view is made every time: that is
    what tells PETSc on which side its data is valid.
    """
    outer = _views.table
    if outer is not None:  # inside a longer span already (an adjoint sweep's segments): keep its views
        yield
        return
    _views.table = {}
    try:
        yield
    finally:
        _views.table = outer


def vec_identity(vec):
    """``(handle, object state)``: equal for two sightings of one Vec whose values did not
    change in between (PETSc counts every change, and pnode's writes call
    ``stateIncrease``), so a callback can recognise a Vec without reading it."""
    return vec.handle, vec.stateGet()


def vec_write(vec, tensor):
    """Copy ``tensor`` (any dtype/device, ``vec``'s local size) into ``vec``."""
    view = vec_view(vec, "w")
    view.copy_(tensor.reshape(-1))
    vec.stateIncrease()


@dataclass(frozen=True)
class StateLayout:
    """How a user state (tensor or tuple of tensors) maps onto one flat vector.

    Attributes:
        shapes: the shape of each member (one entry for a plain tensor).
        is_tuple: whether the user passed a tuple.
        dtype: the model dtype (float32 or float64), shared by all members.
        device: the model device.
        native: float64 on the CPU (PETSc's own kind of data: no conversions).
    """

    shapes: Tuple[torch.Size, ...]
    is_tuple: bool
    dtype: torch.dtype
    device: torch.device

    def __post_init__(self):
        # float64 on the CPU is PETSc's own kind of data: conversions at the boundary are
        # identities, skipped on the hot path (a no-op .to() still costs ~1 us a call)
        object.__setattr__(self, "native", self.dtype == PETSC_DTYPE and self.device.type == "cpu")
        object.__setattr__(self, "_shape", tuple(self.shapes[0]))  # of a plain state, for the hot path

    @classmethod
    def of(cls, y0):
        """Layout of ``y0`` (a Tensor or tuple of Tensors); validates dtypes and devices."""
        members = tuple(y0) if isinstance(y0, (tuple, list)) else (y0,)
        if not members:
            raise ValueError("y0 must be a tensor or a non-empty tuple of tensors")
        for m in members:
            if not isinstance(m, torch.Tensor):
                raise TypeError(f"y0 must be a Tensor or a tuple of Tensors, got {type(m).__name__}")
            if m.dtype not in (torch.float32, torch.float64):
                raise TypeError(f"y0 must be float32 or float64, got {m.dtype}")
            if m.device.type == "meta":
                raise TypeError("y0 is on the meta device (no data); pnode needs a CPU or CUDA tensor")
        dtypes = {m.dtype for m in members}
        devices = {m.device for m in members}
        if len(dtypes) > 1 or len(devices) > 1:
            raise TypeError("all members of a tuple y0 must share one dtype and one device")
        return cls(tuple(m.shape for m in members), isinstance(y0, (tuple, list)),
                   members[0].dtype, members[0].device)

    @property
    def sizes(self):
        """Number of elements of each member."""
        return [prod(s) for s in self.shapes]

    @property
    def numel(self):
        """Length of the flat vector."""
        return sum(self.sizes)

    def flatten(self, y):
        """The user state ``y`` as one flat tensor (keeps dtype, device and autograd)."""
        members = y if self.is_tuple else (y,)
        if len(members) == 1:
            return members[0].reshape(-1)
        return torch.cat([m.reshape(-1) for m in members])

    def unflatten(self, flat):
        """Flat tensor of shape ``(..., numel)`` -> user state with the leading dims kept."""
        if not self.is_tuple:  # the hot path: one reshape, no split
            return flat.reshape(self._shape if flat.dim() == 1 else tuple(flat.shape[:-1]) + self._shape)
        lead = flat.shape[:-1]
        parts = torch.split(flat, self.sizes, dim=-1)
        members = tuple(p.reshape(tuple(lead) + tuple(s)) for p, s in zip(parts, self.shapes))
        return members if self.is_tuple else members[0]

    def to_model(self, x):
        """Convert a PETSc-side tensor to the model's dtype and device (no copy if equal)."""
        return x if self.native and x.device.type == "cpu" else x.to(device=self.device, dtype=self.dtype)

    def to_petsc(self, x):
        """Convert a model-side tensor to float64 (PETSc's dtype), on its device."""
        return x if x.dtype == PETSC_DTYPE else x.to(PETSC_DTYPE)


@dataclass(frozen=True)
class Clock:
    """The map between the user's time ``t`` and PETSc's time ``s``: ``t = t0 + sign*s``.

    PETSc always integrates forward from ``s = 0``: a decreasing ``t`` (``sign = -1``)
    becomes the field ``-func(t0 - s, y)``, and measuring from ``t0`` keeps the full
    float64 resolution of the step sizes however large ``|t0|`` is (PETSc compares
    times with absolute tolerances).
    """

    t0: float
    sign: float

    @classmethod
    def of(cls, times):
        """The clock of the output times ``times`` (Python floats, strictly monotone)."""
        sign = 1.0 if len(times) < 2 or times[-1] > times[0] else -1.0
        return cls(float(times[0]), sign)

    def user(self, s):
        """User time of solver time ``s``."""
        return self.t0 + self.sign * s

    def solver(self, t):
        """Solver time of user time ``t``."""
        return self.sign * (t - self.t0)
