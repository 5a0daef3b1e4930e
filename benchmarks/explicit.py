"""Explicit-method benchmark: one training iteration of an MLP neural ODE.

What it measures, per case (integrator, step count, problem size) and gradient method:

- time: median CPU time (and wall time) of N training iterations (forward solve, loss on
  the final state, backward) after a warm-up, torch on 1 thread, float64. CPU time of the
  single-threaded worker is compared because the machine may be shared with other jobs;
- memory: peak anonymous resident memory during one iteration above its value just
  before it (sampled from a thread). Each method runs in its OWN subprocess
  (benchmarks/_harness.py), so one method's allocator caches never hide another's
  memory;
- gradient error: max |g - g_ref| / max |g_ref| over all parameter gradients, against a
  float64 reference: plain-torch classical RK4 backprop on the same steps for the RK4
  cases, a torchdiffeq dopri5 solve at rtol 1e-10 (backprop) for the dopri5 cases.

Gradient methods: pnode (PETSc discrete adjoint, store-all checkpoints: ``Checkpoint("all")``), pnode
with stored stage graphs (``Checkpoint("graphs")``; a 1 GB budget at rk4-1000),
torchdiffeq ``odeint`` (backprop through the solver), torchdiffeq ``odeint_adjoint``
(continuous adjoint), plain-torch backprop through classical RK4, and the "recompute
floor": a plain-torch discrete adjoint that stores each step's state, then walks the steps
backwards rebuilding one step's graph at a time. The floor does the arithmetic any
discrete adjoint with state checkpoints must do, with no solver library in between, so
pnode / floor measures what PETSc and the bridge cost on top.

A second part integrates a mildly stiff, dissipative system dy/dt = A y + tanh(W y + b)
(eigenvalues of A log-spaced in [-316, -0.5]) and compares the gradient errors of
torchdiffeq's continuous adjoint with pnode's discrete adjoint.

Run: ``python benchmarks/explicit.py`` (full, < 10 min on 2 idle cores), ``--quick``
(< 3 min), ``--repeats N``, ``--profile CASE`` (cProfile of one pnode and one floor
iteration), ``--no-write``. Writes docs/benchmarks_explicit.md and docs/img/explicit.png.
"""
import argparse
import datetime
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

# benchmarks/ is on sys.path
from _harness import ROOT, PeakSampler, anon_kb, load_average, machine, publish, run_worker, serve, trim_heap

DOC = os.path.join(ROOT, "docs", "benchmarks_explicit.md")
PLOT = os.path.join(ROOT, "docs", "img", "explicit.png")
DTYPE = torch.float64


# ---------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class Case:
    """One benchmark problem: an MLP field integrated over t in [0, 1]."""

    dim: int
    hidden: int
    batch: int
    method: str                 # "rk4" (fixed steps) or "dopri5" (adaptive)
    steps: Optional[int] = None  # fixed step count (step_size = 1/steps)
    rtol: float = 1e-6
    atol: float = 1e-8

    @property
    def fixed(self):
        return self.steps is not None


CASES = {
    "rk4-10": Case(32, 256, 512, "rk4", steps=10),
    "rk4-100": Case(32, 256, 512, "rk4", steps=100),
    "rk4-1000": Case(32, 256, 512, "rk4", steps=1000),
    "dopri5": Case(32, 256, 512, "dopri5"),
    "tiny-rk4-100": Case(2, 16, 16, "rk4", steps=100),
    "tiny-dopri5": Case(2, 16, 16, "dopri5"),
}
# Timed methods; the "reference" worker (dopri5 cases) only computes gradients.
FIXED_METHODS = ["pnode", "pnode-graphs", "floor", "torch-backprop", "tdq-backprop", "tdq-adjoint"]
ADAPTIVE_METHODS = ["pnode", "pnode-graphs", "floor", "tdq-backprop", "tdq-adjoint"]
# Stored graphs for 1000 steps of the large MLP would take backprop's 8 GB: that case
# shows a budget instead (the last steps' graphs, the rest recomputed).
GRAPH_BUDGET = {"rk4-1000": "1GB"}
LABELS = {
    "pnode": "pnode (discrete adjoint, store-all)",
    "pnode-graphs": "pnode, stored stage graphs (Checkpoint(\"graphs\"))",
    "floor": "recompute floor (plain torch)",
    "torch-backprop": "plain-torch classical RK4 backprop",
    "tdq-backprop": "torchdiffeq odeint (backprop)",
    "tdq-adjoint": "torchdiffeq odeint_adjoint",
}
REF_TOL = dict(rtol=1e-10, atol=1e-12)
GAIN = 3.0


