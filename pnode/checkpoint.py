"""Checkpointing strategies: how much of the forward trajectory the adjoint keeps.

The adjoint needs every forward step's state (and, to avoid recomputing, its stages).
``Checkpoint`` says what to keep; gradients are identical whatever the strategy, only
time and memory differ. For each solve :func:`plan` turns it into one plan object:

- :class:`TrajectoryPlan`: PETSc's memory trajectory (store-all, solution-only, or
  revolve with an optional disk level), used whenever PETSc can bound it;
- :class:`GraphPlan`: store-all plus the forward's stage graphs (``"graphs"``), kept in
  the solver's :class:`~pnode.graphs.GraphStore` for the adjoint;
- :class:`ReplayPlan`: pnode's own checkpoints (:mod:`pnode.replay`) for binomial
  checkpointing with adaptive steps or fixed steps off the output grid;
- :class:`NoRecord`: a forward pass that keeps nothing (no gradient, or recomputation).

Every plan answers the same questions: which trajectory options PETSc gets
(:meth:`petsc_defaults`), what to do with each accepted step (:meth:`on_step`), how to
run the adjoint over the output intervals (:meth:`backward`), and what it held
(:meth:`account`).
"""
import math
import os
import re
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from math import comb
from typing import Optional, Union

from .graphs import GraphStore
from .replay import OnlineCheckpoints, Replay, fits_fixed_grid

STRATEGIES = ("auto", "all", "solution", "binomial", "graphs")
# what "auto" (the default) lets the stored stage graphs of an explicit solve take
AUTO_GRAPH_BUDGET = 512 * 2**20

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
        x = float(m.group(1)) * _UNITS[m.group(2).lower()]
        if not math.isfinite(x) or x >= 2**63:
            raise ValueError(f"{name}={value!r} is too large")
        n = int(x)
    else:
        raise TypeError(f"{name} must be an int number of bytes or a string like '200MB'")
    if n <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return n


