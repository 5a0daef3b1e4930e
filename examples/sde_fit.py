"""Fit a neural SDE to an Ornstein–Uhlenbeck process with the reversible Heun adjoint.

The data are paths of dX = theta (mu - X) dt + sigma dW (theta=2, mu=-0.5, sigma=0.6,
X0 ~ N(1, 0.1^2)), simulated here with the exact OU transition. A neural SDE
dY = f(t, Y) dt + g(t) o dW (MLP drift, diffusion an MLP of time only, so Stratonovich
and Ito agree and f is directly comparable with the OU drift) is trained to reproduce
the *distribution* of the paths: the loss is the 1-D Wasserstein-2 distance between
model and data samples (sorted samples) of the values at every observation time and of
the increments between consecutive observation times. Gradients come from
pnode.sdeint_adjoint (reversible Heun): exact gradients of the discretised SDE with
memory that does not grow with the number of steps.

It shows: training a neural SDE end to end with pnode.sdeint_adjoint, the learned drift
recovering the OU drift theta (mu - x) where the data live, and the model's mean and
spread over time matching the data's. Writes a PNG (--out) with data vs model paths,
mean +- std bands, the learned vs true drift, and the loss curve.

    python examples/sde_fit.py                # ~30 s on 2 cores
    python examples/sde_fit.py --steps 5      # smoke run
"""
import argparse
import math
import os
import sys
import time

import torch
from torch import nn

from _cli import DefaultsOnceFormatter  # examples/_cli.py

THETA, MU, SIGMA = 2.0, -0.5, 0.6
X0_MEAN, X0_STD = 1.0, 0.1


def simulate_ou(n, ts, gen):
    """Exact OU paths, shape (len(ts), n, 1)."""
    x = X0_MEAN + X0_STD * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    out = [x]
    for t0, t1 in zip(ts[:-1].tolist(), ts[1:].tolist()):
        decay = math.exp(-THETA * (t1 - t0))
        std = SIGMA * math.sqrt((1 - decay**2) / (2 * THETA))
        x = MU + (x - MU) * decay + std * torch.randn(n, 1, generator=gen, dtype=torch.float64)
        out.append(x)
    return torch.stack(out)


class NeuralSDE(nn.Module):
    """dY = f(t, Y) dt + g(t) o dW: MLP drift, positive diagonal diffusion of time only."""

    noise_type = "diagonal"
    sde_type = "stratonovich"

    def __init__(self, hidden=32):
        super().__init__()
        self.drift = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                   nn.Tanh(), nn.Linear(hidden, 1))
        self.diffusion = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
        # Learned initial distribution: mean and log-std of Y0.
        self.y0_mean = nn.Parameter(torch.zeros(1))
        self.y0_logstd = nn.Parameter(torch.tensor([-1.0]))

    def f(self, t, y):
        return self.drift(torch.cat([t.expand_as(y), y], dim=1))

    def g(self, t, y):
        return nn.functional.softplus(self.diffusion(t.expand_as(y)))

    def sample_y0(self, n, gen):
        eps = torch.randn(n, 1, generator=gen, dtype=self.y0_mean.dtype)
        return self.y0_mean + self.y0_logstd.exp() * eps


def wasserstein2(model, data):
    """Squared 1-D Wasserstein-2 distance per time, summed: samples sorted along dim 1."""
    return ((model.sort(dim=1).values - data.sort(dim=1).values) ** 2).mean(dim=(1, 2)).sum()


def path_loss(model, data):
    """W2 of the marginals plus W2 of the increments (the latter pins down the drift)."""
    return wasserstein2(model, data) + wasserstein2(model.diff(dim=0), data.diff(dim=0))



