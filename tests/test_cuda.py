"""One code path for CPU and GPU tensors: a CUDA model gives its CPU twin's outputs and
gradients to round-off.

Every case builds a model and its inputs on the CPU in float64 from a seed, moves a copy
to ``DEVICE`` in the case's dtype and another to the CPU in the same dtype, runs the same
solve + backward on both, and compares outputs and every gradient (inputs, parameters,
output times where the case asks for them), both mapped to CPU float64. The PETSc side
is float64 on the host either way (pnode/bridge.py copies a CUDA tensor into a host Vec),
so the two runs differ only where torch computes: kernels and reduction orders on the
GPU. Cases: explicit (adaptive dopri5 with d loss/d t, fixed rk4), implicit (Crank-
Nicolson with the default per-sample block Jacobians: batched LU on the device), IMEX
(kencarp4 with func_explicit), checkpointed (binomial revolve; stored graphs), ODEBlock,
CNF (exact and Hutchinson trace), SDE (sdeint, sdeint_adjoint); float32 and float64;
MPI with two ranks on one device (tests/workers/cuda_mpi_worker.py).

Tolerances (max |dev - cpu| / max |cpu| over each tensor), ``TOL[dtype][kind]``:
- float64, fixed steps: 1e-11 (a few hundred float64 operations per output, each within
  ~1e-16 of the CPU's);
- float64, adaptive or Newton-Krylov: 1e-9 (the step-size controller and the Newton /
  GMRES stopping tests see the same round-off differences and turn them into step sizes
  and iterates that differ at the level of round-off times the tests' slopes);
- float32, fixed steps: 1e-4 (float32 round-off, ~6e-8 per operation, accumulated over
  tens of steps and amplified by the backward pass);
- float32, adaptive: 2e-3 (the controller's error estimate, ~rtol, changes relatively by
  float32 round-off / rtol ~ 1e-2, so the step sizes do too; the solutions then differ
  by a fraction of the local tolerance).

The device comes from ``PNODE_TEST_DEVICE`` (default ``cuda``): skipped, with the reason
shown, when torch has no CUDA device; ``PNODE_TEST_DEVICE=cpu`` runs the identical
comparisons CPU against CPU (they must then agree exactly, so the test's own logic is
exercised on a machine without a GPU).
"""
import os

import numpy as np
import pytest
import torch
from torch import nn

import pnode
from pnode.models import CNF
from helpers import NeuralSDE, run_worker

DEVICE = torch.device(os.environ.get("PNODE_TEST_DEVICE", "cuda"))
CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(
    DEVICE.type == "cuda" and not torch.cuda.is_available(),
    reason="torch has no CUDA device (PNODE_TEST_DEVICE=cpu runs the same comparisons CPU vs CPU)")

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float64: {"fixed": 1e-11, "adaptive": 1e-9},
       torch.float32: {"fixed": 1e-4, "adaptive": 2e-3}}


# ---------------------------------------------------------------- comparison harness
def moved(x, device, dtype):
    """``x`` (a tensor, module or tuple of them) on ``device`` in ``dtype``, a fresh copy."""
    if isinstance(x, (tuple, list)):
        return type(x)(moved(m, device, dtype) for m in x)
    if isinstance(x, nn.Module):
        import copy
        return copy.deepcopy(x).to(device=device, dtype=dtype)
    return x.detach().to(device=device, dtype=dtype).clone()


def compare(run, dtype, kind, label=""):
    """``run(device, dtype) -> dict name -> tensor`` on the CPU and on DEVICE; every
    tensor must agree within ``TOL[dtype][kind]`` and the DEVICE ones live on DEVICE."""
    ref = run(CPU, dtype)
    dev = run(DEVICE, dtype)
    assert ref.keys() == dev.keys()
    tol = TOL[dtype][kind]
    for name, a in dev.items():
        b = ref[name]
        if isinstance(a, torch.Tensor):
            assert a.device.type == DEVICE.type, f"{label}{name} is on {a.device}, not {DEVICE}"
            a, b = a.detach().cpu().double(), b.detach().cpu().double()
            assert a.shape == b.shape, (name, a.shape, b.shape)
            assert torch.isfinite(b).all() and b.abs().max() > 0, f"{label}{name}: degenerate reference"
            err = float((a - b).abs().max() / b.abs().max())
            assert err <= tol, f"{label}{name}: {DEVICE} differs from cpu by {err:.3g} (relative), tol {tol:g}"
        else:  # counts (steps): equal, except where adaptive float32 may move a step
            if not (kind == "adaptive" and dtype == torch.float32):
                assert a == b, f"{label}{name}: {a} on {DEVICE} vs {b} on cpu"


