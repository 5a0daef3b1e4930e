"""Data parallelism over MPI: batch shards, gradient reductions, rank-0 output.

A solver created with ``comm=MPI.COMM_WORLD`` integrates one PETSc Vec spread over the
ranks: each rank passes its own shard of the batch (dimension 0 of the state), PETSc's
global norms make every rank take the same steps, and the parameter gradient is summed
over the ranks inside the adjoint. Every rank ends with the gradient of the *sum* of the
ranks' losses (so divide a mean by the global batch size, not the shard's).

Helpers here cover what happens outside the ODE: :func:`shard` a global batch,
:func:`allreduce_grads` for parameters used outside the solver, :func:`print0` for
rank-0 logging and :func:`abort_on_exception` so that one failing rank ends the job.
"""
import torch
from mpi4py import MPI
from petsc4py import PETSc

from . import runtime


def as_mpi4py(comm):
    """An mpi4py communicator for ``comm`` (mpi4py, PETSc.Comm, or None = COMM_SELF)."""
    if comm is None:
        return MPI.COMM_SELF
    if isinstance(comm, MPI.Comm):
        return comm
    if isinstance(comm, PETSc.Comm):
        return comm.tompi4py()
    raise TypeError(f"comm must be an mpi4py or PETSc communicator, got {type(comm).__name__}")


def as_petsc(comm):
    """A PETSc communicator for ``comm`` (mpi4py, PETSc.Comm, or None = COMM_SELF)."""
    if comm is None:
        return PETSc.COMM_SELF
    if isinstance(comm, PETSc.Comm):
        return comm
    if isinstance(comm, MPI.Comm):
        return PETSc.Comm(comm)
    raise TypeError(f"comm must be an mpi4py or PETSc communicator, got {type(comm).__name__}")