class MLPField(nn.Module):
    """dy/dt = W2 tanh(W1 y + b1) + b2; counts its calls (forward and backward passes).

    Weights are PyTorch's default initialisation times GAIN: a freshly initialised field
    is so smooth that dopri5 crosses [0, 1] in 3 steps; trained fields are livelier.
    """

    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        with torch.no_grad():
            for layer in (self.net[0], self.net[2]):
                layer.weight.mul_(GAIN)
        self.counter = [0]  # a list: nn.Module.__setattr__ would cost ~10 us a call

    @property
    def calls(self):
        return self.counter[0]

    def forward(self, t, y):
        self.counter[0] += 1
        return self.net(y)


def case_name_of(case):
    return next(name for name, c in CASES.items() if c == case)


def build(case, seed=0):
    """The same field and initial state in every process (seeded)."""
    torch.manual_seed(seed)
    func = MLPField(case.dim, case.hidden).to(DTYPE)
    y0 = torch.randn(case.batch, case.dim, dtype=DTYPE)
    return func, y0


def loss_of(y_final):
    return y_final.pow(2).mean()


# ---------------------------------------------------------------------------- plain RK
@dataclass(frozen=True)
class Tableau:
    a: tuple
    b: tuple
    c: tuple


RK4 = Tableau(a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
              b=(1 / 6, 1 / 3, 1 / 3, 1 / 6), c=(0.0, 0.5, 0.5, 1.0))
# Dormand-Prince 5(4), 5th-order weights; the FSAL 7th stage only estimates the error.
DOPRI5 = Tableau(
    a=((),
       (1 / 5,),
       (3 / 40, 9 / 40),
       (44 / 45, -56 / 15, 32 / 9),
       (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
       (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656)),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0))


def rk_step(func, t, y, h, tab):
    """One explicit Runge-Kutta step of size h from (t, y)."""
    ks = []
    for row, c in zip(tab.a, tab.c):
        yi = y
        for a, k in zip(row, ks):
            if a:
                yi = yi + (h * a) * k
        ks.append(func(torch.tensor(t + c * h, dtype=y.dtype), yi))
    out = y
    for b, k in zip(tab.b, ks):
        if b:
            out = out + (h * b) * k
    return out


def rk_solve(func, y0, grid, tab):
    """Final state of explicit RK on the step boundaries ``grid`` (keeps autograd's graph)."""
    y = y0
    for t0, t1 in zip(grid[:-1], grid[1:]):
        y = rk_step(func, t0, y, t1 - t0, tab)
    return y


def floor_gradients(func, y0, grid, tab):
    """Discrete adjoint in plain torch: store states forward, rebuild one step backward.

    Memory: one state per step (in one preallocated block, so the heap does not
    fragment around them) plus one step's graph; work: every stage evaluated twice
    (forward, and again while rebuilding) plus one VJP per stage.
    """
    params = list(func.parameters())
    states = y0.new_empty((len(grid),) + tuple(y0.shape))
    states[0] = y0
    with torch.no_grad():
        for k, (t0, t1) in enumerate(zip(grid[:-1], grid[1:])):
            states[k + 1] = rk_step(func, t0, states[k], t1 - t0, tab)
    y_final = states[-1].clone().requires_grad_(True)
    (adj,) = torch.autograd.grad(loss_of(y_final), y_final)
    grads = [torch.zeros_like(p) for p in params]
    for k in range(len(grid) - 2, -1, -1):
        yk = states[k].clone().requires_grad_(True)
        out = rk_step(func, grid[k], yk, grid[k + 1] - grid[k], tab)
        g = torch.autograd.grad(out, [yk] + params, adj)
        adj = g[0]
        for acc, gp in zip(grads, g[1:]):
            acc += gp
    for p, g in zip(params, grads):
        p.grad = g
    return params


# ---------------------------------------------------------------------------- runners
def fixed_grid(case, t_end):
    """Step boundaries 0, h, 2h, ... up to t_end with h = 1/steps."""
    n = round(t_end * case.steps)
    return [k / case.steps for k in range(n + 1)]


