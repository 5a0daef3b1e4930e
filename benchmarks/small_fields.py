"""Small fields and many output times: pnode against torchdiffeq on the programs a
neural-ODE user meets first, in one run.

Our own implementations (no peer code) of:

- ``latent``: torchdiffeq's latent-ODE example: 1000 noisy spirals (100 observations each,
  noise 0.3), an RNN encoder (25 hidden) run backwards over the observations, a latent
  field 4 -> 20 -> 20 -> 4 (ELU), a decoder 4 -> 20 -> 2, the ELBO; dopri5 at rtol 1e-7,
  atol 1e-9 over the 100 observation times; float32; Adam;
- ``spiral``: torchdiffeq's ode_demo: the cubic spiral dy/dt = (y^3) A, a field
  2 -> 50 -> 2 (tanh), batches of 20 windows of 10 output times; dopri5 at the defaults;
  float32; RMSprop;
- ``tiny``: an MLP 2 -> 16 -> 2 (tanh), batch 16, 100 fixed RK4 steps over [0, 1], float64,
  ``Checkpoint("graphs")``, against plain torch's recompute floor (states stored forward,
  each step's graph rebuilt backward: the arithmetic any state-checkpointing discrete
  adjoint does);
- ``medium``: an MLP 32 -> 128 -> 32 (tanh), batch 256, dopri5 with 100 fixed steps, float64,
  pnode's default against plain-torch backprop through the same tableau, and
  ``Checkpoint("graphs")`` with RK4 against plain-torch RK4 backprop, with two floor rows
  timing PETSc's share (``petsc-machinery``) and torch's share (``torch-stages``) of that
  solve alone: their sum is the best any adjoint through PETSc's per-stage callbacks can do;

Rows: pnode (its default settings, the import switched), torchdiffeq ``odeint``
(backprop) and ``odeint_adjoint``. Every row runs in its own process; rows alternate
process by process (A B C A B C ...) ``--rounds`` times; a process times ``--iters``
training iterations after one warm-up and reports their median wall time (1 torch thread;
wall equals CPU time on a quiet machine, both are recorded). The page gives, per row, the
median over rounds and the spread (min-max) of the per-process medians, and the ratio to
the row's reference computed pair by pair (same round).

    .venv/bin/python benchmarks/small_fields.py [--rounds 5] [--iters 5] [--only latent,spiral]
"""
import argparse
import math
import os
import statistics
import sys
import time

# benchmarks/ is on sys.path
from _harness import ROOT, load_average, machine, publish, run_worker, serve
import _plot

DOC = os.path.join(ROOT, "docs", "benchmarks_small_fields.md")


# ---------------------------------------------------------------------------- programs
def _odeint(lib):
    """``odeint`` of ``lib``: "pnode", "torchdiffeq" (backprop) or "torchdiffeq-adjoint"."""
    if lib == "pnode":
        import pnode
        return pnode.odeint
    import torchdiffeq
    return torchdiffeq.odeint_adjoint if lib == "torchdiffeq-adjoint" else torchdiffeq.odeint


def latent_program(lib, seed=0):
    """One training iteration of the latent ODE (a closure) and its loss."""
    import numpy as np
    import torch
    from torch import nn
    odeint = _odeint(lib)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    nspiral, ntotal, nsample, noise = 1000, 1000, 100, 0.3
    ts = np.linspace(0, 6 * np.pi, ntotal)
    zcw = 6 * np.pi + 1 - ts
    rcw = 0.3 * 50 / zcw
    cw = np.stack([rcw * np.cos(zcw) - 5, rcw * np.sin(zcw)], 1)
    rcc = 0.3 * ts
    cc = np.stack([rcc * np.cos(ts) + 5, rcc * np.sin(ts)], 1)
    starts = rng.integers(nsample, ntotal - nsample, nspiral)
    which = rng.random(nspiral) > 0.5
    obs = np.stack([(cc if w else cw)[s:s + nsample] for s, w in zip(starts, which)])
    obs = torch.tensor(obs + rng.standard_normal(obs.shape) * noise, dtype=torch.float32)
    samp_ts = torch.tensor(ts[:nsample], dtype=torch.float32)

    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(4, 20), nn.Linear(20, 20), nn.Linear(20, 4)
            self.act = nn.ELU(inplace=True)

        def forward(self, t, x):
            return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))

    func = Field()
    i2h, h2o = nn.Linear(2 + 25, 25), nn.Linear(25, 8)
    dec = nn.Sequential(nn.Linear(4, 20), nn.ReLU(inplace=True), nn.Linear(20, 2))
    params = [*func.parameters(), *i2h.parameters(), *h2o.parameters(), *dec.parameters()]
    opt = torch.optim.Adam(params, lr=0.01)
    log2pi = math.log(2 * math.pi)
    noise_logvar = 2 * math.log(noise)

    def iteration():
        opt.zero_grad()
        h = torch.zeros(nspiral, 25)
        for k in reversed(range(nsample)):
            h = torch.tanh(i2h(torch.cat([obs[:, k], h], 1)))
        out = h2o(h)
        mean, logvar = out[:, :4], out[:, 4:]
        z0 = torch.randn_like(mean) * torch.exp(0.5 * logvar) + mean
        pred = dec(odeint(func, z0, samp_ts).permute(1, 0, 2))
        logpx = (-0.5 * (log2pi + noise_logvar + (obs - pred) ** 2 / math.exp(noise_logvar))).sum((1, 2))
        kl = (-logvar / 2 + (logvar.exp() + mean ** 2) / 2 - 0.5).sum(-1)
        loss = (kl - logpx).mean()
        loss.backward()
        opt.step()
        return float(loss)
    return iteration


