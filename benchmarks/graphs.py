"""Stored stage graphs: pnode's training step with ``Checkpoint("graphs")`` against
plain-torch backprop through the same tableau, in the same run.

MLP field 32 -> 128 -> 32 (tanh), batch 256, float64, t in [0, 1] with 100 fixed steps,
loss mean(y(1)^2), gradient w.r.t. the weights; RK4 and dopri5. Rows: pnode store-all
(the adjoint re-evaluates func at every stage), pnode with every stage graph stored,
pnode with a budget of a quarter of those graphs, plain-torch backprop (the same RK
arithmetic written in torch, autograd through every step) and torchdiffeq's odeint
(backprop) when installed; and the CNF of pnode.models against torchdiffeq's backprop and
odeint_adjoint on the same field. On dopri5, diffrax (JAX) on the same weights when an
interpreter with JAX and diffrax is at hand (``--jax-python``; skipped with a note
otherwise; benchmarks/_diffrax.py). The CNF is measured at its initial weights and again
after ``--trained`` iterations of training with pnode (default 200). Each configuration runs in its own process (peak memory is
per process): median CPU time of 5 iterations after a warm-up, peak anonymous RSS growth
over the process's state after the model was built. Writes docs/benchmarks_graphs.md and
its figure docs/img/graphs.png (``--no-write``: print only).

    .venv/bin/python benchmarks/graphs.py [--repeats 5] [--jax-python JAXVENV/bin/python]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

# benchmarks/ is on sys.path
from _harness import (HERE, ROOT, PeakSampler, WorkerError, anon_kb, machine, publish, run_worker, serve,
                      trim_heap)
import _plot

OUT = os.path.join(ROOT, "docs", "benchmarks_graphs.md")
CONFIGS = ["pnode store-all", "pnode graphs", "pnode graphs, 1/4 budget", "plain-torch backprop",
           "torchdiffeq backprop"]
NOT_COMPARABLE = {("dopri5", "torchdiffeq backprop")}  # torchdiffeq's dopri5 has no fixed-step mode


def mlp_case():
    """The MLP field and initial state (seeded: the same in every process)."""
    import torch
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.Tanh(), torch.nn.Linear(128, 32)).double()
    return net, torch.randn(256, 32, dtype=torch.float64)


def jax_python(given):
    """An interpreter with JAX and diffrax: ``--jax-python``, else ``$PNODE_JAX_PYTHON``,
    else this one if it has them."""
    given = given or os.environ.get("PNODE_JAX_PYTHON")
    if given:
        return given
    probe = subprocess.run([sys.executable, "-c", "import jax, diffrax"], capture_output=True)
    return sys.executable if probe.returncode == 0 else None


def diffrax_row(python, repeats):
    """diffrax's Dopri5 on the same weights and steps (benchmarks/_diffrax.py), or why not."""
    if python is None:
        return None, ("diffrax: not measured (no JAX here; `pip install \"jax[cpu]\" diffrax` in any "
                      "venv and pass `--jax-python VENV/bin/python` or set PNODE_JAX_PYTHON)")
    import numpy as np
    import tempfile
    net, y0 = mlp_case()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "weights.npz")
        w1, b1, w2, b2 = (p.detach().numpy() for p in net.parameters())
        np.savez(path, w1=w1, b1=b1, w2=w2, b2=b2, y0=y0.numpy())
        try:
            r = run_worker(os.path.join(HERE, "_diffrax.py"), dict(weights=path, repeats=repeats), python=python)
        except WorkerError as err:
            return None, f"diffrax: failed ({str(err).strip().splitlines()[-1][:200]})"
    return r, (f"diffrax {r['diffrax']} (JAX {r['jax']}, jit, one XLA thread): `Dopri5` with "
               "`ConstantStepSize` on the same 100 steps and weights, its default `RecursiveCheckpointAdjoint`.")