def shard_bounds(total, comm=MPI.COMM_WORLD):
    """``(start, stop)`` of this rank's rows when ``total`` rows are split as evenly as
    possible (the first ``total % size`` ranks get one more)."""
    comm = as_mpi4py(comm)
    size, rank = comm.Get_size(), comm.Get_rank()
    base, extra = divmod(total, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard(batch, comm=MPI.COMM_WORLD):
    """This rank's rows of ``batch`` (a tensor, split along dimension 0)."""
    start, stop = shard_bounds(batch.shape[0], comm)
    return batch[start:stop]


def allreduce_grads(params, comm=MPI.COMM_WORLD):
    """Sum ``.grad`` of ``params`` over the ranks (for parameters outside the ODE, whose
    gradients the solver does not reduce). Parameters without a gradient are skipped."""
    comm = as_mpi4py(comm)
    if comm.Get_size() == 1:
        return
    for p in params:
        if p.grad is not None:
            buf = p.grad.detach().cpu().contiguous().numpy()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            p.grad.copy_(torch.from_numpy(buf).to(p.grad.device))


def allreduce_sum(value, comm=MPI.COMM_WORLD):
    """Sum a Python number (e.g. a shard's loss) over the ranks."""
    return as_mpi4py(comm).allreduce(float(value), op=MPI.SUM)


def print0(*args, comm=MPI.COMM_WORLD, **kwargs):
    """``print`` on rank 0 only."""
    if as_mpi4py(comm).Get_rank() == 0:
        print(*args, **kwargs)


def abort_on_exception(comm=MPI.COMM_WORLD):
    """Make an uncaught exception on any rank print its traceback once and abort the
    whole job (non-zero exit) instead of leaving the other ranks waiting in a collective.
    pnode already does this for ``COMM_WORLD`` at import (unless ``PNODE_MPI_ABORT=0``);
    calling it again changes nothing."""
    runtime.abort_on_exception(as_mpi4py(comm))


class Reducer:
    """Sums a rank-local parameter-gradient vector onto rank 0 (inside the adjoint)."""

    def __init__(self, comm):
        self.comm = as_mpi4py(comm)
        self.root = self.comm.Get_rank() == 0

    def to_root(self, g):
        """Sum of ``g`` over the ranks on rank 0; None elsewhere."""
        if self.comm.Get_size() == 1:
            return g
        buf = g.detach().cpu().contiguous().numpy()
        out = buf.copy() if self.root else None
        self.comm.Reduce(buf, out, op=MPI.SUM, root=0)
        return torch.from_numpy(out) if self.root else None

    def broadcast(self, g):
        """Rank 0's ``g`` on every rank (same shape everywhere)."""
        if self.comm.Get_size() == 1:
            return g
        buf = g.detach().cpu().contiguous().numpy().copy()
        self.comm.Bcast(buf, root=0)
        return torch.from_numpy(buf)

    def agree(self, facts, flags):
        """One collective: ``(union, differing)`` where ``union`` is the sorted union of
        every rank's list ``flags`` and ``differing`` the names of the entries of the dict
        ``facts`` that are not equal on every rank (the same on every rank)."""
        if self.comm.Get_size() == 1:
            return sorted(set(flags)), []
        everyone = self.comm.allgather((facts, list(flags)))
        union = sorted({x for _, fl in everyone for x in fl})
        differ = [k for k in facts if any(f.get(k) != everyone[0][0].get(k) for f, _ in everyone)]
        return union, differ

    def any(self, flag):
        """Whether ``flag`` is true on any rank (collective)."""
        if self.comm.Get_size() == 1:
            return bool(flag)
        return bool(self.comm.allreduce(bool(flag), op=MPI.LOR))

    def max(self, n):
        """Largest of an int over the ranks (collective)."""
        if self.comm.Get_size() == 1:
            return int(n)
        return int(self.comm.allreduce(int(n), op=MPI.MAX))

    def sum(self, x):
        """Sum of a float over the ranks (collective)."""
        if self.comm.Get_size() == 1:
            return float(x)
        return float(self.comm.allreduce(float(x), op=MPI.SUM))


_HELD = {}  # communicator handle -> an empty PETSc Vec keeping PETSc's inner communicator


def hold_comm(comm):
    """Keep PETSc's inner duplicate of ``comm`` alive for the rest of the process.

    PETSc duplicates a communicator (collectively) when the first object on it is
    created and frees the duplicate with the last object. Python frees PETSc objects
    when their last reference goes, and a parallel object freed that way is not
    destroyed but parked in PETSc's per-communicator garbage (``PetscObjectDelayedDestroy``)
    until a collective ``PETSc.garbage_cleanup``. After a failure on one rank that rank's
    exception can hold such references, so the ranks' objects (and with them the inner
    communicator) would end at different times: the next solve would duplicate the
    communicator on one rank only, and at exit petsc4py's garbage cleanup would
    duplicate it on one rank while the other waits in the cleanup's reduction; both hang.
    With one object held on every rank until PETSc finalises, the inner communicator
    exists everywhere whenever one of those collectives runs. The holder is never
    destroyed: releasing it at exit is exactly the one-rank-only free that hangs.
    """
    if comm.getSize() == 1:
        return
    key = comm.tompi4py().py2f()
    if key not in _HELD:
        _HELD[key] = PETSc.Vec().createMPI((0, 0), comm=comm)


def new_vec(comm, n_local, n_global):
    """A PETSc Vec with ``n_local`` entries here (sequential on one rank)."""
    if comm.getSize() == 1:
        return PETSc.Vec().createSeq(n_local, comm=comm)
    return PETSc.Vec().createMPI((n_local, n_global), comm=comm)


class Sizes:
    """Local and global sizes of the state and of the parameter vector.

    The state is split over the ranks as the user's shards are; the parameter vector
    lives on rank 0 (data parallelism: every rank sees all parameters, and PETSc's
    parameter-Jacobian products are summed onto rank 0).
    """

    def __init__(self, comm, n_local, n_p, reducer):
        self.comm = comm
        self.n = n_local
        self.N = int(reducer.sum(n_local))
        self.n_p = n_p
        self.n_p_local = n_p if comm.getRank() == 0 else 0

    @property
    def state(self):
        """(local, global) size of the state Vec."""
        return (self.n, self.N)

    @property
    def params(self):
        """(local, global) size of the parameter Vec."""
        return (self.n_p_local, self.n_p)

    def key(self):
        return (self.n, self.N, self.n_p)
