"""Classify handwritten digits with an ODE-ResNet (ANODE/PNODE style), trained through
PETSc's discrete adjoint, and compare gradient-memory strategies.

Data: scikit-learn's bundled 8x8 digits (1797 images, no download), a stratified 80/20
train/test split with a fixed seed, pixels scaled to [0, 1].

Model: a convolutional stem (1 -> C channels at 8x8, then a stride-2 convolution to C x 4
x 4), ``--blocks`` ODE blocks ``dz/dt = conv(tanh(conv(z)))`` over t in [0, 1], and a
linear head on the flattened features. Each block is a :class:`pnode.ODEBlock`; its
gradient comes from PETSc's discrete adjoint (TSAdjoint), so it is the exact gradient of
the computed discrete solution whatever the checkpointing strategy.

What the switches show:

- ``--method``, ``--steps N`` (fixed steps per block) or ``--rtol`` (adaptive steps);
- ``--checkpoint all|solution|binomial`` (with ``--max-ram K``): what each block keeps of
  its own trajectory for its adjoint;
- ``--recompute-forward``: block-level recomputation (ANODE). The forward pass keeps only
  each block's input; the backward pass re-solves a block (same accepted steps) right
  before its adjoint, so memory is O(L) + O(N_t) instead of O(L * N_t), for about one
  extra forward solve per block;
- ``--compare``: trains once per gradient configuration (store-all per block, block
  recomputation, block recomputation + binomial checkpointing), each in its own
  subprocess (resident-memory peaks are per process), and prints a table of accuracy,
  time per epoch and peak memory. The gradients are the same in all three, so the
  accuracies agree; only time and memory differ. At the defaults the trajectories are
  small (a few MB) next to the process; ``--steps 20 --blocks 4 --batch-size 128`` makes
  the difference plain. A re-solved block's trajectory is freed right after its adjoint,
  so block recomputation alone lowers the peak (8 blocks of 50 RK4 steps: 99 MB against
  store-all's 271 MB), and binomial checkpointing lowers it further (79 MB); see
  docs/benchmarks_blocks.md.

The model runs in float32 (about 3x faster than float64 for these convolutions on CPU;
pnode converts to PETSc's float64 at the boundary, so the solver state and the
trajectories are float64); implicit methods (``crank_nicolson``, ``implicit_euler``, ...)
default to float64 (``--dtype``), since their Newton solves need float64 residuals. The defaults (RK4, 4 steps per block, 2 blocks, 10 epochs)
reach about 97% test accuracy in well under a minute on one core.

Every PETSc option works on the command line, e.g. ``-block0_ts_monitor`` or
``-ts_trajectory_type memory``:

    python examples/classifier.py
    python examples/classifier.py --recompute-forward --checkpoint binomial --max-ram 2
    python examples/classifier.py --method dopri5 --rtol 1e-3
    python examples/classifier.py --compare --steps 20 --blocks 4 --batch-size 128 --epochs 2

Writes a PNG (``--out``): training curves and a few test digits with their predictions.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch
from torch import nn

from _cli import DefaultsOnceFormatter  # examples/_cli.py

import pnode

ADAPTIVE_DEFAULT = "dopri5"
FIXED_DEFAULT = "rk4"
# (label, extra command-line flags) of the --compare configurations
COMPARE = [
    ("store-all per block", ["--checkpoint", "all"]),
    ("block recomputation", ["--checkpoint", "all", "--recompute-forward"]),
    ("block recomputation + binomial", ["--checkpoint", "binomial", "--recompute-forward"]),
]


# ---------------------------------------------------------------------------- model
class ConvField(nn.Module):
    """The vector field of one block: ``f(t, z) = conv(tanh(conv(z)))`` (autonomous)."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, t, z):
        return self.conv2(torch.tanh(self.conv1(z)))


def build_model(args):
    """Stem -> L ODE blocks -> linear head."""
    solver_kwargs = dict(method=args.method)
    if args.rtol is not None:
        solver_kwargs.update(rtol=args.rtol, atol=args.atol)
    else:
        solver_kwargs.update(options={"step_size": 1.0 / args.steps})
    if args.checkpoint == "binomial":
        solver_kwargs["checkpoint"] = pnode.Checkpoint("binomial", max_ram=args.max_ram)
    else:
        solver_kwargs["checkpoint"] = pnode.Checkpoint(args.checkpoint)
    c = args.channels
    blocks = [pnode.ODEBlock(ConvField(c), t1=1.0, recompute_forward=args.recompute_forward, **solver_kwargs)
              for _ in range(args.blocks)]
    model = nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c, c, 4, stride=2, padding=1), nn.ReLU(),   # 8x8 -> 4x4
        *blocks,
        nn.Flatten(), nn.Linear(c * 16, 10),
    )
    return model, blocks


