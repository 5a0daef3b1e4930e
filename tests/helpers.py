"""Shared test helpers: vector fields, error norms, resource counters, subprocess runners.

Importable as ``helpers`` from every test (conftest.py puts tests/ on sys.path) and from
the scripts the tests run as subprocesses (``subprocess_env`` puts tests/ on their
PYTHONPATH; a script started as ``python tests/x.py`` also has tests/ as sys.path[0]).
"""
import gc
import os
import resource
import subprocess
import sys
import threading
import time

import torch
from torch import nn

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
EXAMPLES = os.path.join(ROOT, "examples")
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


T01 = torch.tensor([0.0, 1.0], dtype=torch.float64)


# ---------------------------------------------------------------- vector fields
def decay(t, y):
    """dy/dt = -y."""
    return -y


class TanhField(nn.Module):
    """dy/dt = tanh(W y + b), W 3x3 float64 from torch's global generator."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3).double()

    def forward(self, t, y):
        return torch.tanh(self.lin(y))


SDE_DIM, SDE_BATCH = 3, 5
NOISE_CHANNELS = {"diagonal": SDE_DIM, "scalar": 1, "additive": 2, "general": 2}


class NeuralSDE(nn.Module):
    """Small SDE with state- and time-dependent drift and diffusion, every noise type."""

    def __init__(self, noise_type, sde_type="stratonovich", d=SDE_DIM, m=None, hidden=8):
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type
        self.d = d
        self.m = NOISE_CHANNELS[noise_type] if m is None else m
        self.f_net = nn.Sequential(nn.Linear(d + 1, hidden), nn.Tanh(), nn.Linear(hidden, d))
        gout = {"diagonal": d, "scalar": d, "general": d * self.m}.get(noise_type, 0)
        self.g_net = nn.Linear(d + 1, gout) if gout else None
        self.g_const = nn.Parameter(0.3 * torch.randn(d, self.m))

    def f(self, t, y):
        ty = torch.cat([t.expand(y.shape[0], 1), y], dim=1)
        return self.f_net(ty)

    def g(self, t, y):
        b = y.shape[0]
        if self.noise_type == "additive":
            return (self.g_const * (1 + t)).expand(b, self.d, self.m)
        ty = torch.cat([t.expand(b, 1), y], dim=1)
        out = 0.4 * torch.tanh(self.g_net(ty))
        if self.noise_type == "diagonal":
            return out
        if self.noise_type == "scalar":
            return out.unsqueeze(-1)
        return out.view(b, self.d, self.m)


# ---------------------------------------------------------------- error norms, gradients
def rel_err(a, b):
    """max |a-b| / max |b| (scalar float)."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def rel_norm(a, b):
    """||a-b||_2 / ||b||_2 (scalar float)."""
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def grads(loss, inputs, allow_unused=False):
    """d loss / d inputs (a tuple; None for unused inputs when ``allow_unused``)."""
    return torch.autograd.grad(loss, inputs, allow_unused=allow_unused)


def flat(tensors):
    """The tensors flattened and concatenated into one vector."""
    return torch.cat([x.reshape(-1) for x in tensors])


def flat_grads(module):
    """Every parameter's ``.grad`` of ``module``, flattened into one vector."""
    return flat(p.grad for p in module.parameters())


# ---------------------------------------------------------------- resource counters
def live_petsc_objects():
    """The number of petsc4py objects alive (after a garbage collection)."""
    from petsc4py import PETSc
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, PETSc.Object))


def rss_mib():
    """This process's resident set size now, in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_growth(fn, interval=0.0005):
    """Peak RSS while ``fn()`` runs, above the RSS just before it, in MiB (sampled by a
    thread, so an earlier peak, e.g. at import time, that ru_maxrss would remember does not
    hide it)."""
    gc.collect()
    before = rss_mib()
    peak, stop = [before], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(interval)
    th = threading.Thread(target=sample)
    th.start()
    try:
        fn()
    finally:
        stop.set()
        th.join()
    return peak[0] - before


# ---------------------------------------------------------------- subprocess runners
def subprocess_env(**extra):
    """os.environ for a child: one OpenMP thread, the Agg matplotlib backend, tests/ first
    on PYTHONPATH (so ``import helpers`` and ``import reference`` work there), plus ``extra``."""
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg",
                PYTHONPATH=TESTS + (os.pathsep + path if path else ""), **extra)


def run_python(*args, ranks=None, timeout=120, cwd=None, env=None):
    """``python ARGS`` (under ``mpiexec -n RANKS`` when ranks is given) as a subprocess;
    returns the CompletedProcess with text stdout and stderr. ``env``: the child's whole
    environment (default :func:`subprocess_env`)."""
    cmd = [sys.executable, *map(str, args)]
    if ranks is not None:
        cmd = [MPIEXEC, "-n", str(ranks), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env() if env is None else env, cwd=cwd)


def run_job(script, *args, ranks, limit):
    """tests/SCRIPT under ``mpiexec -n RANKS`` in its own process group, killed (all of it)
    after ``limit`` seconds; returns ``(returncode or None if it had to be killed, stdout,
    stderr, seconds)``. For tests that a job ends by itself."""
    cmd = [MPIEXEC, "-n", str(ranks), sys.executable, os.path.join(TESTS, script), *map(str, args)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env(), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        code = None
    return code, out, err, time.monotonic() - start


def run_worker(script, *args, ranks, timeout=240):
    """tests/SCRIPT under ``mpiexec -n RANKS``; returns the CompletedProcess."""
    return run_python(os.path.join(TESTS, script), *args, ranks=ranks, timeout=timeout)


def run_example(name, *args, ranks=None, timeout=120, cwd=ROOT):
    """examples/NAME as a user would start it (PETSc sees its own command line); asserts
    that it exits with 0 and returns the CompletedProcess."""
    proc = run_python(os.path.join(EXAMPLES, name), *args, ranks=ranks, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc
