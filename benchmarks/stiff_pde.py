"""Stiff neural PDE benchmark: SINODE's Kuramoto-Sivashinsky model (Zhang et al., AAAI
2025; caidao22/pnode examples-sinode/KS) trained with pnode's IMEX paths against explicit
dopri5 (pnode and torchdiffeq) and diffrax's KenCarp4; then a 2-D neural reaction-diffusion
field on a 128 x 128 grid.

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
  which took minutes per iteration). At N = 512 the stiffness (~5e6) needs some 10^5 steps
  per interval: pnode dopri5 is not run, and torchdiffeq's row is extrapolated from a
  window of the interval that takes about 30 steps (time and memory scaled by the
  interval's length over the window's; no gradient);
- ``diffrax KenCarp4``: benchmarks/_diffrax_pde.py under ``--jax-python`` (``jax.lax.map``
  over the batch: ``jax.vmap`` deadlocks jaxlib 0.10.2's CPU runtime at N = 64, see that
  file; same data, weights and step; its gradient compared like the others; one repeat at
  N > 64, where its chord method's dense 512 x 512 LU per sample makes an iteration long);
- ``dense-Jacobian reference``: on the first ``DENSE_SAMPLES`` samples only, the gradient of
  the same discrete solve with the whole ``DENSE_SAMPLES * N`` square Jacobian formed densely
  (reverse mode, ``options["jacobian"] = "dense"``) and LU-factored at every stage, against
  the ``kencarp4 sparse+linear`` gradient on the same samples (its row's gradient column);
  its time is one gradient evaluation of those samples, not a training iteration.

IMEX runs use a fixed step of 0.125. At N = 512 a converged stage's residual has a
round-off floor of about 1e-8 (the operator's norm is about 5e6); pnode scales Newton's
absolute tolerance to it (no ``-snes_atol`` needed). Reported: median and spread (min-max)
of wall time per iteration over the repeats (after one warm-up iteration), steps per solve
(pnode dopri5: and how many of them kept their stage graphs for the adjoint), the peak
resident memory above the worker's before training (pnode and torchdiffeq rows), the
loss at the last iteration (after ``repeats`` Adam steps from the same start; diffrax: the
first iteration's, it takes no Adam step), and the relative difference of the first
iteration's gradient from the ``kencarp4 sparse+linear`` gradient (all IMEX configurations
solve the same discrete problem; dopri5 is another discretisation, so its gradient differs
by its truncation error).

2-D neural reaction-diffusion (``--rd-grid``, default 128): ``RD_SAMPLES`` fields on a periodic
unit square, implicit part a learnable 3x3 circular convolution (initialised to half the true
diffusion ``RD_DIFFUSION`` times the 5-point Laplacian; largest eigenvalue magnitude
``8 D / dx^2``: about 260 at 128 x 128 initially, 520 for the true D), explicit part a pointwise MLP (1-16-16-1, tanh);
data from the true model (Fisher-KPP reaction ``u (1 - u)``) by kencarp4 at 1/8 of the step.
Rows: pnode kencarp4 with ``sparsity`` (a 2-D periodic grid, stencil 1) and ``linear``
under ``-pc_type lu`` (``-ksp_type preonly``: the operator is factored once per call and
each stage is one pair of triangular solves), ``ilu`` and ``gamg`` (GMRES to the default
``ksp_rtol`` 1e-12 on each stage and adjoint solve); pnode and torchdiffeq
dopri5 (backpropagation) on the whole field. ``pnode dopri5`` has the default checkpoint
(``"auto"``: stage graphs within 512 MiB, so at 128 x 128 only the last steps' graphs are
kept and the adjoint re-evaluates ``func`` at the other stages); ``pnode dopri5 graphs``
keeps every stage graph (``Checkpoint("graphs")``, no budget): backprop's memory, and no
re-evaluation. Each IMEX row checks its first gradient against central finite differences
of the same discrete solve along ``FD_DIRECTIONS`` random
directions; all rows report peak memory and the loss after ``--rd-iterations`` Adam steps.

A load average above 1.5 at either end marks the timings as indicative (other work shared the machine).

Run: ``python benchmarks/stiff_pde.py --jax-python JAXVENV/bin/python`` (N = 64 and 512,
3 repeats, 2-D at 128 x 128: 5 rounds of its configurations alternating process by process,
4 Adam iterations each; about 15 minutes), ``--quick`` (N = 64, 1 repeat, 2-D at 32 x 32,
one round; about two minutes), ``--rd-rounds``, ``--configs``/``--rd-configs`` (a subset; ``--configs`` without
``--rd-configs`` or ``--rd-grid`` runs the KS configurations alone), ``--no-write``. The KS-64
comparison with diffrax alone: ``--sizes 64 --configs "kencarp4 sparse+linear,diffrax KenCarp4"``
(about a minute). Writes docs/benchmarks_stiff_pde.md.
"""
import argparse
import datetime
import math
import os
import statistics
import sys
import time