def worker(method, config, repeats, budget):
    """One training step of ``config`` on the MLP case: CPU time, peak, gradient sums."""
    import torch

    import pnode
    from pnode.tableaus import TABLEAUS  # noqa: F401  (registers the tableaus)
    torch.set_num_threads(1)
    net, y0 = mlp_case()
    params = list(net.parameters())
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    h, n = 0.01, 100
    tableau = {"rk4": "4", "dopri5": "5dp"}[method]

    def field(t, y):
        return net(y)
    info = {}
    if config.startswith("pnode"):
        # named, not the default: "auto" now stores the stage graphs too when they fit
        ck = pnode.Checkpoint("all") if config == "pnode store-all" else pnode.Checkpoint(
            "graphs", max_memory=budget if "budget" in config else None)
        solver = pnode.ODESolver(field, method=method, options={"step_size": h}, checkpoint=ck, adjoint_params=params)

        def step():
            return torch.autograd.grad(solver(y0, t)[-1].pow(2).mean(), params)
    elif config == "plain-torch backprop":
        from petsc4py import PETSc
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from reference.rk import rk_tableau
        A, b, c = rk_tableau(tableau)
        A, b, c = A.tolist(), b.tolist(), c.tolist()
        s = len(b)

        def step():
            y = y0
            for k in range(n):
                ks = []
                for i in range(s):
                    yi = y
                    for j in range(i):
                        if A[i][j]:
                            yi = yi + (h * A[i][j]) * ks[j]
                    ks.append(net(yi))
                y = y + sum((h * b[i]) * ks[i] for i in range(s) if b[i])
            return torch.autograd.grad(y.pow(2).mean(), params)
        del PETSc
    else:
        import torchdiffeq

        def step():
            ys = torchdiffeq.odeint(field, y0, t, method={"rk4": "rk4", "dopri5": "dopri5"}[method],
                                    options={"step_size": h} if method == "rk4" else None,
                                    rtol=1e-7, atol=1e-9)
            return torch.autograd.grad(ys[-1].pow(2).mean(), params)
    step()  # warm-up (PETSc objects, allocator)
    trim_heap()
    base = anon_kb()
    times = []
    with PeakSampler() as peak:
        for _ in range(repeats):
            t0 = time.process_time()
            g = step()
            times.append(time.process_time() - t0)
    info.update(cpu_s=statistics.median(times), cpu_all=times, peak_mb=(peak.peak - base) / 1024,
                grad=[float(x.double().abs().sum()) for x in g])
    if config.startswith("pnode"):
        info["graph_mb"] = solver.stats["graph_bytes"] / 1e6
        info["graph_steps"] = solver.stats["graph_steps"]
    return info


def moons():
    """The CNF's data: 512 points of two moons, standardised (float64)."""
    import torch
    from sklearn.datasets import make_moons
    x = torch.tensor(make_moons(512, noise=0.05, random_state=0)[0], dtype=torch.float64)
    return (x - x.mean(0)) / x.std(0)


def cnf_train(iterations, path):
    """Train the CNF with pnode (Adam, lr 1e-3) and save its weights: a trained flow is
    livelier than a fresh one, so dopri5 takes more steps and per-step costs weigh more."""
    import torch

    from pnode.models import CNF
    torch.set_num_threads(1)
    x = moons()
    torch.manual_seed(0)
    cnf = CNF(2).double()
    opt = torch.optim.Adam(cnf.parameters(), lr=1e-3)
    for _ in range(iterations):
        opt.zero_grad()
        loss = -cnf.log_prob(x).mean()
        loss.backward()
        opt.step()
    torch.save(cnf.state_dict(), path)
    return dict(loss=loss.item(), steps=cnf.stats["steps"])


