"""Data-parallel training with MPI: time per CNF training iteration on 1 and 2 ranks.

Each case is one training iteration (log_prob of a global mini-batch, backward through
PETSc's discrete adjoint, Adam step) of a pnode.models.CNF, float64, torch on 1 thread per
rank. The same global batch is split over the ranks (comm=MPI.COMM_WORLD), so 1 and 2
ranks do the same arithmetic and take the same adaptive steps; the script checks that the
losses agree. Reported: median wall time per iteration over --iters timed iterations
(after --warmup), the speed-up over 1 rank, the CPU time per rank per iteration, and the
number of adaptive steps per solve.

    .venv/bin/python benchmarks/parallel.py            # both cases, 1 and 2 ranks, ~3 min
    .venv/bin/python benchmarks/parallel.py --quick --no-write   # quick look (3 timed iterations)

This script launches ``mpiexec`` itself (the venv's, next to the Python executable).
Output: a markdown table on stdout and in docs/benchmarks_parallel.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _measure import cpu_name  # noqa: E402  (benchmarks/ is on sys.path)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")

CASES = {
    "cnf-2d-exact": dict(dim=2, hidden=(64, 64, 64), batch=1024, trace="exact",
                         label="2-D CNF, exact trace, hidden 64x3, batch 1024"),
    "cnf-64d-hutchinson": dict(dim=64, hidden=(256, 256), batch=512, trace="hutchinson",
                               label="64-D CNF, Hutchinson trace, hidden 256x2, batch 512"),
}


def worker(case, iters, warmup, out, batch_div=1):
    """Run under mpiexec: time ``iters`` training iterations; rank 0 writes JSON to ``out``.
    ``batch_div`` divides the global batch (the half-batch reference row)."""
    import torch
    from mpi4py import MPI

    from pnode.models import CNF
    from pnode.parallel import abort_on_exception, shard

    comm = MPI.COMM_WORLD
    abort_on_exception(comm)
    torch.set_num_threads(1)
    cfg = dict(CASES[case])
    cfg["batch"] //= batch_div
    torch.manual_seed(0)
    cnf = CNF(cfg["dim"], hidden=cfg["hidden"], trace=cfg["trace"], rtol=1e-5, atol=1e-5, comm=comm).double()
    opt = torch.optim.Adam(cnf.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    # a fixed, mildly non-Gaussian data set (the same on every rank)
    data = torch.randn(8 * CASES[case]["batch"], cfg["dim"], generator=gen, dtype=torch.float64)
    data = data + 0.5 * torch.sin(2 * data.roll(1, dims=1))
    walls, cpus, losses, steps = [], [], [], []
    for it in range(warmup + iters):
        idx = torch.randint(0, len(data), (cfg["batch"],), generator=gen)
        x = shard(data[idx], comm)
        comm.Barrier()
        w0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad()
        loss = -cnf.log_prob(x).sum() / cfg["batch"]
        loss.backward()
        opt.step()
        comm.Barrier()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if it >= warmup:
            walls.append(comm.allreduce(wall, op=MPI.MAX))
            cpus.append(comm.allreduce(cpu, op=MPI.MAX))
            losses.append(comm.allreduce(loss.item()))
            steps.append(cnf.stats["steps"])
    cnf.close()
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump(dict(walls=walls, cpus=cpus, losses=losses, steps=steps, ranks=comm.size), f)


def calibrate():
    """Run under mpiexec: every rank times the same fixed matmul loop (weak scaling)."""
    import torch
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    a = torch.randn(300, 300, dtype=torch.float64)
    walls = []
    for _ in range(9):
        comm.Barrier()
        w0 = time.perf_counter()
        for _ in range(100):
            a @ a
        comm.Barrier()
        walls.append(time.perf_counter() - w0)
    if comm.rank == 0:
        print(json.dumps(statistics.median(walls)))


def machine_check():
    """Median wall time of the fixed per-rank matmul loop on 1 and 2 ranks."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = {}
    for n in (1, 2):
        proc = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, os.path.abspath(__file__), "--calibrate"],
                              capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(proc.stdout + proc.stderr)
        out[n] = float(proc.stdout.strip().splitlines()[-1])
    return out


