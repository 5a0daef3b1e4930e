"""Neural-SDE benchmark: pnode.sde against torchsde 0.2.6, side by side in one run.

torchsde runs in its own virtual environment (``--torchsde-python``, or
``$PNODE_TORCHSDE_PYTHON``): every measurement is made in a fresh worker process
(benchmarks/_harness.py), pnode's under this interpreter and torchsde's under that one,
the two libraries taking turns round after round so that a slow patch of a shared machine
hits both alike. The same code builds every workload for both: it is handed either
``pnode.sde`` or ``torchsde`` as ``lib`` (pnode.sde follows torchsde's API).

Rows (torch on 1 thread, float32):

- SDE-GAN training step (Kidger et al. 2021): generator = neural SDE (Stratonovich,
  general noise, LipSwish MLPs) solved by ``sdeint_adjoint`` with reversible Heun and its
  reversible adjoint, 64 unit steps; discriminator = neural CDE on (t, path), discretised
  on the same grid (plain torch, the same for both); one forward + backward of the
  Wasserstein loss on a batch of generated and real (Ornstein-Uhlenbeck) paths;
- latent-SDE training step (torchsde's examples/latent_sde.py setting): Ito posterior
  SDE with an OU prior, ``sdeint(..., logqp=True)``, Euler, dt = 0.01 over [0, 2];
- the seed paper's first claim: a diagonal-noise Stratonovich neural SDE trained through
  ``sdeint_adjoint`` with reversible Heun against midpoint (the paper: reversible Heun up
  to 1.98x faster), in each library (pnode's midpoint adjoint is its exact discrete
  adjoint, re-stepping from checkpoints; torchsde's solves the continuous adjoint SDE);
- Brownian queries at torchsde's benchmarks/brownian.py sizes (128x5, 256x128, 512x256):
  sequential (99 consecutive intervals of linspace(0, 1, 100)) and random access (99
  intervals between 100 uniform points), no step hint, as torchsde's benchmark; and a
  solver's pattern: 1000 steps of dt = 1e-3 with the step as hint, forward then backward;
- the seed paper's second claim: BrownianInterval against the earlier samplers
  (BrownianPath, BrownianTree with tol = 1e-5) on the same patterns, in each library (the
  paper: up to 10.6x).

Each library offers two kinds of tree and both are measured, like against like: split
at the query points (both libraries' default, ``halfway_tree=False``), about one normal
draw per new point, whose path depends on the order of the queries, and
order-independent (``halfway_tree=True``; torchsde needs ``tol > 0`` with it: 1e-12 here
for both), whose path is a function of the entropy alone.

Run (after ``python -m venv /tmp/tsde && /tmp/tsde/bin/pip install torch==2.13.0
torchsde==0.2.6``)::

    .venv/bin/python benchmarks/sde.py --torchsde-python /tmp/tsde/bin/python

(about 5-6 minutes on 2 cores; ``--repeats``/``--steps`` to change the counts). Prints a
markdown page and writes it to docs/benchmarks_sde.md (``--out``) with a figure
(docs/img/benchmarks_sde.png, ``--png``).
"""
import argparse
import datetime
import importlib
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from _harness import ROOT, PeakRSS, load_average, machine, publish, run_worker, serve  # benchmarks/ is on sys.path
import _plot

DOC = os.path.join(ROOT, "docs", "benchmarks_sde.md")
PNG = os.path.join(ROOT, "docs", "img", "benchmarks_sde.png")
SIZES = {"small 128x5": (128, 5), "large 256x128": (256, 128), "huge 512x256": (512, 256)}
LIBS = ("pnode", "torchsde")


def load(lib):
    """``pnode.sde`` or ``torchsde``: the module a workload is built with."""
    return importlib.import_module("pnode.sde" if lib == "pnode" else "torchsde")


# ---------------------------------------------------------------------------- SDE-GAN
class LipSwish(nn.Module):
    """0.909 * x * sigmoid(x): Lipschitz constant 1 (Kidger et al. 2021)."""

    def forward(self, x):
        return 0.909 * nn.functional.silu(x)


def mlp(n_in, n_out, width, tanh=False):
    layers = [nn.Linear(n_in, width), LipSwish(), nn.Linear(width, n_out)]
    return nn.Sequential(*layers, nn.Tanh()) if tanh else nn.Sequential(*layers)


