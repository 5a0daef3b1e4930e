"""Neural-SDE benchmark: pnode's reversible Heun adjoint against torchsde, same run.

What it measures, for a neural SDE with MLP drift and diagonal MLP diffusion
(Stratonovich; batch 64, state 16, hidden 64, t in [0, 1], float32, torch on 1 thread):

- time per training step: median wall time of forward solve + backward of a loss on
  all output times, after one warm-up step, the methods taking turns; a fresh Brownian
  motion (each library's own BrownianInterval, with the step as hint) is created inside
  every timed step, as a training loop does;
- drift evaluations per training step (forward + backward), counted on the module;
- peak memory: each (method, step count) runs in its OWN subprocess (``--worker``); the
  figure is the peak resident memory of one training step above the resident memory just
  before it (Linux VmHWM, reset through /proc/self/clear_refs; ru_maxrss elsewhere);
- gradient agreement in float64 on the same Brownian increments: pnode's reversible
  adjoint against backprop through pnode.sdeint and against torchsde's reversible adjoint;
- Brownian query throughput: pnode.BrownianInterval vs torchsde.BrownianInterval for the
  sequential pattern of a fixed-step solver (forward, then backward as an adjoint does),
  and for random intervals.

Methods: pnode ``sdeint_adjoint`` (reversible Heun, reversible adjoint), pnode ``sdeint``
(backprop), torchsde ``sdeint`` (reversible Heun, backprop), torchsde ``sdeint_adjoint``
with reversible Heun (``adjoint_method="adjoint_reversible_heun"``), midpoint and
Euler–Heun (continuous adjoints).

Run: ``python benchmarks/sde.py`` (about 3-5 minutes on 2 cores) or ``--quick``.
Needs torchsde (``pip install --no-deps torchsde trampoline``).
Prints a markdown report and writes it to docs/benchmarks_sde.md (``--out``).
"""
import argparse
import datetime
import os
import random
import statistics
import sys
import time

import torch
from torch import nn

from _harness import ROOT, PeakRSS, load_average, machine, publish, run_worker, serve  # benchmarks/ is on sys.path

DOC = os.path.join(ROOT, "docs", "benchmarks_sde.md")
BATCH, DIM, HIDDEN = 64, 16, 64
TS = [0.0, 0.25, 0.5, 0.75, 1.0]  # dyadic: on every step grid used below

METHODS = {
    # name: (library, solver, method, adjoint_method)
    "pnode sdeint_adjoint (reversible Heun)": ("pnode", "adjoint", "reversible_heun", None),
    "pnode sdeint (reversible Heun, backprop)": ("pnode", "backprop", "reversible_heun", None),
    "torchsde sdeint (reversible Heun, backprop)": ("torchsde", "backprop", "reversible_heun",
                                                    None),
    "torchsde sdeint_adjoint (reversible Heun)": ("torchsde", "adjoint", "reversible_heun",
                                                  "adjoint_reversible_heun"),
    "torchsde sdeint_adjoint (midpoint)": ("torchsde", "adjoint", "midpoint", "midpoint"),
    "torchsde sdeint_adjoint (Euler-Heun)": ("torchsde", "adjoint", "euler_heun", "euler_heun"),
}
REFERENCE = "pnode sdeint_adjoint (reversible Heun)"


class NeuralSDE(nn.Module):
    """MLP drift (DIM -> HIDDEN -> HIDDEN -> DIM) and diagonal MLP diffusion in (0, 0.5)."""

    noise_type = "diagonal"
    sde_type = "stratonovich"

    def __init__(self):
        super().__init__()
        self.drift = nn.Sequential(nn.Linear(DIM, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN),
                                   nn.Tanh(), nn.Linear(HIDDEN, DIM))
        self.diffusion = nn.Sequential(nn.Linear(DIM, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, DIM))
        self.f_evals = 0

    def f(self, t, y):
        self.f_evals += 1
        return self.drift(y)

    def g(self, t, y):
        return 0.5 * torch.sigmoid(self.diffusion(y))