def cnf_worker(config, repeats, weights=None):
    """The flagship CNF (pnode.models.CNF's default field, two moons, exact trace, dopri5 at
    rtol = atol = 1e-5, batch 512, float64): one training iteration's CPU time and NFE, at
    the seeded initial weights or at ``weights`` (a saved state dict)."""
    import torch

    import pnode
    from pnode.models import CNF
    from pnode.models.cnf import standard_normal_logprob
    torch.set_num_threads(1)
    x = moons()
    torch.manual_seed(0)
    cnf = CNF(2, checkpoint=pnode.Checkpoint("graphs") if config == "pnode graphs" else None).double()
    if weights:
        cnf.load_state_dict(torch.load(weights))
    params = list(cnf.parameters())
    calls = [0]
    dyn = cnf.dynamics

    def counted(t, state):
        calls[0] += 1
        return dyn(t, state)
    t = torch.tensor([0.0, cnf.T], dtype=torch.float64)

    def step():
        calls[0] = 0
        if config.startswith("pnode"):
            loss = -cnf.log_prob(x).mean()
            g = torch.autograd.grad(loss, params)
            return loss.item(), cnf.stats["rhs_evals"] + cnf.stats["vjp_evals"], g
        import torchdiffeq
        solve = torchdiffeq.odeint_adjoint if "adjoint" in config else torchdiffeq.odeint
        kw = dict(adjoint_params=params) if "adjoint" in config else {}
        z, dlogp = solve(counted, (x, x.new_zeros(len(x))), t, rtol=1e-5, atol=1e-5, method="dopri5", **kw)
        loss = -(standard_normal_logprob(z[-1]) - dlogp[-1]).mean()
        g = torch.autograd.grad(loss, params)
        return loss.item(), calls[0], g
    step()
    times, nfe, loss = [], None, None
    for _ in range(repeats):
        t0 = time.process_time()
        loss, nfe, g = step()
        times.append(time.process_time() - t0)
    return dict(cpu_s=statistics.median(times), cpu_all=times, nfe=nfe, loss=loss,
                grad=[float(v.abs().sum()) for v in g])


def cnf_rows(repeats, trained):
    """The CNF tables at the initial weights and after ``trained`` iterations of training,
    and their measurements: ``{"initial weights": {config: result}, "trained ...": ...}``."""
    import tempfile
    rows = ["## CNF (two moons, exact trace, dopri5 rtol = atol = 1e-5, batch 512)", "",
            "One training iteration at the same weights; NFE = evaluations of the field "
            "(pnode: forward evaluations plus vector-Jacobian products; torchdiffeq: calls of the field, "
            "forward and, for odeint_adjoint, backward).", ""]
    res = {"initial weights": cnf_measure(repeats, None)}
    rows += ["### At the seeded initial weights", ""] + cnf_table(res["initial weights"])
    if trained:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "cnf.pt")
            try:
                info = run_worker(__file__, dict(iterations=trained, path=path), task="train")
            except WorkerError as err:
                print(f"cnf training: {err}", file=sys.stderr)
                return rows, res
            key = f"after {trained} training iterations"
            res[key] = cnf_measure(repeats, path)
            rows += [f"### After {trained} training iterations (pnode, Adam lr 1e-3; loss {info['loss']:.4f}, "
                     f"{info['steps']} dopri5 steps per solve)", ""] + cnf_table(res[key])
    return rows, res


CNF_CONFIGS = ("pnode default", "pnode graphs", "torchdiffeq backprop", "torchdiffeq odeint_adjoint")


def cnf_measure(repeats, weights):
    """Each CNF configuration in its own process; ``{config: result}`` of those that ran."""
    res = {}
    for config in CNF_CONFIGS:
        try:
            res[config] = run_worker(__file__, dict(config=config, repeats=repeats, weights=weights), task="cnf")
        except WorkerError as err:
            print(f"cnf {config}: {err}", file=sys.stderr)
            continue
        print(f"cnf {config}: {res[config]['cpu_s']:.3f} s", file=sys.stderr, flush=True)
    return res


def cnf_table(res):
    """One CNF table (markdown lines) from ``cnf_measure``'s results."""
    rows = ["| configuration | CPU s per iteration | / torchdiffeq odeint_adjoint | / torchdiffeq backprop | NFE "
            "| loss |", "|---|---|---|---|---|---|"]
    adj, bp = res.get("torchdiffeq odeint_adjoint"), res.get("torchdiffeq backprop")
    for config, r in res.items():
        ratios = " | ".join(f"{r['cpu_s'] / ref['cpu_s']:.2f}" if ref else "-" for ref in (adj, bp))
        rows.append(f"| {config} | {r['cpu_s']:.3f} | {ratios} | {r['nfe']} | {r['loss']:.4f} |")
    return rows + [""]


