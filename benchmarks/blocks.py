"""Stacks of ODE blocks: memory and time of one training iteration, with and without
block-level recomputation (``ODEBlock(recompute_forward=True)``, ANODE's scheme).

The model is a stack of L ``pnode.ODEBlock``s, each an MLP field
``f(t, z) = W2 tanh(W1 z + b1) + b2`` (state width 64, hidden 128, batch 256, float64,
torch on 1 thread), integrated over t in [0, 1] with classical RK4 at N_t fixed steps per
block. One iteration: forward through all blocks, loss = mean(z_L^2), backward.

Gradient configurations (all give the same gradient; only time and memory differ):

- ``store-all``: each block records its whole trajectory (states and stages) in the
  forward pass and keeps it for its adjoint: O(L * N_t) memory;
- ``recompute``: ``recompute_forward=True``: the forward pass keeps only each block's
  input; the backward pass re-solves a block (same accepted steps) right before its
  adjoint: O(L) + O(N_t) memory in principle, for about one extra forward solve per block;
- ``recompute + binomial``: the same, and each re-solve keeps at most ``max_ram``
  checkpoints (PETSc's revolve): O(L) + O(max_ram) memory, more recomputation;
- ``recompute + release``: ``recompute`` plus a hook that drops each block's re-solved
  trajectory as soon as its adjoint has run (the gradient of the block's input is ready).
  This is what block recomputation is meant to achieve; the row shows whether pnode
  already does it by itself (then it matches ``recompute``).

Points: L = 2 vs L = 8 at N_t = 50, and N_t = 25 vs N_t = 100 at L = 4 (``--quick``:
N_t = 16 and N_t = 8 vs 32, one iteration each; default: median of 2).

Measurement: every (configuration, L, N_t) runs in its own subprocess (resident-memory
peaks are per process), with ``MALLOC_MMAP_THRESHOLD_`` fixed so freed trajectories go
back to the OS at once. Peak memory = the largest anonymous RSS (sampled every 5 ms over
all measured iterations) minus its value after model construction; "retained" = what is
still held after the last iteration. Time = median CPU time (process time of the
single-threaded worker; the machine may be shared) of N iterations; the first includes
setting up the PETSc solvers. pnode's own counters give the steps it recomputed.

Run: ``python benchmarks/blocks.py`` (default, < 6 min on 2 idle cores), ``--quick``
(< 2 min), ``--repeats N``, ``--no-write`` (print only). Writes docs/benchmarks_blocks.md
and its figure docs/img/blocks.png.
"""
import argparse
import datetime
import os
import statistics
import sys
import time

# benchmarks/ is on sys.path
from _harness import ROOT, PeakSampler, anon_kb, load_average, machine, publish, run_worker, serve, trim_heap
import _plot

DOC = os.path.join(ROOT, "docs", "benchmarks_blocks.md")
WIDTH, HIDDEN, BATCH = 64, 128, 256
STAGES = 4  # RK4
MAX_RAM = 4

CONFIGS = {
    "store-all": dict(recompute=False, binomial=False, release=False),
    "recompute": dict(recompute=True, binomial=False, release=False),
    "recompute+binomial": dict(recompute=True, binomial=True, release=False),
    "recompute+release": dict(recompute=True, binomial=False, release=True),
}
LABELS = {
    "store-all": "store-all per block",
    "recompute": "recompute_forward",
    "recompute+binomial": f"recompute_forward + binomial (max_ram {MAX_RAM})",
    "recompute+release": "recompute_forward + release after adjoint (hook)",
}


