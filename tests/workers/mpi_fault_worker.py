"""Backward-pass faults under MPI, run by tests/test_faults.py with ``mpiexec -n 2``.

For each method: the clean loss and gradient are the reference; then rank 1's field
raises during the backward pass (at its first reverse product, and mid-sweep). Every
rank must raise (rank 1 the user's exception, rank 0 a SolverError), nobody may hang,
and the next clean call on the same solver must give the reference (1e-12 relative)."""
import sys

import torch
from mpi4py import MPI

import pnode
from fault_worker import Boom, Faulty

comm = MPI.COMM_WORLD
CONFIGS = {
    # store-all: the adjoint evaluates func (the default's stored graphs would spare it)
    "dopri5": dict(method="dopri5", rtol=1e-7, atol=1e-9, checkpoint="all"),
    "rk4": dict(method="rk4", options={"step_size": 0.1}, checkpoint="all"),
    "kencarp4": dict(method="kencarp4", rtol=1e-6, atol=1e-8),
    "crank_nicolson": dict(method="crank_nicolson", options={"step_size": 0.1}),
    "replay": dict(method="dopri5", checkpoint=pnode.Checkpoint("binomial", max_ram=3)),
}


def run(solver, field):
    field.phase = "forward"
    y0 = pnode.parallel.shard(torch.linspace(-1, 1, 15, dtype=torch.float64).reshape(5, 3)).clone()
    y0.requires_grad_(True)
    ys = solver(y0, torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64))
    loss = (ys ** 2).sum()
    field.phase = "backward"
    grads = torch.autograd.grad(loss, [field.w1, field.w2])
    field.phase = "forward"
    total = comm.allreduce(float(loss.detach()))
    return torch.cat([torch.tensor([total], dtype=torch.float64)] + [g.reshape(-1) for g in grads])


def main():
    cases = 0
    for name, cfg in CONFIGS.items():
        field = Faulty()
        solver = pnode.ODESolver(field, comm=comm, **cfg)
        reference = run(solver, field)
        for at in (1, 5):
            if comm.rank == 1:
                field.arm("vjp", at, "backward")
            try:
                run(solver, field)
                outcome = "none"
            except Boom:
                outcome = "boom"
            except pnode.SolverError:
                outcome = "solver_error"
            field.disarm()
            outcomes = comm.allgather(outcome)
            assert outcomes == ["solver_error", "boom"], (name, at, outcomes)
            again = run(solver, field)
            err = float((again - reference).norm() / reference.norm())
            assert err <= 1e-12, (name, at, err)
            cases += 1
    cases += disagreements()
    if comm.rank == 0:
        print(f"cases={cases}", flush=True)


def outcome_of(fn):
    try:
        fn()
        return "none"
    except pnode.SolverError:
        return "solver_error"
    except (ValueError, TypeError) as e:
        return "disagree" if "ranks disagree" in str(e) else type(e).__name__
    except SystemExit:
        return "SystemExit"


def no_grad_on_rank1(fn):
    with torch.set_grad_enabled(comm.rank == 0):
        return fn()


def disagreements():
    """Ranks that disagree on what must be shared, or fail before PETSc runs, raise on
    every rank; afterwards the same solver solves normally."""
    field = Faulty()
    solver = pnode.ODESolver(field, comm=comm)
    y0 = torch.ones(2, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    cases = {
        "len(t)": lambda: solver(y0, t if comm.rank == 0 else torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)),
        "t": lambda: solver(y0, t if comm.rank == 0 else t * 2),
        "dtype": lambda: solver(y0 if comm.rank == 0 else y0.float(), t),
        "gradient": lambda: no_grad_on_rank1(lambda: solver(y0, t)),
        "method": lambda: pnode.ODESolver(field, comm=comm, method="dopri5" if comm.rank == 0 else "rk4")(y0, t),
    }
    for name, fn in cases.items():
        got = comm.allgather(outcome_of(fn))
        assert got == ["disagree", "disagree"], (name, got)
    # rank 1's field returns a wrong shape at its first call (dopri5's initial step)
    wrong = pnode.ODESolver(lambda t, y: y[:1] if comm.rank == 1 else -y, comm=comm)
    got = comm.allgather(outcome_of(lambda: wrong(y0, t)))
    assert got == ["solver_error", "ValueError"], got
    # rank 1's field calls sys.exit mid-solve: it exits that call, rank 0 gets a SolverError
    calls = [0]

    def exiting(t, y):
        calls[0] += 1
        if comm.rank == 1 and calls[0] == 6:
            sys.exit(1)
        return -y
    got = comm.allgather(outcome_of(lambda: pnode.ODESolver(exiting, comm=comm)(y0, t)))
    assert got == ["solver_error", "SystemExit"], got
    ys = solver(y0, t)  # no hang, right answer
    assert torch.equal(ys.detach(), solver(y0, t).detach())
    return len(cases) + 2


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
