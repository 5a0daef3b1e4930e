"""Train a neural SDE as a GAN (an SDE-GAN) with reversible Heun and its exact adjoint.

The setting of Kidger et al. (2021), "Neural SDEs as infinite-dimensional GANs" and
"Efficient and accurate gradients for neural SDEs", scaled to train in a few minutes on
one core:

- data: paths of the time-dependent Ornstein-Uhlenbeck process
  dX = (0.02 t - 0.1 X) dt + 0.4 dW on t = 0, 1, ..., 31, X(0) ~ U(-1, 1);
- generator: X0 = zeta(V), V ~ N(0, I); dX = mu(t, X) dt + sigma(t, X) o dW (Stratonovich,
  general noise), read out linearly, Y = l(X). mu, sigma, zeta are MLPs with LipSwish
  activations (mu and sigma end in tanh). Solved by pnode.sdeint_adjoint with
  reversible Heun: gradients are those of the computed solution (algebraically
  reversed, O(1) memory in the number of steps);
- discriminator: a neural CDE H0 = xi(t0, Y0), dH = f(t, H) dt + g(t, H) dY, the score a
  linear function of H(T), solved on the data's grid with reversible Heun written in
  plain torch (differentiable by autograd). Wasserstein loss; the discriminator is kept
  Lipschitz by clipping its weights (LipSwish has Lipschitz constant 1).

Writes a PNG (--out) with real and generated sample paths and the marginal distributions
at three times, and prints the losses and the marginal statistics.

    python examples/sde_gan.py                    # ~2-3 minutes on 1 thread
    python examples/sde_gan.py --iterations 3     # smoke run
"""
import argparse
import math
import sys
import time

import torch
from torch import nn

from _cli import DefaultsOnceFormatter  # examples/_cli.py


class LipSwish(nn.Module):
    """0.909 * x * sigmoid(x): Lipschitz constant 1."""

    def forward(self, x):
        return 0.909 * nn.functional.silu(x)


def mlp(n_in, n_out, width, tanh):
    layers = [nn.Linear(n_in, width), LipSwish(), nn.Linear(width, width), LipSwish(),
              nn.Linear(width, n_out)]
    return nn.Sequential(*layers, nn.Tanh()) if tanh else nn.Sequential(*layers)


def ou_paths(n, ts, gen):
    """Real data: (n, len(ts), 1) paths of dX = (0.02 t - 0.1 X) dt + 0.4 dW (exact
    transition of the OU process with a linearly moving mean, integrated by small Euler
    steps between the observation times)."""
    x = torch.rand(n, 1, generator=gen) * 2 - 1
    out = [x]
    sub = 20
    for t0, t1 in zip(ts[:-1].tolist(), ts[1:].tolist()):
        h = (t1 - t0) / sub
        for k in range(sub):
            t = t0 + k * h
            x = x + (0.02 * t - 0.1 * x) * h + 0.4 * math.sqrt(h) * torch.randn(n, 1, generator=gen)
        out.append(x)
    return torch.stack(out, 1)


class Generator(nn.Module):
    """Neural SDE: initial MLP, drift and diffusion MLPs of (t, X), linear readout.

    ``forward(ts, n)`` returns generated paths of shape (n, len(ts), 1)."""

    sde_type, noise_type = "stratonovich", "general"

    def __init__(self, init_noise=5, noise=3, hidden=16, width=16):
        super().__init__()
        self.init_noise, self.noise, self.hidden = init_noise, noise, hidden
        self.initial = mlp(init_noise, hidden, width, tanh=False)
        self.drift = mlp(1 + hidden, hidden, width, tanh=True)
        self.diffusion = mlp(1 + hidden, hidden * noise, width, tanh=True)
        self.readout = nn.Linear(hidden, 1)
        # A wider initial distribution at the start: with PyTorch's default scale the
        # generated X(0) starts almost deterministic and the clipped critic barely sees it.
        with torch.no_grad():
            for prm in self.initial.parameters():
                prm.mul_(3.0)

    def f(self, t, x):
        return self.drift(torch.cat([t.expand(x.size(0), 1), x], 1))

    def g(self, t, x):
        return self.diffusion(torch.cat([t.expand(x.size(0), 1), x], 1)).view(-1, self.hidden, self.noise)

    def forward(self, ts, n):
        x0 = self.initial(torch.randn(n, self.init_noise))
        xs = pnode.sdeint_adjoint(self, x0, ts, method="reversible_heun", dt=1.0,
                                  adjoint_method="adjoint_reversible_heun")
        return self.readout(xs.transpose(0, 1))