def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsOnceFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--steps", type=int, default=400, help="training iterations (default 400)")
    p.add_argument("--batch", type=int, default=256,
                   help="model and data paths per iteration (default 256)")
    p.add_argument("--dt", type=float, default=0.05, help="solver step (default 0.05)")
    p.add_argument("--lr", type=float, default=1e-2,
                   help="Adam learning rate (default 0.01, cosine-decayed)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, model and noise (default 0)")
    p.add_argument("--no-adjoint", action="store_true",
                   help="backpropagate through the solver (pnode.sdeint) instead")
    p.add_argument("--out", default="sde_fit.png",
                   help="output PNG (default sde_fit.png; '' for none)")
    args = p.parse_args(argv)
    # pnode hands sys.argv to PETSc when imported; this example's options are not PETSc's
    # (and the SDE solvers do not use PETSc), so keep them from being reported as unused.
    sys.argv = sys.argv[:1]
    global pnode
    import pnode

    torch.manual_seed(args.seed)
    # The tensors are small: one thread avoids threading overhead (and contention).
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(args.seed)
    ts = torch.linspace(0.0, 2.0, 21, dtype=torch.float64)
    data = simulate_ou(4000, ts, gen)                      # (T, 4000, 1)

    torch.set_default_dtype(torch.float64)
    model = NeuralSDE()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, args.steps),
                                                       eta_min=args.lr / 10)
    solve = pnode.sdeint if args.no_adjoint else pnode.sdeint_adjoint
    try:
        from tqdm import trange
        bar = trange(args.steps, desc="sde_fit", disable=None)
    except ImportError:
        bar = range(args.steps)

    losses = []
    start = time.perf_counter()
    for it in bar:
        opt.zero_grad()
        y0 = model.sample_y0(args.batch, gen)
        # Fresh noise every iteration, reproducible from the seed. Without a dt hint the
        # interval takes the solver's grid (a tree node on every step and output time).
        bm = pnode.BrownianInterval(0.0, float(ts[-1]), size=(args.batch, 1),
                                    entropy=args.seed * 100003 + it)
        ys = solve(model, y0, ts, bm=bm, dt=args.dt, method="reversible_heun")  # (T, batch, 1)
        idx = torch.randint(0, data.shape[1], (args.batch,), generator=gen)
        loss = path_loss(ys, data[:, idx])
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if hasattr(bar, "set_postfix") and it % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    elapsed = time.perf_counter() - start

    with torch.no_grad():
        n_eval = data.shape[1]
        bm = pnode.BrownianInterval(0.0, float(ts[-1]), size=(n_eval, 1), entropy=args.seed + 7)
        model_paths = pnode.sdeint(model, model.sample_y0(n_eval, gen), ts, bm=bm, dt=args.dt,
                                   method="reversible_heun")
        mean_err = (model_paths.mean(1) - data.mean(1)).abs().max().item()
        std_err = (model_paths.std(1) - data.std(1)).abs().max().item()
        w2 = path_loss(model_paths, data).item()
    print(f"trained {args.steps} iterations in {elapsed:.1f} s "
          f"({'sdeint' if args.no_adjoint else 'sdeint_adjoint'}, dt={args.dt})")
    print(f"max |mean error| over time {mean_err:.3f}, max |std error| {std_err:.3f}, "
          f"loss on {n_eval} fresh paths {w2:.4f} (data std at t=2: {data[-1].std().item():.3f})")

    if args.out:
        plot(args.out, ts, data, model_paths, model, losses)
    return {"mean_err": mean_err, "std_err": std_err, "w2": w2, "losses": losses}


def plot(out, ts, data, model_paths, model, losses):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written (pip install matplotlib)")
        return
    t = ts.numpy()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    ax = axes[0]
    for k in range(12):
        ax.plot(t, data[:, k, 0], color="tab:green", alpha=0.5, lw=0.8)
        ax.plot(t, model_paths[:, k, 0], color="tab:blue", alpha=0.5, lw=0.8)
    ax.plot([], [], color="tab:green", label="data (OU)")
    ax.plot([], [], color="tab:blue", label="neural SDE")
    ax.set_title("sample paths")
    ax.set_xlabel("t")
    ax.legend()
    ax = axes[1]
    for paths, color, label in ((data, "tab:green", "data"), (model_paths, "tab:blue", "model")):
        m, s = paths.mean(1)[:, 0].numpy(), paths.std(1)[:, 0].numpy()
        ax.plot(t, m, color=color, label=f"{label} mean")
        ax.fill_between(t, m - s, m + s, color=color, alpha=0.2, label=f"{label} ± std")
    ax.set_title("marginal mean ± std")
    ax.set_xlabel("t")
    ax.legend()
    ax = axes[2]
    x = torch.linspace(-1.5, 1.5, 61).unsqueeze(1)
    with torch.no_grad():
        for tt, style in ((0.5, "-"), (1.5, "--")):
            ax.plot(x[:, 0], model.f(torch.tensor(tt), x)[:, 0], style, color="tab:blue",
                    label=f"learned f(t={tt}, x)")
    ax.plot(x[:, 0], THETA * (MU - x[:, 0]), color="tab:green", label="true θ(μ - x)")
    lo, hi = torch.quantile(data.flatten(), torch.tensor([0.01, 0.99], dtype=data.dtype)).tolist()
    ax.axvspan(lo, hi, color="0.9", zorder=0, label="98% of the data")
    ax.set_title("drift")
    ax.set_xlabel("x")
    ax.legend(fontsize=8)
    ax = axes[3]
    ax.semilogy(losses)
    ax.set_title("training loss (W2² of values + increments)")
    ax.set_xlabel("iteration")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