class Generator(nn.Module):
    """Neural SDE (Stratonovich, general noise) read out linearly: paths of shape
    (batch, len(ts), 1 + data) with time as the first channel."""

    sde_type, noise_type = "stratonovich", "general"

    def __init__(self, data=1, init_noise=5, noise=3, hidden=32, width=64):
        super().__init__()
        self.init_noise, self.noise, self.hidden = init_noise, noise, hidden
        self.initial = mlp(init_noise, hidden, width)
        self.drift = mlp(1 + hidden, hidden, width, tanh=True)
        self.diffusion = mlp(1 + hidden, hidden * noise, width, tanh=True)
        self.readout = nn.Linear(hidden, data)

    def f(self, t, y):
        return self.drift(torch.cat([t.expand(y.size(0), 1), y], 1))

    def g(self, t, y):
        z = self.diffusion(torch.cat([t.expand(y.size(0), 1), y], 1))
        return z.view(y.size(0), self.hidden, self.noise)

    def forward(self, lib, ts, batch):
        y0 = self.initial(torch.randn(batch, self.init_noise))
        ys = lib.sdeint_adjoint(self, y0, ts, method="reversible_heun", dt=1.0,
                                adjoint_method="adjoint_reversible_heun")
        out = self.readout(ys.transpose(0, 1))
        return torch.cat([ts.view(1, -1, 1).expand(batch, -1, 1), out], 2)


class Discriminator(nn.Module):
    """Neural CDE dh = F(h) dX on the path X, Euler steps on its grid; a score per path."""

    def __init__(self, channels=2, hidden=32, width=64):
        super().__init__()
        self.channels, self.hidden = channels, hidden
        self.initial = mlp(channels, hidden, width)
        self.field = mlp(hidden, hidden * channels, width, tanh=True)
        self.readout = nn.Linear(hidden, 1)

    def forward(self, x):
        h = self.initial(x[:, 0])
        dx = x[:, 1:] - x[:, :-1]
        for k in range(dx.size(1)):
            f = self.field(h).view(-1, self.hidden, self.channels)
            h = h + (f @ dx[:, k].unsqueeze(-1)).squeeze(-1)
        return self.readout(h).mean()


