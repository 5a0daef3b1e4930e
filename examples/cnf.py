"""Train a continuous normalizing flow (FFJORD) with pnode, on 1 or more MPI ranks.

Datasets (``--data``): 2-D toys generated locally (``moons``: sklearn's make_moons with
noise 0.05, ``8gaussians``, ``checkerboard``) and the 64-dimensional ``digits`` bundled
with scikit-learn (8x8 images, dequantised with uniform noise, divided by 17 and
standardised; trained with the Hutchinson trace, evaluated with the exact trace).

The model maps data (t = 0) to N(0, I) (t = T); gradients come from PETSc's discrete
adjoint. Reported: the test negative log-likelihood (held-out samples, nats per sample,
in the original data units, i.e. including the standardisation's log-determinant) and
that of the best single Gaussian (mean and covariance fitted to the same training data).

Data parallelism: every rank takes its shard of each global mini-batch and pnode sums the
gradients over the ranks inside the adjoint, so 1 and 2 ranks train the same model:

    .venv/bin/python examples/cnf.py --data moons       # about 4 minutes on 2 cores
    .venv/bin/mpiexec -n 2 .venv/bin/python examples/cnf.py --data moons
    .venv/bin/python examples/cnf.py --data digits --iters 300
    .venv/bin/python examples/cnf.py --iters 3 --out ''          # smoke test

Writes a PNG of the data, the learned density and samples for 2-D data (``--out``).
Unrecognised -options are PETSc options (e.g. -ts_monitor).
"""
import argparse
import math
import sys
import time

import numpy as np
import torch
from mpi4py import MPI

from pnode.models import CNF  # importing pnode starts PETSc with the command line's -options
from pnode.parallel import abort_on_exception, allreduce_sum, print0, shard
from _cli import DefaultsOnceFormatter  # examples/_cli.py

TOYS = ("moons", "8gaussians", "checkerboard")


# ---------------------------------------------------------------------------- data
def toy_data(name, n, rng):
    """``n`` samples ``(n, 2)`` of a 2-D toy density (float64 numpy)."""
    if name == "moons":
        from sklearn.datasets import make_moons
        return make_moons(n, noise=0.05, random_state=int(rng.integers(2**31)))[0]
    if name == "8gaussians":
        centers = [(1, 0), (-1, 0), (0, 1), (0, -1), (1 / math.sqrt(2), 1 / math.sqrt(2)),
                   (1 / math.sqrt(2), -1 / math.sqrt(2)), (-1 / math.sqrt(2), 1 / math.sqrt(2)),
                   (-1 / math.sqrt(2), -1 / math.sqrt(2))]
        c = 4.0 * np.array(centers)[rng.integers(0, 8, n)]
        return (c + 0.5 * rng.standard_normal((n, 2))) / 1.414
    if name == "checkerboard":
        x1 = rng.random(n) * 4 - 2
        x2 = rng.random(n) - rng.integers(0, 2, n) * 2 + np.floor(x1) % 2
        return np.stack([x1, x2], 1) * 2
    raise ValueError(name)


