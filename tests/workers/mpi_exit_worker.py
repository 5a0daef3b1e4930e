"""One MPI failure case, run by tests/test_mpi_exit.py as its own ``mpiexec`` job.

Usage: mpiexec -n K python mpi_exit_worker.py CASE PHASE MODE

The last rank's field raises ``Boom`` at the chosen point of one pnode call (PHASE:
``first`` = its first evaluation, ``mid`` = its 5th forward evaluation, ``backward`` = its
first evaluation in the backward pass). MODE ``raise`` lets the exception propagate (the
job must end with a non-zero exit code and rank K-1's traceback); ``catch`` catches it on
every rank, runs the case once more cleanly and prints ``clean <rank>`` (the job must exit
with code 0). CASE: explicit, implicit, imex, binomial, graphs, block, cnf, sde.
"""
import sys

import torch
from mpi4py import MPI
from torch import nn

import pnode
from pnode.models import CNF

comm = MPI.COMM_WORLD
AT = {"first": ("forward", 1), "mid": ("forward", 5), "backward": ("backward", 1)}


class Boom(Exception):
    pass


class Trigger:
    """A forward pre-hook raising Boom at the ``at``-th call in ``phase``, on the last rank."""

    def __init__(self, phase, at):
        self.want, self.phase, self.calls = (phase, at), "forward", 0
        self.armed = comm.rank == comm.size - 1

    def __call__(self, module, args):
        if self.armed and self.phase == self.want[0]:
            self.calls += 1
            if self.calls == self.want[1]:
                self.armed = False
                raise Boom(f"rank {comm.rank}: {self.want[0]} call {self.want[1]}")


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(3, 3, generator=g, dtype=torch.float64) * 0.5)

    def forward(self, t, y):
        return torch.tanh(y @ self.w) - y


class SDE(nn.Module):
    noise_type, sde_type = "diagonal", "stratonovich"

    def __init__(self):
        super().__init__()
        self.drift = Field()

    def f(self, t, y):
        return self.drift(t, y)

    def g(self, t, y):
        return 0.1 * torch.ones_like(y)


T = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
ODE_CASES = {
    # store-all (not the default's stage graphs): the adjoint evaluates func, so "backward" fires
    "explicit": dict(method="dopri5", checkpoint="all"),
    "implicit": dict(method="crank_nicolson", options={"step_size": 0.1}),
    "imex": dict(method="kencarp4", options={"func_explicit": lambda t, y: 0.1 * torch.sin(y)}),
    "binomial": dict(method="rk4", options={"step_size": 0.05}, checkpoint=pnode.Checkpoint("binomial", max_ram=3)),
    # a budget of a few steps' graphs: the adjoint re-evaluates func before the kept steps
    "graphs": dict(method="dopri5", checkpoint=pnode.Checkpoint("graphs", max_memory=20000)),
}


def build(case):
    """``(module the trigger watches, run(trigger))``: ``run`` does one forward and backward."""
    y0 = pnode.parallel.shard(torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3)).clone()
    if case in ODE_CASES:
        field = Field()
        solver = pnode.ODESolver(field, comm=comm, **ODE_CASES[case])
        return field, lambda: solver(y0, T)
    if case == "block":
        field = Field()
        block = pnode.ODEBlock(field, comm=comm, method="dopri5", checkpoint="all")
        return field, lambda: block(y0)
    if case == "cnf":
        cnf = CNF(dim=2, hidden=(8,), comm=comm, seed=1, checkpoint="all").double()
        x = pnode.parallel.shard(torch.linspace(-1, 1, 10, dtype=torch.float64).reshape(5, 2)).clone()
        return cnf.net, lambda: cnf.log_prob(x)
    if case == "sde":  # pure torch: no collective inside, each rank solves its own SDE
        sde = SDE()
        return sde.drift, lambda: pnode.sdeint_adjoint(sde, y0, T, dt=0.05)
    raise SystemExit(f"unknown case {case}")


def once(trigger, run):
    trigger.phase = "forward"
    out = run()
    trigger.phase = "backward"
    out.pow(2).sum().backward()
    trigger.phase = "forward"


def main(case, phase, mode):
    torch.set_num_threads(1)
    module, run = build(case)
    trigger = Trigger(*AT[phase])
    module.register_forward_pre_hook(trigger)
    if mode == "raise":
        once(trigger, run)
        return
    try:
        once(trigger, run)
    except (Boom, pnode.SolverError) as e:
        print(f"caught {type(e).__name__} {comm.rank}", flush=True)
    once(trigger, run)  # the trigger fired already (or, on an SDE's clean ranks, never will)
    print(f"clean {comm.rank}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