# ---------------------------------------------------------------------------- data
def load_data(seed, limit=None):
    """Stratified 80/20 split of scikit-learn's digits; ``limit`` caps the train set."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=digits.target,
                                      random_state=seed)
    if limit is not None and limit < len(idx_tr):
        idx_tr, _ = train_test_split(idx_tr, train_size=limit, stratify=digits.target[idx_tr],
                                     random_state=seed)
    return x[idx_tr], y[idx_tr], x[idx_te], y[idx_te]


# ---------------------------------------------------------------------------- memory
def anon_mb():
    """Anonymous resident memory of this process (heap, tensors, PETSc Vecs), MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def max_rss_mb():
    """Peak resident set size of this process so far (ru_maxrss, KiB on Linux), MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakSampler(threading.Thread):
    """Samples the anonymous RSS every 5 ms; ``peak`` is the largest value seen.
    (Linux keeps a high-water mark for the total RSS only, which includes start-up.)"""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = anon_mb()
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.wait(0.005):
            self.peak = max(self.peak, anon_mb())

    def stop(self):
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, anon_mb())
        return self.peak


# ---------------------------------------------------------------------------- training
def evaluate(model, x, y, batch=512):
    model.eval()
    correct, preds = 0, []
    with torch.no_grad():  # forward-only solves: no trajectory is recorded
        for i in range(0, len(y), batch):
            p = model(x[i:i + batch]).argmax(1)
            preds.append(p)
            correct += int((p == y[i:i + batch]).sum())
    model.train()
    return correct / len(y), torch.cat(preds)


def train(args):
    """Train and evaluate; returns a dict of results (also what --report-json writes)."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    x_tr, y_tr, x_te, y_te = (t.to(dtype) if t.is_floating_point() else t
                              for t in load_data(args.seed, args.limit))
    model, blocks = build_model(args)
    model.to(dtype)
    n_batches = (len(y_tr) + args.batch_size - 1) // args.batch_size
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * n_batches)
    gen = torch.Generator().manual_seed(args.seed)

    base = anon_mb()  # after the data and the model exist
    sampler = PeakSampler()
    sampler.start()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the examples extra
        tqdm = None
    history = {"loss": [], "train_acc": [], "test_acc": [], "wall": [], "cpu": []}
    steps_seen, last_stats = [], []
    bar = tqdm(total=args.epochs * n_batches, desc="digits", disable=None if tqdm and not args.quiet else True,
               leave=False) if tqdm else None
    for epoch in range(args.epochs):
        perm = torch.randperm(len(y_tr), generator=gen)
        w0, c0 = time.perf_counter(), time.process_time()
        loss_sum, correct = 0.0, 0
        for i in range(n_batches):
            b = perm[i * args.batch_size:(i + 1) * args.batch_size]
            xb, yb = x_tr[b], y_tr[b]
            opt.zero_grad()
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(b)
            correct += int((logits.argmax(1) == yb).sum())
            last_stats = [dict(blk.stats) for blk in blocks]  # before evaluation resets them
            steps_seen.append(last_stats[0]["steps"] if blocks else 0)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", steps=steps_seen[-1])
        history["wall"].append(time.perf_counter() - w0)
        history["cpu"].append(time.process_time() - c0)
        history["loss"].append(loss_sum / len(y_tr))
        history["train_acc"].append(correct / len(y_tr))
        history["test_acc"].append(evaluate(model, x_te, y_te)[0])
        if bar is not None:
            bar.write(f"epoch {epoch + 1:3d}: loss {history['loss'][-1]:.4f}  train acc "
                      f"{history['train_acc'][-1]:.4f}  test acc {history['test_acc'][-1]:.4f}  "
                      f"{history['wall'][-1]:.1f} s")
    if bar is not None:
        bar.close()
    peak = sampler.stop()
    acc, preds = evaluate(model, x_te, y_te)
    stats = last_stats
    result = {
        "test_acc": acc,
        "final_loss": history["loss"][-1],
        "epoch_wall_s": float(np.median(history["wall"])),
        "epoch_cpu_s": float(np.median(history["cpu"])),
        "peak_above_base_mb": peak - base,
        "max_rss_mb": max_rss_mb(),
        "steps_per_block": steps_seen[-1] if steps_seen else 0,
        "recomputed_steps": sum(s["recomputed_steps"] for s in stats),
        "checkpoint_bytes": sum(s["checkpoint_bytes"] for s in stats),
        "rhs_evals": sum(s["rhs_evals"] for s in stats),
        "history": history,
        "n_train": len(y_tr),
        "n_test": len(y_te),
    }
    result["_preds"] = preds
    result["_x_te"] = x_te
    result["_y_te"] = y_te
    return result