from _harness import HERE, ROOT, WorkerError, load_average, machine, publish, run_worker, serve
from graphs import jax_python

DOC = os.path.join(ROOT, "docs", "benchmarks_stiff_pde.md")
LENGTH, INTERVAL, STEP, BATCH, HIDDEN = 22.0, 0.25, 0.125, 256, 104
CONFIGS = ["kencarp4 blocks", "kencarp4 blocks+linear", "kencarp4 sparse", "kencarp4 sparse+linear",
           "kencarp4 FFT PC", "pnode dopri5", "torchdiffeq dopri5", "diffrax KenCarp4", "dense-Jacobian reference"]
REFERENCE = "kencarp4 sparse+linear"
DENSE = "dense-Jacobian reference"
DENSE_SAMPLES = 2  # its Jacobian is (DENSE_SAMPLES * N)^2 dense, rebuilt every stage


def ks_data(n, samples, seed=0):
    """``(u0, u1)``: ``(samples, n)`` KS states 0.25 apart, by ETDRK4 in torch (the
    example's solver, examples/ks_pde.py: the same data as the example trains on)."""
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from ks_pde import ks_trajectory
    states = ks_trajectory(n, samples + 1, INTERVAL, seed, burn_in=100.0)
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


WINDOW_STEPS = 30  # dopri5 steps of torchdiffeq's extrapolated row (N > 64)


def window_worker(n, repeats):
    """torchdiffeq dopri5 (backpropagation) where a whole interval is out of reach (N > 64:
    ~1e5 steps, memory growing with them): the training iteration on a window of the
    interval that takes about ``WINDOW_STEPS`` steps, timed, then scaled to the whole
    interval (time and memory grow linearly with the steps at a stability-limited step)."""
    import torch
    import torchdiffeq
    from _harness import PeakRSS
    torch.set_num_threads(1)
    u0, _ = ks_data(n, BATCH)
    net = model(n)
    e0 = torch.zeros(1, 1, n, dtype=torch.float64)
    e0[0, 0, 0] = 1.0
    lam = float(torch.fft.fft(net.im.conv(e0).reshape(n)).abs().max())  # circulant: the FFT of a column
    window = INTERVAL * WINDOW_STEPS / (INTERVAL * lam / 3.3)  # dopri5's real stability boundary ~3.3
    evals = [0]

    def counted(t, y):
        evals[0] += 1
        return net(t, y)
    t = torch.tensor([0.0, window], dtype=torch.float64)
    times = []
    with PeakRSS() as mem:
        for it in range(repeats + 1):
            evals[0] = 0
            start = time.perf_counter()
            net.zero_grad()
            y = torchdiffeq.odeint(counted, u0, t, method="dopri5", rtol=1e-6, atol=1e-8)[-1]
            y.pow(2).mean().backward()
            if it > 0:
                times.append(time.perf_counter() - start)
    scale = INTERVAL / window
    return {"times": [x * scale for x in times], "steps": round(evals[0] / 6 * scale), "grad": None,
            "extrapolated": f"from {window:.2e} time units ({evals[0] // 6} steps), x{scale:.0f}: "
                            f"peak memory ~{(mem.peak - mem.before) / 1024 * scale / 1024:.0f} GB"}


