"""Stiff-problem benchmark: explicit dopri5 against pnode's implicit and IMEX methods.

One forward + backward solve (PETSc's discrete adjoint) per configuration, each in its
own subprocess (``--worker``), after a short warm-up solve in that process. Reported per
configuration: accepted steps, right-hand-side evaluations (``rhs_evals``: calls of every
part of the vector field, forward and backward), Newton and Krylov (GMRES or LU)
iterations of the forward solve, vector-Jacobian products (the adjoint's work: pnode's
Newton/Krylov counters do not include the adjoint's transposed linear solves), wall and
CPU time, peak resident memory (Linux VmHWM, reset before the solve) and its increase
over the resident memory just before the solve, and the errors of the outputs and of the
gradient against a tight reference solve.

Problems:

1. Robertson's chemical kinetics (k = 0.04, 3e7, 1e4), y(0) = (1, 0, 0), outputs t = 0
   and 4 per decade from 1e-3 to t_end, loss ``sum((y * (1, 1e4, 1))**2)``, gradient with
   respect to log k. On [0, 1] dopri5, kencarp4 and fixed-step crank_nicolson /
   implicit_euler (step 1e-3; on [0, 1e5] they would need 1e8 steps); on [0, 1e5] dopri5
   is capped at ``max_num_steps`` (reported as "> cap") against kencarp4.
2. The stiff neural ODE of examples/stiff_neural.py: ``dy/dt = A y + MLP(y)``, A
   symmetric with eigenvalues logspace(0, 4, 8) negated, batch 32, t in [0, 0.5], loss
   ``sum(w * y)`` over 6 outputs, gradient with respect to the MLP's weights. kencarp4
   runs IMEX (A y implicit, MLP explicit); crank_nicolson and implicit_euler treat the
   whole right-hand side implicitly. "+PC" is the exact inverse of shift*I - A from its
   eigendecomposition, passed as ``options["preconditioner"]``.
3. A neural reaction-diffusion system on a 256x256 periodic grid (65,536 unknowns),
   ``u_t = D Laplacian(u) + MLP(u)`` (5-point Laplacian by torch.roll, pointwise MLP
   1-16-1 as 1x1 convolutions), D = 0.01 so the diffusion eigenvalues reach
   -8 D / dx^2 = -5243: kencarp4 IMEX (diffusion implicit, matrix-free) with an
   FFT preconditioner, the exact solve of (shift - D Laplacian) (the FFT diagonalises the
   periodic Laplacian), and without one. A dense Jacobian would take 65536^2 * 8 bytes =
   34 GB. dopri5 runs forward only (no gradient): storing its trajectory for the adjoint
   would take several GB.

Run: ``python benchmarks/stiff.py`` (full, about 5 minutes on 2 idle cores) or
``--quick`` (about 1.5 minutes; smaller caps, fewer configurations). Writes markdown
tables to stdout and to docs/benchmarks_stiff.md, and docs/img/stiff.png.
Every worker runs torch on ``--threads`` threads (default 1).
"""
import argparse
import datetime
import math
import os
import sys
import time

import torch
from torch import nn

from _harness import ROOT, PeakRSS, machine, publish, run_worker, serve  # benchmarks/ is on sys.path

DOC = os.path.join(ROOT, "docs", "benchmarks_stiff.md")
PLOT = os.path.join(ROOT, "docs", "img", "stiff.png")
F64 = torch.float64


# ---------------------------------------------------------------------------- problems
ROB_RATES = (0.04, 3e7, 1e4)
ROB_SCALE = torch.tensor([1.0, 1e4, 1.0], dtype=F64)


class Robertson(nn.Module):
    def __init__(self):
        super().__init__()
        self.log_k = nn.Parameter(torch.tensor([math.log(k) for k in ROB_RATES], dtype=F64))

    def forward(self, t, y):
        k1, k2, k3 = self.log_k.exp()
        r1, r2, r3 = k1 * y[..., 0], k2 * y[..., 1] ** 2, k3 * y[..., 1] * y[..., 2]
        return torch.stack([-r1 + r3, r1 - r3 - r2, r2], dim=-1)


