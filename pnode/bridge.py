"""The torch <-> PETSc bridge: state layouts and zero-copy Vec views.

PETSc integrates one flat, double-precision Vec. Users hand pnode a tensor of any shape
(or a tuple of them), in float32 or float64, on any device. :class:`StateLayout` maps
between the two, and :func:`vec_view` / :func:`vec_write` move data through DLPack, so a
CPU Vec and a CPU float64 tensor share memory, and a CUDA Vec (PETSc built with CUDA)
shares memory with a CUDA tensor. Everything else (float32 models, CUDA models on a CPU
PETSc) is converted at this boundary and nowhere else.
"""
from dataclasses import dataclass
from math import prod
from typing import Tuple

import torch

PETSC_DTYPE = torch.float64


def vec_view(vec, mode="r"):
    """A 1-D torch tensor sharing ``vec``'s local memory.

    Args:
        vec: a PETSc Vec.
        mode: ``"r"`` for Vecs PETSc hands out read-locked (callback inputs), ``"w"`` or
            ``"rw"`` when the tensor will be written (then call ``vec.stateIncrease()``
            afterwards, which :func:`vec_write` does).
    """
    return torch.from_dlpack(vec.toDLPack(mode))


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
    """

    shapes: Tuple[torch.Size, ...]
    is_tuple: bool
    dtype: torch.dtype
    device: torch.device

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
        lead = flat.shape[:-1]
        if not self.is_tuple:  # the hot path: one reshape, no split
            return flat.reshape(tuple(lead) + tuple(self.shapes[0]))
        parts = torch.split(flat, self.sizes, dim=-1)
        members = tuple(p.reshape(tuple(lead) + tuple(s)) for p, s in zip(parts, self.shapes))
        return members if self.is_tuple else members[0]

    def to_model(self, x):
        """Convert a PETSc-side tensor to the model's dtype and device (no copy if equal)."""
        return x.to(device=self.device, dtype=self.dtype)


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