def make_iteration(method, case, func, y0, grid=None):
    """A function ``it(t_end)`` running one training iteration over [0, t_end]."""
    def tspan(t_end):
        return torch.tensor([0.0, t_end], dtype=DTYPE)

    if method in ("pnode", "pnode-graphs"):
        import pnode
        kw = (dict(method="rk4", options={"step_size": 1.0 / case.steps}) if case.fixed
              else dict(method="dopri5", rtol=case.rtol, atol=case.atol))
        if method == "pnode-graphs":
            kw["checkpoint"] = pnode.Checkpoint("graphs", max_memory=GRAPH_BUDGET.get(case_name_of(case)))
        else:  # the default ("auto") keeps stage graphs too: this row is the store-all adjoint
            kw["checkpoint"] = pnode.Checkpoint("all")
        # what pnode.odeint does on every call (it caches one solver per func and settings)
        solver = pnode.ODESolver(func, **kw)

        def solve(t_end):
            return solver(y0, tspan(t_end))[-1]
        solve.solver = solver
    elif method in ("tdq-backprop", "tdq-adjoint", "reference"):
        import torchdiffeq
        odeint = torchdiffeq.odeint_adjoint if method == "tdq-adjoint" else torchdiffeq.odeint
        # torchdiffeq's "rk4" is Kutta's 3/8 rule, not the classical tableau: same order,
        # same stage count and step count, slightly different numbers.
        if method == "reference":
            kw = dict(method="dopri5", **REF_TOL)
        elif case.fixed:
            kw = dict(method="rk4", options={"step_size": 1.0 / case.steps})
        else:
            kw = dict(method="dopri5", rtol=case.rtol, atol=case.atol)

        def solve(t_end):
            return odeint(func, y0, tspan(t_end), **kw)[-1]
    elif method == "torch-backprop":
        def solve(t_end):
            return rk_solve(func, y0, fixed_grid(case, t_end), RK4)
    elif method == "floor":
        tab = RK4 if case.fixed else DOPRI5

        def it(t_end):
            func.zero_grad(set_to_none=True)
            # the adaptive case replays pnode's accepted steps (a floor has no controller)
            g = fixed_grid(case, t_end) if case.fixed else [x for x in grid if x <= t_end]
            floor_gradients(func, y0, g, tab)
        return it
    else:
        raise ValueError(method)

    def it(t_end):
        func.zero_grad(set_to_none=True)
        loss_of(solve(t_end)).backward()
    it.solver = getattr(solve, "solver", None)
    return it


def warmup_end(case):
    """A short span for warm-up: same solver settings, two steps' worth of work."""
    return 2.0 / case.steps if case.fixed else 0.05


# ---------------------------------------------------------------------------- worker
def timed(it):
    """(wall, CPU) seconds of one full iteration. CPU time of this single-threaded process
    is what we compare: other jobs on a shared machine stretch wall time, not CPU time."""
    w0, c0 = time.perf_counter(), time.process_time()
    it(1.0)
    return time.perf_counter() - w0, time.process_time() - c0


def worker(case_name, method, repeats, outdir, grid_file=None):
    """Measure one method on one case in this (fresh) process; returns its row."""
    torch.set_num_threads(1)
    case = CASES[case_name]
    func, y0 = build(case)
    grid = torch.load(grid_file).tolist() if grid_file else None
    it = make_iteration(method, case, func, y0, grid)
    # Warm up on a short span (lazy imports, PETSc objects, torch kernels), so that the
    # measured iteration's memory is the solve's own, not start-up costs.
    it(warmup_end(case))
    trim_heap()
    base = anon_kb()
    func.counter[0] = 0
    with PeakSampler() as mem:
        first = timed(it)
    peak_mb = (mem.peak - base) / 1024
    calls = func.calls
    grads = [p.grad.detach().clone() for p in func.parameters()]
    info = {"case": case_name, "method": method, "peak_mb": peak_mb, "calls": calls}
    if method in ("pnode", "pnode-graphs"):
        solver = it.solver
        info["stats"] = {k: v for k, v in solver.stats.items() if v}
        info["steps"] = solver.stats["steps"]
        if method == "pnode":
            torch.save(solver.step_times, os.path.join(outdir, f"{case_name}.grid.pt"))
    elif case.fixed:
        info["steps"] = case.steps
    elif method == "floor":
        info["steps"] = len(grid) - 1
    runs = [timed(it) for _ in range(repeats)] or [first]
    info["wall"] = [w for w, _ in runs]
    info["cpu"] = [c for _, c in runs]
    info["median_wall"] = statistics.median(info["wall"])
    info["median_s"] = statistics.median(info["cpu"])
    info["min_s"] = min(info["cpu"])
    torch.save(grads, os.path.join(outdir, f"{case_name}.{method}.pt"))
    return info


def measure(case_name, method, repeats, outdir):
    """``worker`` in its own process, on a reproducible heap (one malloc arena, fixed hash
    seed, no address randomisation: the same worker measures the same peak)."""
    grid = None
    if method == "floor" and not CASES[case_name].fixed:  # replays pnode's accepted steps
        grid = os.path.join(outdir, f"{case_name}.grid.pt")
    return run_worker(__file__, dict(case_name=case_name, method=method, repeats=repeats, outdir=outdir,
                                     grid_file=grid), fixed_heap=True)


