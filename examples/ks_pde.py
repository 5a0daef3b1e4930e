"""Learn the Kuramoto-Sivashinsky equation with a stiff IMEX neural PDE (SINODE's model).

The data: KS, ``u_t = -u u_x - u_xx - u_xxxx`` on a periodic domain of length 22 with
``--n`` grid points, solved accurately by ETDRK4 (exponential time differencing in
Fourier space, Kassam and Trefethen 2005). The training data are states 0.25 time units
apart along one long trajectory on the attractor.

The model (Zhang et al., SINODE, AAAI 2025): ``du/dt = conv(u) + MLP(u)``, where

- ``conv`` is a learnable circular convolution of kernel 5, the stiff linear part. It is
  initialised to the central differences of ``-u_xx - u_xxxx`` (the known linear physics);
  its largest eigenvalue magnitude is about ``16/dx^4``, so an explicit method would need
  thousands of steps per time unit. It is integrated implicitly (pnode's ``func``) with
  two structure options: ``options["linear"]`` (the part is linear in u: its operator
  is assembled and LU-factored once per call and step size, forward and adjoint, and
  Newton is one linear solve) and ``options["sparsity"]`` (each sample's Jacobian is a
  periodic 5-point band: pnode assembles it exactly by colouring, 5 vector-Jacobian
  products, as a sparse PETSc matrix);
- ``MLP`` (N-104-104-104-104-N, ReLU) learns the nonlinear term ``-u u_x``; it is
  integrated explicitly (``options["func_explicit"]``).

Both parts are trained with Adam on the mean squared error of the predictions 0.25, 0.5, ...
``--window`` x 0.25 ahead of states sampled along the trajectory (windows longer than one
interval keep the learned model's long rollouts stable),
with kencarp4 (an additive Runge-Kutta IMEX method) at a fixed step of 0.125 and PETSc's
discrete adjoint for the gradient. The plot (``--out``) shows a held-out stretch of the
true field, the learned model's rollout from the same initial state, and their
difference (KS is chaotic: rollouts separate after some tens of time units even for a
good model).

Every PETSc option works on the command line (e.g. ``-ts_monitor``, ``-pc_type ilu``).
"""
import argparse
import math
import sys
import time

import torch
from torch import nn

from _cli import DefaultsOnceFormatter  # examples/_cli.py

LENGTH = 22.0     # domain length
INTERVAL = 0.25   # time between a training pair's states
ETD_STEP = 0.025  # the data solver's step


# ------------------------------------------------------------------------------- data
def ks_trajectory(n, count, every, seed, burn_in=100.0):
    """``(count, n)`` float64 KS states ``every`` time units apart, after ``burn_in`` time
    units from a smooth random start (ETDRK4, step 0.025, contour-integral coefficients)."""
    h = ETD_STEP
    k = torch.fft.rfftfreq(n, d=LENGTH / (2 * math.pi * n)).to(torch.float64)
    lin = k ** 2 - k ** 4  # the linear operator in Fourier space
    E, E2 = torch.exp(h * lin), torch.exp(h * lin / 2)
    roots = torch.exp(1j * math.pi * (torch.arange(1, 17, dtype=torch.float64) - 0.5) / 16)
    LR = h * lin[:, None] + roots[None, :]
    Q = h * ((torch.exp(LR / 2) - 1) / LR).mean(1).real
    f1 = h * ((-4 - LR + torch.exp(LR) * (4 - 3 * LR + LR ** 2)) / LR ** 3).mean(1).real
    f2 = h * ((2 + LR + torch.exp(LR) * (-2 + LR)) / LR ** 3).mean(1).real
    f3 = h * ((-4 - 3 * LR - LR ** 2 + torch.exp(LR) * (4 - LR)) / LR ** 3).mean(1).real
    g = -0.5j * k  # -u u_x = -(u^2)_x / 2

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
    for _ in range(round(burn_in / h)):  # onto the attractor
        v = step(v)
    states = []
    for _ in range(count):
        states.append(torch.fft.irfft(v, n))
        for _ in range(round(every / h)):
            v = step(v)
    return torch.stack(states)


# ------------------------------------------------------------------------------ model
class Convolution(nn.Module):
    """The stiff linear part: a learnable circular convolution of kernel 5, ``(B, n) -> (B, n)``."""

    def __init__(self, n):
        super().__init__()
        dx = LENGTH / n
        self.conv = nn.Conv1d(1, 1, 5, padding=2, padding_mode="circular", bias=False).double()
        a, b = 1 / dx ** 2, 1 / dx ** 4  # central differences of -u_xx - u_xxxx
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[-b, 4 * b - a, 2 * a - 6 * b, 4 * b - a, -b]]]))

    def forward(self, t, u):
        return self.conv(u.unsqueeze(1)).squeeze(1)


class MLP(nn.Module):
    """The explicit part: SINODE's MLP, ``(B, n) -> (B, n)``, small initial weights."""

    def __init__(self, n, hidden):
        super().__init__()
        layers = [nn.Linear(n, hidden), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, n)).double()
        for m in self.net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)

    def forward(self, t, u):
        return self.net(u)


