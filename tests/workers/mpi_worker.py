"""Run under mpiexec by tests/test_mpi.py: one data-parallel solve + backward.

Usage: mpiexec -n K python tests/mpi_worker.py all OUTDIR   (every case, OUTDIR/CASE.npz)
       mpiexec -n K python tests/mpi_worker.py raise -      (rank K-1 raises mid-solve)
Every rank takes its shard of the same global batch; rank 0 writes the summed loss, the
gathered y0 gradient, the parameter gradients (checked equal on all ranks) and the
number of steps, and the gradient with respect to the output times.
"""
import sys

import numpy as np
import torch
from mpi4py import MPI
from torch import nn

import pnode
from pnode.parallel import shard

torch.set_num_threads(1)
CASES = {
    "dopri5": dict(method="dopri5", rtol=1e-7, atol=1e-9),
    "rk4": dict(method="rk4", options={"step_size": 0.05}),
    "kencarp4": dict(method="kencarp4", rtol=1e-6, atol=1e-8),
    "crank_nicolson": dict(method="crank_nicolson", options={"step_size": 0.1}),
    "dopri5-binomial": dict(method="dopri5", rtol=1e-7, atol=1e-9,
                            checkpoint=pnode.Checkpoint("binomial", max_ram=4)),
    "dopri5-graphs": dict(method="dopri5", rtol=1e-7, atol=1e-9, checkpoint=pnode.Checkpoint("graphs")),
    "rk4-graphs-budget": dict(method="rk4", options={"step_size": 0.05},
                              checkpoint=pnode.Checkpoint("graphs", max_memory="20kB")),
}


def main(case, out):
    comm = MPI.COMM_WORLD
    torch.manual_seed(0)
    func = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    batch = torch.randn(7, 3, dtype=torch.float64)  # 7 rows: uneven shards on 2 and 3 ranks
    t = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float64)
    y0 = shard(batch, comm).clone().requires_grad_(True)

    if case == "raise":
        pnode.parallel.abort_on_exception(comm)

        def bad(t, y):
            if comm.rank == comm.size - 1 and t > 0.3:
                raise RuntimeError(f"deliberate failure on rank {comm.rank}")
            return func(y)
        try:
            pnode.odeint(bad, y0, t, method="dopri5", comm=comm)
        except RuntimeError as e:
            print(f"rank {comm.rank} raised RuntimeError: {e}", flush=True)
            sys.exit(3)
        except pnode.SolverError as e:
            print(f"rank {comm.rank} raised SolverError: {e}", flush=True)
            sys.exit(4)
        sys.exit(0)

    solver = pnode.ODESolver(lambda t, y: func(y) - 0.3 * y * torch.cos(t), comm=comm,
                             adjoint_params=list(func.parameters()), **CASES[case])
    t.requires_grad_(True)  # d loss / d t: reduced over the ranks' shards
    ys = solver(y0, t)
    loss = (ys ** 2).sum() + ys[-1].sum()  # summed over the global batch across ranks
    loss.backward()
    grads = [p.grad.numpy().copy() for p in func.parameters()]
    gt = t.grad.numpy().copy()
    for g in grads + [gt]:  # identical on every rank
        assert np.array_equal(g, comm.bcast(g, root=0))
    total = comm.allreduce(loss.item())
    gy0 = comm.gather(y0.grad.numpy(), root=0)
    steps = comm.allgather(solver.stats["steps"])
    assert len(set(steps)) == 1
    solver.close()
    if comm.rank == 0:
        np.savez(out, loss=total, gy0=np.concatenate(gy0), gt=gt, steps=steps[0],
                 **{f"p{i}": g for i, g in enumerate(grads)})


if __name__ == "__main__":
    if sys.argv[1] == "all":
        for name in CASES:
            main(name, f"{sys.argv[2]}/{name}.npz")
    else:
        main(sys.argv[1], sys.argv[2])
