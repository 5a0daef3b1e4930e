"""Fit a neural ODE to a spiral (torchdiffeq's ode_demo), with PETSc's discrete adjoint.

The true dynamics are dy/dt = A y**3 with A = [[-0.1, 2], [-2, -0.1]]; a small MLP learns
them from mini-batches of trajectory segments. Gradients come from PETSc's TSAdjoint
through pnode.odeint: exact for the computed discrete solution.

Every PETSc option works on the command line, for example:

    python examples/spiral.py --iters 300 -ts_type rk -ts_rk_type 5bs
    python examples/stiff_robertson.py --iters 2 -ts_monitor     # one line per step

Writes a PNG of the true and learned trajectories (``--out``).
"""
import argparse
import time

import torch
from torch import nn

import pnode

TRUE_A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)


class Lambda(nn.Module):
    def forward(self, t, y):
        return (y ** 3) @ TRUE_A.T


class ODEFunc(nn.Module):
    """dy/dt = MLP(y**3): the classic ode_demo architecture (2 -> 50 -> 2)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2)).double()
        for m in self.net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.1)
                nn.init.zeros_(m.bias)

    def forward(self, t, y):
        return self.net(y ** 3)


def get_batch(true_y, t, batch_size, batch_time, gen):
    idx = torch.randint(0, len(t) - batch_time, (batch_size,), generator=gen)
    batch_y0 = true_y[idx]                               # (M, 2)
    batch_t = t[:batch_time]                             # (T,)
    batch_y = torch.stack([true_y[idx + i] for i in range(batch_time)])  # (T, M, 2)
    return batch_y0, batch_t, batch_y


def _what_ran(ts):
    """The integrator PETSc actually used (the command line may have changed --method)."""
    kind = ts.getType()
    sub = {"rk": ts.getRKType, "arkimex": ts.getARKIMEXType}.get(kind)
    return f"PETSc TS {kind}" + (f" {sub()}" if sub else "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Unrecognised -options are passed to PETSc.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--iters", type=int, default=1500, help="training iterations (about 30 s on 2 cores)")
    p.add_argument("--data-size", type=int, default=1000, help="points on the true trajectory")
    p.add_argument("--batch-time", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--method", default="dopri5", help="integrator (see pnode.METHODS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="spiral.png", help="PNG of true vs learned trajectories ('' for none)")
    args, _petsc_args = p.parse_known_args(argv)  # PETSc read them from sys.argv already

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(args.seed)
    t = torch.linspace(0.0, 25.0, args.data_size, dtype=torch.float64)
    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    # The data come from a solver with a prefix of its own, so the command line's PETSc
    # options (-ts_type rk -ts_rk_type 5bs ...) change the trained model's solver only.
    with torch.no_grad(), pnode.ODESolver(Lambda(), method="dopri5", prefix="truth_") as truth:
        true_y = truth(y0, t)[:, 0]  # (data_size, 2)

    func = ODEFunc()
    opt = torch.optim.RMSprop(func.parameters(), lr=1e-3)
    solver = pnode.ODESolver(func, method=args.method, rtol=1e-6, atol=1e-8)
    try:
        from tqdm import trange
    except ImportError:  # pragma: no cover - tqdm is in the examples extra
        trange = range
    start = time.perf_counter()
    bar = trange(1, args.iters + 1, desc="spiral", disable=None) if trange is not range else range(1, args.iters + 1)
    for it in bar:
        opt.zero_grad()
        by0, bt, by = get_batch(true_y, t, args.batch_size, args.batch_time, gen)
        pred = solver(by0, bt)
        loss = (pred - by).abs().mean()
        loss.backward()
        opt.step()
        if hasattr(bar, "set_postfix") and it % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", steps=solver.stats["steps"])
    elapsed = time.perf_counter() - start

    with torch.no_grad():
        pred_y = solver(y0, t)[:, 0]
    test_loss = (pred_y - true_y).abs().mean().item()
    ran = _what_ran(solver.petsc_ts)
    print(f"trained {args.iters} iterations ({ran}) in {elapsed:.1f} s; "
          f"mean abs error over the whole trajectory: {test_loss:.4f}")
    solver.close()

    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        ax1.plot(t, true_y[:, 0], "g-", label="true x")
        ax1.plot(t, pred_y[:, 0], "b--", label="learned x")
        ax1.set_xlabel("t")
        ax1.legend()
        ax2.plot(true_y[:, 0], true_y[:, 1], "g-", label="true")
        ax2.plot(pred_y[:, 0], pred_y[:, 1], "b--", label="learned")
        ax2.set_xlabel("x")
        ax2.set_ylabel("y")
        ax2.legend()
        fig.suptitle(f"pnode spiral fit ({ran}, {args.iters} iterations)")
        fig.tight_layout()
        fig.savefig(args.out, dpi=100)
        print(f"wrote {args.out}")
    return test_loss


if __name__ == "__main__":
    main()