# ---------------------------------------------------------------------------- worker
def worker(config, L, steps, repeats):
    """Measure one configuration at (L, N_t) in this fresh process; returns its row."""
    import torch
    from torch import nn

    import pnode

    torch.set_num_threads(1)
    cfg = CONFIGS[config]

    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(WIDTH, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, WIDTH))

        def forward(self, t, z):
            return self.net(z)

    torch.manual_seed(0)
    ck = pnode.Checkpoint("binomial", max_ram=MAX_RAM) if cfg["binomial"] else pnode.Checkpoint("all")
    blocks = [pnode.ODEBlock(Field().double(), recompute_forward=cfg["recompute"], method="rk4",
                             options={"step_size": 1.0 / steps}, checkpoint=ck) for _ in range(L)]
    model = nn.Sequential(*blocks)
    if cfg["release"]:
        def release_after_adjoint(block, inputs):
            # the gradient of a block's input is ready once that block's adjoint has run
            x = inputs[0]
            if x.requires_grad:
                def drop(grad, block=block):
                    solver = block.solver
                    if hasattr(solver, "_drop_trajectory"):
                        solver._drop_trajectory()
                    else:  # pragma: no cover - public fallback: frees the whole TS
                        solver.close()
                x.register_hook(drop)
        for b in blocks:
            b.register_forward_pre_hook(release_after_adjoint)
    x = torch.randn(BATCH, WIDTH, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_(True)

    def iteration():
        model.zero_grad(set_to_none=True)
        x.grad = None
        loss = model(x).pow(2).mean()
        loss.backward()

    trim_heap()
    base = anon_kb()
    cpu, wall = [], []
    with PeakSampler() as mem:
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            iteration()
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
    retained = anon_kb() - base
    stats = [dict(b.stats) for b in blocks]
    n = BATCH * WIDTH
    out = {
        "config": config, "L": L, "steps": steps, "repeats": repeats,
        "peak_mb": (mem.peak - base) / 1024, "retained_mb": retained / 1024,
        "cpu": cpu, "wall": wall,
        "median_cpu": statistics.median(cpu), "median_wall": statistics.median(wall),
        "recomputed_steps": sum(s["recomputed_steps"] for s in stats),
        "rhs_evals": sum(s["rhs_evals"] for s in stats),
        "vjp_evals": sum(s["vjp_evals"] for s in stats),
        "steps_per_block": stats[0]["steps"],
        "ckpt_mb_per_block": stats[0]["checkpoint_bytes"] / 2**20,
        "state_mb": n * 8 / 2**20,
    }
    return out


def measure(config, L, steps, repeats):
    """``worker`` in its own process; freed trajectories go back to the OS at once."""
    return run_worker(__file__, dict(config=config, L=L, steps=steps, repeats=repeats),
                      env={"MALLOC_MMAP_THRESHOLD_": "131072"})


# ---------------------------------------------------------------------------- report
def fmt_mb(x):
    return f"{x:.1f} MB"


def fmt_s(x):
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def pair_table(res, vary, points):
    """Rows: configurations; columns: the two points of one sweep."""
    (a, b) = points
    name = "L" if vary == "L" else "N_t"
    head = (f"| configuration | peak @ {name}={a[vary]} | peak @ {name}={b[vary]} | growth "
            f"| retained after iteration @ {name}={b[vary]} | CPU time @ {name}={a[vary]} "
            f"| CPU time @ {name}={b[vary]} | time vs store-all @ {name}={b[vary]} "
            f"| recomputed steps @ {name}={b[vary]} |")
    out = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in CONFIGS:
        ra, rb = res.get((c, a["L"], a["steps"])), res.get((c, b["L"], b["steps"]))
        if ra is None or rb is None:
            continue
        ref = res[("store-all", b["L"], b["steps"])]
        out.append(
            f"| {LABELS[c]} | {fmt_mb(ra['peak_mb'])} | {fmt_mb(rb['peak_mb'])} "
            f"| +{rb['peak_mb'] - ra['peak_mb']:.1f} MB ({rb['peak_mb'] / max(ra['peak_mb'], 1e-9):.1f}x) "
            f"| {fmt_mb(rb['retained_mb'])} | {fmt_s(ra['median_cpu'])} | {fmt_s(rb['median_cpu'])} "
            f"| {rb['median_cpu'] / ref['median_cpu']:.2f}x | {rb['recomputed_steps']} "
            f"({rb['recomputed_steps'] / (b['L'] * b['steps']):.2f} per step) |")
    return out + [""]


def full_table(res):
    out = ["| configuration | L | N_t | L*N_t | peak memory | retained | trajectory per block (pnode) "
           "| CPU time, median | wall time, median | N | time vs store-all | recomputed steps | f evals "
           "(fwd+re-solve) | VJPs |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (c, L, s), r in sorted(res.items(), key=lambda kv: (kv[0][1] * kv[0][2], kv[0][1], list(CONFIGS).index(kv[0][0]))):
        ref = res.get(("store-all", L, s))
        ratio = f"{r['median_cpu'] / ref['median_cpu']:.2f}x" if ref else "-"
        out.append(f"| {LABELS[c]} | {L} | {s} | {L * s} | {fmt_mb(r['peak_mb'])} | {fmt_mb(r['retained_mb'])} "
                   f"| {fmt_mb(r['ckpt_mb_per_block'])} | {fmt_s(r['median_cpu'])} | {fmt_s(r['median_wall'])} "
                   f"| {r['repeats']} | {ratio} | {r['recomputed_steps']} | {r['rhs_evals']} | {r['vjp_evals']} |")
    return out + [""]


def findings(res, sweep_L, sweep_N):
    """Conclusions computed from the numbers (nothing here is assumed)."""
    lines = []

    def get(c, p):
        return res.get((c, p["L"], p["steps"]))

    def slope(c, pts, per):
        ra, rb = get(c, pts[0]), get(c, pts[1])
        return (rb["peak_mb"] - ra["peak_mb"]) / (pts[1][per] - pts[0][per])

    per_step = (STAGES + 1) * BATCH * WIDTH * 8 / 2**20  # one RK4 step, store-all: state + 4 stages
    L_n = sweep_N[0]["L"]
    m = slope("store-all", sweep_N, "steps") / L_n  # measured store-all MB per step of one block
    lines.append(f"- A store-all block holds about {m:.2f} MB per step (measured: the growth from N_t="
                 f"{sweep_N[0]['steps']} to {sweep_N[1]['steps']} at L={L_n}, divided by L; pnode's "
                 f"`checkpoint_bytes` counts {per_step:.2f} MB: state + 4 stages). Below, an extra step of "
                 "every block costs k blocks' worth of that: k = L means O(L * N_t) memory, k = 1 means "
                 "only one block's trajectory is alive at a time, O(N_t).")
    for c in CONFIGS:
        if get(c, sweep_L[0]) is None or get(c, sweep_N[0]) is None:
            continue
        per_block = slope(c, sweep_L, "L")
        per_stepN = slope(c, sweep_N, "steps")
        lines.append(f"- {LABELS[c]}: an extra block adds {per_block:.1f} MB at N_t={sweep_L[0]['steps']}; "
                     f"an extra step (of all {L_n} blocks) adds {per_stepN:.2f} MB, k = {per_stepN / m:.2f}.")
    s_all, rec, rel = (get("store-all", sweep_L[1]), get("recompute", sweep_L[1]),
                       get("recompute+release", sweep_L[1]))
    if s_all and rec and rel:
        L = sweep_L[1]["L"]
        if rec["peak_mb"] > 0.75 * s_all["peak_mb"] and rel["peak_mb"] < 0.6 * s_all["peak_mb"]:
            lines.append(
                f"- **pnode issue**: `recompute_forward=True` alone saves little memory here (L={L}: "
                f"{rec['peak_mb']:.0f} MB vs store-all {s_all['peak_mb']:.0f} MB): the trajectory a block "
                "records when it is re-solved in backward stays attached to its solver after the adjoint, "
                f"so by the end of the backward pass all {L} re-solved trajectories are alive at once "
                "(O(L * N_t) again), and they stay until the next forward pass. Dropping each one after "
                f"its adjoint (the hook row) gives the intended O(L) + O(N_t): {rel['peak_mb']:.0f} MB. "
                "With binomial checkpointing the re-solves happen to release the previous block's "
                "trajectory (only one solver may hold PETSc's revolve schedule at a time), so that "
                "row shows the O(L) + O(max_ram) behaviour.")
        elif rec["peak_mb"] < 0.6 * s_all["peak_mb"]:
            lines.append(f"- `recompute_forward=True` releases each re-solved trajectory after its adjoint: "
                         f"L={L}: {rec['peak_mb']:.0f} MB vs store-all {s_all['peak_mb']:.0f} MB.")
    ratios = [res[(c, p["L"], p["steps"])]["median_cpu"] / res[("store-all", p["L"], p["steps"])]["median_cpu"]
              for c in ("recompute", "recompute+release") for p in sweep_L + sweep_N
              if (c, p["L"], p["steps"]) in res]
    if s_all and rec and ratios:
        lines.append(f"- Time: block recomputation costs {min(ratios):.2f}x to {max(ratios):.2f}x the store-all "
                     f"iteration (CPU time, all points), for exactly one extra forward solve per block "
                     f"(L={sweep_L[1]['L']}, N_t={sweep_L[1]['steps']}: {rec['recomputed_steps']} recomputed steps "
                     f"= L * N_t). The forward solve is the cheaper part of an iteration (the adjoint does a "
                     "VJP per stage), so the extra cost stays well below 2x.")
    b = get("recompute+binomial", sweep_L[1])
    if b and s_all:
        lines.append(f"- recompute + binomial (max_ram {MAX_RAM}): {b['recomputed_steps']} recomputed steps, "
                     f"{b['median_cpu'] / s_all['median_cpu']:.2f}x the store-all time, "
                     f"{b['peak_mb']:.0f} MB peak.")
    return lines + [""]


def draw(res, sweep_L, sweep_N, path):
    """Peak memory (top) and CPU time (bottom) of every configuration along the two sweeps
    (left: blocks L, right: steps per block N_t)."""
    fig, axes = _plot.figure(2, 2, size=(11, 7))
    for col, (sweep, key, xlabel) in enumerate((
            (sweep_L, "L", f"blocks L (N_t = {sweep_L[0]['steps']} steps per block)"),
            (sweep_N, "steps", f"steps per block N_t (L = {sweep_N[0]['L']} blocks)"))):
        xs = [p[key] for p in sweep]
        rows = [(c, [res.get((c, p["L"], p["steps"])) for p in sweep]) for c in CONFIGS]
        rows = [(c, rs) for c, rs in rows if all(rs)]
        _plot.lines(axes[0, col], xs, [(LABELS[c], [_plot.spread(r["peak_mb"]) for r in rs]) for c, rs in rows],
                    xlabel, "peak memory above the model (MB)")
        _plot.lines(axes[1, col], xs, [(LABELS[c], [_plot.spread(r["cpu"]) for r in rs]) for c, rs in rows],
                    xlabel, "CPU time per iteration (s)")
        axes[0, col].set_ylim(bottom=0)
        axes[1, col].set_ylim(bottom=0)
    axes[0, 0].legend(fontsize=7)
    _plot.save(fig, path, "One training iteration of a stack of ODE blocks (RK4, float64): memory and time; "
               + _plot.where())


def figure_lines(repeats):
    """The figure's embedding and caption on the page."""
    return _plot.embed("blocks", "peak memory and CPU time against blocks and steps", (
        "Left: more blocks at fixed steps per block; right: more steps per block at fixed L. Top: peak "
        "memory, one value per process; bottom: CPU time per iteration, median with min-max whiskers "
        f"over {repeats} iteration(s). The steeper a line on the top right, the more blocks' trajectories "
        "are alive at once: all L for store-all (O(L * N_t)), one for block recomputation at its best "
        "(O(L) + O(N_t))."))


def header(args, load, repeats):
    return [
        "# Stacks of ODE blocks: block recomputation", "",
        f"Generated by `python benchmarks/blocks.py{' --quick' if args.quick else ''}` on "
        f"{datetime.date.today().isoformat()}. Machine: {machine(('pnode', 'torch'), threads='1 thread')} "
        f"(1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end); float64.", "",
        f"Model: a stack of L `pnode.ODEBlock`s, each dz/dt = W2 tanh(W1 z + b1) + b2 (state width "
        f"{WIDTH}, hidden {HIDDEN}, batch {BATCH}: {BATCH * WIDTH} unknowns, "
        f"{BATCH * WIDTH * 8 / 2**20:.2f} MB per state vector), t in [0, 1], classical RK4 with N_t "
        "fixed steps per block. One iteration = forward through all blocks, loss = mean(z_L^2), backward.", "",
        f"Peak memory: largest anonymous RSS (RssAnon, sampled every 5 ms over the {repeats} measured "
        "iteration(s)) minus its value after model construction, each (configuration, L, N_t) in its own "
        "process with `MALLOC_MMAP_THRESHOLD_=131072` (freed vectors go back to the OS at once). It "
        "includes the per-block PETSc solver objects (work and adjoint vectors, created in the first "
        "iteration), so it grows with L in every configuration. Retained: still held after the last "
        "iteration. Time: median CPU time of the worker over N iterations (the first one includes "
        "creating the PETSc solvers); the machine is shared, so CPU time, not wall time, is compared. "
        "Recomputed steps and f evaluations: pnode's counters of the last iteration summed over blocks "
        "(after a backward with `recompute_forward` they count the re-solve and the adjoint).", "",
        "Configurations: store-all per block (`Checkpoint('all')`); `recompute_forward=True`; "
        f"`recompute_forward=True` with `Checkpoint('binomial', max_ram={MAX_RAM})`; "
        "`recompute_forward=True` plus a hook on each block's input that drops the block's re-solved "
        "trajectory once its adjoint has run (the gradient of its input is then ready). All give the "
        "same gradient.", "",
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller step counts, one iteration (< 2 min)")
    p.add_argument("--repeats", type=int, default=None, help="measured iterations per configuration "
                   "(default 2, --quick 1)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    p.add_argument("--no-write", action="store_true", help="print only; do not write docs/")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return serve(args.worker, worker)
    repeats = args.repeats or (1 if args.quick else 2)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or "store-all" not in configs:
        p.error(f"--configs must include store-all; known: {', '.join(CONFIGS)}")
    nt_l, nt_lo, nt_hi = (16, 8, 32) if args.quick else (50, 25, 100)
    sweep_L = [dict(L=2, steps=nt_l), dict(L=8, steps=nt_l)]
    sweep_N = [dict(L=4, steps=nt_lo), dict(L=4, steps=nt_hi)]
    points = sweep_L + sweep_N
    load0 = load_average()
    t0 = time.perf_counter()
    res = {}
    for pt in points:
        for c in configs:
            r = measure(c, pt["L"], pt["steps"], repeats)
            res[(c, pt["L"], pt["steps"])] = r
            print(f"  {LABELS[c]:<50s} L={pt['L']} N_t={pt['steps']:<4d} peak {r['peak_mb']:7.1f} MB  "
                  f"CPU {fmt_s(r['median_cpu']):>8s}  recomputed {r['recomputed_steps']}", file=sys.stderr)
    load1 = load_average()
    lines = header(args, (load0, load1), repeats)
    if not args.no_write:
        draw(res, sweep_L, sweep_N, _plot.png_path("blocks"))
        lines += figure_lines(repeats)
    lines += [f"## L = {sweep_L[0]['L']} vs L = {sweep_L[1]['L']} blocks at N_t = {nt_l}", ""]
    lines += pair_table(res, "L", sweep_L)
    lines += [f"## N_t = {nt_lo} vs N_t = {nt_hi} steps per block at L = 4", ""]
    lines += pair_table(res, "steps", sweep_N)
    lines += ["## What the numbers show", ""]
    lines += findings(res, sweep_L, sweep_N)
    lines += ["## All runs", ""]
    lines += full_table(res)
    lines += [f"Total benchmark time: {time.perf_counter() - t0:.0f} s.", ""]
    publish("\n".join(lines), None if args.no_write else DOC)


if __name__ == "__main__":
    main()