def spiral_program(lib, seed=0):
    """One training iteration of the 2-D spiral fit (a closure)."""
    import torch
    from torch import nn
    odeint = _odeint(lib)
    torch.manual_seed(seed)
    A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])
    t = torch.linspace(0, 25, 1000)
    with torch.no_grad():
        import torchdiffeq  # the data are the same for every row: one solver makes them
        true_y = torchdiffeq.odeint(lambda t, y: (y ** 3) @ A, torch.tensor([[2.0, 0.0]]), t)
    net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2))
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.1)
            nn.init.zeros_(m.bias)

    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, y):
            return self.net(y ** 3)

    func = Field()
    opt = torch.optim.RMSprop(func.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)

    def iteration():
        s = torch.randperm(1000 - 10, generator=gen)[:20]
        y0, bt, by = true_y[s], t[:10], torch.stack([true_y[s + i] for i in range(10)])
        opt.zero_grad()
        loss = (odeint(func, y0, bt) - by).abs().mean()
        loss.backward()
        opt.step()
        return float(loss)
    return iteration


def _mlp(dim, hidden, batch, seed=0):
    import torch
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Tanh(),
                              torch.nn.Linear(hidden, dim)).double()
    return net, torch.randn(batch, dim, dtype=torch.float64)


def _rk_backprop(net, y0, tableau, n, h, stages=None):
    """``n`` steps of ``h`` of the RK ``tableau`` in plain torch (``stages``: a list that
    receives a copy of every stage's input)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from reference.rk import rk_tableau
    A, b, _ = (x.tolist() for x in rk_tableau(tableau))
    y = y0
    for _ in range(n):
        ks = []
        for i in range(len(b)):
            yi = y
            for j in range(i):
                if A[i][j]:
                    yi = yi + (h * A[i][j]) * ks[j]
            if stages is not None:
                stages.append(yi.detach().clone())
            ks.append(net(yi))
        y = y + sum((h * b[i]) * ks[i] for i in range(len(b)) if b[i])
    return y


def _rk_floor(net, y0, tableau, n, h):
    """Gradients by the recompute floor (states forward, one step's graph at a time back)."""
    import torch
    params = list(net.parameters())
    states = [y0]
    with torch.no_grad():
        for _ in range(n):
            states.append(_rk_backprop(net, states[-1], tableau, 1, h))
    yf = states[-1].clone().requires_grad_(True)
    (adj,) = torch.autograd.grad(yf.pow(2).mean(), yf)
    grads = [torch.zeros_like(p) for p in params]
    for k in range(n - 1, -1, -1):
        yk = states[k].clone().requires_grad_(True)
        g = torch.autograd.grad(_rk_backprop(net, yk, tableau, 1, h), [yk] + params, adj)
        adj = g[0]
        for acc, gp in zip(grads, g[1:]):
            acc += gp
    return grads


def _petsc_machinery(size, n_params, tableau, n, h):
    """PETSc's share of a stored-graphs RK solve, alone: the same TS (``tableau``, ``n``
    steps of ``h``, store-all memory trajectory) forward and adjoint on a state of ``size``
    and ``n_params`` parameters, every Python callback (right-hand side, Jacobian,
    parameter Jacobian, both transposed products) doing nothing. What is left is PETSc's
    own vector work (stage sums, trajectory copies, the adjoint's updates) and the
    crossings into Python: the part of pnode's time no change to pnode's own code removes."""
    from petsc4py import PETSc

    class Nothing:
        def multTranspose(self, mat, X, Y):
            pass

    def shell(rows, cols):
        mat = PETSc.Mat().createPython([rows, cols], context=Nothing())
        mat.setUp()
        return mat
    J, Jp = shell(size, size), shell(size, n_params)
    u, f = PETSc.Vec().createSeq(size), PETSc.Vec().createSeq(size)
    lam, mu = PETSc.Vec().createSeq(size), PETSc.Vec().createSeq(n_params)
    ts = PETSc.TS().create()
    ts.setType("rk")
    ts.setRKType(tableau)
    ts.setRHSFunction(lambda ts, t, U, F: None, f)
    ts.setRHSJacobian(lambda ts, t, U, A, B: None, J, J)
    ts.setRHSJacobianP(lambda ts, t, U, A: None, Jp)
    ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
    # pnode's store-all memory trajectory (PETSc's default type writes files); the
    # trajectory reads its options without the TS's prefix: this process has no other TS
    opts = PETSc.Options()
    opts["ts_trajectory_type"] = "memory"
    ts.setSaveTrajectory()
    ts.setFromOptions()
    del opts["ts_trajectory_type"]

    def iteration():
        ts.setTime(0.0)
        ts.setStepNumber(0)
        ts.setTimeStep(h)
        ts.setMaxTime(n * h)
        u.set(1.0)
        ts.solve(u)
        lam.set(1.0)
        mu.set(0.0)
        ts.setCostGradients([lam], [mu])
        ts.adjointSolve()
    return iteration


def _stage_graphs(net, y0, tableau, n, h):
    """torch's share of a stored-graphs RK solve, alone: ``net`` evaluated with a graph at
    each of the solve's stage states, then one backward pass per stage (state and
    parameters at once), last stage first. The stage states are computed once, outside
    the timed iteration: in pnode PETSc forms them (its share, `_petsc_machinery`)."""
    import torch
    params = list(net.parameters())
    stages = []
    with torch.no_grad():
        _rk_backprop(net, y0, tableau, n, h, stages)
    v = torch.ones_like(y0)

    def iteration():
        graphs = []
        for yi in stages:
            u = yi.clone().requires_grad_(True)
            graphs.append((u, net(u)))
        for u, out in reversed(graphs):
            torch.autograd.grad(out, [u] + params, v)
    return iteration


def mlp_program(lib, case):
    """A training-step closure on the MLP ``case`` ("tiny", "medium-dopri5", "medium-rk4")."""
    import torch
    dim, hidden, batch, method, strategy = {
        "tiny": (2, 16, 16, "rk4", "graphs"),
        "medium-dopri5": (32, 128, 256, "dopri5", None),
        "medium-rk4": (32, 128, 256, "rk4", "graphs")}[case]
    net, y0 = _mlp(dim, hidden, batch)
    params = list(net.parameters())
    n, h = 100, 0.01
    tableau = {"rk4": "4", "dopri5": "5dp"}[method]
    if lib == "pnode":
        import pnode
        ck = pnode.Checkpoint(strategy) if strategy else None
        solver = pnode.ODESolver(lambda t, y: net(y), method=method, options={"step_size": h},
                                 checkpoint=ck, adjoint_params=params)
        t = torch.tensor([0.0, 1.0], dtype=torch.float64)

        def iteration():
            return torch.autograd.grad(solver(y0, t)[-1].pow(2).mean(), params)
    elif lib == "torch-backprop":
        def iteration():
            return torch.autograd.grad(_rk_backprop(net, y0, tableau, n, h).pow(2).mean(), params)
    elif lib == "torch-floor":
        def iteration():
            return _rk_floor(net, y0, tableau, n, h)
    elif lib == "petsc-machinery":
        iteration = _petsc_machinery(y0.numel(), sum(p.numel() for p in params), tableau, n, h)
    elif lib == "torch-stages":
        iteration = _stage_graphs(net, y0, tableau, n, h)
    else:
        raise ValueError(f"no {lib} row for {case}")
    return iteration


# ---------------------------------------------------------------------------- worker
def worker(program, lib, iters):
    """Time ``iters`` iterations of ``program`` with ``lib`` after a warm-up."""
    import torch
    torch.set_num_threads(1)
    if program in ("latent", "spiral"):
        it = {"latent": latent_program, "spiral": spiral_program}[program](lib)
    else:
        it = mlp_program(lib, program)
    it()
    wall, cpu = [], []
    for _ in range(iters):
        w0, c0 = time.perf_counter(), time.process_time()
        it()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"wall": statistics.median(wall), "cpu": statistics.median(cpu)}


