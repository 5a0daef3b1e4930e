"""Checkpointing strategies: how much of the forward trajectory the adjoint keeps.

The adjoint needs every forward step's state (and, to avoid recomputing, its stages).
``Checkpoint`` says what to keep; gradients are identical whatever the strategy, only
time and memory differ.
"""
import re
from dataclasses import dataclass
from math import comb
from typing import Optional, Union

STRATEGIES = ("all", "solution", "binomial")

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value, name="max_memory"):
    """Bytes from an int or a string with a unit ("200MB" = 200e6, "200MiB" = 200*2**20)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int number of bytes or a string like '200MB'")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"{name}={value!r} is not a size like '200MB' or '1.5GiB'")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise TypeError(f"{name} must be an int number of bytes or a string like '200MB'")
    if n <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return n


@dataclass(frozen=True)
class Checkpoint:
    """What the forward solve keeps for the adjoint.

    Args:
        strategy: ``"all"`` (default: every step's state and stages, no recomputation),
            ``"solution"`` (one state per step; each step is recomputed once in the
            backward pass to get its stages), or ``"binomial"`` (revolve: at most
            ``max_ram`` checkpoints, the fewest recomputations possible for that budget).
        max_ram: number of checkpoints held in RAM (binomial only; >= 1).
        max_memory: byte budget instead of ``max_ram`` (int bytes or "200MB"/"200MiB").
            ``K = floor(max_memory / bytes_per_checkpoint)`` where a checkpoint holds the
            state and the method's stages: ``(stages + 1) * n * 8`` bytes for ``n``
            unknowns (PETSc stores doubles).
        max_disk: further checkpoints on disk (binomial; two-level RAM+disk).
        disk_dir: directory for the disk checkpoints (default: a fresh temporary one,
            removed after the solve, also when it fails).
    """

    strategy: str = "all"
    max_ram: Optional[int] = None
    max_memory: Optional[Union[int, str]] = None
    max_disk: Optional[int] = None
    disk_dir: Optional[str] = None

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Checkpoint strategy {self.strategy!r} is unknown; valid: {', '.join(STRATEGIES)}")
        if self.strategy != "binomial":
            for name in ("max_ram", "max_memory", "max_disk", "disk_dir"):
                if getattr(self, name) is not None:
                    raise ValueError(f"Checkpoint {name} applies to strategy='binomial' only")
            return
        if (self.max_ram is None) == (self.max_memory is None):
            raise ValueError("Checkpoint(strategy='binomial') needs exactly one of max_ram or max_memory")
        if self.max_ram is not None and (not isinstance(self.max_ram, int) or isinstance(self.max_ram, bool) or self.max_ram < 1):
            raise ValueError(f"Checkpoint max_ram must be a positive int, got {self.max_ram!r}")
        if self.max_memory is not None:
            parse_bytes(self.max_memory)
        if self.max_disk is not None and (not isinstance(self.max_disk, int) or self.max_disk < 1):
            raise ValueError(f"Checkpoint max_disk must be a positive int, got {self.max_disk!r}")
        if self.disk_dir is not None and self.max_disk is None:
            raise ValueError("Checkpoint disk_dir needs max_disk")

    def ram_slots(self, n, stages):
        """Checkpoints allowed in RAM for a state of ``n`` doubles and ``stages`` stages."""
        if self.max_ram is not None:
            return self.max_ram
        per = (stages + 1) * n * 8
        k = parse_bytes(self.max_memory) // per
        if k < 1:
            raise ValueError(
                f"Checkpoint max_memory={self.max_memory!r} holds no checkpoint: one needs {per} bytes")
        return int(k)


def revolve_optimum(steps, snaps):
    """Fewest forward steps revolve recomputes for ``steps`` steps and ``snaps`` checkpoints,
    after a full forward sweep: with ``t`` the least integer with C(snaps+t, snaps) >= steps,
    ``t*steps - C(snaps+t, t-1) - (steps-1)`` (0 when everything fits)."""
    if snaps >= steps:
        return 0
    t = 0
    while comb(snaps + t, snaps) < steps:
        t += 1
    return t * steps - comb(snaps + t, t - 1) - (steps - 1)


def coerce(checkpoint):
    """``None`` -> store-all; a strategy string -> ``Checkpoint(strategy)``; else validate."""
    if checkpoint is None:
        return Checkpoint()
    if isinstance(checkpoint, str):
        return Checkpoint(checkpoint)
    if not isinstance(checkpoint, Checkpoint):
        raise TypeError(f"checkpoint must be a pnode.Checkpoint, a strategy name or None, got {type(checkpoint).__name__}")
    return checkpoint
