"""Stiff neural PDE benchmark: SINODE's Kuramoto-Sivashinsky model (Zhang et al., AAAI
2025; caidao22/pnode examples-sinode/KS) trained with pnode's IMEX paths against explicit
dopri5 (pnode and torchdiffeq).

Data: KS ``u_t = -u u_x - u_xx - u_xxxx`` on a periodic domain of length 22 with N grid
points, solved by an ETDRK4 integrator written in torch (Kassam and Trefethen 2005;
step 0.025), 256 pairs (u(t), u(t + 0.25)) from one trajectory after a burn-in.
Model (float64): implicit part a learnable circular convolution of kernel 5 (initialised
to the central differences of ``-u_xx - u_xxxx``, so the model is stiff: its largest
eigenvalue magnitude is about 16/dx^4), explicit part SINODE's MLP (N-104-104-104-104-N,
ReLU). One training iteration: solve over one interval of 0.25 per sample (batch 256),
loss = mean squared error at 0.25, backward, one Adam step.

Configurations (each in its own worker process, ``_harness.run_worker``):

- ``kencarp4 blocks``: the default per-sample dense blocks (N <= 64 only), rebuilt every stage;
- ``kencarp4 blocks+linear``: ``options["linear"]``: blocks built and factored once per call;
- ``kencarp4 sparse``: ``options["sparsity"]`` (periodic stencil 2): the exact sparse Jacobian
  by colouring, PETSc LU; rebuilt every stage;
- ``kencarp4 sparse+linear``: both: assembled and factored once per call;
- ``kencarp4 FFT PC``: matrix-free GMRES with the user's exact FFT preconditioner
  (``options["preconditioner"]``: the convolution is circulant);
- ``pnode dopri5`` and ``torchdiffeq dopri5``: the whole field explicit (rtol 1e-6, atol 1e-8;
  torchdiffeq backpropagating through its solver, faster here than its ``odeint_adjoint``,
  which took minutes per iteration); N = 64 only (at N = 512 the stiffness, ~5e6, would take
  some 10^5 steps per interval).

IMEX runs use a fixed step of 0.125. At N = 512 the configurations that run Newton get
``-snes_atol 1e-7``: a converged stage's residual has a round-off floor of about 1e-8
there (the operator's norm is about 5e6), above pnode's default absolute tolerance. Reported: median and spread (min-max) of wall time
per iteration over the repeats (after one warm-up iteration), steps per solve, and the
relative difference of the first iteration's gradient from the ``kencarp4 sparse+linear``
gradient (all IMEX configurations solve the same discrete problem; dopri5 is another
discretisation, so its gradient differs by its truncation error).

The machine is shared: timings are indicative only.

Run: ``python benchmarks/stiff_pde.py`` (N = 64 and 512, 3 repeats), ``--quick`` (N = 64,
1 repeat; about a minute), ``--no-write``. Writes docs/benchmarks_stiff_pde.md.
"""
import argparse
import datetime
import math
import os
import statistics
import sys
import time

from _harness import ROOT, WorkerError, load_average, machine, publish, run_worker, serve

DOC = os.path.join(ROOT, "docs", "benchmarks_stiff_pde.md")
LENGTH, INTERVAL, STEP, BATCH, HIDDEN = 22.0, 0.25, 0.125, 256, 104
CONFIGS = ["kencarp4 blocks", "kencarp4 blocks+linear", "kencarp4 sparse", "kencarp4 sparse+linear",
           "kencarp4 FFT PC", "pnode dopri5", "torchdiffeq dopri5"]
REFERENCE = "kencarp4 sparse+linear"