def gradients(loss, named):
    """``{name: d loss / d tensor}`` for a dict of leaf tensors."""
    gs = torch.autograd.grad(loss, list(named.values()))
    return {f"grad_{k}": g for k, g in zip(named, gs)}


def mlp(dim=3, hidden=16, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim)).double()


class Stiff(nn.Module):
    """dy/dt = -k y + tanh(W y + b) + 0.1 sin(t): stiff diagonal part (k up to 30) plus a
    small MLP acting on each sample alone (block-diagonal Jacobian)."""

    def __init__(self, dim=3, seed=0):
        super().__init__()
        self.net = mlp(dim, 8, seed)
        self.register_buffer("k", torch.linspace(1.0, 30.0, dim, dtype=torch.float64))

    def forward(self, t, y):
        return -self.k * y + torch.tanh(self.net(y)) + 0.1 * torch.sin(t)


def ode_case(func, y0, t, t_grad=False, per_model=None, **solver_kwargs):
    """A run for :func:`compare`: solve ``func`` from ``y0`` at ``t``, loss = weighted sum
    of all outputs, gradients w.r.t. y0, every parameter (and t). ``per_model(f)``: solver
    keywords that refer to the moved copy ``f`` of ``func``."""
    w = torch.randn((len(t),) + tuple(y0.shape), generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def run(device, dtype):
        f = moved(func, device, dtype)
        y = moved(y0, device, dtype).requires_grad_(True)
        tt = moved(t, device, dtype).requires_grad_(t_grad)
        kwargs = dict(solver_kwargs, **(per_model(f) if per_model else {}))
        with pnode.ODESolver(f, **kwargs) as solver:
            ys = solver(y, tt)
            named = {"y0": y, **{n: p for n, p in f.named_parameters()}}
            if t_grad:
                named["t"] = tt
            out = {"ys": ys, **gradients((moved(w, device, dtype) * ys).sum(), named)}
            out["steps"] = solver.stats["steps"]
        return out
    return run


Y0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
T3 = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)


# ---------------------------------------------------------------- the cases
class TimeField(nn.Module):
    """An MLP field with explicit time dependence (so d loss / d t is non-zero)."""

    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, t, y):
        return self.net(y) - 0.3 * y * torch.cos(t)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_explicit_adaptive_with_time_gradient(dtype):
    # t.requires_grad: d loss / d t combines the loss gradient (on the model's device)
    # with the adjoint state (from a host Vec)
    compare(ode_case(TimeField(), Y0, T3, t_grad=True, method="dopri5", rtol=1e-6, atol=1e-8),
            dtype, "adaptive")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_explicit_fixed_steps(dtype):
    compare(ode_case(TimeField(), Y0, T3, method="rk4", options={"step_size": 0.05}), dtype, "fixed")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_implicit_block_jacobians(dtype):
    # the default PC: per-sample 3x3 blocks from one batched backward, batched LU on the device
    compare(ode_case(Stiff(), Y0, T3, method="crank_nicolson", options={"step_size": 0.1}),
            dtype, "adaptive")


class Split(nn.Module):
    """An IMEX split: ``forward`` is the stiff part, ``explicit`` the non-stiff one."""

    def __init__(self):
        super().__init__()
        self.stiff = Stiff(seed=2)
        self.explicit = mlp(seed=3)

    def forward(self, t, y):
        return self.stiff(t, y)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_imex(dtype):
    compare(ode_case(Split(), Y0, T3, method="kencarp4", options={"step_size": 0.1},
                     per_model=lambda f: {"options": {"step_size": 0.1, "func_explicit": lambda t, y: f.explicit(y)},
                                          "adjoint_params": list(f.parameters())}),
            dtype, "adaptive")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("checkpoint", ["binomial", "graphs"])
