"""Run under mpiexec by tests/test_cnf.py: a data-parallel CNF against a one-process CNF.

Usage: mpiexec -n K python tests/cnf_mpi_worker.py OUTDIR

For each case (exact trace, and Hutchinson with Rademacher noise), two training
iterations (log_prob with RNODE terms, backward, SGD step) run once data-parallel
(comm=COMM_WORLD, each rank its shard of a 7-row global batch: uneven on 2 ranks) and once
on every rank alone with the whole batch (comm=None), from the same initial parameters and
noise seed. Rank 0 writes OUTDIR/CASE.npz with both runs' losses, parameter gradients
(checked identical on every rank) and step counts.
"""
import sys

import numpy as np
import torch
from mpi4py import MPI

from pnode.models import CNF
from pnode.parallel import abort_on_exception, shard

torch.set_num_threads(1)
CASES = {
    "exact": dict(dim=2, trace="exact"),
    "hutchinson": dict(dim=3, trace="hutchinson", noise="rademacher"),
}
N = 7


def run(case, comm, batch, init):
    cnf = CNF(hidden=(16, 16), rtol=1e-8, atol=1e-10, kinetic_weight=0.1, jacobian_weight=0.05,
              comm=comm, seed=3, **CASES[case]).double()
    cnf.load_state_dict(init)
    opt = torch.optim.SGD(cnf.parameters(), lr=0.1)
    x = shard(batch, comm) if comm is not None else batch
    out = {}
    for it in range(2):
        opt.zero_grad()
        logp, reg = cnf.log_prob(x, return_reg=True)
        loss = (reg - logp).sum() / N
        loss.backward()
        total = comm.allreduce(loss.item()) if comm is not None else loss.item()
        out[f"loss{it}"] = total
        out[f"steps{it}"] = cnf.stats["steps"]
        for i, p in enumerate(cnf.parameters()):
            out[f"grad{it}_{i}"] = p.grad.numpy().copy()
        opt.step()
    cnf.close()
    return out


def main(outdir):
    comm = MPI.COMM_WORLD
    abort_on_exception(comm)
    for case, cfg in CASES.items():
        torch.manual_seed(0)
        init = CNF(hidden=(16, 16), **cfg).double().state_dict()
        batch = torch.randn(N, cfg["dim"], dtype=torch.float64)
        par = run(case, comm, batch, init)
        for key, value in par.items():  # identical on every rank
            assert np.array_equal(np.asarray(value), np.asarray(comm.bcast(value, root=0))), key
        ser = run(case, None, batch, init)
        if comm.rank == 0:
            np.savez(f"{outdir}/{case}.npz", ranks=comm.size, **{f"par_{k}": v for k, v in par.items()},
                     **{f"ser_{k}": v for k, v in ser.items()})


if __name__ == "__main__":
    main(sys.argv[1])