def digits_data(rng):
    """Digits ``(train, test)`` as integer pixel values 0..16 (float64), 64-D."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    return train_test_split(load_digits().data.astype(np.float64), test_size=0.2, random_state=0)


def dequantize(pixels, noise):
    """Pixels 0..16 plus uniform noise in [0, 1), scaled into (0, 1)."""
    return (pixels + noise) / 17.0


def load(args, rng):
    """``(train, test, raw_train)``: float64 arrays in data units; ``raw_train`` is the
    integer digits training set (dequantised afresh for every mini-batch), else None."""
    if args.data == "digits":
        raw, raw_test = digits_data(rng)
        train, test = dequantize(raw, rng.random(raw.shape)), dequantize(raw_test, rng.random(raw_test.shape))
        return train, test, raw
    return toy_data(args.data, args.train_size, rng), toy_data(args.data, args.test_size, rng), None


def gaussian_nll(train, test):
    """Test NLL (nats per sample) of the maximum-likelihood Gaussian of ``train``."""
    mean = train.mean(0)
    cov = np.cov(train, rowvar=False, bias=True)
    d = train.shape[1]
    _, logdet = np.linalg.slogdet(cov)
    diff = test - mean
    maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    return float(np.mean(0.5 * (maha + logdet + d * math.log(2 * math.pi))))


# ---------------------------------------------------------------------------- evaluation
def test_nll(cnf, x_test, logdet_std, comm, chunk, trace):
    """Mean NLL over the (global) test set: each rank its shard, in chunks."""
    mine = shard(x_test, comm)
    total = 0.0
    # every rank runs the same number of (collective) solves, some maybe on empty chunks
    n_chunks = comm.allreduce(math.ceil(len(mine) / chunk), op=MPI.MAX)
    with torch.no_grad():
        for k in range(n_chunks):
            part = mine[k * chunk:(k + 1) * chunk]
            total += float(cnf.log_prob(part, trace=trace).sum()) if len(part) else 0.0
    return -allreduce_sum(total, comm) / len(x_test) + logdet_std


def plot(cnf, args, train, mean, std, path, iters, nll, base):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lo, hi = train.min(0), train.max(0)
    lo, hi = lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)
    xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], args.grid), np.linspace(lo[1], hi[1], args.grid))
    grid = np.stack([xx.ravel(), yy.ravel()], 1)
    like = next(cnf.parameters())
    with torch.no_grad():
        gt = torch.tensor((grid - mean) / std, dtype=like.dtype)
        logp = torch.cat([cnf.log_prob(c, local=True) for c in gt.split(2048)]).numpy() - np.log(std).sum()
        s = cnf.sample(args.samples).numpy() * std + mean
    aspect = (hi[1] - lo[1]) / (hi[0] - lo[0])
    fig, ax = plt.subplots(1, 3, figsize=(14, 14 / 3 * aspect + 1.2))
    box = [[lo[0], hi[0]], [lo[1], hi[1]]]
    *_, im0 = ax[0].hist2d(train[:, 0], train[:, 1], bins=120, range=box, cmap="viridis")
    ax[0].set_title(f"training data ({args.data})")
    im1 = ax[1].pcolormesh(xx, yy, np.exp(logp).reshape(xx.shape), cmap="viridis", shading="auto")
    ax[1].set_title("learned density p(x)")
    *_, im2 = ax[2].hist2d(s[:, 0], s[:, 1], bins=120, range=box, cmap="viridis")
    ax[2].set_title(f"{args.samples} samples of the flow")
    for a, im, label in zip(ax, (im0, im1, im2), ("points per bin", "density", "samples per bin")):
        a.set_aspect("equal")
        a.set_xlabel("x1")
        a.set_ylabel("x2")
        fig.colorbar(im, ax=a, shrink=0.8, label=label)
    fig.suptitle(f"CNF on {args.data} after {iters} iterations: test NLL {nll:.3f} nats/sample "
                 f"(single Gaussian {base:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------------- main
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, epilog="Unrecognised -options go to PETSc.",
                                formatter_class=DefaultsOnceFormatter)
    p.add_argument("--data", default="moons", choices=TOYS + ("digits",), help="dataset (default moons)")
    p.add_argument("--iters", type=int, default=None,
                   help="training iterations (400 for 2-D data: about 4 minutes on 2 cores; 300 for digits)")
    p.add_argument("--time-budget", type=float, default=None, help="stop training after this many seconds")
    p.add_argument("--batch-size", type=int, default=None, help="global mini-batch (default 512; 256 digits)")
    p.add_argument("--hidden", default=None, help="hidden widths (default 64,64,64; 256,256 for digits)")
    p.add_argument("--activation", default="tanh", choices=("tanh", "softplus", "silu"), help="default tanh")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 5e-3 2-D, 3e-3 digits)")
    p.add_argument("--rtol", type=float, default=1e-5, help="solver rtol (default 1e-5)")
    p.add_argument("--atol", type=float, default=1e-5, help="solver atol (default 1e-5)")
    p.add_argument("--method", default="dopri5", help="explicit integrator (see pnode.METHODS; default dopri5)")
    p.add_argument("--trace", default="auto", choices=("auto", "exact", "hutchinson"),
                   help="training trace estimator (default auto: exact for d <= 8); the test NLL uses the exact trace")
    p.add_argument("--kinetic", type=float, default=0.0, help="RNODE kinetic-energy weight (default 0)")
    p.add_argument("--jacobian", type=float, default=0.0, help="RNODE Jacobian-norm weight (default 0)")
    p.add_argument("--train-size", type=int, default=20000, help="training samples, 2-D data (default 20000)")
    p.add_argument("--test-size", type=int, default=5000, help="held-out samples, 2-D data (default 5000)")
    p.add_argument("--eval-chunk", type=int, default=2500, help="test rows per solve (default 2500)")
    p.add_argument("--float32", action="store_true", help="model in float32 (PETSc integrates in float64)")
    p.add_argument("--grid", type=int, default=120, help="density plot resolution, points per axis (default 120)")
    p.add_argument("--samples", type=int, default=2000, help="samples drawn for the plot (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, batches, weights and noise (default 0)")
    p.add_argument("--out", default="cnf.png", help="PNG for 2-D data, '' for none (default cnf.png)")
    args, _petsc = p.parse_known_args(argv)  # PETSc read its -options when pnode was imported
    digits = args.data == "digits"
    if args.iters is None:
        args.iters = 300 if digits else 400
    if args.batch_size is None:
        args.batch_size = 256 if digits else 512
    if args.hidden is None:
        args.hidden = "256,256" if digits else "64,64,64"
    if args.lr is None:
        args.lr = 3e-3 if digits else 5e-3
    return args



def main(argv=None):
    args = parse(argv)
    comm = MPI.COMM_WORLD
    abort_on_exception(comm)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    dtype = torch.float32 if args.float32 else torch.float64
    rng = np.random.default_rng(args.seed)  # same data on every rank
    train, test, raw = load(args, rng)
    mean, std = train.mean(0), train.std(0)
    logdet_std = float(np.log(std).sum())   # NLL in data units = NLL standardised + this
    x_train = torch.tensor((train - mean) / std, dtype=dtype)
    x_test = torch.tensor((test - mean) / std, dtype=dtype)
    d = x_train.shape[1]

    cnf = CNF(d, hidden=tuple(int(h) for h in args.hidden.split(",")), activation=args.activation,
              trace=args.trace, kinetic_weight=args.kinetic, jacobian_weight=args.jacobian,
              method=args.method, rtol=args.rtol, atol=args.atol, comm=comm, seed=args.seed).to(dtype)
    opt = torch.optim.Adam(cnf.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.iters, eta_min=args.lr / 20)
    regularised = args.kinetic > 0 or args.jacobian > 0
    print0(f"CNF on {args.data}: d={d}, {len(x_train)} train / {len(x_test)} test, hidden {args.hidden}, "
           f"trace={cnf.trace}, {args.method} rtol={args.rtol}, global batch {args.batch_size} "
           f"on {comm.size} rank(s)", flush=True)

    gen = torch.Generator().manual_seed(args.seed)  # same batches on every rank
    rank0 = comm.rank == 0
    try:
        from tqdm import tqdm
        bar = tqdm(total=args.iters, desc=f"cnf-{args.data}", disable=not rank0, file=sys.stdout, mininterval=1.0)
    except ImportError:  # pragma: no cover - tqdm is in the examples extra
        bar = None
    start = time.perf_counter()
    it = 0
    while it < args.iters:
        idx = torch.randint(0, len(x_train), (args.batch_size,), generator=gen)
        if raw is None:
            xb = x_train[idx]
        else:  # fresh dequantisation noise for every batch (drawn for the global batch)
            noise = torch.rand(args.batch_size, d, generator=gen, dtype=torch.float64).numpy()
            xb = torch.tensor((dequantize(raw[idx.numpy()], noise) - mean) / std, dtype=dtype)
        xb = shard(xb, comm)
        opt.zero_grad()
        if regularised:
            logp, reg = cnf.log_prob(xb, return_reg=True)
            loss = (reg - logp).sum() / args.batch_size
        else:
            logp = cnf.log_prob(xb)
            loss = -logp.sum() / args.batch_size  # this rank's part of the global mean
        loss.backward()  # gradients summed over the ranks by pnode's adjoint
        opt.step()
        sched.step()
        it += 1
        if bar is not None:
            bar.update(1)
            if it % 5 == 0 or it == args.iters:
                batch_nll = allreduce_sum(-logp.sum().item(), comm) / args.batch_size + logdet_std
                bar.set_postfix(batch_nll=f"{batch_nll:.3f}", steps=cnf.stats.get("steps"))
        out_of_time = args.time_budget is not None and time.perf_counter() - start > args.time_budget
        if comm.bcast(out_of_time, root=0):  # rank 0's clock decides for everyone
            break
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - start

    eval_start = time.perf_counter()
    nll = test_nll(cnf, x_test, logdet_std, comm, args.eval_chunk, trace="exact")
    base = gaussian_nll(train, test)
    print0(f"trained {it} iterations in {elapsed:.1f} s ({elapsed / max(it, 1):.2f} s/iter) on {comm.size} rank(s); "
           f"test NLL evaluated in {time.perf_counter() - eval_start:.1f} s")
    print0(f"test NLL (nats/sample): CNF {nll:.4f}   single Gaussian {base:.4f}   difference {base - nll:.4f}")
    if args.out and d == 2 and rank0:
        plot(cnf, args, train, mean, std, args.out, it, nll, base)
        print(f"wrote {args.out}")
    cnf.close()
    return {"nll": nll, "gaussian_nll": base, "iters": it, "seconds": elapsed}


if __name__ == "__main__":
    main()