def ou_paths(ts, batch, seed=0):
    """Real data: dX = (0.02 t - 0.1 X) dt + 0.4 dW, X(0) ~ U(-1, 1); (batch, T, 2)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, generator=g) * 2 - 1
    out = [x]
    for t0, t1 in zip(ts[:-1].tolist(), ts[1:].tolist()):
        h = t1 - t0
        x = x + (0.02 * t0 - 0.1 * x) * h + 0.4 * math.sqrt(h) * torch.randn(batch, generator=g)
        out.append(x)
    return torch.stack([ts.expand(batch, -1), torch.stack(out, 1)], 2)


def gan_setup(lib, batch=256, t_size=64):
    torch.manual_seed(0)
    ts = torch.arange(t_size, dtype=torch.float32)
    gen, disc = Generator(), Discriminator()
    real = ou_paths(ts, batch)

    def step():
        gen.zero_grad(set_to_none=True)
        disc.zero_grad(set_to_none=True)
        loss = disc(gen(lib, ts, batch)) - disc(real)
        loss.backward()
        return loss.item()
    return step


# ---------------------------------------------------------------------------- latent SDE
class LatentSDE(nn.Module):
    """torchsde's latent-SDE example's model: posterior drift from an MLP of (sin t,
    cos t, y), OU prior drift, constant diagonal diffusion (Ito)."""

    sde_type, noise_type = "ito", "diagonal"

    def __init__(self, width=100):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, width),
                                 nn.Tanh(), nn.Linear(width, 1))
        self.theta, self.mu = 1.0, 0.0
        self.log_sigma = nn.Parameter(torch.tensor([[math.log(0.5)]]))
        self.qy0_mean = nn.Parameter(torch.tensor([[0.0]]))
        self.qy0_logstd = nn.Parameter(torch.tensor([[math.log(0.1)]]))

    def f(self, t, y):
        t = t.expand(y.size(0), 1)
        return self.net(torch.cat([torch.sin(t), torch.cos(t), y], 1))

    def h(self, t, y):
        return self.theta * (self.mu - y)

    def g(self, t, y):
        return self.log_sigma.exp().expand(y.size(0), 1)


def latent_setup(lib, batch=512):
    torch.manual_seed(0)
    sde = LatentSDE()
    ts = torch.linspace(0, 2, 11)
    obs_t = torch.tensor([0.3, 0.5, 0.8, 1.2, 1.6, 1.9])
    obs = torch.tensor([0.6, 0.4, -0.2, -0.5, 0.1, 0.5]).view(-1, 1, 1)
    ts = torch.cat([ts, obs_t]).unique()
    idx = torch.searchsorted(ts, obs_t)

    def step():
        sde.zero_grad(set_to_none=True)
        eps = torch.randn(batch, 1)
        y0 = sde.qy0_mean + sde.qy0_logstd.exp() * eps
        ys, kl = lib.sdeint(sde, y0, ts, method="euler", dt=1e-2, logqp=True)
        loglik = torch.distributions.Normal(ys[idx], 0.01).log_prob(obs).sum(0).mean()
        loss = -loglik + kl.sum(0).mean()
        loss.backward()
        return loss.item()
    return step


# ---------------------------------------------------------------------------- claim 1
class DiagonalSDE(nn.Module):
    """MLP drift 16-64-64-16 (tanh), diagonal MLP diffusion 16-64-16 in (0, 0.5)."""

    sde_type, noise_type = "stratonovich", "diagonal"

    def __init__(self, dim=16, width=64):
        super().__init__()
        self.drift = nn.Sequential(nn.Linear(dim, width), nn.Tanh(), nn.Linear(width, width),
                                   nn.Tanh(), nn.Linear(width, dim))
        self.diffusion = nn.Sequential(nn.Linear(dim, width), nn.Tanh(), nn.Linear(width, dim))

    def f(self, t, y):
        return self.drift(y)

    def g(self, t, y):
        return 0.5 * torch.sigmoid(self.diffusion(y))


def method_setup(lib, method, steps=128, batch=64):
    torch.manual_seed(0)
    sde = DiagonalSDE()
    y0 = torch.randn(batch, 16)
    ts = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    adjoint_method = {"reversible_heun": "adjoint_reversible_heun"}.get(method, method)

    def step():
        sde.zero_grad(set_to_none=True)
        ys = lib.sdeint_adjoint(sde, y0, ts, method=method, dt=1.0 / steps,
                                adjoint_method=adjoint_method)
        loss = ys.pow(2).mean()
        loss.backward()
        return loss.item()
    return step


WORKLOADS = {
    "SDE-GAN step (generator + discriminator)": lambda lib: gan_setup(lib),
    "latent-SDE step (logqp, Euler)": lambda lib: latent_setup(lib),
    "neural SDE step, reversible Heun adjoint": lambda lib: method_setup(lib, "reversible_heun"),
    "neural SDE step, midpoint adjoint": lambda lib: method_setup(lib, "midpoint"),
}


def train_worker(lib, workload, steps):
    """Seconds per training step (``steps`` after a warm-up one) and peak memory (MiB)."""
    torch.set_num_threads(1)
    step = WORKLOADS[workload](load(lib))
    step()
    times = []
    with PeakRSS() as mem:
        for _ in range(steps):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    return {"times": times, "peak_mib": (mem.peak - mem.before) / 1024}


# ---------------------------------------------------------------------------- Brownian
def query_patterns():
    """name -> (list of (ta, tb), step hint or None), as torchsde's benchmarks/brownian.py
    (its float32 times) plus a fixed-step solver's forward and backward sweep."""
    seq = torch.linspace(0.0, 1.0, 100).tolist()
    rnd = torch.empty(100).uniform_(0.0, 1.0, generator=torch.Generator().manual_seed(456789)).tolist()
    n, dt = 1000, 1e-3
    grid = [(k * dt, (k + 1) * dt if k + 1 < n else 1.0) for k in range(n)]  # the hint's grid
    return {
        "sequential": ([(a, b) for a, b in zip(seq[:-1], seq[1:])], None),
        "random access": ([(min(a, b), max(a, b)) for a, b in zip(rnd[:-1], rnd[1:])], None),
        "solver sweep (dt=1e-3, hint)": (grid + grid[::-1], 1.0 / n),
    }