def measure_mlp(method, args):
    """Every configuration on the MLP case with ``method``: ``{config: result or None}``
    (None: the worker failed) and the diffrax note (dopri5 only)."""
    rows, full = {}, None
    for config in CONFIGS:
        if (method, config) in NOT_COMPARABLE:
            continue
        budget = None if full is None or "budget" not in config else int(full * 1e6 / 4)
        try:
            rows[config] = run_worker(__file__, dict(method=method, config=config, repeats=args.repeats,
                                                     budget=budget), task="mlp")
        except WorkerError as err:
            rows[config] = None
            print(f"{method} {config}: {err}", file=sys.stderr)
            continue
        if config == "pnode graphs":
            full = rows[config]["graph_mb"]
        print(f"{method} {config}: {rows[config]['cpu_s']:.3f} s, peak {rows[config]['peak_mb']:.0f} MB",
              file=sys.stderr, flush=True)
    note = None
    if method == "dopri5":
        rows["diffrax"], note = diffrax_row(jax_python(args.jax_python), args.repeats)
        if rows["diffrax"] is None:
            del rows["diffrax"]
        else:
            print(f"{method} diffrax: {rows['diffrax']['cpu_s']:.3f} s", file=sys.stderr, flush=True)
    return rows, note


def mlp_table(method, rows, note):
    """The page's section for one method."""
    ref = rows["plain-torch backprop"]
    lines = [f"## {method}", ""] + ([note, ""] if note else [])
    lines += ["| configuration | CPU s | / backprop | peak MB | / backprop | stored graphs | gradient vs backprop |",
              "|---|---|---|---|---|---|---|"]
    for config, r in rows.items():
        if r is None:
            lines.append(f"| {config} | failed | | | | |")
            continue
        stored = (f"{r['graph_steps']} steps, {r['graph_mb']:.0f} MB" if "graph_mb" in r and r["graph_steps"]
                  else "-")
        peak = (f"{r['peak_mb']:.0f} | {r['peak_mb'] / max(ref['peak_mb'], 1e-9):.2f}" if "peak_mb" in r
                else "- | -")  # another process model (JAX): not comparable
        # |g|_1 of each weight against backprop's: the same discrete solution, so round-off
        diff = max(abs(a - b) / abs(b) for a, b in zip(r["grad"], ref["grad"]))
        lines.append(f"| {config} | {r['cpu_s']:.3f} | {r['cpu_s'] / ref['cpu_s']:.2f} | {peak} | {stored} "
                     f"| {diff:.0e} |")
    return lines + [""]


def _cell(r, key, why):
    """A figure cell: (median, min, max) of ``r[key]``, else the text ``why``."""
    if r is None:
        return why
    if key == "cpu_s":
        return _plot.spread(r.get("cpu_all") or r["cpu_s"])
    return _plot.spread(r[key]) if key in r else why


def _why_missing(method, config):
    """Why the figure has no bar for ``config`` with ``method`` (a short text)."""
    if (method, config) in NOT_COMPARABLE:
        return "no fixed-step dopri5"
    if config == "diffrax":
        return "dopri5 only" if method == "rk4" else "not measured (no JAX)"
    return "failed"