def make_bm(lib, dt, seed, dtype):
    size = (BATCH, DIM)
    if lib == "pnode":
        import pnode
        return pnode.BrownianInterval(TS[0], TS[-1], size=size, dtype=dtype, dt=dt, entropy=seed)
    import torchsde
    return torchsde.BrownianInterval(t0=TS[0], t1=TS[-1], size=size, dtype=dtype, dt=dt,
                                     entropy=seed)


def solve(name, sde, y0, dt, bm):
    lib, kind, method, adjoint_method = METHODS[name]
    ts = torch.tensor(TS, dtype=y0.dtype)
    if lib == "pnode":
        import pnode
        fn = pnode.sdeint_adjoint if kind == "adjoint" else pnode.sdeint
        return fn(sde, y0, ts, bm=bm, method=method, dt=dt)
    import torchsde
    if kind == "adjoint":
        return torchsde.sdeint_adjoint(sde, y0, ts, bm=bm, method=method, dt=dt,
                                       adjoint_method=adjoint_method)
    return torchsde.sdeint(sde, y0, ts, bm=bm, method=method, dt=dt)


def training_step(name, sde, y0, dt, seed):
    """One forward + backward with a fresh Brownian motion; returns the loss."""
    bm = make_bm(METHODS[name][0], dt, seed, y0.dtype)
    sde.zero_grad(set_to_none=True)
    ys = solve(name, sde, y0, dt, bm)
    loss = ys.pow(2).mean()
    loss.backward()
    return loss.item()


def setup(dtype=torch.float32):
    torch.manual_seed(0)
    sde = NeuralSDE().to(dtype)
    y0 = torch.randn(BATCH, DIM, dtype=dtype)
    return sde, y0


# ---------------------------------------------------------------------------- parts
def time_methods(steps, repeats):
    """Median time and drift evaluations per training step for every method.

    The methods take turns (round robin over the repeats), so a slow patch on a shared
    machine hits all of them alike instead of one.
    """
    dt = 1.0 / steps
    models = {name: setup() for name in METHODS}
    for name, (sde, y0) in models.items():
        training_step(name, sde, y0, dt, seed=0)  # warm-up
    times = {name: [] for name in METHODS}
    evals = {name: [] for name in METHODS}
    for r in range(repeats):
        for name, (sde, y0) in models.items():
            sde.f_evals = 0
            t = time.perf_counter()
            training_step(name, sde, y0, dt, seed=r + 1)
            times[name].append(time.perf_counter() - t)
            evals[name].append(sde.f_evals)
    rows = {}
    for name in METHODS:
        rows[name] = {"median_s": statistics.median(times[name]), "min_s": min(times[name]),
                      "f_evals": statistics.median(evals[name])}
        print(f"  {name}: {1e3 * rows[name]['median_s']:.1f} ms", file=sys.stderr)
    return rows


def gradient_agreement(steps):
    """Max relative gradient differences in float64 on the same increments."""
    import pnode
    import torchsde
    dt = 1.0 / steps
    sde, y0 = setup(torch.float64)
    y0.requires_grad_(True)
    params = [y0] + list(sde.parameters())

    def grads(fn, bm, **kw):
        kw.setdefault("method", "reversible_heun")
        ys = fn(sde, y0, torch.tensor(TS, dtype=torch.float64), bm=bm, dt=dt, **kw)
        return ys, torch.autograd.grad(ys.pow(2).mean(), params)

    def rel(ga, gb):
        num = max((a - b).abs().max().item() for a, b in zip(ga, gb))
        return num / max(b.abs().max().item() for b in gb)

    bm = make_bm("pnode", dt, 1, torch.float64)
    ys_adj, g_adj = grads(pnode.sdeint_adjoint, bm)
    ys_bp, g_bp = grads(pnode.sdeint, bm)
    # torchsde's own BrownianInterval drives both reversible Heun implementations.
    tbm = make_bm("torchsde", dt, 1, torch.float64)
    ys_p, g_p = grads(pnode.sdeint_adjoint, tbm)
    ys_t, g_t = grads(torchsde.sdeint_adjoint, tbm, method="reversible_heun",
                      adjoint_method="adjoint_reversible_heun")
    return {
        "pnode adjoint vs pnode backprop": rel(g_adj, g_bp),
        "pnode adjoint vs torchsde reversible adjoint": rel(g_p, g_t),
        "solution: pnode vs torchsde (same increments)":
            ((ys_p - ys_t).abs().max() / ys_t.abs().max()).item(),
    }


def brownian_throughput(n, n_random, rounds=3):
    """Seconds per query, median over rounds in which the two libraries alternate."""
    import pnode
    import torchsde
    dt = 1.0 / n
    size = (BATCH, DIM)
    grid = [(k * dt, (k + 1) * dt if k + 1 < n else 1.0) for k in range(n)]
    rng = random.Random(0)
    rand = [tuple(sorted((rng.random(), rng.random()))) for _ in range(n_random)]
    makers = {
        "pnode": lambda hint, e: pnode.BrownianInterval(0.0, 1.0, size=size, dt=hint, entropy=e),
        "torchsde": lambda hint, e: torchsde.BrownianInterval(0.0, 1.0, size=size, dt=hint,
                                                              entropy=e),
    }
    patterns = ("sequential forward", "sequential backward (after forward)",
                "random intervals, no hint")
    samples = {lib: {p: [] for p in patterns} for lib in makers}
    for r in range(rounds):
        for lib, make in makers.items():
            bm = make(dt, r)
            t = time.perf_counter()
            for a, b in grid:
                bm(a, b)
            samples[lib][patterns[0]].append((time.perf_counter() - t) / n)
            t = time.perf_counter()
            for a, b in reversed(grid):
                bm(a, b)
            samples[lib][patterns[1]].append((time.perf_counter() - t) / n)
            bm = make(None, r)
            t = time.perf_counter()
            for a, b in rand:
                bm(a, b)
            samples[lib][patterns[2]].append((time.perf_counter() - t) / n_random)
    return {lib: {p: statistics.median(v) for p, v in d.items()} for lib, d in samples.items()}


def worker(name, steps):
    """Peak memory (MiB) of one training step above the resident memory before it."""
    torch.set_num_threads(1)
    sde, y0 = setup()
    training_step(name, sde, y0, 1.0 / 8, seed=0)  # imports, allocator warm-up
    with PeakRSS() as mem:
        training_step(name, sde, y0, 1.0 / steps, seed=1)
    return {"peak_mib": (mem.peak - mem.before) / 1024}


def measure_memory(step_counts):
    out = {}
    for name in METHODS:
        out[name] = {}
        for steps in step_counts:
            out[name][steps] = run_worker(__file__, dict(name=name, steps=steps), timeout=600)["peak_mib"]
        print(f"  {name}: " + ", ".join(f"{s} steps {m:.1f} MiB" for s, m in out[name].items()),
              file=sys.stderr)
    return out


# ---------------------------------------------------------------------------- report
def report(args, timing, memory, grads, bm, load):
    steps, mem_steps = args.steps, args.memory_steps
    ref = timing[REFERENCE]["median_s"]
    lines = [
        "# Neural-SDE benchmark: pnode vs torchsde",
        "",
        f"Generated by `python benchmarks/sde.py{' --quick' if args.quick else ''}` on "
        f"{machine(('torch', 'torchsde', 'pnode'), threads='1 thread')}; {datetime.date.today().isoformat()}. "
        f"Load average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the "
        "end: above 2 the 2-core machine was shared and absolute times are inflated.",
        "",
        f"Problem: diagonal-noise Stratonovich neural SDE, batch {BATCH}, state {DIM}, "
        f"MLP drift {DIM}-{HIDDEN}-{HIDDEN}-{DIM} (tanh), MLP diffusion {DIM}-{HIDDEN}-{DIM} "
        f"(sigmoid), t in [0, 1], outputs at {TS}, float32. Loss: mean of squares of all "
        "outputs. Each step creates a fresh BrownianInterval of its own library (step as "
        "hint).",
        "",
        f"## Training step (forward + backward), {steps} steps (dt = 1/{steps})",
        "",
        f"Median of {args.repeats} steps after a warm-up, the methods taking turns. Peak "
        "memory: one training step in its own process, peak resident memory above the "
        "resident memory before it.",
        "",
        "| method | time / step (ms) | vs pnode adjoint | drift evals / step | "
        + " | ".join(f"peak MiB, {s} steps" for s in mem_steps) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(mem_steps),
    ]
    for name, row in timing.items():
        mem = " | ".join(f"{memory[name][s]:.1f}" for s in mem_steps)
        lines.append(f"| {name} | {1e3 * row['median_s']:.1f} | {row['median_s'] / ref:.2f}x | "
                     f"{row['f_evals']:.0f} | {mem} |")
    lines += [
        "",
        "## Gradient agreement (float64, same Brownian increments)",
        "",
        "Max |g_a - g_b| / max |g_b| over y0 and every parameter gradient.",
        "",
        "| comparison | max relative difference |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.1e} |" for k, v in grads.items()]
    lines += [
        "",
        f"## Brownian queries (size {BATCH}x{DIM}, float32)",
        "",
        f"Sequential: {args.bm_queries} queries [k dt, (k+1) dt] with the step as hint, then "
        f"the same in reverse order; random: {args.bm_random} random intervals of [0, 1] "
        "without a hint. Median of 3 rounds, the libraries alternating.",
        "",
        "| pattern | pnode (µs/query) | torchsde (µs/query) | torchsde / pnode |",
        "|---|---:|---:|---:|",
    ]
    for pattern in bm["pnode"]:
        p, t = bm["pnode"][pattern], bm["torchsde"][pattern]
        lines.append(f"| {pattern} | {1e6 * p:.1f} | {1e6 * t:.1f} | {t / p:.2f}x |")
    lines += [
        "",
        "Notes: times are medians with the methods taking turns, so the ratios within one run "
        "are the meaningful figures. pnode's BrownianInterval answers random queries "
        "exactly, independently of the order of queries, by bisecting down to float64 "
        "resolution (one normal draw per level, about 45 levels for a new point); "
        "torchsde splits its tree at the query points (one draw per point, but the path "
        "depends on the query history), hence its lead on random access. The solvers never "
        "take that path: the tree has a node on every solver step.",
        "",
    ]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats (~1 min)")
    p.add_argument("--repeats", type=int, default=None, help="timed training steps per method")
    p.add_argument("--out", default=DOC, help="markdown output ('' for none)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return serve(args.worker, worker)
    sys.argv = sys.argv[:1]  # pnode hands sys.argv to PETSc on import: ours are not its options
    torch.set_num_threads(1)
    try:
        import torchsde  # noqa: F401
    except ImportError:
        sys.exit("benchmarks/sde.py needs torchsde: pip install --no-deps torchsde trampoline")
    if args.quick:
        args.steps, args.memory_steps = 64, [64, 512]
        args.repeats = args.repeats or 3
        args.bm_queries, args.bm_random = 2000, 100
    else:
        args.steps, args.memory_steps = 256, [256, 2048]
        args.repeats = args.repeats or 11
        args.bm_queries, args.bm_random = 10000, 300
    load_start = load_average()
    print("timing training steps ...", file=sys.stderr)
    timing = time_methods(args.steps, args.repeats)
    print("gradient agreement ...", file=sys.stderr)
    grads = gradient_agreement(args.steps)
    print("Brownian queries ...", file=sys.stderr)
    bm = brownian_throughput(args.bm_queries, args.bm_random)
    print("peak memory (one process per method and step count) ...", file=sys.stderr)
    memory = measure_memory(args.memory_steps)
    load_end = load_average()
    publish(report(args, timing, memory, grads, bm, (load_start, load_end)), args.out)


if __name__ == "__main__":
    main()