def grad_error(grads, ref):
    """max |g - g_ref| over all parameters, relative to max |g_ref|."""
    diff = max(float((g - r).abs().max()) for g, r in zip(grads, ref))
    scale = max(float(r.abs().max()) for r in ref)
    return diff / scale


# ---------------------------------------------------------------------------- part 1
def repeats_for(case_name, method, args):
    """Timed repeats. A 1000-step iteration takes ~20 s: fewer repeats there, and with
    --quick none (the memory-measured iteration is then the one timing)."""
    if case_name != "rk4-1000":
        return args.repeats
    if args.quick:
        return 0
    return min(args.repeats, 3) if method in ("pnode", "floor") else min(args.repeats, 1)


def methods_for(case_name, args):
    case = CASES[case_name]
    if args.quick and case_name == "rk4-1000":
        return ["pnode", "floor"]  # the slow backprop runs are skipped
    return FIXED_METHODS if case.fixed else ADAPTIVE_METHODS


def reference_for(case_name, methods):
    """Which worker's gradients are the reference for this case."""
    if not CASES[case_name].fixed:
        return "reference"
    # the floor is the same classical RK4 discrete solution's exact gradient
    return "torch-backprop" if "torch-backprop" in methods else "floor"


def run_explicit(args, outdir):
    """All cases, all methods, one subprocess each; returns {case: {method: info}}."""
    results = {}
    for case_name in CASES:
        methods = methods_for(case_name, args)
        res = results[case_name] = {}
        for m in methods:
            t0 = time.perf_counter()
            res[m] = measure(case_name, m, repeats_for(case_name, m, args), outdir)
            print(f"  {case_name:13s} {m:15s} {res[m]['median_s']:9.4f} s cpu {res[m]['median_wall']:9.4f} s wall "
                  f"{res[m]['peak_mb']:9.1f} MB   ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        ref_name = reference_for(case_name, methods)
        if ref_name == "reference":
            measure(case_name, "reference", 0, outdir)
        ref = torch.load(os.path.join(outdir, f"{case_name}.{ref_name}.pt"))
        for m in methods:
            grads = torch.load(os.path.join(outdir, f"{case_name}.{m}.pt"))
            res[m]["grad_err"] = "reference" if m == ref_name else grad_error(grads, ref)
    return results


# ---------------------------------------------------------------------------- part 2
class StiffField(nn.Module):
    """dy/dt = A y + tanh(W y + b): A fixed, symmetric, eigenvalues in [-316, -0.5]."""

    def __init__(self, dim, seed=1):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        lam = -torch.logspace(math.log10(0.5), math.log10(316.0), dim, dtype=DTYPE)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=DTYPE))
        self.register_buffer("A", q @ torch.diag(lam) @ q.T)
        self.lin = nn.Linear(dim, dim).to(DTYPE)
        with torch.no_grad():  # small W, b: the stiffness comes from A
            self.lin.weight.copy_(0.3 * torch.randn(dim, dim, generator=g, dtype=DTYPE) / math.sqrt(dim))
            self.lin.bias.copy_(0.5 * torch.randn(dim, generator=g, dtype=DTYPE))

    def forward(self, t, y):
        return y @ self.A.T + torch.tanh(self.lin(y))


STIFF_DIM, STIFF_BATCH = 12, 16
STIFF_H = 1e-3


def stiff_settings(quick):
    """(horizon T, label, solver keywords). At T = 5 the reverse-time reconstruction of y
    in torchdiffeq's adjoint overflows (modes growing like exp(316 t)); at T = 1 it stays
    finite and wrong. Fixed-step RK4 only at T = 1 (5000 steps of three solvers is slow)."""
    rtols = (1e-3, 1e-5) if quick else (1e-3, 1e-5, 1e-7)
    out = [(1.0, f"dopri5 rtol {r:.0e}", dict(method="dopri5", rtol=r, atol=r * 1e-2)) for r in rtols]
    if not quick:
        out.append((1.0, f"rk4 h {STIFF_H:g}", dict(method="rk4", options={"step_size": STIFF_H})))
        out += [(5.0, f"dopri5 rtol {r:.0e}", dict(method="dopri5", rtol=r, atol=r * 1e-2)) for r in (1e-3, 1e-5)]
    return out