def imex_solver(net, n, config):
    """pnode's kencarp4 solve of one ``kencarp4 ...`` configuration (``dense``: the whole
    Jacobian formed densely and LU-factored every stage)."""
    import pnode
    opts = {"step_size": STEP, "func_explicit": net.ex}
    if "sparse" in config:
        opts["sparsity"] = {"grid": (n,), "stencil": 2, "periodic": True}
    if "linear" in config:
        opts["linear"] = True
    if "dense" in config:
        opts["jacobian"] = "dense"
    if "FFT" in config:
        opts.update(jacobian="matrix-free", preconditioner=fft_preconditioner(net.im.conv, n))
    return pnode.ODESolver(net.im, method="kencarp4", options=opts)


def dense_reference(n, samples=DENSE_SAMPLES):
    """The ``kencarp4 sparse+linear`` gradient against the dense-Jacobian path's on the first
    ``samples`` samples (same weights, data, step and loss): the time and loss of the dense
    path's gradient evaluation and the largest relative difference of the two gradients."""
    import torch
    torch.set_num_threads(1)
    u0, u1 = (u[:samples] for u in ks_data(n, BATCH))
    t = torch.tensor([0.0, INTERVAL], dtype=torch.float64)
    out = {}
    for config in (REFERENCE, "kencarp4 dense"):
        net = model(n)
        solver = imex_solver(net, n, config)
        start = time.perf_counter()
        loss = (solver(u0, t)[-1] - u1).pow(2).mean()
        loss.backward()
        out[config] = (time.perf_counter() - start, torch.cat([p.grad.reshape(-1) for p in net.parameters()]),
                       float(loss), solver.stats["steps"])
    seconds, grad, loss, steps = out["kencarp4 dense"]
    return {"times": [seconds], "grad": None, "steps": steps, "loss": loss, "samples": samples,
            "dense_diff": _rel(out[REFERENCE][1].tolist(), grad.tolist())}


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
        solver = imex_solver(net, n, config)
    elif config == "pnode dopri5":
        solver = pnode.ODESolver(net, method="dopri5", rtol=1e-6, atol=1e-8)
    else:
        import torchdiffeq

        def solver(y, tt):  # backpropagation through the solver: its adjoint took minutes here
            return torchdiffeq.odeint(net, y, tt, method="dopri5", rtol=1e-6, atol=1e-8)
    from _harness import PeakRSS
    times, grad, steps = [], None, None
    with PeakRSS() as mem:
        for it in range(repeats + 1):
            start = time.perf_counter()
            opt.zero_grad()
            loss = (solver(u0, t)[-1] - u1).pow(2).mean()
            loss.backward()
            if it == 0:
                grad = torch.cat([p.grad.reshape(-1) for p in params]).tolist()
                steps = _steps(solver)
            opt.step()
            if it > 0:
                times.append(time.perf_counter() - start)
    return {"times": times, "grad": grad, "steps": steps, "loss": float(loss),
            "peak_mb": (mem.peak - mem.before) / 1024}


def _steps(solver):
    """The steps column of a row: pnode's steps per solve (and how many kept their stage
    graphs for the adjoint), None for the peers."""
    if not hasattr(solver, "stats"):
        return None
    steps, graphs = solver.stats["steps"], solver.stats.get("graph_steps")
    return f"{steps} ({graphs} with graphs)" if graphs else steps


# ------------------------------------------------------------------ 2-D reaction-diffusion
RD_SAMPLES, RD_DIFFUSION, RD_INTERVAL, RD_STEP, RD_HIDDEN = 2, 4e-3, 0.5, 0.125, 16
RD_CONFIGS = ["IMEX lu", "IMEX ilu", "IMEX gamg", "pnode dopri5", "pnode dopri5 graphs", "torchdiffeq dopri5"]
RD_REFERENCE = "IMEX lu"
FD_DIRECTIONS, FD_EPS, FD_TOL = 3, 1e-5, 1e-6