@dataclass(frozen=True)
class Checkpoint:
    """What the forward solve keeps for the adjoint.

    Args:
        strategy: ``"auto"`` (default: ``"graphs"`` within :data:`AUTO_GRAPH_BUDGET`
            (512 MiB), which applies to explicit methods; ``"all"`` for the others),
            ``"all"`` (every step's state and stages, no recomputation),
            ``"solution"`` (one state per step; each step is recomputed once in the
            backward pass to get its stages), ``"binomial"`` (revolve: at most
            ``max_ram`` checkpoints, the fewest recomputations possible for that budget),
            or ``"graphs"`` (as ``"all"``, and the forward also keeps the autograd graph
            of every right-hand-side evaluation, up to ``max_memory`` bytes if given, so
            the adjoint backpropagates through them instead of re-evaluating ``func``:
            backprop's speed at its memory; explicit methods; see :mod:`pnode.graphs`).
        max_ram: number of checkpoints held in RAM (binomial only; >= 1).
        max_memory: byte budget instead of ``max_ram`` (int bytes or "200MB"/"200MiB");
            for ``"graphs"``, the budget of the stored graphs (default: no limit).
            ``K = floor(max_memory / bytes_per_checkpoint)`` where a checkpoint holds the
            state and the method's stages: ``(stages + 1) * n * 8`` bytes for ``n``
            unknowns (PETSc stores doubles).
        max_disk: further checkpoints on disk (binomial; two-level RAM+disk).
        disk_dir: directory for the disk checkpoints (default: a fresh temporary one,
            removed after the solve, also when it fails).
    """

    strategy: str = "auto"
    max_ram: Optional[int] = None
    max_memory: Optional[Union[int, str]] = None
    max_disk: Optional[int] = None
    disk_dir: Optional[str] = None

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Checkpoint strategy {self.strategy!r} is unknown; valid: {', '.join(STRATEGIES)}")
        if self.strategy == "graphs":
            for name in ("max_ram", "max_disk", "disk_dir"):
                if getattr(self, name) is not None:
                    raise ValueError(f"Checkpoint {name} does not apply to strategy='graphs' (max_memory does)")
            if self.max_memory is not None:
                parse_bytes(self.max_memory)
            return
        if self.strategy != "binomial":
            for name in ("max_ram", "max_memory", "max_disk", "disk_dir"):
                if getattr(self, name) is not None:
                    raise ValueError(f"Checkpoint {name} applies to strategy='binomial' only")
            return
        if (self.max_ram is None) == (self.max_memory is None):
            raise ValueError("Checkpoint(strategy='binomial') needs exactly one of max_ram or max_memory")
        for name in ("max_ram", "max_disk"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v < 2**31):
                raise ValueError(f"Checkpoint {name} must be a positive int below 2**31, got {v!r}")
        if self.max_memory is not None:
            parse_bytes(self.max_memory)
        if self.disk_dir is not None and self.max_disk is None:
            raise ValueError("Checkpoint disk_dir needs max_disk")

    @property
    def graph_budget(self):
        """Bytes for stored graphs (None: unlimited) when the strategy is ``"graphs"``."""
        return parse_bytes(self.max_memory) if self.max_memory is not None else None

    def graph_store(self):
        """A :class:`~pnode.graphs.GraphStore` for a solver of this strategy (``"graphs"``,
        or ``"auto"`` with its budget), else None: the forward keeps its stage graphs in it
        for the adjoint."""
        if self.strategy == "auto":
            return GraphStore(AUTO_GRAPH_BUDGET)
        return GraphStore(self.graph_budget) if self.strategy == "graphs" else None

    def ram_slots(self, n, stages):
        """Checkpoints allowed in RAM for a state of ``n`` doubles and ``stages`` stages."""
        if self.max_ram is not None:
            return self.max_ram
        per = (stages + 1) * n * 8
        k = parse_bytes(self.max_memory) // per
        if k < 1:
            raise ValueError(
                f"Checkpoint max_memory={self.max_memory!r} holds no checkpoint: one needs {per} bytes")
        return int(min(k, 2**31 - 1))  # PETSc's slot count is a 32-bit int


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
    """``None`` -> ``Checkpoint()`` ("auto"); a strategy name -> ``Checkpoint(strategy)``;
    else validate."""
    if checkpoint is None:
        return Checkpoint()
    if isinstance(checkpoint, str):
        return Checkpoint(checkpoint)
    if not isinstance(checkpoint, Checkpoint):
        raise TypeError(f"checkpoint must be a pnode.Checkpoint, a strategy name or None, got {type(checkpoint).__name__}")
    return checkpoint


class _RevolveOwner:
    """PETSc's revolve keeps one schedule per process (a global-state C API), and
    destroying any trajectory that used it resets it. So at most one plan holds a
    revolve trajectory at a time: a new one takes over, the previous holder releases its
    trajectory (its backward then re-solves first), and no stale trajectory is left for
    the garbage collector to reset the schedule in the middle of another adjoint."""

    holder = None

    @classmethod
    def take(cls, plan):
        prev = cls.holder() if cls.holder is not None else None
        if prev is not None and prev is not plan:
            prev.release()
        cls.holder = weakref.ref(plan)


_REVOLVE_LIMITS = ("ts_trajectory_max_cps_ram", "ts_trajectory_max_cps_disk",
                   "ts_trajectory_max_units_ram", "ts_trajectory_max_units_disk")


class NoRecord:
    """A forward pass that keeps nothing for an adjoint."""

    records = False
    valid = False

    def petsc_defaults(self):
        return {}

    def attach(self, ts):
        ts.removeTrajectory()

    def on_step(self, step, u64):
        pass

    def account(self, stats, steps, n):
        pass

    def release(self):
        pass