def make_sampler(lib, sampler, size, hint, seed):
    m = load(lib)
    if sampler == "BrownianInterval":
        return m.BrownianInterval(0.0, 1.0, size=size, dt=hint, entropy=seed)
    if sampler == "BrownianInterval (halfway_tree)":
        return m.BrownianInterval(0.0, 1.0, size=size, dt=hint, entropy=seed, halfway_tree=True,
                                  tol=1e-12)
    w0 = torch.zeros(size)
    if sampler == "stored points":
        return StoredPointsPath(size, seed)
    if sampler == "BrownianPath":
        return m.BrownianPath(t0=0.0, w0=w0)  # no entropy argument in torchsde 0.2.6
    return m.BrownianTree(t0=0.0, t1=1.0, w0=w0, tol=1e-5, entropy=seed)


class StoredPointsPath:
    """The earlier sampler the seed paper compares with (torchsde 0.1's BrownianPath): every
    queried point's value is stored; a new point is drawn from the Brownian bridge between
    its stored neighbours (or as a plain increment beyond the last). Plain torch, the same
    in both libraries' rows; memory grows with the number of points."""

    def __init__(self, size, seed):
        import bisect
        self._bisect = bisect
        self.ts, self.ws = [0.0], [torch.zeros(size)]
        self.gen = torch.Generator().manual_seed(seed)

    def _w(self, t):
        k = self._bisect.bisect_left(self.ts, t)
        if k < len(self.ts) and self.ts[k] == t:
            return self.ws[k]
        z = torch.randn(self.ws[0].shape, generator=self.gen)
        if k == len(self.ts):
            w = self.ws[-1] + math.sqrt(t - self.ts[-1]) * z
        else:
            a, b, wa, wb = self.ts[k - 1], self.ts[k], self.ws[k - 1], self.ws[k]
            w = wa + (t - a) / (b - a) * (wb - wa) + math.sqrt((t - a) * (b - t) / (b - a)) * z
        self.ts.insert(k, t)
        self.ws.insert(k, w)
        return w

    def __call__(self, ta, tb):
        return self._w(tb) - self._w(ta)


# torchsde 0.2.6's BrownianPath and BrownianTree (and pnode.sde's, which follow its API) are
# wrappers of BrownianInterval; "stored points" is the pre-0.2 algorithm. Without a step
# hint a 2000-query sweep at the large sizes would take minutes for the order-independent
# samplers: the earlier samplers are compared at the small size (all patterns) and the
# large one (torchsde's two patterns).
TORCHSDE_PATTERNS = ("sequential", "random access")
ALL = TORCHSDE_PATTERNS + ("solver sweep (dt=1e-3, hint)",)
EARLIER = [("small 128x5", ALL), ("large 256x128", TORCHSDE_PATTERNS)]
PLAN = {
    "pnode": [("BrownianInterval", [(size, ALL) for size in SIZES]),
              ("BrownianInterval (halfway_tree)", [(size, ALL) for size in SIZES])]
    + [(s, EARLIER) for s in ("BrownianPath", "BrownianTree", "stored points")],
    "torchsde": [("BrownianInterval", [(size, ALL) for size in SIZES]),
                 ("BrownianInterval (halfway_tree)", [(size, TORCHSDE_PATTERNS) for size in SIZES])]
    + [(s, EARLIER) for s in ("BrownianPath", "BrownianTree")],
}


def brownian_worker(lib, seed):
    """Seconds for one pass of each pattern of ``PLAN[lib]`` on a fresh sampler:
    {"sampler|size|pattern": s}."""
    torch.set_num_threads(1)
    out = {}
    patterns = query_patterns()
    for sampler, sizes in PLAN[lib]:
        for size_name, names in sizes:
            for pattern in names:
                queries, hint = patterns[pattern]
                bm = make_sampler(lib, sampler, SIZES[size_name], hint, seed)
                t = time.perf_counter()
                for a, b in queries:
                    bm(a, b)
                out[f"{sampler}|{size_name}|{pattern}"] = time.perf_counter() - t
    return out