def rd_model(grid, diffusion, seed=0):
    """The 2-D neural reaction-diffusion field on a periodic ``grid x grid`` square of side 1:
    implicit part a learnable 3x3 circular convolution, explicit part a pointwise MLP
    (1-16-16-1, tanh); the state is ``(samples, grid*grid)`` (row-major)."""
    import torch
    from torch import nn
    torch.manual_seed(seed)
    h2 = (1.0 / grid) ** 2

    class Diffusion(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular", bias=False).double()
            lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float64)
            with torch.no_grad():
                self.conv.weight.copy_((diffusion / h2 * lap).reshape(1, 1, 3, 3))

        def forward(self, t, y):
            return self.conv(y.reshape(-1, 1, grid, grid)).reshape(y.shape)

    class Reaction(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Sequential(nn.Linear(1, RD_HIDDEN), nn.Tanh(), nn.Linear(RD_HIDDEN, RD_HIDDEN), nn.Tanh(),
                                     nn.Linear(RD_HIDDEN, 1)).double()

        def forward(self, t, y):
            return self.mlp(y.reshape(-1, 1)).reshape(y.shape)

    class Whole(nn.Module):
        def __init__(self):
            super().__init__()
            self.im, self.ex = Diffusion(), Reaction()

        def forward(self, t, y):
            return self.im(t, y) + self.ex(t, y)

    return Whole()


def rd_data(grid):
    """``(u0, u1)``: ``(RD_SAMPLES, grid*grid)`` smooth random fields in [0, 1] and their state
    after ``RD_INTERVAL`` under the true model (``RD_DIFFUSION`` Laplacian, Fisher-KPP reaction
    ``u (1 - u)``), by pnode's kencarp4 at an 8 times finer step."""
    import torch
    import pnode
    gen = torch.Generator().manual_seed(1)
    x = torch.arange(grid, dtype=torch.float64) / grid
    X, Y = torch.meshgrid(x, x, indexing="ij")
    fields = []
    for _ in range(RD_SAMPLES):
        f = sum(torch.randn(1, generator=gen, dtype=torch.float64)
                * torch.cos(2 * math.pi * (a * X + b * Y) + float(torch.rand(1, generator=gen)) * 6.283)
                for a in range(3) for b in range(3) if a or b)
        fields.append(((f - f.min()) / (f.max() - f.min())).reshape(-1))
    u0 = torch.stack(fields)
    truth = rd_model(grid, RD_DIFFUSION)
    opts = {"step_size": RD_STEP / 8, "func_explicit": lambda t, y: y * (1 - y), "linear": True,
            "sparsity": {"grid": (grid, grid), "stencil": 1, "periodic": True}}
    with torch.no_grad():
        u1 = pnode.odeint(truth.im, u0, torch.tensor([0.0, RD_INTERVAL], dtype=torch.float64), method="kencarp4",
                          options=opts)[-1]
    return u0, u1


def rd_solver(net, grid, config):
    """The training solve ``solver(y0, t)`` of one configuration."""
    import pnode
    if config.startswith("IMEX"):
        opts = {"step_size": RD_STEP, "func_explicit": net.ex, "linear": True,
                "sparsity": {"grid": (grid, grid), "stencil": 1, "periodic": True}}
        pc = config.split()[1]
        # lu: a direct solve (preonly); ilu/gamg: GMRES to pnode's default ksp_rtol 1e-12
        petsc = {"pc_type": pc, "ksp_type": "preonly" if pc == "lu" else "gmres"}
        return pnode.ODESolver(net.im, method="kencarp4", options=opts, petsc_options=petsc)
    if config.startswith("pnode dopri5"):
        checkpoint = pnode.Checkpoint("graphs") if config.endswith("graphs") else None
        return pnode.ODESolver(net, method="dopri5", rtol=1e-6, atol=1e-8, checkpoint=checkpoint)
    import torchdiffeq
    solver = (lambda y, tt: torchdiffeq.odeint(net, y, tt, method="dopri5", rtol=1e-6, atol=1e-8))
    return solver


def rd_worker(grid, config, iterations, fd=False):
    """``iterations`` Adam iterations (the first a warm-up, untimed) of one configuration on
    the 2-D field; with ``fd``, also the finite-difference check of the first gradient."""
    import torch
    from _harness import PeakRSS
    torch.set_num_threads(1)
    u0, u1 = rd_data(grid)
    net = rd_model(grid, RD_DIFFUSION / 2, seed=2)  # starts at half the true diffusion, an untrained MLP
    params = list(net.parameters())
    solver = rd_solver(net, grid, config)
    t = torch.tensor([0.0, RD_INTERVAL], dtype=torch.float64)

    def loss_of():
        return (solver(u0, t)[-1] - u1).pow(2).mean()
    opt = torch.optim.Adam(params, lr=1e-2)
    times, grad, steps, fd_err = [], None, None, None
    with PeakRSS() as mem:
        for it in range(iterations):
            start = time.perf_counter()
            opt.zero_grad()
            loss = loss_of()
            loss.backward()
            if it == 0:
                grad = torch.cat([p.grad.reshape(-1) for p in params])
                steps = _steps(solver)
                if fd:
                    fd_err = _fd_check(params, grad, loss_of)
            opt.step()
            if it > 0:
                times.append(time.perf_counter() - start)
        final = float(loss_of().detach()) if iterations else None
    return {"times": times, "grad": grad.tolist(), "steps": steps, "loss": final, "fd": fd_err,
            "peak_mb": (mem.peak - mem.before) / 1024}


def _fd_check(params, grad, loss_of):
    """Largest relative difference, over ``FD_DIRECTIONS`` random unit directions in
    parameter space, between the gradient's directional derivative and the central
    difference (step ``FD_EPS``) of the same discrete solve."""
    import torch
    gen = torch.Generator().manual_seed(5)
    worst = 0.0
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    for _ in range(FD_DIRECTIONS):
        v = torch.randn(flat.numel(), generator=gen, dtype=torch.float64)
        v /= v.norm()
        vals = []
        for sign in (1, -1):
            _assign(params, flat + sign * FD_EPS * v)
            with torch.no_grad():
                vals.append(float(loss_of()))
        _assign(params, flat)
        fd, ad = (vals[0] - vals[1]) / (2 * FD_EPS), float(grad @ v)
        worst = max(worst, abs(fd - ad) / max(abs(ad), 1e-300))
    return worst


def _assign(params, flat):
    import torch
    with torch.no_grad():
        i = 0
        for p in params:
            p.copy_(flat[i:i + p.numel()].reshape(p.shape))
            i += p.numel()


def export_weights(n, path):
    """Save the KS data and initial weights for benchmarks/_diffrax_pde.py (``.npz``)."""
    import numpy as np
    u0, u1 = ks_data(n, BATCH)
    net = model(n)
    linears = [m for m in net.ex.mlp if hasattr(m, "weight")]
    arrays = {"w0": net.im.conv.weight.detach().reshape(-1).numpy(), "u0": u0.numpy(), "u1": u1.numpy(),
              "interval": np.float64(INTERVAL), "step": np.float64(STEP)}
    for i, lin in enumerate(linears, 1):
        arrays[f"W{i}"], arrays[f"b{i}"] = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    np.savez(path, **arrays)
    return {"path": path}


def diffrax_run(n, repeats, python):
    """diffrax's KenCarp4 row (benchmarks/_diffrax_pde.py under ``python``) on the same data,
    weights and step."""
    import tempfile
    if python is None:
        return {"error": "not measured: no JAX (pass --jax-python VENV/bin/python or set PNODE_JAX_PYTHON)"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ks.npz")
        run_worker(__file__, dict(n=n, path=path), task="export", timeout=600)
        return run_worker(os.path.join(HERE, "_diffrax_pde.py"), dict(weights=path, repeats=repeats),
                          python=python, timeout=240 if n <= 64 else 900)


def _rel(a, b):
    return max(abs(x - y) for x, y in zip(a, b)) / max(max(abs(y) for y in b), 1e-300)


def measure(sizes, configs, repeats, jax=None):
    res = {}
    for n in sizes:
        for c in configs:
            if n > 64 and (c.startswith("kencarp4 blocks") or c == "pnode dopri5"):
                continue
            try:
                if c.startswith("diffrax"):  # at N = 512 one repeat: its dense per-sample LUs take a minute
                    res[(n, c)] = diffrax_run(n, repeats if n <= 64 else 1, jax)
                elif c == DENSE:
                    res[(n, c)] = run_worker(__file__, dict(n=n), task="dense", timeout=600)
                elif n > 64 and c == "torchdiffeq dopri5":
                    res[(n, c)] = run_worker(__file__, dict(n=n, repeats=repeats), task="window", timeout=600)
                else:
                    res[(n, c)] = run_worker(__file__, dict(n=n, config=c, repeats=repeats), task="ks", timeout=600)
            except WorkerError as err:
                res[(n, c)] = {"error": str(err).splitlines()[0]}
            r = res[(n, c)]
            print(f"  N={n} {c:<24s} " + (r["error"] if "error" in r else
                  f"{statistics.median(r['times']):.3f} s  steps {r['steps']}"), file=sys.stderr)
    return res


def table(res, n, configs):
    ref = res.get((n, REFERENCE))
    lines = ["| configuration | s / iteration (median) | spread (min-max) | steps | gradient vs sparse+linear | "
             "peak memory (MB) | loss at the last iteration |",
             "|---|---|---|---|---|---|---|"]
    for c in configs:
        r = res.get((n, c))
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {c} | failed: {r['error']} | | | | | |")
            continue
        med = statistics.median(r["times"])
        diff = "reference" if c == REFERENCE else (f"{_rel(r['grad'], ref['grad']):.1e}"
                                                   if ref and ref.get("grad") and r.get("grad") else "-")
        name = f"{c} (extrapolated {r['extrapolated']})" if r.get("extrapolated") else c
        if c == DENSE:  # another batch: its own comparison, with sparse+linear on the same samples
            diff = f"{r['dense_diff']:.1e} (sparse+linear on the same {r['samples']} samples)"
            name = f"{c} (first {r['samples']} samples; time: one gradient, no Adam step)"
        mem = f"{r['peak_mb']:.0f}" if r.get("peak_mb") is not None else "-"
        loss = f"{r['loss']:.6e}" if r.get("loss") is not None else "-"
        lines.append(f"| {name} | {med:.3f} | {min(r['times']):.3f}-{max(r['times']):.3f} | "
                     f"{r['steps'] if r['steps'] is not None else '-'} | {diff} | {mem} | {loss} |")
    return lines + [""]


def measure_rd(grid, iterations, configs=RD_CONFIGS, rounds=1):
    """Each 2-D configuration in its own worker; the IMEX rows also check the gradient by
    finite differences (the explicit rows solve another discretisation). With ``rounds``
    > 1 the configurations alternate process by process, ``rounds`` times, and a row's
    times are its processes' medians (the first round's process gives the rest)."""
    res = {}
    for k in range(rounds):
        for c in configs:
            if "error" in res.get(c, {}):
                continue
            try:
                r = run_worker(__file__, dict(grid=grid, config=c, iterations=iterations,
                                              fd=k == 0 and c.startswith("IMEX")), task="rd", timeout=900)
            except WorkerError as err:
                r = {"error": str(err).splitlines()[0]}
            print(f"  2-D {grid}x{grid} {c:<20s} " + (r["error"] if "error" in r else
                  f"{statistics.median(r['times']) if r['times'] else float('nan'):.3f} s  steps {r['steps']}"),
                  file=sys.stderr)
            if rounds == 1 or "error" in r:
                res[c] = r
                continue
            med = statistics.median(r["times"]) if r["times"] else float("nan")
            if k == 0:
                res[c] = dict(r, times=[med], peak_mb=[r["peak_mb"]])
            else:
                res[c]["times"].append(med)
                res[c]["peak_mb"].append(r["peak_mb"])
    for r in res.values():
        if isinstance(r.get("peak_mb"), list):
            r["peak_mb"] = statistics.median(r["peak_mb"])
    return res


def table_rd(res):
    ref = res.get(RD_REFERENCE)
    lines = ["| configuration | s / iteration (median) | spread (min-max) | steps | peak memory (MB) | "
             f"gradient vs finite differences | gradient vs {RD_REFERENCE} | loss after the iterations |",
             "|---|---|---|---|---|---|---|---|"]
    for c in RD_CONFIGS:
        r = res.get(c)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {c} | failed: {r['error']} | | | | | | |")
            continue
        t = r["times"] or [float("nan")]
        diff = "reference" if c == RD_REFERENCE else (f"{_rel(r['grad'], ref['grad']):.1e}"
                                                        if ref and "grad" in ref else "-")
        fd = "-" if r.get("fd") is None else f"{r['fd']:.1e}"
        lines.append(f"| {c} | {statistics.median(t):.3f} | {min(t):.3f}-{max(t):.3f} | "
                     f"{r['steps'] if r['steps'] is not None else '-'} | {r['peak_mb']:.0f} | {fd} | {diff} | "
                     f"{r['loss']:.6e} |")
    return lines + [""]


def rd_ratios(res, rounds, peer="torchdiffeq dopri5"):
    """Lines giving each pnode dopri5 row's time over ``peer``'s, round by round (processes
    run next to each other), median [min-max]; none for a single round."""
    ref = res.get(peer, {}).get("times")
    if rounds == 1 or not ref or "error" in res[peer]:
        return []
    parts = []
    for c in ("pnode dopri5", "pnode dopri5 graphs"):
        if c in res and "error" not in res[c]:
            ratios = [a / b for a, b in zip(res[c]["times"], ref)]
            parts.append(f"{c} {statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]")
    return [f"Time over {peer}'s, round by round, median [min-max]: " + "; ".join(parts) + ".", ""] if parts else []


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N = 64 only, one repeat")
    p.add_argument("--repeats", type=int, default=None, help="timed iterations per configuration (default 3)")
    p.add_argument("--sizes", default=None, help="comma-separated grid sizes (default 64,512; --quick 64)")
    p.add_argument("--rd-grid", type=int, default=None, help="2-D grid points per axis (default 128; --quick 32; "
                   "0, the default with --configs and no --rd-configs, skips the 2-D benchmark)")
    p.add_argument("--rd-rounds", type=int, default=None,
                   help="2-D configurations alternate process by process this many times (default 5; --quick 1)")
    p.add_argument("--rd-iterations", type=int, default=None,
                   help="Adam iterations per 2-D configuration, the first untimed (default 4; --quick 2)")
    p.add_argument("--configs", default=None, help="comma-separated KS configurations (default all)")
    p.add_argument("--rd-configs", default=None, help="comma-separated 2-D configurations (default all)")
    p.add_argument("--jax-python", help="an interpreter with JAX and diffrax for the diffrax rows (default "
                   "$PNODE_JAX_PYTHON, else this one if it has them)")
    p.add_argument("--no-write", action="store_true", help="print only; do not write docs/")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return serve(args.worker, {"ks": worker, "rd": rd_worker, "export": export_weights, "window": window_worker,
                                   "dense": dense_reference})
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = [int(s) for s in (args.sizes or ("64" if args.quick else "64,512")).split(",")]
    load0, t0 = load_average(), time.perf_counter()
    configs = CONFIGS if args.configs is None else [c.strip() for c in args.configs.split(",")]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        p.error(f"--configs: unknown {sorted(unknown)}; choose from {CONFIGS}")
    res = measure(sizes, configs, repeats, jax_python(args.jax_python))
    only_ks = args.configs is not None and args.rd_configs is None  # a KS subset asked for: KS alone
    grid = args.rd_grid if args.rd_grid is not None else (0 if only_ks else 32 if args.quick else 128)
    rd_iterations = args.rd_iterations or (2 if args.quick else 4)
    rd_configs = RD_CONFIGS if args.rd_configs is None else [c.strip() for c in args.rd_configs.split(",")]
    if set(rd_configs) - set(RD_CONFIGS):
        p.error(f"--rd-configs: unknown {sorted(set(rd_configs) - set(RD_CONFIGS))}; choose from {RD_CONFIGS}")
    rd_rounds = args.rd_rounds or (1 if args.quick else 5)
    res_rd = measure_rd(grid, rd_iterations, rd_configs, rd_rounds) if grid else None
    load1 = load_average()
    lines = ["# Stiff neural PDE: SINODE's Kuramoto-Sivashinsky model", "",
             f"Generated by `python benchmarks/stiff_pde.py{' --quick' if args.quick else ''}` on "
             f"{datetime.date.today().isoformat()}. Machine: "
             f"{machine(('pnode', 'torch', 'torchdiffeq'), threads='1 thread')} (1-minute load average "
             f"{load0:.1f} at the start, {load1:.1f} at the end). " + (
                 "Nothing else ran (a load of one busy core is the benchmark itself)." if max(load0, load1) < 1.5
                 else "Other work shared the machine: the timings are indicative only."), "",
             f"Model and data: see the module docstring (batch {BATCH}, float64, MLP width {HIDDEN}, one "
             f"interval {INTERVAL} per sample, IMEX fixed step {STEP}). Wall time per training iteration "
             f"(forward, backward, Adam step), median and min-max over {repeats} repeat(s) after a warm-up.", ""]
    for n in sizes:
        lines += [f"## N = {n} grid points", ""] + table(res, n, configs)
    if res_rd is not None:
        lines += [f"## 2-D neural reaction-diffusion, {grid} x {grid} grid", "",
                  f"{RD_SAMPLES} samples of {grid * grid} unknowns, float64; implicit part a learnable 3x3 circular "
                  f"convolution (declared as `{{'grid': ({grid}, {grid}), 'stencil': 1, 'periodic': True}}` with "
                  "`linear`), explicit part a pointwise MLP; kencarp4 at a fixed step "
                  f"{RD_STEP} over {RD_INTERVAL}. " + (
                      f"{rd_iterations} Adam iterations (lr 1e-2) per configuration: time median and spread over "
                      "all but the first; peak memory is the resident-memory peak above the worker's memory "
                      "before training" if rd_rounds == 1 else
                      f"The configurations alternate process by process, {rd_rounds} rounds; a process times "
                      f"{rd_iterations} Adam iterations (lr 1e-2), all but the first, and gives their median; "
                      "a row's time is the median and min-max of its processes' medians, its peak memory the "
                      "median of their resident-memory peaks above the worker's memory before training") +
                  "; the finite-difference check (first round): "
                  f"{FD_DIRECTIONS} random unit directions in parameter space, central differences with step "
                  f"{FD_EPS} of the same discrete solve, largest relative difference (tolerance {FD_TOL}). "
                  "`pnode dopri5` has the default checkpoint (`\"auto\"`: stage graphs within 512 MiB; the steps "
                  "column says how many steps kept theirs, and the adjoint re-evaluates `func` at the others' "
                  "stages); `pnode dopri5 graphs` keeps them all (`Checkpoint(\"graphs\")`, backprop's memory).",
                  ""]
        lines += table_rd(res_rd) + rd_ratios(res_rd, rd_rounds)
    lines += [f"Total benchmark time: {time.perf_counter() - t0:.0f} s.", ""]
    publish("\n".join(lines), None if args.no_write else DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
