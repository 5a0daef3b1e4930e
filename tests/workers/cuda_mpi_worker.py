"""Run under mpiexec by tests/test_cuda.py: data-parallel solves on the CPU and on a device.

Usage: mpiexec -n K python tests/workers/cuda_mpi_worker.py OUTDIR DEVICE_TYPE
DEVICE_TYPE is ``cuda`` (rank r uses ``cuda:{r % device_count}``: with one GPU every
rank shares it) or ``cpu`` (the same run twice on the CPU). Each rank takes its shard of
one global batch; for each case (adaptive dopri5 with d loss / d t; Crank-Nicolson with
the default block-Jacobian PC) and dtype, rank 0 writes OUTDIR/CASE-DTYPE-{cpu,device}.npz
with the summed loss, the gathered outputs and y0 gradient, the parameter gradients
(checked equal on every rank) and the output-time gradient.
"""
import copy
import sys

import numpy as np
import torch
from mpi4py import MPI
from torch import nn

import pnode
from pnode.parallel import shard

torch.set_num_threads(1)
CASES = {
    "dopri5": dict(method="dopri5", rtol=1e-6, atol=1e-8),
    "crank_nicolson": dict(method="crank_nicolson", options={"step_size": 0.1}),
}


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, t, y):
        return self.net(y) - 0.3 * y * torch.cos(t)


def solve(comm, func, batch, t, device, dtype, kwargs):
    """The rank's shard through one solve and backward; returns rank 0's arrays."""
    f = copy.deepcopy(func).to(device=device, dtype=dtype)
    y0 = shard(batch, comm).to(device=device, dtype=dtype).clone().requires_grad_(True)
    tt = t.to(device=device, dtype=dtype).clone().requires_grad_(True)
    with pnode.ODESolver(f, comm=comm, **kwargs) as solver:
        ys = solver(y0, tt)
        loss = (ys * torch.linspace(-1.0, 1.0, ys.shape[-1], device=device, dtype=dtype)).pow(2).sum()
        loss.backward()
    for name, x in [("ys", ys), ("y0.grad", y0.grad), ("t.grad", tt.grad)] + [(n, p.grad) for n, p in f.named_parameters()]:
        assert x is not None and x.device.type == torch.device(device).type, (name, dtype, kwargs, x if x is None else x.device)
    grads = torch.cat([p.grad.reshape(-1) for p in f.parameters()]).double().cpu().numpy()
    everyone = comm.allgather(grads)
    assert all(np.array_equal(g, everyone[0]) for g in everyone), "parameter gradients differ between ranks"
    ys_all = comm.gather(ys.detach().double().cpu().numpy(), root=0)
    gy_all = comm.gather(y0.grad.double().cpu().numpy(), root=0)
    loss_all = comm.allreduce(float(loss))
    if comm.rank != 0:
        return None
    return {"loss": np.array(loss_all), "ys": np.concatenate(ys_all, axis=1), "grad_y0": np.concatenate(gy_all),
            "grad_params": grads, "grad_t": tt.grad.double().cpu().numpy()}


def main(out, device_type):
    comm = MPI.COMM_WORLD
    torch.manual_seed(0)
    func = Field().double()
    batch = torch.randn(7, 3, dtype=torch.float64)  # 7 rows: uneven shards on 2 ranks
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    if device_type == "cuda":
        device = f"cuda:{comm.rank % torch.cuda.device_count()}"
    else:
        device = device_type
    for case, kwargs in CASES.items():
        for dtype in (torch.float32, torch.float64):
            for label, dev in (("cpu", "cpu"), ("device", device)):
                arrays = solve(comm, func, batch, t, dev, dtype, kwargs)
                if arrays is not None:
                    np.savez(f"{out}/{case}-{str(dtype).split('.')[-1]}-{label}.npz", **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