def stiff_gradients(func, y0, horizon, solve):
    """(final state, parameter gradients) of loss(y(horizon)) for ``solve(func, y0, t)``."""
    func.zero_grad(set_to_none=True)
    t = torch.tensor([0.0, horizon], dtype=DTYPE)
    y_final = solve(func, y0, t)[-1]
    loss_of(y_final).backward()
    return y_final.detach(), [p.grad.detach().clone() for p in func.parameters()]


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def adjoint_error(func, y0, horizon, kw, g_ref):
    """torchdiffeq odeint_adjoint's gradient error, or why it produced none."""
    import torchdiffeq
    adj_kw = dict(kw)
    if "options" not in kw:  # adaptive: let a blowing-up backward solve stop, not crawl on
        adj_kw["adjoint_options"] = dict(max_num_steps=10**6)
    try:
        _, g = stiff_gradients(func, y0, horizon, lambda f, y, t: torchdiffeq.odeint_adjoint(f, y, t, **adj_kw))
    except (AssertionError, RuntimeError) as err:  # torchdiffeq stops on non-finite states
        return "non-finite (torchdiffeq: " + str(err).split(":")[0][:40] + ")"
    if not all(torch.isfinite(x).all() for x in g):
        return "non-finite"
    return grad_error(g, g_ref)