class Discriminator(nn.Module):
    """Neural CDE on the path (t, Y): dH = f(t, H) dt + g(t, H) dY, reversible Heun on the
    path's grid; ``forward(ts, ys)`` returns the mean score of the paths ys (n, T, 1)."""

    def __init__(self, hidden=16, width=16):
        super().__init__()
        self.hidden = hidden
        self.initial = mlp(2, hidden, width, tanh=False)
        self.field = mlp(1 + hidden, hidden * 2, width, tanh=True)
        self.readout = nn.Linear(hidden, 1)

    def _field(self, t, h):
        """The CDE's matrix field (n, hidden, 2) at (t, H): columns for dt and dY."""
        return self.field(torch.cat([t.expand(h.size(0), 1), h], 1)).view(-1, self.hidden, 2)

    def forward(self, ts, ys):
        n = ys.size(0)
        h = self.initial(torch.cat([ts[0].expand(n, 1), ys[:, 0]], 1))
        # Reversible Heun (Kidger et al. 2021) for dH = F(t, H) dX with X = (t, Y): a
        # second state z, one field evaluation per step (F(z) is carried over).
        z, fz = h, self._field(ts[0], h)
        for k in range(len(ts) - 1):
            dx = torch.cat([(ts[k + 1] - ts[k]).expand(n, 1), ys[:, k + 1] - ys[:, k]], 1).unsqueeze(-1)
            z_new = 2 * h - z + (fz @ dx).squeeze(-1)
            fz_new = self._field(ts[k + 1], z_new)
            h = h + 0.5 * ((fz + fz_new) @ dx).squeeze(-1)
            z, fz = z_new, fz_new
        return self.readout(h).mean()

    def clip(self, bound):
        """Weight clipping: every linear map's entries into [-bound, bound]."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    m.weight.clamp_(-bound, bound)


def marginal_stats(ys, idx):
    return [(ys[:, k, 0].mean().item(), ys[:, k, 0].std().item()) for k in idx]


def plot(out, ts, real, fake, losses):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = ts.numpy()
    idx = [len(ts) // 4, len(ts) // 2, len(ts) - 1]
    lo, hi = real.min().item() - 0.5, real.max().item() + 0.5
    fig = plt.figure(figsize=(13, 6.5))
    grid = fig.add_gridspec(2, 4)
    for col, (name, ys, color) in enumerate((("real", real, "tab:blue"), ("generated", fake, "tab:red"))):
        ax = fig.add_subplot(grid[0, 2 * col:2 * col + 2])
        for p in ys[:40, :, 0].numpy():
            ax.plot(t, p, color=color, alpha=0.35, lw=0.8)
        ax.set_title(f"{name} sample paths (40 of {ys.size(0)})")
        ax.set_xlabel("t")
        ax.set_ylim(lo, hi)
    for j, k in enumerate(idx):
        ax = fig.add_subplot(grid[1, j])
        bins = torch.linspace(lo, hi, 41).numpy()
        ax.hist(real[:, k, 0].numpy(), bins=bins, density=True, alpha=0.5, color="tab:blue", label="real")
        ax.hist(fake[:, k, 0].numpy(), bins=bins, density=True, alpha=0.5, color="tab:red", label="generated")
        ax.set_title(f"marginal at t = {t[k]:.0f}")
        ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[1, 3])
    ax.plot(losses, lw=0.8)
    ax.set_title("Wasserstein loss estimate")
    ax.set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"wrote {out}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsOnceFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--iterations", type=int, default=1500, help="training iterations")
    p.add_argument("--batch", type=int, default=128, help="real and generated paths per iteration")
    p.add_argument("--t-size", type=int, default=32, help="number of observation times 0, 1, ...")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of both networks")
    p.add_argument("--clip", type=float, default=0.2, help="discriminator weight-clipping bound")
    p.add_argument("--seed", type=int, default=0, help="seed for data, weights and noise")
    p.add_argument("--out", default="sde_gan.png", help="output PNG ('' for none)")
    args = p.parse_args(argv)
    for name in ("iterations", "batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.t_size < 2:
        p.error("--t-size must be >= 2")
    # pnode hands sys.argv to PETSc when imported: these options are not PETSc's.
    sys.argv = sys.argv[:1]
    global pnode
    import pnode

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # small tensors: threads cost more than they give
    gen = torch.Generator().manual_seed(args.seed)
    ts = torch.arange(args.t_size, dtype=torch.float32)
    data = ou_paths(8192, ts, gen)
    generator, disc = Generator(), Discriminator()
    disc.clip(args.clip)
    opt_g = torch.optim.Adam(generator.parameters(), lr=args.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr, betas=(0.5, 0.9))
    losses = []
    start = time.perf_counter()
    for it in range(args.iterations):
        real = data[torch.randint(0, data.size(0), (args.batch,), generator=gen)]
        fake = generator(ts, args.batch)
        # Wasserstein GAN: the discriminator maximises score(real) - score(fake), the
        # generator maximises score(fake); one backward pass serves both.
        loss = disc(ts, fake) - disc(ts, real)
        opt_g.zero_grad()
        opt_d.zero_grad()
        loss.backward()
        for prm in generator.parameters():
            prm.grad.neg_()  # the generator ascends the discriminator's score of the fakes
        opt_g.step()
        opt_d.step()
        disc.clip(args.clip)
        losses.append(-loss.item())
        if (it + 1) % max(1, args.iterations // 10) == 0 or it + 1 == args.iterations:
            print(f"iteration {it + 1:5d}  loss {-loss.item():+.4f}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    with torch.no_grad():
        fake = generator(ts, 2048)
    real = data[:2048]
    idx = [0, len(ts) // 4, len(ts) // 2, len(ts) - 1]
    for k, (rs, fs) in zip(idx, zip(marginal_stats(real, idx), marginal_stats(fake, idx))):
        print(f"t = {ts[k].item():4.0f}: real mean {rs[0]:+.3f} std {rs[1]:.3f} | "
              f"generated mean {fs[0]:+.3f} std {fs[1]:.3f}")
    print(f"trained {args.iterations} iterations in {time.perf_counter() - start:.1f} s")
    if args.out:
        plot(args.out, ts, real, fake, losses)


if __name__ == "__main__":
    main()