def diffrax_worker(iters, weights):
    """diffrax's Dopri5 on the medium field (benchmarks/_diffrax.py), ``iters`` steps."""
    from _diffrax import diffrax_step
    return diffrax_step(weights, repeats=iters)


# program -> (rows, reference row, criterion: pnode / reference at most this)
PROGRAMS = {
    "latent": (["pnode", "torchdiffeq", "torchdiffeq-adjoint"], "torchdiffeq", 1.2),
    "spiral": (["pnode", "torchdiffeq", "torchdiffeq-adjoint"], "torchdiffeq", 1.0),
    "medium-dopri5": (["pnode", "torch-backprop", "diffrax"], "diffrax", 1.0),
    "medium-rk4": (["pnode", "torch-backprop", "petsc-machinery", "torch-stages"], "torch-backprop", 1.10),
    "tiny": (["pnode", "torch-floor"], "torch-floor", 1.3),
}
# program -> rows whose sum is the floor of pnode's design (PETSc's share + torch's share)
FLOOR = {"medium-rk4": ("petsc-machinery", "torch-stages")}
WHAT = {
    "latent": "latent ODE (1000 spirals, 100 output times, dopri5, float32, Adam step)",
    "spiral": "2-D spiral fit (batch 20 x 10 output times, dopri5, float32, RMSprop step)",
    "medium-dopri5": "MLP 32-128-32, batch 256, dopri5 100 fixed steps, float64, default settings",
    "medium-rk4": "MLP 32-128-32, batch 256, RK4 100 steps, float64, `Checkpoint(\"graphs\")`",
    "tiny": "MLP 2-16-2, batch 16, RK4 100 steps, float64, `Checkpoint(\"graphs\")`",
}