def run_stiff(quick=False):
    """Gradient errors on the stiff problem: torchdiffeq's adjoint vs pnode's."""
    import pnode
    import torchdiffeq
    torch.set_num_threads(1)
    func = StiffField(STIFF_DIM)
    y0 = torch.randn(STIFF_BATCH, STIFF_DIM, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    refs, rows = {}, []
    for horizon, label, kw in stiff_settings(quick):
        if horizon not in refs:
            refs[horizon] = stiff_gradients(func, y0, horizon, lambda f, y, t: torchdiffeq.odeint(
                f, y, t, method="dopri5", **REF_TOL))
        y_ref, g_ref = refs[horizon]
        solver = pnode.ODESolver(func, **kw)
        y_p, g_p = stiff_gradients(func, y0, horizon, lambda f, y, t: solver(y, t))
        y_b, g_b = stiff_gradients(func, y0, horizon, lambda f, y, t: torchdiffeq.odeint(f, y, t, **kw))
        rows.append({
            "T": horizon, "setting": label, "pnode_steps": solver.stats["steps"],
            "pnode_fwd": rel_err(y_p, y_ref), "pnode_grad": grad_error(g_p, g_ref),
            "pnode_vs_backprop": grad_error(g_p, g_b),
            "backprop_fwd": rel_err(y_b, y_ref), "backprop_grad": grad_error(g_b, g_ref),
            "adjoint_grad": adjoint_error(func, y0, horizon, kw, g_ref),
        })
        solver.close()
        print(f"  stiff T={horizon:g} {label}: done", file=sys.stderr)
    return rows


# ---------------------------------------------------------------------------- report
def fmt_t(s):
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def fmt_e(x):
    return x if isinstance(x, str) else f"{x:.1e}"


def case_title(name):
    c = CASES[name]
    size = f"dim {c.dim}, hidden {c.hidden}, batch {c.batch}"
    how = f"RK4, {c.steps} fixed steps" if c.fixed else f"dopri5, rtol {c.rtol:g}, atol {c.atol:g}"
    return f"{name}: {how} ({size})"


def explicit_tables(results):
    out = []
    for name, res in results.items():
        case = CASES[name]
        ref = {"torch-backprop": "plain-torch classical RK4 backprop on the same steps",
               "floor": "the recompute floor (classical RK4 discrete adjoint, same steps)",
               "reference": "torchdiffeq dopri5 rtol 1e-10, atol 1e-12, backprop"}[reference_for(name, list(res))]
        out += [f"### {case_title(name)}", "", f"Gradient reference: {ref}.", "",
                "| method | CPU time, median (min) | wall time, median | N | peak memory | f calls | steps "
                "| grad rel. error |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for m, r in res.items():
            label = LABELS[m] + (" (3/8 rule)" if case.fixed and m.startswith("tdq") else "")
            steps = r.get("steps", "")
            out.append(f"| {label} | {fmt_t(r['median_s'])} ({fmt_t(r['min_s'])}) | {fmt_t(r['median_wall'])} "
                       f"| {len(r['cpu'])} "
                       f"| {r['peak_mb']:.1f} MB "
                       f"| {r['calls']} | {steps} | {fmt_e(r['grad_err'])} |")
        out.append("")
    return out


def ratio_lines(results):
    out = ["| case | pnode / floor | pnode / torchdiffeq backprop | pnode / torch RK4 backprop "
           "| pnode / torchdiffeq adjoint | pnode graphs / torch RK4 backprop | pnode graphs / torchdiffeq backprop |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for name, res in results.items():
        def ratio(m, num="pnode"):
            if m not in res or num not in res:
                return "n/a"
            p = res[num]
            return f"{p['median_s'] / res[m]['median_s']:.2f} ({p['min_s'] / res[m]['min_s']:.2f})"
        out.append(f"| {name} | {ratio('floor')} | {ratio('tdq-backprop')} | {ratio('torch-backprop')} "
                   f"| {ratio('tdq-adjoint')} | {ratio('torch-backprop', 'pnode-graphs')} "
                   f"| {ratio('tdq-backprop', 'pnode-graphs')} |")
    out.append("")
    lo, hi = results.get("rk4-10"), results.get("rk4-1000")
    if lo and hi:
        out += ["Memory growth from 10 to 1000 RK4 steps (peak of one iteration):", "",
                "| method | 10 steps | 1000 steps | growth (MB) | growth vs pnode |", "|---|---:|---:|---:|---:|"]
        grow_p = hi["pnode"]["peak_mb"] - lo["pnode"]["peak_mb"]
        for m in hi:
            if m in lo:
                g = hi[m]["peak_mb"] - lo[m]["peak_mb"]
                out.append(f"| {LABELS[m]} | {lo[m]['peak_mb']:.1f} MB | {hi[m]['peak_mb']:.1f} MB "
                           f"| {g:.1f} | {g / grow_p:.2f}x |")
        out.append("")
    return out


def stiff_table(rows):
    out = ["| T | solver setting | pnode steps | pnode fwd err | pnode grad err | torchdiffeq backprop fwd err "
           "| torchdiffeq backprop grad err | pnode vs torchdiffeq backprop | **torchdiffeq odeint_adjoint grad err** |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = r["setting"] + (" (torchdiffeq: 3/8 rule)" if r["setting"].startswith("rk4") else "")
        out.append(f"| {r['T']:g} | {name} | {r['pnode_steps']} | {fmt_e(r['pnode_fwd'])} | {fmt_e(r['pnode_grad'])} "
                   f"| {fmt_e(r['backprop_fwd'])} | {fmt_e(r['backprop_grad'])} | {fmt_e(r['pnode_vs_backprop'])} "
                   f"| **{fmt_e(r['adjoint_grad'])}** |")
    return out + [""]


def summary_lines(results, stiff):
    """The headline numbers, read off the tables below."""
    def ratio(case, m, other):
        res = results.get(case, {})
        if m not in res or other not in res:
            return "n/a"
        return f"{res[m]['median_s'] / res[other]['median_s']:.2f}"

    fixed = [c for c in ("rk4-10", "rk4-100", "rk4-1000", "dopri5") if c in results]
    out = ["![time and memory per training iteration](img/explicit.png)", "", "## Summary", "",
           "- pnode / recompute floor (CPU time): " + ", ".join(f"{c} {ratio(c, 'pnode', 'floor')}" for c in fixed)
           + f"; tiny problem {ratio('tiny-rk4-100', 'pnode', 'floor')} (RK4) and "
           f"{ratio('tiny-dopri5', 'pnode', 'floor')} (dopri5).",
           "- pnode / torchdiffeq backprop: " + ", ".join(f"{c} {ratio(c, 'pnode', 'tdq-backprop')}" for c in fixed)
           + " (backprop evaluates the field once per stage, a discrete adjoint twice: forward and rebuild).",
           f"- tiny problem, pnode / torchdiffeq odeint_adjoint: {ratio('tiny-rk4-100', 'pnode', 'tdq-adjoint')} "
           f"(RK4, 100 steps), {ratio('tiny-dopri5', 'pnode', 'tdq-adjoint')} (dopri5).",
           "- pnode with stored stage graphs / backprop (plain-torch RK4 for the RK4 cases, torchdiffeq for "
           "dopri5): " + ", ".join(
               f"{c} {ratio(c, 'pnode-graphs', 'torch-backprop' if CASES[c].fixed else 'tdq-backprop')}"
               for c in results if "pnode-graphs" in results[c])
           + f" (rk4-1000 under a {GRAPH_BUDGET['rk4-1000']} budget)."]
    lo, hi = results.get("rk4-10", {}), results.get("rk4-1000", {})
    if "pnode" in lo and "pnode" in hi:
        grow = {m: hi[m]["peak_mb"] - lo[m]["peak_mb"] for m in hi if m in lo}
        line = f"- memory growth from 10 to 1000 RK4 steps: pnode +{grow['pnode']:.0f} MB"
        if "tdq-backprop" in grow:
            line += (f", torchdiffeq backprop +{grow['tdq-backprop']:.0f} MB "
                     f"({grow['tdq-backprop'] / grow['pnode']:.1f}x pnode's)")
        out.append(line + f", recompute floor +{grow['floor']:.0f} MB.")
    finite = [r["adjoint_grad"] for r in stiff if not isinstance(r["adjoint_grad"], str)]
    blown = sorted({f"T = {r['T']:g}" for r in stiff if isinstance(r["adjoint_grad"], str)})
    if finite:
        out.append(f"- stiff problem: torchdiffeq odeint_adjoint's gradient error {100 * min(finite):.0f}-"
                   f"{100 * max(finite):.0f} %" + (f", non-finite at {', '.join(blown)}" if blown else "")
                   + f"; pnode's {min(r['pnode_grad'] for r in stiff):.0e} to {max(r['pnode_grad'] for r in stiff):.0e}, "
                   f"at the level of its forward errors ({min(r['pnode_fwd'] for r in stiff):.0e} to "
                   f"{max(r['pnode_fwd'] for r in stiff):.0e}).")
    return out + [""]


def report_lines(args, results, stiff, load):
    lines = header(args, load) + summary_lines(results, stiff) + ["## Cases", ""] + explicit_tables(results)
    lines += ["## Ratios", "", "Time ratios, CPU time median / median (min / min):", ""] + ratio_lines(results)
    lines += ["## Stiff, dissipative problem: gradient errors", "",
              f"dy/dt = A y + tanh(W y + b), dim {STIFF_DIM}, batch {STIFF_BATCH}, t in [0, T]; "
              "A = Q diag(lam) Q^T with lam log-spaced from -0.5 to -316 and a random orthogonal Q; "
              "W, b trainable. Loss = mean(y(T)^2). Errors are relative max-abs against a torchdiffeq "
              "dopri5 rtol 1e-10 backprop solve (forward: final state; grad: W, b). Adaptive runs use "
              "atol = rtol / 100. 'pnode vs torchdiffeq backprop' compares pnode's gradient with "
              "backprop through torchdiffeq's own solve at the same setting. torchdiffeq's adjoint "
              "re-integrates y backwards in time, where the damped modes (rates up to 316) grow, so "
              "its reconstructed trajectory, and the gradient along it, drift; pnode's discrete "
              "adjoint replays the stored forward steps.", ""]
    return lines + stiff_table(stiff)


def header(args, load):
    n = args.repeats
    return [
        "# Explicit methods: one training iteration", "",
        f"Generated by `python benchmarks/explicit.py{' --quick' if args.quick else ''}` on "
        f"{datetime.date.today().isoformat()}. Machine: "
        f"{machine(('pnode', 'torch', 'torchdiffeq'), threads='1 thread')}; dtype float64.", "",
        f"Time: median of N = {n} iterations after a warm-up (fewer for the slow 1000-step runs; "
        "N is in each table). One iteration = forward solve over t in [0, 1], loss = mean(y(1)^2), "
        "backward. CPU time (process time of the single-threaded worker) is the figure compared "
        "and used in the ratios, as it is less sensitive than wall time to other jobs on the "
        f"machine (1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end, on "
        f"{os.cpu_count()} cores{'; other jobs were running' if max(load) > 1.5 else ''}). Memory: peak anonymous resident memory (RssAnon, sampled every "
        "5 ms) during one iteration, above its value just before it, each method in its own process "
        "(one malloc arena); it includes the allocator's fragmentation, as a user's process would. "
        "f calls: evaluations of the "
        "field per iteration (forward and backward). Gradient error: max |g - g_ref| / max |g_ref| "
        "over all parameter gradients.", "",
        f"Field: MLP state -> hidden -> state with tanh, weights PyTorch's default initialisation "
        f"times {GAIN:g} (a fresh field is so smooth that dopri5 needs 3 steps), y0 ~ N(0, 1).", "",
        "Methods: pnode with store-all checkpointing (`Checkpoint(\"all\")`: the adjoint re-evaluates func at each stored stage), and with stored stage graphs "
        "(`Checkpoint(\"graphs\")`: the forward keeps each stage's autograd graph, the adjoint backpropagates "
        f"through it instead of re-evaluating; rk4-1000 under a {GRAPH_BUDGET['rk4-1000']} budget); the *recompute floor* "
        "is a plain-torch discrete adjoint (store each step's state, rebuild one step's graph at "
        "a time going backwards; for dopri5 it replays pnode's accepted steps); torchdiffeq's "
        "`rk4` is Kutta's 3/8 rule, not classical RK4 (same order, stages and step count), so its "
        "gradient differs from the classical reference by that discretization difference.", "",
    ]


def plot(results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = ["pnode", "pnode-graphs", "floor", "torch-backprop", "tdq-backprop", "tdq-adjoint"]
    cases = list(results)
    fig, axes = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True)
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        xs = [i + (j - (len(methods) - 1) / 2) * width for i, c in enumerate(cases) if m in results[c]]
        sel = [c for c in cases if m in results[c]]
        axes[0].bar(xs, [results[c][m]["median_s"] for c in sel], width, label=LABELS[m])
        axes[1].bar(xs, [max(results[c][m]["peak_mb"], 0.1) for c in sel], width)
    axes[0].set_ylabel("CPU time per iteration (s)")
    axes[1].set_ylabel("peak memory of one iteration (MB)")
    for ax in axes:
        ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(range(len(cases)))
    axes[1].set_xticklabels(cases)
    axes[0].set_title("One training iteration (forward + backward), float64, 1 thread")
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    os.makedirs(os.path.dirname(PLOT), exist_ok=True)
    fig.savefig(PLOT, dpi=110)


def _category(key, callers):
    """Where a profile entry's own time goes, coarsely."""
    path, _, name = key
    if "pnode" in path and name in ("_run_petsc", "<lambda>"):
        return "PETSc C code (ts.solve / ts.adjointSolve, outside callbacks)"
    if "run_backward" in name:
        return "autograd engine (backward kernels)"
    if path == "~" and callers and all("pnode" in c[0] for c in callers):
        return "torch ops called by pnode's bridge (copies, views, comparisons)"
    if path == "~" and "torch" in name:
        return "torch kernels (forward)"
    if "pnode" in path:
        return "pnode Python (bridge, callbacks)"
    if "torch" in path:
        return "torch Python (nn.Module, autograd wrappers)"
    return "other (benchmark, Python builtins)"


def profile(case_name, top=12):
    """cProfile one iteration of pnode and of the recompute floor on ``case_name``."""
    import cProfile
    import pstats
    torch.set_num_threads(1)
    case = CASES[case_name]
    for method in ("pnode", "floor"):
        func, y0 = build(case)
        grid = None
        if method == "floor" and not case.fixed:  # replay pnode's steps, as the benchmark does
            import pnode
            solver = pnode.ODESolver(func, method="dopri5", rtol=case.rtol, atol=case.atol)
            solver(y0, torch.tensor([0.0, 1.0], dtype=DTYPE))
            grid = solver.step_times.tolist()
        it = make_iteration(method, case, func, y0, grid)
        it(1.0)  # warm-up
        prof = cProfile.Profile(time.process_time)  # CPU time: the machine may be shared
        prof.runcall(it, 1.0)
        stats = pstats.Stats(prof)
        by_cat = {}
        for key, (_, _, tottime, _, callers) in stats.stats.items():
            cat = _category(key, callers)
            by_cat[cat] = by_cat.get(cat, 0.0) + tottime
        total = sum(by_cat.values())
        print(f"==== {method}, {case_name}: {total:.3f} s CPU under cProfile")
        for cat, t in sorted(by_cat.items(), key=lambda kv: -kv[1]):
            print(f"  {t:8.3f} s  {100 * t / total:5.1f} %  {cat}")
        stats.sort_stats("tottime").print_stats(top)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats, skip slow 1000-step runs")
    p.add_argument("--repeats", type=int, default=None, help="timed iterations per method (default 5, quick 2)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--profile", metavar="CASE", help="cProfile one pnode iteration of CASE")
    p.add_argument("--no-write", action="store_true", help="print tables only")
    args = p.parse_args()
    if args.worker:
        return serve(args.worker, worker)
    sys.argv = sys.argv[:1]  # PETSc reads sys.argv when pnode is imported; ours are not its
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.profile:
        return profile(args.profile)
    start, load0 = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory() as outdir:
        results = run_explicit(args, outdir)
    print("  stiff problem ...", file=sys.stderr)
    stiff = run_stiff(args.quick)
    t = os.times()
    cpu = t.user + t.system + t.children_user + t.children_system
    lines = report_lines(args, results, stiff, (load0, load_average()))
    lines += [f"Total benchmark time: {time.perf_counter() - start:.0f} s wall, {cpu:.0f} s CPU.", ""]
    publish("\n".join(lines), None if args.no_write else DOC)
    if not args.no_write:
        plot(results)


if __name__ == "__main__":
    main()
