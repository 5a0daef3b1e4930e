"""GPU benchmark: pnode against torchdiffeq on the same device, wall-clock per training step.

Two models (the CPU pages' models, moved to ``--device``):

1. The CNF of benchmarks/graphs.py: pnode.models.CNF(2) (default field), two moons
   (512 points, made here with numpy: no scikit-learn on the device machine), exact
   trace, dopri5 at rtol = atol = 1e-5, float64; one training iteration = log-density
   forward + gradient of the mean negative log-likelihood. pnode (discrete adjoint)
   against torchdiffeq by backprop and by odeint_adjoint.
2. The batched stiff MLP of benchmarks/stiff_batched.py (``A y + c tanh(W y)``, A's
   eigenvalues -0.5 to -2000, dim 8, t in [0, 5], rtol 1e-6 / atol 1e-8, float64) with
   batch 64 and 1024: pnode kencarp4 (per-sample block Jacobians, batched LU on the
   device) against torchdiffeq's dopri5 by backprop.

Each timing is the median (and min-max spread) of ``--repeats`` wall-clock runs after one
warm-up, with ``torch.cuda.synchronize()`` around each run on a CUDA device. Every row
also gives the loss, so rows of one model can be checked to agree.

Run: ``python benchmarks/gpu.py --device cuda --json OUT.json [--repeats 3] [--quick]``
(scripts/gpu_check.sh runs it on the device machine; ``--device cpu`` for a dry run).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from stiff_batched import StiffMLP  # noqa: E402  (the CPU page's model)

import pnode  # noqa: E402
from pnode.models import CNF  # noqa: E402
from pnode.models.cnf import standard_normal_logprob  # noqa: E402


def two_moons(n=512, noise=0.05, seed=0):
    """``n`` standardised points of two interleaved half circles (as scikit-learn's
    make_moons), float64."""
    rng = np.random.default_rng(seed)
    k = n // 2
    a = np.linspace(0, math.pi, k)
    b = np.linspace(0, math.pi, n - k)
    x = np.concatenate([np.stack([np.cos(a), np.sin(a)], 1), np.stack([1 - np.cos(b), 0.5 - np.sin(b)], 1)])
    x = torch.tensor(x + noise * rng.standard_normal(x.shape), dtype=torch.float64)
    return (x - x.mean(0)) / x.std(0)


BUDGET_S = 60.0  # a row's timed runs stop once they would pass this (the device check has 10 min)


def timed(fn, device, repeats):
    """``(median s, min s, max s, last result)`` of wall-clock runs of ``fn`` after a
    warm-up: ``repeats`` runs, fewer (at least one) where they would take over BUDGET_S."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(max(1, min(repeats, int(BUDGET_S / max(warm, 1e-9))))):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times), out


def cnf_rows(device, repeats):
    import torchdiffeq
    x = two_moons().to(device)
    torch.manual_seed(0)
    cnf = CNF(2).double().to(device)
    params = list(cnf.parameters())
    t = torch.tensor([0.0, cnf.T], dtype=torch.float64, device=device)
    calls = [0]

    def counted(tt, state):
        calls[0] += 1
        return cnf.dynamics(tt, state)

    def pnode_step():
        loss = -cnf.log_prob(x).mean()
        torch.autograd.grad(loss, params)
        return loss.item(), cnf.stats["rhs_evals"] + cnf.stats["vjp_evals"], cnf.stats["steps"]

    def tdq_step(adjoint):
        def step():
            calls[0] = 0
            solve = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
            kw = dict(adjoint_params=params) if adjoint else {}
            z, dlogp = solve(counted, (x, x.new_zeros(len(x))), t, rtol=1e-5, atol=1e-5, method="dopri5", **kw)
            loss = -(standard_normal_logprob(z[-1]) - dlogp[-1]).mean()
            torch.autograd.grad(loss, params)
            return loss.item(), calls[0], None
        return step

    rows = []
    for name, fn in (("pnode dopri5 (discrete adjoint)", pnode_step),
                     ("torchdiffeq dopri5, backprop", tdq_step(False)),
                     ("torchdiffeq dopri5, odeint_adjoint", tdq_step(True))):
        med, lo, hi, (loss, nfe, steps) = timed(fn, device, repeats)
        rows.append(dict(model="CNF two moons, batch 512", config=name, median_s=med, min_s=lo, max_s=hi,
                         loss=loss, nfe=nfe, steps=steps))
    cnf.close()
    return rows


def stiff_rows(device, repeats, batches):
    import torchdiffeq
    rows = []
    for batch in batches:
        model = StiffMLP().to(device)
        params = list(model.parameters())
        y0 = torch.randn(batch, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
        t = torch.tensor([0.0, 2.5, 5.0], dtype=torch.float64, device=device)
        solver = pnode.ODESolver(model, method="kencarp4", rtol=1e-6, atol=1e-8)

        def pnode_step():
            loss = solver(y0, t).pow(2).mean()
            torch.autograd.grad(loss, params)
            return loss.item(), solver.stats["steps"]

        def tdq_step():
            ys = torchdiffeq.odeint(model, y0, t, rtol=1e-6, atol=1e-8, method="dopri5")
            loss = ys.pow(2).mean()
            torch.autograd.grad(loss, params)
            return loss.item(), None

        for name, fn in (("pnode kencarp4 (block Jacobians, batched LU)", pnode_step),
                         ("torchdiffeq dopri5, backprop", tdq_step)):
            med, lo, hi, (loss, steps) = timed(fn, device, repeats)
            rows.append(dict(model=f"stiff MLP, batch {batch}", config=name, median_s=med, min_s=lo, max_s=hi,
                             loss=loss, steps=steps))
        solver.close()
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="stiff MLP at batch 64 only, 1 repeat")
    ap.add_argument("--json", required=True, help="where to write the rows (JSON)")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help="most seconds of timed runs per row")
    args = ap.parse_args(argv)
    globals()["BUDGET_S"] = args.budget_s
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: torch has no CUDA device (use --device cpu for a dry run)")
    repeats = 1 if args.quick else args.repeats
    start = time.perf_counter()
    rows = stiff_rows(device, repeats, [64] if args.quick else [64, 1024]) + cnf_rows(device, repeats)
    info = dict(device=str(device), repeats=repeats, torch=torch.__version__, pnode=pnode.__version__,
                gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                total_s=time.perf_counter() - start)
    with open(args.json, "w") as f:
        json.dump(dict(info=info, rows=rows), f, indent=1)
    for r in rows:
        print(f"{r['model']:28s} {r['config']:46s} {r['median_s']:8.3f} s  loss {r['loss']:.8g}")


if __name__ == "__main__":
    main()