def _save_medium_weights(path):
    import numpy as np
    net, y0 = _mlp(32, 128, 256)
    w1, b1, w2, b2 = (p.detach().numpy() for p in net.parameters())
    np.savez(path, w1=w1, b1=b1, w2=w2, b2=b2, y0=y0.numpy())


def measure(programs, rounds, iters, jax_py):
    """Per program and row: the per-process results of every round, rows alternating."""
    import tempfile
    tmp = tempfile.mkdtemp(prefix="pnode-small-")
    weights = os.path.join(tmp, "medium.npz")
    _save_medium_weights(weights)
    here = os.path.abspath(__file__)
    runs = {p: {lib: [] for lib in PROGRAMS[p][0]} for p in programs}
    for r in range(rounds):
        for p in programs:
            for lib in PROGRAMS[p][0]:
                if lib == "diffrax":
                    if jax_py is None:
                        continue
                    res = run_worker(here, dict(iters=iters, weights=weights), task="diffrax", python=jax_py)
                    res = {"cpu": res["cpu_s"], "wall": res["cpu_s"]}
                else:
                    res = run_worker(here, dict(program=p, lib=lib, iters=iters), task="worker")
                runs[p][lib].append(res)
                print(f"round {r + 1}/{rounds} {p:14s} {lib:20s} cpu {res['cpu']:.4f} s  wall {res['wall']:.4f} s",
                      file=sys.stderr, flush=True)
    return runs


def _spread(xs):
    return statistics.median(xs), min(xs), max(xs)


def page(runs, rounds, iters, jax_note):
    """The markdown page and the rows of the plot."""
    out = ["# Small fields and many output times", "",
           f"Machine: {machine(('pnode', 'torch', 'torchdiffeq'), threads='1 thread')}; load average "
           f"{load_average():.2f} at the end. Each row ran in its own process, rows alternating process by "
           f"process, {rounds} rounds; a process times {iters} training iterations after a warm-up and reports "
           "their median CPU time. Per row: the median over rounds and the range (min-max) of the "
           "per-process medians; the ratio to the reference row is taken round by round (the same pair "
           "of neighbouring processes) and given as median [min-max]. `benchmarks/small_fields.py`.", ""]
    if jax_note:
        out += [jax_note, ""]
    out += ["| program | row | s / iteration, median [min-max] | ratio to reference, median [min-max] | "
            "criterion |", "|---|---|---:|---:|---|"]
    plot = []
    for p, rows in runs.items():
        libs, ref, limit = PROGRAMS[p]
        for lib in libs:
            xs = [x["cpu"] for x in rows[lib]]
            if not xs:
                out.append(f"| {p} | {lib} | not measured | | |")
                continue
            m, lo, hi = _spread(xs)
            ratio, crit = "", ""
            if rows[ref] and lib != ref:
                rs = [a["cpu"] / b["cpu"] for a, b in zip(rows[lib], rows[ref])]
                rm, rlo, rhi = _spread(rs)
                ratio = f"{rm:.2f} [{rlo:.2f}-{rhi:.2f}]"
                if lib == "pnode":
                    crit = f"<= {limit}: {'met' if rm <= limit else 'NOT met'}"
                    plot.append((p, rm, rlo, rhi, limit))
            out.append(f"| {p} | {lib} | {m:.4f} [{lo:.4f}-{hi:.4f}] | {ratio} | {crit} |")
        if p in FLOOR and all(rows[k] for k in FLOOR[p] + (ref,)):
            sums = [sum(r) for r in zip(*([x["cpu"] for x in rows[k]] for k in FLOOR[p]))]
            rs = [a / b["cpu"] for a, b in zip(sums, rows[ref])]
            m, lo, hi = _spread(sums)
            rm, rlo, rhi = _spread(rs)
            out.append(f"| {p} | floor: {' + '.join(FLOOR[p])} | {m:.4f} [{lo:.4f}-{hi:.4f}] | "
                       f"{rm:.2f} [{rlo:.2f}-{rhi:.2f}] | |")
    out += ["", "Programs (our own implementations, no peer code): " + "; ".join(
        f"**{p}**: {WHAT[p]}" for p in runs) + ". Reference rows: "
        + "; ".join(f"{p}: {PROGRAMS[p][1]}" for p in runs) + ".", ""]
    if any(p in FLOOR for p in runs):
        out += ["**The floor rows** (medium-rk4) time the two shares of a stored-graphs RK4 solve that no "
                "change to pnode's own code removes, each alone: `petsc-machinery` is the same PETSc TS "
                "(RK4, 100 steps, store-all memory trajectory) forward and adjoint with every Python callback "
                "doing nothing, i.e. PETSc's vector work and the crossings into Python; `torch-stages` is "
                "`func` evaluated with a graph at each of the 400 stage states, then one backward pass per "
                "stage, last first (PETSc's adjoint asks for a stage's products separately, the next "
                "stage's input depending on them). Their sum, per round, over the reference is the best "
                "ratio any per-stage adjoint through PETSc's callbacks can reach; pnode's time above it is "
                "its bridge: copies between Vecs and tensors, graph lookups, the Python of five callbacks "
                "per stage.", ""]
    return "\n".join(out), plot


def draw(plot, path):
    """Ratio pnode / reference per program, with its spread and the criterion."""
    fig, ax = _plot.figure(size=(7, 3.2))
    _plot.hbars(ax, [p for p, *_ in plot], [("pnode", [(m, lo, hi) for _, m, lo, hi, _ in plot], "#4c72b0")],
                "pnode time / reference time per training iteration (red: criterion)")
    for k, (_, _, _, _, limit) in enumerate(plot):
        ax.plot([limit, limit], [k - 0.4, k + 0.4], color="#c44e52", lw=2)
    ax.axvline(1.0, color="gray", lw=0.8, ls=":")
    _plot.save(fig, path, dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=5, help="alternating processes per row")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per process")
    p.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(PROGRAMS))
    p.add_argument("--jax-python", default=None, help="an interpreter with jax and diffrax (diffrax row)")
    p.add_argument("--quick", action="store_true", help="2 rounds of 2 iterations")
    p.add_argument("--no-write", action="store_true", help="print the page only")
    args = p.parse_args()
    if args.worker:
        return serve(args.worker, {"worker": worker, "diffrax": diffrax_worker})
    if args.quick:
        args.rounds, args.iters = 2, 2
    from graphs import jax_python
    jax_py = jax_python(args.jax_python)
    programs = [n for n in PROGRAMS if not args.only or n in args.only.split(",")]
    runs = measure(programs, args.rounds, args.iters, jax_py)
    note = None if jax_py else ("diffrax: not measured (pass `--jax-python VENV/bin/python` with jax and diffrax "
                                "installed, or set PNODE_JAX_PYTHON).")
    text, plot = page(runs, args.rounds, args.iters, note)
    if not args.no_write:
        png = os.path.join(ROOT, "docs", "img", "small_fields.png")
        draw(plot, png)
        text += "\n![pnode / reference per program](img/small_fields.png)\n"
    publish(text, None if args.no_write else DOC)


if __name__ == "__main__":
    main()