class TrajectoryPlan(NoRecord):
    """PETSc's memory trajectory under ``checkpoint`` (revolve and disk included).

    Args:
        checkpoint: the :class:`Checkpoint`.
        source: the solver's :class:`~pnode.petsc_options.OptionSource`.
        n_global: unknowns over all ranks (sets revolve's RAM slots for a byte budget).
        stages: the method's stages (vectors per stored step besides the state).
        stack_steps: for adaptive steps, the steps the store-all stack starts with (PETSc
            doubles it when full; None: ``ts_max_steps``, PETSc's own start, a pointer per
            step zeroed at every solve).
    """

    records = True

    def __init__(self, checkpoint, source, n_global, stages, stack_steps=None):
        self.checkpoint, self.stages = checkpoint, stages
        self.slots = checkpoint.ram_slots(n_global, stages) if checkpoint.strategy == "binomial" else None
        self._disk_root = None
        self._ts = None
        self.valid = True
        if checkpoint.max_disk:
            # PETSc creates the directory it writes to; it lives inside one of ours
            self._disk_root = tempfile.mkdtemp(prefix="pnode-ckpt-", dir=checkpoint.disk_dir)
        # only binomial plans and the user's own limits schedule with revolve (one per process)
        if checkpoint.strategy == "binomial" or any(source.given(k) for k in _REVOLVE_LIMITS):
            _RevolveOwner.take(self)
        self.stack_steps = stack_steps

    def petsc_defaults(self):
        opts = {"ts_trajectory_type": "memory"}
        ck = self.checkpoint
        if self.stack_steps is not None:  # adaptive store-all: PETSc counts one unit per stored step
            opts["ts_trajectory_max_units_ram"] = self.stack_steps
        if ck.strategy == "solution":
            opts["ts_trajectory_solution_only"] = True
        elif ck.strategy == "binomial":
            opts["ts_trajectory_max_cps_ram"] = self.slots
            if ck.max_disk:
                opts["ts_trajectory_max_cps_disk"] = ck.max_disk
                opts["ts_trajectory_dirname"] = os.path.join(self._disk_root, "trajectory")
        return opts

    def attach(self, ts):
        ts.removeTrajectory()
        ts.setSaveTrajectory()
        self._ts = ts

    def account(self, stats, steps, n):
        ck = self.checkpoint
        if ck.strategy in ("auto", "all", "graphs"):
            held, per = steps + 1, (self.stages + 1)
        elif ck.strategy == "solution":
            held, per = steps + 1, 1
        else:
            held, per = min(steps + 1, self.slots), (self.stages + 1)
        stats.checkpoints(held, held * per * n * 8)

    def prepare(self, ts):
        """Before the cost gradients are set (nothing: the trajectory is attached)."""

    def backward(self, ts, record, forcing, run, each_step=False):
        """Adjoint one output interval at a time (one step at a time if ``each_step``),
        ``forcing(step)`` after each (the loss gradient of an output time joins there);
        returns the number of adjoint steps."""
        seg, adj = record.segments, 0
        for k in range(len(seg) - 1, 0, -1):
            chunks = [1] * (seg[k] - seg[k - 1]) if each_step else [seg[k] - seg[k - 1]]
            for steps in chunks:
                ts.adjointSetSteps(steps)
                run("adjoint solve", ts.adjointSolve)
                adj += steps
                forcing(seg[-1] - adj)
        return adj

    def release(self):
        """Drop the trajectory and the disk checkpoints (a later backward re-solves)."""
        self.valid = False
        if self._ts is not None:
            self._ts.removeTrajectory()
            self._ts = None
        if self._disk_root is not None:
            shutil.rmtree(self._disk_root, ignore_errors=True)
            self._disk_root = None