def robertson_times(t_end):
    """Output times: 0 and 4 per decade from 1e-3 up to t_end. (The first output is not below
    the fixed step 1e-3 of the fixed-step rows: pnode's fixed step would shrink to it.)"""
    grid = torch.logspace(-3, 5, 33, dtype=F64)
    return torch.cat([torch.zeros(1, dtype=F64), grid[grid <= t_end * (1 + 1e-12)]])


class StiffLinear(nn.Module):
    """``A y`` with ``A = Q diag(-lam) Q^T``; ``solve_shifted`` is (shift I - A)^-1 exactly."""

    def __init__(self, d, stiffness, gen):
        super().__init__()
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
        lam = torch.logspace(0, math.log10(stiffness), d, dtype=F64)
        self.register_buffer("Q", Q)
        self.register_buffer("lam", lam)
        self.register_buffer("A", -(Q * lam) @ Q.T)

    def forward(self, t, y):
        return y @ self.A.T

    def solve_shifted(self, t, y, shift, r, transpose):
        return ((r @ self.Q) / (shift + self.lam)) @ self.Q.T


class MLP(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, d)).double()

    def forward(self, t, y):
        return self.net(y)


class Sum(nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, t, y):
        return self.a(t, y) + self.b(t, y)


class Diffusion(nn.Module):
    """``D * Laplacian(u)`` on a periodic n x n grid of [0, 1]^2 (5-point stencil)."""

    def __init__(self, n, D):
        super().__init__()
        self.c = D * n * n  # D / dx^2
        k = torch.arange(n, dtype=F64)
        s = torch.sin(math.pi * k / n) ** 2
        lam = -4.0 * self.c * (s[:, None] + s[None, : n // 2 + 1])  # eigenvalues (rfft2 layout)
        self.register_buffer("lam", lam)

    def forward(self, t, u):
        lap = (torch.roll(u, 1, -1) + torch.roll(u, -1, -1) + torch.roll(u, 1, -2) + torch.roll(u, -1, -2)
               - 4.0 * u)
        return self.c * lap

    def solve_shifted(self, t, u, shift, r, transpose):
        """(shift - D Laplacian)^-1 r by FFT: exact (symmetric, so the transpose too)."""
        n = r.shape[-1]
        return torch.fft.irfft2(torch.fft.rfft2(r) / (shift - self.lam), s=(n, n))


class PointwiseMLP(nn.Module):
    """A 1 -> hidden -> 1 MLP applied at every grid point (1x1 convolutions)."""

    def __init__(self, hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, hidden, 1), nn.Tanh(), nn.Conv2d(hidden, 1, 1)).double()

    def forward(self, t, u):
        return self.net(u)


# ---------------------------------------------------------------------------- configs
def configs(quick):
    """Every configuration (a dict of settings); ``--quick`` keeps the core comparisons."""
    rob_cap = 2000 if quick else 20000
    rob = dict(problem="robertson", rtol=1e-6, atol=1e-10)
    nn_ = dict(problem="neural", rtol=1e-5, atol=1e-7)
    rd = dict(problem="rd", n=256, D=0.01, t_end=0.2 if quick else 0.5, rtol=1e-5, atol=1e-7)
    core = [
        dict(rob, label="reference: kencarp5 dense, rtol 1e-8", method="kencarp5", jacobian="dense",
             rtol=1e-8, atol=1e-13, t_end=1.0, reference=True),
        dict(rob, label="dopri5", method="dopri5", t_end=1.0),
        dict(rob, label="kencarp4 dense", method="kencarp4", jacobian="dense", t_end=1.0),
        dict(rob, label="reference: kencarp5 dense, rtol 1e-8", method="kencarp5", jacobian="dense",
             rtol=1e-8, atol=1e-13, t_end=1e5, reference=True),
        dict(rob, label=f"dopri5 (stops at max_num_steps {rob_cap})", method="dopri5", t_end=1e5, cap=rob_cap),
        dict(rob, label="kencarp4 dense", method="kencarp4", jacobian="dense", t_end=1e5),
        dict(nn_, label="reference: kencarp5 IMEX +PC, rtol 1e-8", method="kencarp5", pc=True,
             rtol=1e-8, atol=1e-10, reference=True),
        dict(nn_, label="dopri5", method="dopri5"),
        dict(nn_, label="kencarp4 IMEX matrix-free +PC", method="kencarp4", pc=True),
        dict(rd, label="kencarp4 IMEX matrix-free +FFT PC", method="kencarp4", pc=True),
    ]
    if quick:
        return core
    extra = [
        dict(rob, label="crank_nicolson dense, step 1e-3", method="crank_nicolson", jacobian="dense",
             t_end=1.0, step=1e-3),
        dict(rob, label="implicit_euler dense, step 1e-3", method="implicit_euler", jacobian="dense",
             t_end=1.0, step=1e-3),
        dict(rob, label="kencarp4 matrix-free", method="kencarp4", t_end=1e5),
        dict(nn_, label="kencarp4 IMEX matrix-free", method="kencarp4"),
        dict(nn_, label="kencarp4 IMEX dense", method="kencarp4", jacobian="dense"),
        dict(nn_, label="crank_nicolson +PC, step 0.005", method="crank_nicolson", pc=True, step=0.005),
        dict(nn_, label="implicit_euler +PC, step 0.005", method="implicit_euler", pc=True, step=0.005),
        dict(rd, label="kencarp4 IMEX matrix-free, no PC", method="kencarp4"),
        dict(rd, label="dopri5 (forward only, max_num_steps 200)", method="dopri5", forward_only=True, cap=200),
    ]
    order = {"robertson": 0, "neural": 1, "rd": 2}
    return sorted(core + extra, key=lambda c: order[c["problem"]])  # stable: keeps the order within


# ---------------------------------------------------------------------------- worker
def build(cfg, pnode):
    """(solver, y0, t, loss_fn, params, output index) for a configuration."""
    method = cfg["method"]
    opts = {}
    if cfg.get("jacobian") == "dense":
        opts["jacobian"] = "dense"
    if cfg.get("cap"):
        opts["max_num_steps"] = cfg["cap"]
    if cfg.get("step"):
        opts["step_size"] = cfg["step"]
    if cfg["problem"] == "robertson":
        func = Robertson()
        t = robertson_times(cfg["t_end"])
        y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
        solver = pnode.ODESolver(func, method=method, rtol=cfg["rtol"], atol=cfg["atol"], options=opts)

        def loss_fn(ys):
            return (ys * ROB_SCALE).pow(2).sum()
        return solver, y0, t, loss_fn, [func.log_k], None
    if cfg["problem"] == "neural":
        gen = torch.Generator().manual_seed(0)
        stiff = StiffLinear(8, 1e4, gen)
        torch.manual_seed(1)
        mlp = MLP(8, 32)
        y0 = torch.randn(32, 8, generator=gen, dtype=F64)
        t = torch.linspace(0.0, 0.5, 6, dtype=F64)
        w = torch.randn(6, 32, 8, generator=gen, dtype=F64)
        solver = split_solver(cfg, pnode, opts, stiff, mlp)
        return solver, y0, t, (lambda ys: (w * ys).sum()), list(mlp.parameters()), None
    # reaction-diffusion
    n = cfg["n"]
    diff = Diffusion(n, cfg["D"])
    torch.manual_seed(2)
    react = PointwiseMLP(16)
    gen = torch.Generator().manual_seed(3)
    x = torch.arange(n, dtype=F64) / n
    u0 = (0.5 * torch.sin(2 * math.pi * x)[:, None] * torch.sin(4 * math.pi * x)[None, :]
          + 0.1 * torch.randn(n, n, generator=gen, dtype=F64)).reshape(1, 1, n, n)
    t = torch.linspace(0.0, cfg["t_end"], 5, dtype=F64)
    w = torch.randn(5, 1, 1, n, n, generator=gen, dtype=F64) / n
    solver = split_solver(cfg, pnode, opts, diff, react)
    return solver, u0, t, (lambda ys: (w * ys).sum()), list(react.parameters()), None


def split_solver(cfg, pnode, opts, stiff, learned):
    """The solver of dy/dt = stiff(y) + learned(y), gradients w.r.t. ``learned``'s weights:
    kencarp (IMEX) takes ``stiff`` implicitly and ``learned`` explicitly, the other methods
    the sum; ``cfg["pc"]``: ``stiff.solve_shifted`` is the exact preconditioner."""
    if cfg.get("pc"):
        opts["preconditioner"] = stiff.solve_shifted
    if cfg["method"].startswith("kencarp"):
        opts["func_explicit"] = learned
        func = stiff
    else:
        func = Sum(stiff, learned)
    return pnode.ODESolver(func, method=cfg["method"], rtol=cfg["rtol"], atol=cfg["atol"], options=opts,
                           adjoint_params=list(learned.parameters()))


def worker(cfg):
    """One forward + backward of configuration ``cfg`` after a warm-up; returns its row."""
    import pnode

    torch.set_num_threads(cfg.get("threads", 1))
    forward_only = cfg.get("forward_only", False)
    # Warm-up (first-call costs: torch kernels, PETSc setup) with a separate solver on a
    # short interval with two output times. (Not the benchmarked solver: PETSc 3.26's
    # TSSetEvaluationTimes crashes when one TS gets a different number of output times.)
    solver, y0, t, loss_fn, params, _ = build(cfg, pnode)
    warm_t = torch.stack([t[0], t[0] + (t[1] - t[0]) * (1.0 if cfg.get("step") else 1e-2)])
    with torch.set_grad_enabled(not forward_only):
        ys = solver(y0, warm_t)
        if not forward_only:
            ys.sum().backward()
    solver.close()
    solver, y0, t, loss_fn, params, _ = build(cfg, pnode)
    res = dict(cfg)
    with PeakRSS() as mem:
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            with torch.set_grad_enabled(not forward_only):
                ys = solver(y0, t)
                t_fwd = time.perf_counter() - w0
                if not forward_only:
                    loss_fn(ys).backward()
            res["ok"] = True
        except pnode.SolverError as err:
            res.update(ok=False, error=str(err), reached=err.time, t_fwd=time.perf_counter() - w0)
            ys = None
        res["wall"] = time.perf_counter() - w0
        res["cpu"] = time.process_time() - c0
    res["rss_before"] = mem.before * 1024  # bytes
    res["peak_rss"] = mem.peak * 1024 if mem.exact else None  # a lifetime peak would not be the solve's
    res["stats"] = dict(solver.stats)
    if ys is not None:
        res["t_fwd"] = t_fwd
        res["ys"] = ys.detach().reshape(len(t), -1).tolist() if ys[0].numel() <= 4096 else None
        res["grad"] = torch.cat([p.grad.reshape(-1) for p in params]).tolist() if not forward_only else None
        res["numel"] = ys[0].numel()
    solver.close()
    return res


def measure(cfg, threads):
    """``worker`` in its own process, torch and BLAS on ``threads`` threads."""
    return run_worker(__file__, dict(cfg=dict(cfg, threads=threads)), threads=threads)


# ---------------------------------------------------------------------------- report
def rel_err(a, b):
    a, b = torch.tensor(a, dtype=F64), torch.tensor(b, dtype=F64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def out_err(r, ref):
    """Max error of the loss outputs against the reference, relative to max |reference|
    (Robertson: of the scaled species y1, 1e4 y2, y3)."""
    if not r.get("ok") or r.get("ys") is None or ref is None or ref.get("ys") is None:
        return None
    a, b = torch.tensor(r["ys"], dtype=F64), torch.tensor(ref["ys"], dtype=F64)
    if r["problem"] == "robertson":
        a, b = a * ROB_SCALE, b * ROB_SCALE
    return float((a - b).abs().max() / b.abs().max())


def fmt_mb(x):
    return "-" if x is None else f"{x / 2**20:,.0f}"


def fmt_e(x):
    return "-" if x is None else f"{x:.1e}"


def table(rows, ref_of, problem):
    head = ("| configuration | t_end | steps | rhs evals | Newton | Krylov | VJPs | wall s | CPU s | peak RSS MB "
            "| +RSS MB | output err | gradient err |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        st = r["stats"]
        ref = ref_of(r)
        steps = f"{st['steps']}" if r["ok"] else f"> {r['cap']} (t={r['reached']:.3g})" if r.get("cap") else "failed"
        lin = st["linear_iterations"]
        if r.get("jacobian") == "dense":
            krylov = f"{lin} LU"
        else:
            krylov = str(lin) if lin else "-"
        g, o = "-", fmt_e(out_err(r, ref))
        if ref is r:
            o, g = ("(reference)", "-") if r.get("reference") else ("-", "(reference)")
        elif r["ok"] and r.get("grad") is not None and ref is not None:
            g = fmt_e(rel_err(r["grad"], ref["grad"]))
        elif r.get("forward_only"):
            g = "(forward only)"
        delta = None if r["peak_rss"] is None else r["peak_rss"] - r["rss_before"]
        lines.append(f"| {r['label']} | {r.get('t_end', 0.5):g} | {steps} | {st['rhs_evals']:,} | "
                     f"{st['newton_iterations']:,} | {krylov} | {st['vjp_evals']:,} | "
                     f"{r['wall']:.2f} | {r['cpu']:.2f} | "
                     f"{fmt_mb(r['peak_rss'])} | {fmt_mb(delta)} | {o} | {g} |")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = [("Robertson, t in [0, 1]", [r for r in results if r["problem"] == "robertson"
                                          and r["t_end"] == 1.0 and not r.get("reference")]),
              ("Robertson, t in [0, 1e5]", [r for r in results if r["problem"] == "robertson"
                                            and r["t_end"] != 1.0 and not r.get("reference")]),
              ("stiff neural ODE", [r for r in results if r["problem"] == "neural" and not r.get("reference")])]
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for j, (title, rows) in enumerate(groups):
        labels = [r["label"].replace(", ", ",\n").replace(" (", "\n(") for r in rows]
        steps = [r["stats"]["steps"] if r["ok"] else r.get("cap", 0) for r in rows]
        colors = ["C3" if r["method"] == "dopri5" else "C0" for r in rows]
        for i, (vals, what) in enumerate(((steps, "steps"), ([r["cpu"] for r in rows], "CPU s"))):
            ax = axes[i, j]
            bars = ax.barh(range(len(rows)), vals, color=colors)
            for bar, r, v in zip(bars, rows, vals):
                capped = not r["ok"] and what == "steps"
                if capped:
                    bar.set_hatch("//")
                text = f"> {v:,}" if capped else (f"{v:,}" if what == "steps" else f"{v:.2f}")
                ax.text(v, bar.get_y() + bar.get_height() / 2, " " + text, va="center", fontsize=8)
            if what == "steps":
                ax.set_xscale("log")
                ax.set_xlim(10, max(vals) * 8)
            else:
                ax.set_xlim(0, max(vals) * 1.3)
            ax.set_yticks(range(len(rows)))
            ax.set_yticklabels(labels, fontsize=7)
            ax.set_title(f"{title}: {'accepted steps' if what == 'steps' else 'CPU s, forward + backward'}",
                         fontsize=9)
    fig.suptitle("pnode on stiff problems: dopri5 (red) vs implicit/IMEX methods (blue)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=90)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller caps and fewer configurations (< 2 min)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each worker")
    p.add_argument("--no-write", action="store_true", help="print only; do not write docs/")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return serve(args.worker, worker)

    start = time.perf_counter()
    results = []
    cfgs = configs(args.quick)
    for i, cfg in enumerate(cfgs):
        print(f"[{i + 1}/{len(cfgs)}] {cfg['problem']}: {cfg['label']} ...", file=sys.stderr, flush=True)
        results.append(measure(cfg, args.threads))
    total = time.perf_counter() - start

    def ref_of(r):
        if r["problem"] == "rd":  # no separate reference: compare with the preconditioned run
            return next((q for q in results if q["problem"] == "rd" and q.get("pc")), None)
        for q in results:
            if q.get("reference") and q["problem"] == r["problem"] and q.get("t_end") == r.get("t_end"):
                return q
        return None

    rob = [r for r in results if r["problem"] == "robertson"]
    neu = [r for r in results if r["problem"] == "neural"]
    rd = [r for r in results if r["problem"] == "rd"]

    def find(rows, method, **kw):
        for r in rows:
            if r["method"] == method and not r.get("reference") and all(r.get(k) == v for k, v in kw.items()):
                return r
        return None

    summary = []
    d_r, k_r = find(rob, "dopri5", t_end=1.0), find(rob, "kencarp4", t_end=1.0)
    if d_r and k_r and d_r["ok"]:
        summary.append(f"- Robertson on [0, 1], rtol 1e-6: dopri5 takes {d_r['stats']['steps']:,} steps, "
                       f"kencarp4 {k_r['stats']['steps']:,}: **{d_r['stats']['steps'] / k_r['stats']['steps']:.0f}x "
                       f"fewer steps** for kencarp4 ({d_r['cpu'] / k_r['cpu']:.1f}x less CPU time).")
    d_l, k_l = find(rob, "dopri5", t_end=1e5), find(rob, "kencarp4", t_end=1e5, jacobian="dense")
    if d_l and k_l:
        if d_l["ok"]:
            summary.append(f"- Robertson on [0, 1e5]: dopri5 {d_l['stats']['steps']:,} steps, kencarp4 "
                           f"{k_l['stats']['steps']:,}.")
        else:
            summary.append(f"- Robertson on [0, 1e5]: dopri5 stops at its cap of {d_l['cap']:,} steps at "
                           f"t = {d_l['reached']:.3g} (of 1e5); kencarp4 covers [0, 1e5] in "
                           f"{k_l['stats']['steps']:,} steps: **> {d_l['cap'] / k_l['stats']['steps']:.0f}x fewer**.")
    if d_l and not d_l["ok"] and d_l["peak_rss"]:
        grown = d_l["peak_rss"] - d_l["rss_before"]
        held = d_l["cap"] * 8  # dopri5 stores the solution and 7 stages per step
        summary.append(f"- The capped dopri5 run's store-all trajectory of a 3-unknown state grew the resident "
                       f"memory by {grown / 2**20:,.0f} MB for {d_l['cap']:,} steps: about "
                       f"{grown / held / 1024:.1f} KB per stored vector of 24 bytes (PETSc keeps one Vec object "
                       "each). Tiny states with very many steps pay this per-vector overhead.")
    d_n, k_n = find(neu, "dopri5"), find(neu, "kencarp4", pc=True)
    if d_n and k_n:
        summary.append(f"- Stiff neural ODE, rtol 1e-5: dopri5 {d_n['stats']['steps']:,} steps, kencarp4 IMEX "
                       f"{k_n['stats']['steps']:,}: **{d_n['stats']['steps'] / k_n['stats']['steps']:.0f}x fewer "
                       f"steps** ({d_n['cpu'] / k_n['cpu']:.1f}x less CPU time with the exact PC).")
    k_mf = find(rob, "kencarp4", t_end=1e5, jacobian=None)
    if k_mf and k_mf["ok"] and ref_of(k_mf):
        e = rel_err(k_mf["grad"], ref_of(k_mf)["grad"])
        summary.append(f"- Robertson, kencarp4 matrix-free (unpreconditioned GMRES): gradient error {e:.1e}. "
                       "With large steps shift*I - J is nearly singular (the kinetics conserve y1+y2+y3, so J "
                       "has a zero eigenvalue, next to eigenvalues near -1e4); GMRES meets its residual "
                       "tolerance but the transposed (adjoint) solves are inaccurate. Use the dense "
                       "Jacobian or a preconditioner for small, badly conditioned systems.")
    pc_rd = find(rd, "kencarp4", pc=True)
    if pc_rd:
        st = pc_rd["stats"]
        n = pc_rd["n"] ** 2
        summary.append(
            f"- Reaction-diffusion {pc_rd['n']}x{pc_rd['n']} ({n:,} unknowns), kencarp4 IMEX + FFT PC: "
            f"{st['steps']} steps, {st['newton_iterations']} Newton / {st['linear_iterations']} GMRES iterations "
            f"in the forward solve, {st['vjp_evals']} VJPs in all, {pc_rd['wall']:.1f} s wall, "
            f"peak RSS {fmt_mb(pc_rd['peak_rss'])} MB "
            f"(+{fmt_mb(pc_rd['peak_rss'] - pc_rd['rss_before'])} MB during the solve; trajectory "
            f"{st['checkpoint_bytes'] / 2**20:,.0f} MB). A dense Jacobian would need "
            f"{n * n * 8 / 1e9:,.0f} GB.")
    nopc = find(rd, "kencarp4", pc=None)
    if pc_rd and nopc and nopc["ok"]:
        summary.append(f"- Without the FFT preconditioner GMRES needs {nopc['stats']['linear_iterations']:,} "
                       f"forward iterations instead of {pc_rd['stats']['linear_iterations']:,} "
                       f"({nopc['stats']['vjp_evals']:,} VJPs instead of {pc_rd['stats']['vjp_evals']:,}; "
                       f"{nopc['cpu']:.1f} vs {pc_rd['cpu']:.1f} CPU s).")
    dop_rd = find(rd, "dopri5")
    if dop_rd:
        n = dop_rd["n"] * dop_rd["n"]
        if dop_rd["ok"]:
            est, what = dop_rd["stats"]["steps"], f"{dop_rd['stats']['steps']:,} steps"
        else:  # capped: its steps are stability-limited, so extrapolate linearly in time
            est = dop_rd["cap"] * dop_rd["t_end"] / dop_rd["reached"]
            what = (f"{dop_rd['cap']} steps reach only t = {dop_rd['reached']:.3g} of {dop_rd['t_end']:g} "
                    f"({dop_rd['cpu']:.1f} CPU s), so about {est:,.0f} steps for the interval")
        summary.append(f"- dopri5 on the reaction-diffusion system (forward only): {what}; a store-all "
                       f"trajectory for its adjoint would take about {(est + 1) * 8 * n * 8 / 2**30:.1f} GiB "
                       "(binomial checkpointing would trade that for recomputation).")

    sys.argv = sys.argv[:1]  # PETSc reads sys.argv at import: --quick is not its option
    import pnode  # noqa: F401  (initialises PETSc with pnode's options, before the PETSc version is read)
    where = machine(("pnode", "PETSc", "torch"), threads=f"{args.threads} thread(s) per worker")
    header = (f"Generated by `python benchmarks/stiff.py{' --quick' if args.quick else ''}` on "
              f"{datetime.date.today().isoformat()}: {where}; float64; "
              f"one forward + backward per row, "
              f"each in its own process after a short warm-up. Whole run: {total:.0f} s wall.")
    notes = ("Columns: steps = accepted steps; rhs evals = calls of the vector field (all parts, forward and "
             "backward); Newton / Krylov = nonlinear and linear iterations of the forward solve (\"LU\": "
             "direct solves with the dense Jacobian; pnode's counters do not include the adjoint's transposed "
             "linear solves); VJPs = vector-Jacobian products, forward and backward (the adjoint's "
             "work: one per transposed Krylov iteration or stage); wall/CPU s = forward + backward; "
             "peak RSS = the process's "
             "resident-memory high-water mark during the solve, +RSS = its increase over the resident memory "
             "just before the solve; output err = max |y - y_ref| / max |y_ref| over the loss outputs "
             "(Robertson: of y1, 1e4 y2, y3); gradient err = max |g - g_ref| / max |g_ref|. Wall times on a "
             "shared machine vary; CPU time is the steadier measure.")
    md = ["# Stiff problems: dopri5 vs implicit and IMEX methods", "", header, "", notes, "", "![steps and time, dopri5 vs implicit](img/stiff.png)", "", "## Summary", "",
          *summary, "",
          "## Robertson's chemical kinetics (3 unknowns, gradient w.r.t. log k)", "", table(rob, ref_of, "robertson"),
          "", "## Stiff neural ODE (d = 8, batch 32: 256 unknowns, eigenvalues of A down to -1e4)", "",
          table(neu, ref_of, "neural"), "",
          "## Neural reaction-diffusion, 256x256 periodic grid (65,536 unknowns, D = 0.01)", "",
          table(rd, ref_of, "rd"), "",
          "Gradient error here: against the preconditioned run (both solve the same discrete problem).", "",
          "Regenerate with `python benchmarks/stiff.py` (about 5 minutes on 2 cores) or `--quick`.", ""]
    publish("\n".join(md), None if args.no_write else DOC)
    if not args.no_write:
        plot(results, PLOT)
        print(f"wrote {os.path.relpath(PLOT, ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