# ---------------------------------------------------------------------------- output
def describe(args):
    steps = f"rtol {args.rtol:g} (adaptive)" if args.rtol is not None else f"{args.steps} steps/block"
    ck = args.checkpoint + (f" (max_ram {args.max_ram})" if args.checkpoint == "binomial" else "")
    return (f"{args.blocks} block(s), {args.method}, {steps}, checkpoint {ck}, "
            f"recompute_forward={args.recompute_forward}, batch {args.batch_size}, {args.epochs} epoch(s), "
            f"{args.dtype} model")


def plot(result, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = result["history"]
    epochs = np.arange(1, len(h["loss"]) + 1)
    fig = plt.figure(figsize=(11, 4.2))
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(epochs, h["loss"], "o-", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax2 = ax.twinx()
    ax2.plot(epochs, h["train_acc"], "s--", color="tab:green", label="train acc")
    ax2.plot(epochs, h["test_acc"], "^-", color="tab:red", label="test acc")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(0, 1.02)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    ax.set_title(f"ODE-ResNet on 8x8 digits: test acc {result['test_acc']:.3f}")
    x, y, p = result["_x_te"], result["_y_te"], result["_preds"]
    wrong = torch.nonzero(p != y).flatten().tolist()
    right = torch.nonzero(p == y).flatten().tolist()
    show = (wrong[:4] + right)[:12]
    for k, i in enumerate(show):
        a = fig.add_subplot(3, 8, 8 * (k // 4) + 5 + k % 4)
        a.imshow(x[i, 0].numpy(), cmap="gray_r")
        a.set_xticks([])
        a.set_yticks([])
        ok = int(p[i]) == int(y[i])
        a.set_title(f"pred {int(p[i])}" + ("" if ok else f" (true {int(y[i])})"),
                    fontsize=8, color="black" if ok else "red")
    fig.suptitle(describe(args), fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"wrote {args.out}")


def compare(args, petsc_args):
    """One subprocess per configuration; a table of accuracy, time and memory."""
    base_argv = ["--method", args.method, "--dtype", args.dtype, "--atol", repr(args.atol), "--max-ram", str(args.max_ram),
                 "--blocks", str(args.blocks), "--channels", str(args.channels), "--epochs", str(args.epochs),
                 "--batch-size", str(args.batch_size), "--lr", repr(args.lr), "--threads", str(args.threads),
                 "--seed", str(args.seed)]
    base_argv += ["--rtol", repr(args.rtol)] if args.rtol is not None else ["--steps", str(args.steps)]
    if args.limit is not None:
        base_argv += ["--limit", str(args.limit)]
    env = dict(os.environ)
    # big allocations straight from mmap, so freed trajectories leave the RSS at once
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    rows = []
    print(f"comparing gradient configurations: {describe(args)}")
    for label, flags in COMPARE:
        with tempfile.TemporaryDirectory() as tmp:
            report = os.path.join(tmp, "r.json")
            cmd = [sys.executable, os.path.abspath(__file__), *base_argv, *flags, "--out", "",
                   "--report-json", report, "--quiet", *petsc_args]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout + proc.stderr)
                raise SystemExit(f"configuration {label!r} failed (exit {proc.returncode})")
            with open(report) as fh:
                r = json.load(fh)
        r["label"] = label
        rows.append(r)
        print(f"  {label}: test acc {r['test_acc']:.4f}, {r['epoch_wall_s']:.2f} s/epoch, "
              f"peak +{r['peak_above_base_mb']:.1f} MB ({time.perf_counter() - t0:.0f} s incl. start-up)")
    ref = rows[0]
    print()
    print("| configuration | test acc | final loss | s/epoch (wall) | s/epoch (CPU) | time vs store-all "
          "| peak memory above baseline | max RSS | recomputed steps (last batch) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['label']} | {r['test_acc']:.4f} | {r['final_loss']:.4f} | {r['epoch_wall_s']:.2f} "
              f"| {r['epoch_cpu_s']:.2f} | {r['epoch_cpu_s'] / ref['epoch_cpu_s']:.2f}x "
              f"| {r['peak_above_base_mb']:.1f} MB | {r['max_rss_mb']:.0f} MB | {r['recomputed_steps']} |")
    print("\nPeak memory above baseline: largest anonymous RSS during training minus its value after "
          "the data and model were built (each configuration in its own process); max RSS: the "
          "process's ru_maxrss (includes the interpreter, torch and PETSc). Time ratio from CPU time.")
    if args.out:
        plot_compare(rows, args.out)
    return rows


def plot_compare(rows, path):
    """Bars of CPU time per epoch and peak memory for each gradient configuration."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [r["label"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key, title in ((axes[0], "epoch_cpu_s", "CPU s per epoch"),
                           (axes[1], "peak_above_base_mb", "peak memory above baseline (MB)")):
        ax.barh(labels, [r[key] for r in rows], color="tab:blue")
        ax.set_title(title)
        ax.invert_yaxis()
    axes[1].set_yticklabels([])
    fig.suptitle("same gradients, different memory/time trade-offs (test accuracy "
                 + ", ".join(f"{r['test_acc']:.3f}" for r in rows) + ")", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


# ---------------------------------------------------------------------------- main

def parse(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Unrecognised -options are passed to PETSc (e.g. -block0_ts_monitor).",
        formatter_class=DefaultsOnceFormatter)
    p.add_argument("--method", default=None,
                   help=f"integrator (see pnode.METHODS); default {FIXED_DEFAULT} with --steps, "
                        f"{ADAPTIVE_DEFAULT} with --rtol")
    p.add_argument("--steps", type=int, default=4, help="fixed steps per block (step size 1/steps)")
    p.add_argument("--rtol", type=float, default=None, help="adaptive steps with this rtol (ignores --steps)")
    p.add_argument("--atol", type=float, default=1e-4, help="atol for adaptive steps")
    p.add_argument("--checkpoint", choices=["all", "solution", "binomial"], default="all",
                   help="what each block keeps of its trajectory for its adjoint")
    p.add_argument("--max-ram", type=int, default=4, help="checkpoints in RAM per block (binomial)")
    p.add_argument("--recompute-forward", action="store_true",
                   help="block-level recomputation: keep block inputs only, re-solve in backward")
    p.add_argument("--blocks", type=int, default=2, help="number of ODE blocks L")
    p.add_argument("--channels", type=int, default=16, help="channels of the ODE state")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (Adam, one-cycle schedule)")
    p.add_argument("--limit", type=int, default=None, help="use only this many training images")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="model dtype; default float32 for explicit methods, float64 for implicit ones "
                        "(their Newton solves converge to PETSc's tight default tolerances only in float64)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (these tensors are small: 1 is usually fastest)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", action="store_true",
                   help="train once per gradient configuration (subprocesses) and print a table")
    p.add_argument("--out", default="classifier.png", help="PNG of curves and test digits ('' for none)")
    p.add_argument("--report-json", default=None, help=argparse.SUPPRESS)  # used by --compare
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args, petsc_args = p.parse_known_args(argv)  # PETSc read them from sys.argv already
    bad = [a for a in petsc_args if a.startswith("--")]  # PETSc options have one dash
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    if args.method is None:
        args.method = ADAPTIVE_DEFAULT if args.rtol is not None else FIXED_DEFAULT
    method = pnode.METHODS.get(args.method)
    if args.dtype is None:
        args.dtype = "float64" if method is not None and method.implicit else "float32"
    if args.rtol is not None and method is not None and not method.adaptive:
        p.error(f"--rtol needs an adaptive method (e.g. dopri5, bosh3), not {args.method}")
    if args.steps < 1 or args.blocks < 0 or args.epochs < 1 or args.batch_size < 1:
        p.error("--steps, --epochs and --batch-size must be positive, --blocks >= 0")
    return args, petsc_args


def main(argv=None):
    args, petsc_args = parse(sys.argv[1:] if argv is None else list(argv))
    if args.compare:
        return compare(args, petsc_args)
    print(f"digits ODE-ResNet: {describe(args)}, torch threads {args.threads}")
    t0 = time.perf_counter()
    result = train(args)
    total = time.perf_counter() - t0
    print(f"test accuracy {result['test_acc']:.4f} ({result['n_test']} test images, "
          f"{result['n_train']} training images)")
    print(f"time per epoch {result['epoch_wall_s']:.2f} s wall, {result['epoch_cpu_s']:.2f} s CPU "
          f"(median); total {total:.1f} s")
    print(f"peak memory: {result['peak_above_base_mb']:.1f} MB above the baseline after model "
          f"construction; max RSS {result['max_rss_mb']:.0f} MB")
    print(f"per training batch: {result['steps_per_block']} steps in block 0, "
          f"{result['rhs_evals']} f evaluations and {result['recomputed_steps']} recomputed steps "
          f"over all blocks, {result['checkpoint_bytes'] / 1e6:.2f} MB of trajectory checkpoints")
    if args.report_json:
        with open(args.report_json, "w") as fh:
            json.dump({k: v for k, v in result.items() if not k.startswith("_")}, fh)
    if args.out:
        plot(result, args)
    return result


if __name__ == "__main__":
    main()