def test_checkpointed(checkpoint, dtype):
    cp = pnode.Checkpoint("binomial", max_ram=2) if checkpoint == "binomial" else pnode.Checkpoint("graphs")
    compare(ode_case(TimeField(), Y0, T3, method="rk4", options={"step_size": 0.05}, checkpoint=cp),
            dtype, "fixed")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_odeblock_network(dtype):
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def run(device, dtype):
        torch.manual_seed(4)  # the same weights for both (a block's solver cannot be deep-copied)
        block = pnode.ODEBlock(TimeField(), t1=1.0, method="bosh3", rtol=1e-6, atol=1e-8)
        m = nn.Sequential(nn.Linear(2, 3), block, nn.Linear(3, 1)).double().to(device=device, dtype=dtype)
        xx = moved(x, device, dtype).requires_grad_(True)
        out = m(xx)
        res = {"out": out, **gradients(out.pow(2).sum(), {"x": xx, **dict(m.named_parameters())})}
        block.solver.close()
        return res
    compare(run, dtype, "adaptive")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_cnf(trace, dtype):
    torch.manual_seed(7)
    cnf = CNF(2, hidden=(16, 16), trace=trace, method="rk4", options={"step_size": 0.125},
              kinetic_weight=0.1, jacobian_weight=0.1).double()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)

    def run(device, dtype):
        m = moved(cnf, device, dtype)  # the copy draws the same Hutchinson noise (CPU generator)
        xx = moved(x, device, dtype).requires_grad_(True)
        logp, reg = m.log_prob(xx, return_reg=True)
        out = {"logp": logp, "reg": reg,
               **gradients((reg - logp).mean(), {"x": xx, **dict(m.named_parameters())})}
        with torch.no_grad():
            out["sample"] = m.sample(3, z=moved(x[:3], device, dtype))
        m.close()
        return out
    compare(run, dtype, "fixed")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("adjoint", [False, True], ids=["sdeint", "sdeint_adjoint"])
def test_sde(adjoint, dtype):
    torch.manual_seed(9)
    sde = NeuralSDE("diagonal").double()
    y0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    ts = torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64)  # exact in float32 too
    solve = pnode.sdeint_adjoint if adjoint else pnode.sdeint

    def run(device, dtype):
        m = moved(sde, device, dtype)
        y = moved(y0, device, dtype).requires_grad_(True)
        # the path comes from numpy on the host (entropy fixed): the same on every device
        bm = pnode.BrownianInterval(0.0, 0.5, size=(5, 3), dtype=dtype, device=device, entropy=11)
        ys = solve(m, y, moved(ts, device, dtype), bm=bm, method="reversible_heun", dt=0.0625)
        used = {n: p for n, p in m.named_parameters() if n != "g_const"}  # g_const: additive noise only
        return {"ys": ys, **gradients(ys.pow(2).sum(), {"y0": y, **used})}
    compare(run, dtype, "fixed")


def test_two_ranks_on_one_device(tmp_path):
    """Data parallel on 2 ranks sharing the device: the worker solves on the CPU and on
    the device (explicit with d loss/d t, implicit with block Jacobians; both dtypes)."""
    proc = run_worker("workers/cuda_mpi_worker.py", tmp_path, DEVICE.type, ranks=2, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert len(found) == 8, found  # 2 cases x 2 dtypes x {cpu, device}
    for case in ("dopri5", "crank_nicolson"):
        for dtype in ("float32", "float64"):
            ref = dict(np.load(tmp_path / f"{case}-{dtype}-cpu.npz"))
            dev = dict(np.load(tmp_path / f"{case}-{dtype}-device.npz"))
            kind = "fixed" if case != "dopri5" and dtype == "float64" else "adaptive"
            tol = TOL[getattr(torch, dtype)][kind]
            for key, b in ref.items():
                a = dev[key]
                assert np.abs(a - b).max() <= tol * max(np.abs(b).max(), 1e-300), (case, dtype, key)