# ---------------------------------------------------------------------------- parent side
def alternate(task, per_lib_kwargs, repeats, pythons):
    """Run ``task`` ``repeats`` times per library, the libraries taking turns; returns
    {lib: [result, ...]}."""
    out = {lib: [] for lib in per_lib_kwargs}
    for r in range(repeats):
        for lib, kwargs in per_lib_kwargs.items():
            t = time.perf_counter()
            out[lib].append(run_worker(__file__, dict(kwargs, lib=lib), task=task, python=pythons[lib],
                                       timeout=900))
            print(f"    round {r + 1}, {lib}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return out


summary = _plot.spread  # (median, min, max)


def measure_training(args, pythons):
    rows = {}
    for workload in WORKLOADS:
        print(f"  {workload} ...", file=sys.stderr)
        res = alternate("train", {lib: dict(workload=workload, steps=args.steps) for lib in LIBS},
                        args.repeats, pythons)
        rows[workload] = {lib: {"worker_medians": [statistics.median(r["times"]) for r in rs],
                                "all": [t for r in rs for t in r["times"]],
                                "peak_mib": statistics.median(r["peak_mib"] for r in rs)}
                          for lib, rs in res.items()}
    return rows


def measure_brownian(args, pythons):
    print("  Brownian queries ...", file=sys.stderr)
    res = alternate("brownian", {lib: dict(seed=1) for lib in LIBS},
                    args.bm_repeats, pythons)
    return {lib: {k: [r[k] for r in rs] for k in rs[0]} for lib, rs in res.items()}


def torchsde_python(given):
    """An interpreter with torchsde: ``--torchsde-python``, ``$PNODE_TORCHSDE_PYTHON``,
    else /tmp/tsde/bin/python when it exists; exits with instructions otherwise."""
    for cand in (given, os.environ.get("PNODE_TORCHSDE_PYTHON"), "/tmp/tsde/bin/python"):
        if cand and shutil.which(cand):
            code = "import torchsde, torch; print(torchsde.__version__, torch.__version__)"
            probe = subprocess.run([cand, "-c", code],
                                   capture_output=True, text=True)
            if probe.returncode == 0:
                return cand, probe.stdout.split()
            if cand == given:
                sys.exit(f"--torchsde-python {given}: cannot import torchsde:\n{probe.stderr[-1000:]}")
    sys.exit("benchmarks/sde.py needs an interpreter with torchsde: python -m venv /tmp/tsde && "
             "/tmp/tsde/bin/pip install torch==2.13.0 torchsde==0.2.6, then pass "
             "--torchsde-python /tmp/tsde/bin/python (or set PNODE_TORCHSDE_PYTHON)")


# ---------------------------------------------------------------------------- report
def fmt_ms(s):
    med, lo, hi = summary(s)
    return f"{1e3 * med:.1f} [{1e3 * lo:.1f}, {1e3 * hi:.1f}]"


def report(args, train, bm, load_avg, tsde_versions, png_rel):
    lines = [
        "# Neural-SDE benchmark: pnode.sde vs torchsde",
        "",
        f"Generated by `python benchmarks/sde.py --repeats {args.repeats} --steps {args.steps} "
        f"--bm-repeats {args.bm_repeats}`{' (--quick)' if args.quick else ''} on "
        f"{machine(('torch', 'pnode'), threads='1 thread')}; "
        f"torchsde {tsde_versions[0]} with torch {tsde_versions[1]} in its own venv; "
        f"{datetime.date.today().isoformat()}. Load average (1 min) {load_avg[0]:.1f} at the "
        f"start, {load_avg[1]:.1f} at the end: above 2 the 2-core machine was shared and "
        "absolute times are inflated.",
        "",
        "Every figure comes from fresh worker processes, pnode's and torchsde's taking turns "
        f"({args.repeats} rounds for the training steps, {args.bm_repeats} for the Brownian "
        "queries); torch on 1 thread, float32. Cells: median [min, max] over the workers' "
        "medians (training) or over the rounds (queries).",
        "",
        f"![pnode vs torchsde]({png_rel})",
        "",
        f"## Training steps (forward + backward; {args.steps} timed steps per worker after a "
        "warm-up)",
        "",
        "| workload | pnode (ms) | torchsde (ms) | torchsde / pnode | peak MiB pnode / torchsde |",
        "|---|---:|---:|---:|---:|",
    ]
    for w, row in train.items():
        p, t = row["pnode"], row["torchsde"]
        ratio = statistics.median(t["worker_medians"]) / statistics.median(p["worker_medians"])
        lines.append(f"| {w} | {fmt_ms(p['worker_medians'])} | {fmt_ms(t['worker_medians'])} | "
                     f"{ratio:.2f}x | {p['peak_mib']:.0f} / {t['peak_mib']:.0f} |")
    rh, mp = "neural SDE step, reversible Heun adjoint", "neural SDE step, midpoint adjoint"
    speedup = {lib: statistics.median(train[mp][lib]["worker_medians"])
               / statistics.median(train[rh][lib]["worker_medians"]) for lib in LIBS}
    lines += ["", "Claim 1 (reversible Heun up to 1.98x faster than midpoint, adjoint training "
              "step, same SDE and step): midpoint / reversible Heun time = "
              + ", ".join(f"{lib} {x:.2f}x" for lib, x in speedup.items()) + ".", ""]
    lines += [
        "## Brownian queries",
        "",
        "Seconds for one pass over the pattern on a fresh sampler (sequential and random "
        "access: 99 queries, no step hint, torchsde's benchmarks/brownian.py; solver sweep: "
        "2000 queries on the hint's grid).",
        "",
        "Two kinds of tree: split at the queries (both libraries' default, "
        "`halfway_tree=False`: about one draw per new point, the path depends on the order "
        "of the queries) and order-independent (`halfway_tree=True`, with `tol=1e-12`: "
        "the path is a function of the entropy alone). Ratios > 1: pnode faster.",
        "",
        "| size | pattern | pnode default (s) | torchsde default (s) | ratio | "
        "pnode halfway_tree (s) | torchsde halfway_tree (s) | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key in bm["pnode"]:
        sampler, size, pattern = key.split("|")
        if sampler != "BrownianInterval":
            continue
        halfway = f"BrownianInterval (halfway_tree)|{size}|{pattern}"
        pairs = [(bm["pnode"][key], bm["torchsde"].get(key)),
                 (bm["pnode"].get(halfway), bm["torchsde"].get(halfway))]
        cells = []
        for pv, tv in pairs:
            cells += [_fmt_s(pv) if pv else "-", _fmt_s(tv) if tv else "-",
                      f"{statistics.median(tv) / statistics.median(pv):.2f}x" if pv and tv else "-"]
        lines.append(f"| {size} | {pattern} | " + " | ".join(cells) + " |")
    lines += ["", "Claim 2 (BrownianInterval up to 10.6x faster than the earlier samplers): "
              "time of another sampler / BrownianInterval time, same library, size and "
              "pattern. In torchsde 0.2.6 (and pnode.sde, which follows its API) BrownianPath "
              "and BrownianTree are wrappers of BrownianInterval; the earlier algorithm is "
              "the stored-points path (torchsde 0.1's BrownianPath: every point kept, a new "
              "one drawn from the bridge between its neighbours), measured in plain torch "
              "against pnode's BrownianInterval.", "",
              "| library | size | pattern | Path / Interval | Tree / Interval | stored points / Interval |",
              "|---|---|---|---:|---:|---:|"]
    for lib in LIBS:
        for key, v in bm[lib].items():
            sampler, size, pattern = key.split("|")
            if sampler != "BrownianInterval":
                continue
            base = statistics.median(v)
            cells = []
            for other in ("BrownianPath", "BrownianTree", "stored points"):
                o = bm[lib].get(f"{other}|{size}|{pattern}")
                cells.append("-" if o is None else f"{statistics.median(o) / base:.2f}x")
            if cells != ["-"] * 3:
                lines.append(f"| {lib} | {size} | {pattern} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Notes: an order-independent tree resolves a new query point off its grid by "
        "bisection to float resolution (one normal draw per level, 25-50 levels): the "
        "price of a path that is a function of the entropy alone. pnode's solvers do not "
        "pay it on fixed steps: a hint-less BrownianInterval handed to pnode's sdeint "
        "adopts the solver's grid. Large draws (2048 numbers or more: the 256x128 and "
        "512x256 rows) come from torch's generator keyed through its whole mt19937 state "
        "(pnode.sde.normals), small ones from numpy's Philox.",
        "",
    ]
    return "\n".join(lines)


def _fmt_s(v):
    med, lo, hi = summary(v)
    return f"{med:.4f} [{lo:.4f}, {hi:.4f}]"


def plot(train, bm, path):
    """Two panels: training steps; BrownianInterval queries (both kinds of tree)."""
    colors = {"pnode": "tab:blue", "torchsde": "tab:orange", "torchsde halfway_tree": "tab:gray"}
    fig, axes = _plot.figure(1, 2, size=(13, 4.8), gridspec_kw={"width_ratios": [1, 2]})
    ax = axes[0]
    names = list(train)
    series = [(lib, [tuple(1e3 * v for v in summary(train[w][lib]["worker_medians"])) for w in names], colors[lib])
              for lib in LIBS]
    _plot.hbars(ax, [n.replace(" (", "\n(", 1).replace("step, ", "step,\n") for n in names], series,
                "ms per training step (median, min-max)")
    ax.set_title("training steps")
    ax.legend(fontsize=8)
    ax = axes[1]
    keys = [k for k in bm["pnode"] if k.startswith("BrownianInterval|")]
    series = [("pnode default", "pnode", "BrownianInterval|", "tab:blue"),
              ("torchsde default", "torchsde", "BrownianInterval|", "tab:orange"),
              ("pnode halfway_tree", "pnode", "BrownianInterval (halfway_tree)|", "tab:cyan"),
              ("torchsde halfway_tree", "torchsde", "BrownianInterval (halfway_tree)|", "tab:gray")]
    for i, (label, lib, prefix, color) in enumerate(series):
        ks = [k.replace("BrownianInterval|", prefix) for k in keys]
        meds = [statistics.median(bm[lib][k]) if k in bm[lib] else float("nan") for k in ks]
        ax.bar([j + 0.2 * i for j in range(len(keys))], meds, 0.2, color=color, label=label)
    ax.set_xticks([k + 0.3 for k in range(len(keys))])
    short = {"sequential": "sequential", "random access": "random", "solver sweep (dt=1e-3, hint)": "solver sweep"}
    ax.set_xticklabels([f"{k.split('|')[1].split()[1]}\n{short[k.split('|')[2]]}" for k in keys], fontsize=8)
    ax.set_yscale("log")
    _plot.plain_log_ticks(ax.yaxis)
    ax.set_ylabel("seconds per pass (median)")
    ax.set_title("BrownianInterval queries (torchsde's benchmark sizes)")
    ax.legend(fontsize=8)
    _plot.save(fig, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--torchsde-python", help="an interpreter with torchsde 0.2.6 (its own venv)")
    p.add_argument("--repeats", type=int, default=3, help="worker rounds per training workload and library")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per worker")
    p.add_argument("--bm-repeats", type=int, default=3, help="worker rounds for the Brownian queries")
    p.add_argument("--quick", action="store_true",
                   help="one round, two steps (a check that it runs; benchmarks/run_all.py --quick)")
    p.add_argument("--out", default=DOC, help="markdown output ('' for none)")
    p.add_argument("--png", default=PNG, help="figure output ('' for none)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return serve(args.worker, {"train": train_worker, "brownian": brownian_worker})
    sys.argv = sys.argv[:1]  # pnode hands sys.argv to PETSc on import: ours are not its options
    if args.quick:
        args.repeats, args.steps, args.bm_repeats = 1, 2, 1
    tsde, versions = torchsde_python(args.torchsde_python)
    pythons = {"pnode": sys.executable, "torchsde": tsde}
    load_start = load_average()
    t0 = time.perf_counter()
    print("training steps (one worker per library and round) ...", file=sys.stderr)
    train = measure_training(args, pythons)
    bm = measure_brownian(args, pythons)
    load_end = load_average()
    png_rel = os.path.relpath(args.png, os.path.dirname(os.path.abspath(args.out or DOC))) if args.png else ""
    if args.png:
        plot(train, bm, args.png)
    publish(report(args, train, bm, (load_start, load_end), versions, png_rel), args.out)
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