def launch(case, ranks, iters, warmup, batch_div=1):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [MPIEXEC, "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker", case,
               "--iters", str(iters), "--warmup", str(warmup), "--out", out, "--batch-div", str(batch_div)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
        with open(out) as f:
            return json.load(f)


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def table(results, args, load_start):
    import torch
    load = os.getloadavg()
    lines = [
        "# Data-parallel CNF training: 1 vs 2 MPI ranks",
        "",
        f"Generated by `python benchmarks/parallel.py --iters {args.iters} --warmup {args.warmup}` on "
        f"{time.strftime('%Y-%m-%d')}. Machine: {cpu_name()}, {os.cpu_count()} cores (1-minute load average "
        f"{load_start:.1f} at the start, {load[0]:.1f} at the end); pnode at commit {commit()}; torch "
        f"{torch.__version__}, 1 thread per rank; float64, dopri5 rtol = atol = 1e-5.",
        "",
        "One iteration = log_prob of the global batch (each rank its shard) + backward through "
        "PETSc's discrete adjoint (parameter gradients summed over the ranks) + Adam step. "
        "Wall times are medians (and minima) over the timed iterations, the slowest rank's; "
        "CPU time is the busiest rank's (MPI's busy-waiting in collectives counts as CPU). "
        "The *1 rank, half batch* row runs half the global batch on one rank: the time 2 "
        "ranks would take with no communication or synchronisation cost. "
        "Other jobs on the machine (load average above 2) slow the 2-rank runs most: both "
        "cores must be free at once.",
        "",
        "| case | ranks | median wall s/iter | min wall s/iter | speed-up (median; min) | median CPU s/iter | "
        "steps/solve | max rel. loss diff vs 1 rank |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case, per in results.items():
        base, base_min = statistics.median(per[1]["walls"]), min(per[1]["walls"])
        for n, r in per.items():
            med = statistics.median(r["walls"])
            steps = sorted(set(r["steps"]))
            steps = str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
            if n == "half":
                label, diff = "1, half batch", "-"
            else:
                label = str(n)
                diff = f"{max(abs(a - b) / abs(b) for a, b in zip(r['losses'], per[1]['losses'])):.1e}"
            lines.append(f"| {CASES[case]['label']} | {label} | {med:.3f} | {min(r['walls']):.3f} | "
                         f"{base / med:.2f}x; {base_min / min(r['walls']):.2f}x | {statistics.median(r['cpus']):.3f} | "
                         f"{steps} | {diff} |")
    return "\n".join(lines) + "\n"


def check_table(before, after):
    lines = ["", "Machine check (weak scaling): every rank runs the same 100 products of 300x300 float64 "
             "matrices. On two free cores, 2 ranks take as long as 1 (ratio 1.0); a ratio near 2 means the "
             "two ranks effectively shared one core, and the 2-rank rows above are slowed by as much.", "",
             "| when | 1 rank, s | 2 ranks, s | ratio 2 ranks / 1 rank |", "|---|---:|---:|---:|"]
    for when, r in (("before the runs", before), ("after the runs", after)):
        lines.append(f"| {when} | {r[1]:.3f} | {r[2]:.3f} | {r[2] / r[1]:.2f} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--iters", type=int, default=9, help="timed iterations per run (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    p.add_argument("--quick", action="store_true", help="3 timed iterations after 1 warm-up (for make bench --quick)")
    p.add_argument("--ranks", default="1,2", help="rank counts to run")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    p.add_argument("--no-half", action="store_true", help="skip the 1-rank half-batch reference row")
    p.add_argument("--no-write", action="store_true", help="print only; do not write docs/benchmarks_parallel.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--batch-div", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--calibrate", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.iters, args.warmup = 3, 1
    if args.calibrate:
        return calibrate()
    if args.worker:
        sys.argv = sys.argv[:1]  # keep our flags away from PETSc
        return worker(args.worker, args.iters, args.warmup, args.out, args.batch_div)
    results = {}
    load_start = os.getloadavg()[0]
    check_before = machine_check()
    for case in args.cases.split(","):
        results[case] = {}
        for n in (int(k) for k in args.ranks.split(",")):
            t0 = time.perf_counter()
            results[case][n] = launch(case, n, args.iters, args.warmup)
            print(f"{case} on {n} rank(s): {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if not args.no_half:
            results[case]["half"] = launch(case, 1, args.iters, args.warmup, batch_div=2)
    check_after = machine_check()
    text = table(results, args, load_start) + check_table(check_before, check_after)
    print(text)
    if not args.no_write:
        path = os.path.join(ROOT, "docs", "benchmarks_parallel.md")
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(path, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