def make_solver(pnode, n, conv, mlp, step):
    """kencarp4 with ``conv`` implicit (linear, 5-point periodic band) and ``mlp`` explicit."""
    options = {"func_explicit": mlp, "step_size": step, "linear": True,
               "sparsity": {"grid": (n,), "stencil": 2, "periodic": True}}
    return pnode.ODESolver(conv, method="kencarp4", options=options)


# ------------------------------------------------------------------------------- plot
def plot(path, x, t, true, learned, iterations, loss):
    """True, learned and difference space-time fields (time upwards) side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    extent = [float(x[0]), float(x[-1]), float(t[0]), float(t[-1])]
    vmax = float(true.abs().max())
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), sharey=True)
    panels = [("true (ETDRK4)", true, "RdBu_r", vmax), ("learned (pnode kencarp4)", learned, "RdBu_r", vmax),
              ("learned - true", learned - true, "PuOr_r", vmax)]
    for ax, (name, field, cmap, lim) in zip(axes, panels):
        im = ax.imshow(field.numpy(), origin="lower", aspect="auto", extent=extent, cmap=cmap, vmin=-lim, vmax=lim,
                       interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel("x")
        fig.colorbar(im, ax=ax, label="u")
    axes[0].set_ylabel("t")
    fig.suptitle(f"Kuramoto-Sivashinsky, N = {len(x)}: rollout from a held-out state after {iterations} "
                 f"iterations (training loss {loss:.2e})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog="Unrecognised -options are passed to PETSc.",
                                formatter_class=DefaultsOnceFormatter)
    p.add_argument("--iterations", type=int, default=1000, help="Adam iterations (3 to 5 minutes on 2 cores)")
    p.add_argument("--n", type=int, default=64, help="grid points")
    p.add_argument("--batch", type=int, default=64, help="training pairs per iteration")
    p.add_argument("--pairs", type=int, default=1024, help="training start states in the data set")
    p.add_argument("--window", type=int, default=4, help="intervals of 0.25 predicted from each start state")
    p.add_argument("--hidden", type=int, default=104, help="MLP width")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--step", type=float, default=0.125, help="IMEX fixed step")
    p.add_argument("--horizon", type=float, default=40.0, help="time units of the plotted rollout")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default="ks_pde.png", help="PNG of the space-time fields ('' for none)")
    return p.parse_known_args(argv)


def main(argv=None):
    args, petsc_args = parse_args(argv)
    sys.argv = sys.argv[:1] + petsc_args  # PETSc reads sys.argv when pnode is first imported
    import pnode

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    n = args.n
    frames = round(args.horizon / INTERVAL) + 1
    # one trajectory: the training pairs first, then a held-out stretch for the plot
    w = args.window
    states = ks_trajectory(n, args.pairs + w + frames, INTERVAL, args.seed)
    targets = torch.stack([states[k:k + args.pairs] for k in range(w + 1)])  # (w + 1, pairs, n)
    held_out = states[args.pairs + w:]

    conv, mlp = Convolution(n), MLP(n, args.hidden)
    solver = make_solver(pnode, n, conv, mlp, args.step)
    opt = torch.optim.Adam(list(conv.parameters()) + list(mlp.parameters()), lr=args.lr)
    t = torch.arange(w + 1, dtype=torch.float64) * INTERVAL
    gen = torch.Generator().manual_seed(args.seed)
    start, loss = time.perf_counter(), float("nan")
    for it in range(1, args.iterations + 1):
        idx = torch.randint(0, args.pairs, (args.batch,), generator=gen)
        opt.zero_grad()
        batch = targets[:, idx]
        loss_t = (solver(batch[0], t)[1:] - batch[1:]).pow(2).mean()
        loss_t.backward()
        opt.step()
        loss = loss_t.item()
        if it == 1 or it % 50 == 0 or it == args.iterations:
            print(f"iteration {it:5d}  loss {loss:.3e}  ({time.perf_counter() - start:.1f} s)", flush=True)
    elapsed = time.perf_counter() - start
    print(f"trained {args.iterations} iterations in {elapsed:.1f} s ({solver.stats['steps']} steps per solve)")

    with torch.no_grad():
        times = torch.arange(frames, dtype=torch.float64) * INTERVAL
        learned = solver(held_out[:1], times)[:, 0]  # (frames, n)
    short = min(frames, round(5.0 / INTERVAL) + 1)  # the first 5 time units
    err = (learned[:short] - held_out[:short]).norm() / held_out[:short].norm()
    print(f"held-out rollout: relative error over the first {(short - 1) * INTERVAL:g} time units {err:.3e}")
    solver.close()
    if args.out:
        x = torch.arange(n, dtype=torch.float64) * LENGTH / n
        plot(args.out, x, times, held_out, learned, args.iterations, loss)
        print(f"wrote {args.out}")
    return loss


if __name__ == "__main__":
    main()