def draw(mlp, cnf, path):
    """Three panels (two side by side, one below): the MLP step's CPU time and peak memory per configuration (bars: rk4,
    dopri5), the CNF iteration's CPU time (bars: initial and trained weights)."""
    fig, grid = _plot.figure(2, 2, size=(11, 8.5), gridspec_kw={"height_ratios": [1.4, 1]})
    axes = [grid[0, 0], grid[0, 1], _plot.span_row(fig, grid, 1)]
    configs = CONFIGS + ["diffrax"]

    def series(key, why_peak=None):
        out = []
        for method, rows in mlp.items():
            cells = []
            for c in configs:
                r = rows.get(c)
                why = why_peak if (why_peak and c == "diffrax" and r) else _why_missing(method, c)
                cells.append(_cell(r, key, why) if c in rows else why)
            out.append((method, cells))
        return out

    def ratio(key):
        def note(j, i):
            rows = list(mlp.values())[j]
            r, ref = rows.get(configs[i]), rows.get("plain-torch backprop")
            return f"{r[key] / ref[key]:.2f}x" if r and ref and key in r and key in ref else None
        return note
    _plot.hbars(axes[0], configs, series("cpu_s"), "CPU s per training step (median, min-max)",
                note=ratio("cpu_s"))
    axes[0].set_title("MLP 32-128-32, batch 256, 100 fixed steps", fontsize=9)
    _plot.hbars(axes[1], configs, series("peak_mb", "not comparable (JAX)"), "peak memory of a step (MB)",
                note=ratio("peak_mb"))
    axes[1].set_title("same steps: peak RSS growth, one value per process", fontsize=9)
    _plot.legend_below(axes[0], ncol=2)
    cnf_series = [(when, [_cell(res.get(c), "cpu_s", "failed") for c in CNF_CONFIGS], color)
                  for (when, res), color in zip(cnf.items(), ("tab:green", "tab:purple"))]

    def nfe(j, i):
        r = list(cnf.values())[j].get(CNF_CONFIGS[i])
        return f"NFE {r['nfe']}" if r else None
    _plot.hbars(axes[2], list(CNF_CONFIGS), cnf_series, "CPU s per training iteration (median, min-max)",
                note=nfe)
    axes[2].set_title("CNF, two moons, dopri5 at 1e-5, batch 512", fontsize=9)
    _plot.legend_below(axes[2], ncol=2)
    _plot.save(fig, path, "One training step (forward + gradient), float64: pnode with stored stage graphs "
               "against backprop; " + _plot.where())


def figure_lines(repeats):
    """The figure's embedding and caption on the page."""
    return _plot.embed("graphs", "CPU time and peak memory per configuration", (
        f"Bars: median over {repeats} timed steps, whiskers: min-max; the label after a bar is its ratio to "
        "plain-torch backprop on the same method (top) or the field evaluations per iteration "
        "(bottom). Shorter is better; a grey text stands where a configuration was not run."))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="two timed steps per configuration")
    p.add_argument("--jax-python", help="an interpreter with JAX and diffrax for the diffrax row "
                   "(default: this one, if it has them; otherwise the row is skipped with a note)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--trained", type=int, default=200,
                   help="also measure the CNF after this many training iterations (0: only at initialisation)")
    p.add_argument("--no-write", action="store_true", help="print only; do not write docs/")
    args = p.parse_args()
    if args.worker:
        return serve(args.worker, {"mlp": worker, "cnf": cnf_worker, "train": cnf_train})
    if args.quick:
        args.repeats = 2
        args.trained = min(args.trained, 20)
    lines = ["# Stored stage graphs (`Checkpoint(\"graphs\")`) against backprop", "",
             f"Generated by `python benchmarks/graphs.py` on {time.strftime('%Y-%m-%d')}: "
             f"{machine(('pnode', 'torch', 'torchdiffeq'), threads='1 thread')}.", "",
             "MLP 32 -> 128 -> 32 (tanh), batch 256, float64, "
             "100 fixed steps over [0, 1], one training step = forward + gradient w.r.t. the weights; "
             f"median CPU time of {args.repeats} steps after a warm-up, 1 thread, each configuration in its "
             "own process; peak = anonymous RSS growth during the steps. The gradients of all pnode rows "
             "agree to <= 1e-12 (tests/test_checkpoint.py); 'gradient vs backprop' compares each weight's "
             "summed |gradient| with plain-torch backprop's (the same discrete solution: round-off).", ""]
    mlp, tables = {}, []
    for method in ("rk4", "dopri5"):
        mlp[method], note = measure_mlp(method, args)
        tables += mlp_table(method, mlp[method], note)
    cnf_lines, cnf = cnf_rows(args.repeats, args.trained)
    if not args.no_write:
        draw(mlp, cnf, _plot.png_path("graphs"))
        lines += figure_lines(args.repeats)
    publish("\n".join(lines + tables + cnf_lines), None if args.no_write else OUT)


if __name__ == "__main__":
    main()