def ks_data(n, samples, seed=0):
    """``(u0, u1)``: ``(samples, n)`` KS states 0.25 apart, by ETDRK4 in torch."""
    import torch
    h = 0.025
    k = torch.fft.rfftfreq(n, d=LENGTH / (2 * math.pi * n)).to(torch.float64)
    lin = k ** 2 - k ** 4
    E, E2 = torch.exp(h * lin), torch.exp(h * lin / 2)
    r = torch.exp(1j * math.pi * (torch.arange(1, 17, dtype=torch.float64) - 0.5) / 16)
    LR = h * lin[:, None] + r[None, :]
    Q = h * ((torch.exp(LR / 2) - 1) / LR).mean(1).real
    f1 = h * ((-4 - LR + torch.exp(LR) * (4 - 3 * LR + LR ** 2)) / LR ** 3).mean(1).real
    f2 = h * ((2 + LR + torch.exp(LR) * (-2 + LR)) / LR ** 3).mean(1).real
    f3 = h * ((-4 - 3 * LR - LR ** 2 + torch.exp(LR) * (4 - LR)) / LR ** 3).mean(1).real
    g = -0.5j * k

    def nonlinear(v):
        return g * torch.fft.rfft(torch.fft.irfft(v, n) ** 2)

    def step(v):
        Nv = nonlinear(v)
        a = E2 * v + Q * Nv
        Na = nonlinear(a)
        b = E2 * v + Q * Na
        Nb = nonlinear(b)
        c = E2 * a + Q * (2 * Nb - Nv)
        return E * v + Nv * f1 + 2 * (Na + Nb) * f2 + nonlinear(c) * f3

    x = torch.arange(n, dtype=torch.float64) * LENGTH / n
    gen = torch.Generator().manual_seed(seed)
    u = sum(torch.randn(1, generator=gen, dtype=torch.float64) * torch.cos(2 * math.pi * m * x / LENGTH + m)
            for m in range(1, 4))
    v = torch.fft.rfft(u)
    per = round(INTERVAL / h)
    for _ in range(round(100 / h)):  # burn-in onto the attractor
        v = step(v)
    states = []
    for _ in range(samples + 1):
        states.append(torch.fft.irfft(v, n))
        for _ in range(per):
            v = step(v)
    states = torch.stack(states)
    return states[:-1], states[1:]


