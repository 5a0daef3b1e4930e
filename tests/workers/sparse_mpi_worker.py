"""Run under mpiexec by tests/test_mpi.py: options['sparsity'] with the batch split over ranks.

Usage: mpiexec -n K python tests/workers/sparse_mpi_worker.py OUTDIR
Every rank takes its shard of the same global batch of 1-D periodic fields (5 samples:
uneven shards on 2 ranks); the implicit part is a nonlinear 5-point stencil field, the
explicit part an MLP; kencarp4 at a fixed step with the sparse Jacobian (the default PC,
GAMG, and the default PC with options['linear'] on a linear part). Rank 0 writes, per
case, the gathered solution at the last time, the gathered y0 gradient and the parameter
gradients (OUTDIR/CASE.npz); on several ranks also the error that -pc_type ilu raises
(OUTDIR/ilu.txt).
"""
import sys

import numpy as np
import torch
from mpi4py import MPI
from torch import nn

import pnode
from pnode.parallel import shard

torch.set_num_threads(1)
N = 24
SPARSITY = {"grid": (N,), "stencil": 2, "periodic": True}
CASES = {
    "default": dict(linear=False, petsc=None),
    "gamg": dict(linear=False, petsc={"pc_type": "gamg", "ksp_type": "gmres"}),
    "linear": dict(linear=True, petsc=None),
}


class Stencil(nn.Module):
    """A learnable circular convolution of kernel 5, plus a cubic term unless linear."""

    def __init__(self, linear):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 5, padding=2, padding_mode="circular", bias=False).double()
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[-0.5, 2.0, -4.0, 2.0, -0.5]]], dtype=torch.float64) * 20)
        self.linear = linear

    def forward(self, t, y):
        out = self.conv(y.unsqueeze(1)).squeeze(1)
        return out if self.linear else out - y ** 3


def run(case, comm):
    torch.manual_seed(0)
    implicit = Stencil(CASES[case]["linear"])
    explicit = nn.Sequential(nn.Linear(N, 16), nn.Tanh(), nn.Linear(16, N)).double()
    batch = torch.randn(5, N, dtype=torch.float64)
    y0 = shard(batch, comm).clone().requires_grad_(True)
    params = list(implicit.parameters()) + list(explicit.parameters())
    with pnode.ODESolver(implicit, method="kencarp4", comm=comm, petsc_options=CASES[case]["petsc"],
                         options={"step_size": 0.05, "func_explicit": lambda t, y: explicit(y),
                                  "linear": CASES[case]["linear"], "sparsity": SPARSITY}) as solver:
        ys = solver(y0, torch.tensor([0.0, 0.1, 0.2], dtype=torch.float64))
        loss = ys.pow(2).sum()  # this rank's share: pnode sums the parameter gradients over ranks
        grads = torch.autograd.grad(loss, [y0] + params)
        pc = solver.petsc_ts.getSNES().getKSP().getPC().getType()
    last = comm.gather(ys[-1].detach().numpy(), root=0)
    gy0 = comm.gather(grads[0].numpy(), root=0)
    return dict(y=None if last is None else np.concatenate(last), gy0=None if gy0 is None else np.concatenate(gy0),
                **{f"p{i}": g.numpy() for i, g in enumerate(grads[1:])}), pc


def sequential_pc_error(comm):
    """The error message of -pc_type ilu (PETSc's sequential ILU) on the sparse Jacobian."""
    CASES["ilu"] = dict(linear=False, petsc={"pc_type": "ilu"})
    try:
        run("ilu", comm)
    except ValueError as err:
        return str(err)
    return "no error"


def main(out):
    comm = MPI.COMM_WORLD
    for case in CASES:
        res, pc = run(case, comm)
        if comm.rank == 0:
            np.savez(f"{out}/{case}.npz", **res)
            print(f"{case}: PC {pc}", flush=True)
    if comm.size > 1:
        message = sequential_pc_error(comm)
        if comm.rank == 0:
            with open(f"{out}/ilu.txt", "w") as fh:
                fh.write(message)


if __name__ == "__main__":
    main(sys.argv[1])