class ReplayPlan(NoRecord):
    """Binomial checkpointing that PETSc cannot bound, run by :mod:`pnode.replay`.

    Args:
        checkpoint: the :class:`Checkpoint` (strategy ``"binomial"``).
        n_global: unknowns over all ranks (same number of slots on every rank).
        n_local: unknowns on this rank (for the bytes reported).
        y0: flat float64 initial state (the first checkpoint).
    """

    records = True

    def __init__(self, checkpoint, n_global, n_local, y0):
        self.slots = checkpoint.ram_slots(n_global, 0)  # states only
        self.n_local = n_local
        self.online = OnlineCheckpoints(self.slots)
        self.online.offer(0, y0)
        self.valid = True

    def on_step(self, step, u64):
        self.online.offer(step, u64)

    def prepare(self, ts):
        ts.setSaveTrajectory()  # TSAdjointStep needs one attached; it stays empty

    def backward(self, ts, record, forcing, run, each_step=True):
        """Reverse every step from pnode's checkpoints (``forcing(step)`` after each);
        returns the adjoint steps."""
        replay = Replay(ts, record.u, record.step_times, self.online, self.slots, forcing, run)
        peak = replay.backward()
        self.peak, self.recomputed = peak, replay.recomputed
        return len(record.step_times) - 1

    def account(self, stats, steps, n):
        if getattr(self, "peak", None) is not None:
            stats.checkpoints(self.peak, self.peak * self.n_local * 8, recomputed=self.recomputed)

    def release(self):
        self.valid = False
        self.online = None


class GraphPlan(TrajectoryPlan):
    """Store-all, and the forward's stage graphs in ``store`` (``Checkpoint("graphs")``),
    released with the trajectory.

    Args:
        checkpoint, source, n_global, stages: as for :class:`TrajectoryPlan`.
        store: the solver's :class:`~pnode.graphs.GraphStore` (it outlives the call: its
            byte budget and the heap it keeps serve every iteration).
    """

    def __init__(self, checkpoint, source, n_global, stages, store, stack_steps=None):
        super().__init__(checkpoint, source, n_global, stages, stack_steps)
        self.store = store

    def release(self):
        super().release()
        self.store.clear()


STACK_STEPS = 4096  # an adaptive store-all solve's first trajectory stack (steps), see stack_steps


def stack_steps(checkpoint, steps, source):
    """The steps an adaptive solve's store-all trajectory stack starts with (PETSc doubles
    it when full), or None for PETSc's own start: ``ts_max_steps``, zeroed at every solve
    (8 MB at the default 10**6, 1.2 ms a solve, as much as a small field's training step).
    Fixed steps keep PETSc's (it knows their count; a stack smaller than the steps makes
    PETSc schedule recomputations instead). Binomial plans and the user's own trajectory
    limits size their stacks themselves."""
    if steps.fixed or checkpoint.strategy == "binomial" or any(source.given(k) for k in _REVOLVE_LIMITS):
        return None
    return STACK_STEPS if STACK_STEPS < steps.max_steps else None


def plan(checkpoint, record, steps, s, source, n_global, n_local, stages, y0, store=None):
    """The plan for one solve.

    Args:
        checkpoint: the solver's :class:`Checkpoint`.
        record: whether the adjoint will need the forward (a gradient is wanted).
        steps: the solve's :class:`~pnode.stepping.StepControl`.
        s: output times in solver time.
        source: the solver's :class:`~pnode.petsc_options.OptionSource`.
        n_global, n_local: unknowns over all ranks and on this one.
        stages: the method's stages.
        y0: flat float64 initial state.
        store: the solver's :class:`~pnode.graphs.GraphStore` when the strategy keeps
            graphs (see :meth:`Checkpoint.graph_store`), used by explicit methods.
    """
    stack = stack_steps(checkpoint, steps, source)
    if not record:
        return NoRecord()
    if store is not None:
        return GraphPlan(checkpoint, source, n_global, stages, store, stack)
    if checkpoint.strategy == "binomial" and not (
            steps.fixed and steps.grid_dt is not None and fits_fixed_grid(s, steps.grid_dt)):
        if checkpoint.max_disk:
            raise ValueError("Checkpoint max_disk needs fixed steps (options['step_size']) on which every "
                             "output time lies; adaptive solves keep their checkpoints in RAM (max_ram)")
        return ReplayPlan(checkpoint, n_global, n_local, y0)
    return TrajectoryPlan(checkpoint, source, n_global, stages, stack)