def model(n):
    """SINODE's implicit (circular convolution) and explicit (MLP) parts, seeded."""
    import torch
    from torch import nn
    torch.manual_seed(0)
    dx = LENGTH / n
    conv = nn.Conv1d(1, 1, 5, padding=2, padding_mode="circular", bias=False).double()
    stencil = [-1 / dx ** 4, 4 / dx ** 4 - 1 / dx ** 2, -6 / dx ** 4 + 2 / dx ** 2, 4 / dx ** 4 - 1 / dx ** 2,
               -1 / dx ** 4]
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(stencil, dtype=torch.float64).reshape(1, 1, 5))
    layers = [nn.Linear(n, HIDDEN), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Linear(HIDDEN, HIDDEN), nn.ReLU()]
    mlp = nn.Sequential(*layers, nn.Linear(HIDDEN, n)).double()
    for m in mlp.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)

    class Implicit(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, t, y):
            return self.conv(y.unsqueeze(1)).squeeze(1)

    class Explicit(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = mlp

        def forward(self, t, y):
            return -self.mlp(y)

    class Whole(nn.Module):  # for the explicit solvers
        def __init__(self):
            super().__init__()
            self.im, self.ex = Implicit(), Explicit()

        def forward(self, t, y):
            return self.im(t, y) + self.ex(t, y)

    return Whole()


def fft_preconditioner(conv, n):
    """``prec(t, y, shift, r, transpose)``: the exact ``(shift - A)^{-1}`` of the circulant
    convolution ``A`` (its eigenvalues are the FFT of its first column)."""
    import torch

    def prec(t, y, shift, r, transpose):
        e0 = torch.zeros(1, 1, n, dtype=torch.float64)
        e0[0, 0, 0] = 1.0
        lam = torch.fft.fft(conv(e0).reshape(n))
        lam = lam.conj() if transpose else lam
        return torch.fft.ifft(torch.fft.fft(r, dim=-1) / (shift - lam), dim=-1).real
    return prec


def worker(n, config, repeats):
    """Time ``repeats`` training iterations (after one warm-up) of one configuration."""
    import torch
    torch.set_num_threads(1)
    import pnode
    u0, u1 = ks_data(n, BATCH)
    net = model(n)
    params = list(net.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    t = torch.tensor([0.0, INTERVAL], dtype=torch.float64)
    if config.startswith("kencarp4"):
        opts = {"step_size": STEP, "func_explicit": net.ex}
        if "sparse" in config:
            opts["sparsity"] = {"grid": (n,), "stencil": 2, "periodic": True}
        if "linear" in config:
            opts["linear"] = True
        if "FFT" in config:
            opts.update(jacobian="matrix-free", preconditioner=fft_preconditioner(net.im.conv, n))
        # at N = 512 the residual of a converged stage has a round-off floor (~1e-8: |A| ~ 5e6) above
        # pnode's default snes_atol: Newton's line search then fails; a linear part needs no Newton
        petsc = {"snes_atol": 1e-7} if n > 64 and "linear" not in config else None
        solver = pnode.ODESolver(net.im, method="kencarp4", options=opts, petsc_options=petsc)
    elif config == "pnode dopri5":
        solver = pnode.ODESolver(net, method="dopri5", rtol=1e-6, atol=1e-8)
    else:
        import torchdiffeq

        def solver(y, tt):  # backpropagation through the solver: its adjoint took minutes here
            return torchdiffeq.odeint(net, y, tt, method="dopri5", rtol=1e-6, atol=1e-8)
    times, grad, steps = [], None, None
    for it in range(repeats + 1):
        start = time.perf_counter()
        opt.zero_grad()
        loss = (solver(u0, t)[-1] - u1).pow(2).mean()
        loss.backward()
        if it == 0:
            grad = torch.cat([p.grad.reshape(-1) for p in params]).tolist()
            steps = solver.stats["steps"] if hasattr(solver, "stats") else None
        opt.step()
        if it > 0:
            times.append(time.perf_counter() - start)
    return {"times": times, "grad": grad, "steps": steps, "loss": float(loss)}


def _rel(a, b):
    return max(abs(x - y) for x, y in zip(a, b)) / max(max(abs(y) for y in b), 1e-300)


def measure(sizes, configs, repeats):
    res = {}
    for n in sizes:
        for c in configs:
            if (n > 64 and (c.startswith("kencarp4 blocks") or "dopri5" in c)):
                continue
            try:
                res[(n, c)] = run_worker(__file__, dict(n=n, config=c, repeats=repeats), timeout=600)
            except WorkerError as err:
                res[(n, c)] = {"error": str(err).splitlines()[0]}
            r = res[(n, c)]
            print(f"  N={n} {c:<24s} " + (r["error"] if "error" in r else
                  f"{statistics.median(r['times']):.3f} s  steps {r['steps']}"), file=sys.stderr)
    return res


def table(res, n, configs):
    ref = res.get((n, REFERENCE))
    lines = ["| configuration | s / iteration (median) | spread (min-max) | steps | gradient vs sparse+linear |",
             "|---|---|---|---|---|"]
    for c in configs:
        r = res.get((n, c))
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {c} | failed: {r['error']} | | | |")
            continue
        med = statistics.median(r["times"])
        diff = "reference" if c == REFERENCE else (f"{_rel(r['grad'], ref['grad']):.1e}" if ref and "grad" in ref
                                                   else "-")
        lines.append(f"| {c} | {med:.3f} | {min(r['times']):.3f}-{max(r['times']):.3f} | "
                     f"{r['steps'] if r['steps'] is not None else '-'} | {diff} |")
    return lines + [""]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N = 64 only, one repeat")
    p.add_argument("--repeats", type=int, default=None, help="timed iterations per configuration (default 3)")
    p.add_argument("--sizes", default=None, help="comma-separated grid sizes (default 64,512; --quick 64)")
    p.add_argument("--no-write", action="store_true", help="print only; do not write docs/")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return serve(args.worker, worker)
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = [int(s) for s in (args.sizes or ("64" if args.quick else "64,512")).split(",")]
    load0, t0 = load_average(), time.perf_counter()
    res = measure(sizes, CONFIGS, repeats)
    load1 = load_average()
    lines = ["# Stiff neural PDE: SINODE's Kuramoto-Sivashinsky model", "",
             f"Generated by `python benchmarks/stiff_pde.py{' --quick' if args.quick else ''}` on "
             f"{datetime.date.today().isoformat()}. Machine: "
             f"{machine(('pnode', 'torch', 'torchdiffeq'), threads='1 thread')} (1-minute load average "
             f"{load0:.1f} at the start, {load1:.1f} at the end). The machine is shared with other work: "
             "the timings are indicative only.", "",
             f"Model and data: see the module docstring (batch {BATCH}, float64, MLP width {HIDDEN}, one "
             f"interval {INTERVAL} per sample, IMEX fixed step {STEP}). Wall time per training iteration "
             f"(forward, backward, Adam step), median and min-max over {repeats} repeat(s) after a warm-up.", ""]
    for n in sizes:
        lines += [f"## N = {n} grid points", ""] + table(res, n, CONFIGS)
    lines += [f"Total benchmark time: {time.perf_counter() - t0:.0f} s.", ""]
    publish("\n".join(lines), None if args.no_write else DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
