"""Checkpointing: every strategy gives the store-all gradient; budgets are respected.

Reference: the same solve with ``Checkpoint("all")``; tolerance 1e-12 relative (the
schedules only change what is recomputed, not the arithmetic of a step).
"""
import math
import os

import pytest
import torch
from torch import nn

import pnode
from pnode.checkpoint import revolve_optimum
from helpers import decay, flat, rel_err, run_python, subprocess_env

T = torch.tensor([0.0, 0.3, 1.0, 2.0], dtype=torch.float64)


def make_func(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)

    class F(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, y):
            return self.net(y) - 0.5 * y
    return F()


def gradient(func, checkpoint, method, t=T, **kw):
    y0 = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(len(t), 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    params = list(func.parameters())
    with pnode.ODESolver(func, method=method, checkpoint=checkpoint, **kw) as s:
        y = y0.requires_grad_(True)
        g = torch.autograd.grad((w * s(y, t)).sum(), [y] + params)
        return flat(g), dict(s.stats)


CASES = {
    "rk4": dict(method="rk4", options={"step_size": 0.05}),
    "rk4-off-grid": dict(method="rk4", options={"step_size": 0.07}),
    "dopri5": dict(method="dopri5", rtol=1e-8, atol=1e-10),
    "crank_nicolson": dict(method="crank_nicolson", options={"step_size": 0.05, "jacobian": "dense"}),
    "kencarp4": dict(method="kencarp4", rtol=1e-7, atol=1e-9, options={"jacobian": "dense"}),
    "kencarp4-fixed": dict(method="kencarp4", options={"step_size": 0.1, "jacobian": "dense"}),
}
STRATEGIES = {
    "auto": pnode.Checkpoint(),  # the default: graphs within 512 MiB for explicit methods, else "all"
    "solution": pnode.Checkpoint("solution"),
    "binomial-3": pnode.Checkpoint("binomial", max_ram=3),
    "binomial-1": pnode.Checkpoint("binomial", max_ram=1),
    "binomial-bytes": pnode.Checkpoint("binomial", max_memory="2KB"),
    "graphs": pnode.Checkpoint("graphs"),
    "graphs-budget": pnode.Checkpoint("graphs", max_memory="3KB"),
}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", CASES)
def test_every_strategy_gives_the_store_all_gradient(case, strategy):
    func = make_func()
    ref, st_all = gradient(func, pnode.Checkpoint("all"), **CASES[case])
    g, st = gradient(func, STRATEGIES[strategy], **CASES[case])
    assert rel_err(g, ref) <= 1e-12
    assert st["steps"] == st_all["steps"] == st["adjoint_steps"]
    ck = STRATEGIES[strategy]
    if ck.max_ram is not None:
        assert st["checkpoints"] <= ck.max_ram
        assert st["recomputed_steps"] > 0


@pytest.mark.parametrize("steps, slots, optimum", [(20, 3, 26), (50, 3, 131), (40, 5, None)])
def test_fixed_steps_recompute_at_most_revolves_optimum(steps, slots, optimum):
    if optimum is not None:
        assert revolve_optimum(steps, slots) == optimum
    func = make_func(3)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    g, st = gradient(func, pnode.Checkpoint("binomial", max_ram=slots), "rk4", t=t,
                     options={"step_size": 1.0 / steps})
    ref, _ = gradient(func, pnode.Checkpoint("all"), "rk4", t=t, options={"step_size": 1.0 / steps})
    assert st["steps"] == steps
    assert 0 < st["recomputed_steps"] <= revolve_optimum(steps, slots)
    assert st["checkpoints"] == slots
    assert rel_err(g, ref) <= 1e-12


def test_adaptive_dopri5_holds_at_most_8_checkpoints():
    func = make_func(4)
    t = torch.linspace(0, 20, 6, dtype=torch.float64)
    ref, st_all = gradient(func, pnode.Checkpoint("all"), "dopri5", t=t, rtol=1e-9, atol=1e-11)
    g, st = gradient(func, pnode.Checkpoint("binomial", max_ram=8), "dopri5", t=t, rtol=1e-9, atol=1e-11)
    assert st_all["steps"] > 50  # enough steps for the budget to bind
    assert st["checkpoints"] <= 8 and st["steps"] == st_all["steps"]
    assert st["checkpoint_bytes"] <= 8 * 6 * 8
    assert rel_err(g, ref) <= 1e-12


def test_max_memory_picks_the_documented_k():
    func = make_func(5)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    # fixed RK4 (PETSc revolve): a checkpoint is state + 4 stages = 5 * 6 doubles = 240 B
    ck = pnode.Checkpoint("binomial", max_memory=1000)
    assert ck.ram_slots(6, 4) == 4
    _, st = gradient(func, ck, "rk4", t=t, options={"step_size": 0.05})
    assert st["checkpoints"] == 4 and st["checkpoint_bytes"] == 4 * 240
    assert pnode.Checkpoint("binomial", max_memory="1KiB").ram_slots(6, 4) == 4
    assert pnode.Checkpoint("binomial", max_memory="200MB").ram_slots(10**6, 0) == 25
    assert pnode.Checkpoint("binomial", max_memory="200MiB").ram_slots(2**20, 0) == 25
    # adaptive (pnode's own states-only checkpoints): 6 doubles = 48 B each
    _, st = gradient(func, pnode.Checkpoint("binomial", max_memory=100), "dopri5", t=t, rtol=1e-10)
    assert st["checkpoints"] <= 2
    with pytest.raises(ValueError, match="holds no checkpoint"):
        gradient(func, pnode.Checkpoint("binomial", max_memory=10), "rk4", t=t, options={"step_size": 0.1})


def test_disk_level_gives_same_gradient_and_cleans_up(tmp_path):
    func = make_func(6)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ck = pnode.Checkpoint("binomial", max_ram=3, max_disk=4, disk_dir=str(tmp_path))
    ref, _ = gradient(func, pnode.Checkpoint("all"), "rk4", t=t, options={"step_size": 0.025})
    g, st = gradient(func, ck, "rk4", t=t, options={"step_size": 0.025})
    assert rel_err(g, ref) <= 1e-12 and st["checkpoints"] <= 3
    assert os.listdir(tmp_path) == []


def test_disk_level_cleans_up_when_the_solve_fails(tmp_path):
    def bad(t, y):
        if t > 0.5:
            raise RuntimeError("diverged on purpose")
        return -y
    ck = pnode.Checkpoint("binomial", max_ram=2, max_disk=3, disk_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="on purpose"):
        pnode.odeint(bad, torch.ones(3, dtype=torch.float64, requires_grad=True), torch.tensor([0.0, 1.0]),
                     method="rk4", options={"step_size": 0.05}, checkpoint=ck)
    assert os.listdir(tmp_path) == []


def test_disk_level_needs_fixed_steps():
    ck = pnode.Checkpoint("binomial", max_ram=2, max_disk=3)
    with pytest.raises(ValueError, match="max_disk needs fixed steps"):
        pnode.odeint(decay, torch.ones(3, dtype=torch.float64, requires_grad=True),
                     torch.tensor([0.0, 1.0]), method="dopri5", checkpoint=ck)


def test_checkpoint_options_from_the_command_line_are_honoured():
    """-ts_trajectory_* still works: PETSc's revolve with K=3 over 20 fixed steps.
    (PETSc reads trajectory options without the solver prefix.)"""
    from petsc4py import PETSc
    db = PETSc.Options()
    db.setValue("-ts_trajectory_max_cps_ram", "3")
    try:
        func = make_func(7)
        t = torch.tensor([0.0, 1.0], dtype=torch.float64)
        with pnode.ODESolver(func, method="rk4", options={"step_size": 0.05}, prefix="cli_") as s:
            y = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
            s(y, t).sum().backward()
            assert s.stats["recomputed_steps"] == revolve_optimum(20, 3) == 26  # revolve is linked and used
    finally:
        db.delValue("-ts_trajectory_max_cps_ram")


def test_two_revolve_solvers_interleaved():
    """PETSc's revolve schedule is process-global: forward A, forward B, backward B,
    backward A must still give A its own gradient (A re-solves before its adjoint)."""
    fa, fb = make_func(8), make_func(9)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ck = pnode.Checkpoint("binomial", max_ram=3)
    refs = [gradient(f, pnode.Checkpoint("all"), "rk4", t=t, options={"step_size": 0.05})[0] for f in (fa, fb)]
    y0 = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(len(t), 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with pnode.ODESolver(fa, method="rk4", options={"step_size": 0.05}, checkpoint=ck) as sa, \
         pnode.ODESolver(fb, method="rk4", options={"step_size": 0.05}, checkpoint=ck) as sb:
        ya, yb = y0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
        la, lb = (w * sa(ya, t)).sum(), (w * sb(yb, t)).sum()
        gb = torch.autograd.grad(lb, [yb, *fb.parameters()])
        ga = torch.autograd.grad(la, [ya, *fa.parameters()])
        assert sa.stats["recomputed_steps"] >= 20  # A re-solved its forward first
    for g, ref in zip((ga, gb), refs):
        assert rel_err(flat(g), ref) <= 1e-12


PROBE = 1  # func evaluations a fresh solver makes before its first differentiated solve


@pytest.mark.parametrize("case", ["rk4", "dopri5", "rk4-off-grid"])
def test_stored_graphs_replace_reevaluations_within_their_budget(case):
    """Checkpoint("graphs") backpropagates through the forward's stage graphs: with room
    for all of them the adjoint evaluates func no more (every VJP is at a stored point);
    with a budget, the graphs held stay under it, cover fewer steps, and the gradient is
    the same (<= 1e-12)."""
    func = make_func()
    counted = []
    inner = func.forward
    func.forward = lambda t, y: (counted.append(1), inner(t, y))[1]
    ref, _ = gradient(func, pnode.Checkpoint("all"), **CASES[case])
    calls_all = len(counted)
    counted.clear()
    g, st = gradient(func, pnode.Checkpoint("graphs"), **CASES[case])
    assert rel_err(g, ref) <= 1e-12
    assert st["graph_steps"] == st["steps"] and st["graph_bytes"] > 0
    # no re-evaluation in the adjoint; each fresh solver also evaluates func once, with a
    # graph, before its first differentiated solve (pnode.params.unseen)
    assert len(counted) - PROBE == st["rhs_evals"] < calls_all - PROBE
    budget = st["graph_bytes"] // 3
    g2, st2 = gradient(func, pnode.Checkpoint("graphs", max_memory=budget), **CASES[case])
    assert rel_err(g2, ref) <= 1e-12
    assert 0 < st2["graph_bytes"] <= budget and st2["graph_steps"] < st["graph_steps"]


def test_graphs_strategy_arguments():
    with pytest.raises(ValueError, match="max_ram"):
        pnode.Checkpoint("graphs", max_ram=3)
    with pytest.raises(ValueError, match="size"):
        pnode.Checkpoint("graphs", max_memory="lots")


def test_stored_graphs_are_freed_after_each_backward():
    """A training loop with Checkpoint("graphs") holds one iteration's graphs at a time (a
    saved-tensors hook that returned saved outputs as they are once leaked every graph)."""
    import gc

    from helpers import rss_mib
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 32)).double()
    y0 = torch.randn(64, 32, dtype=torch.float64)
    solver = pnode.ODESolver(lambda t, y: net(y), method="rk4", options={"step_size": 0.05},
                             checkpoint=pnode.Checkpoint("graphs"), adjoint_params=list(net.parameters()))
    sizes = []
    for _ in range(16):
        torch.autograd.grad(solver(y0, T[[0, 2]])[-1].pow(2).sum(), list(net.parameters()))
        gc.collect()
        sizes.append(rss_mib())
    per_iteration = solver.stats["graph_bytes"] / 2**20
    assert per_iteration > 2
    assert sizes[-1] - sizes[3] < 2 * per_iteration, (sizes, per_iteration)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_stored_graphs_are_freed_while_the_adjoint_goes(method):
    """The adjoint drops each step's graphs once it has moved a step before them, as
    backprop frees its graph while it goes: the bytes still held when it backpropagates
    through a stage fall step by step, to under a fifth of the peak near t0 (the
    gradient is checked by the tests above)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 8)).double()
    held = []
    solver = None

    def func(t, y):
        out = net(y)
        if out.requires_grad:  # the stored graph: its backward runs inside the adjoint
            out.register_hook(lambda g: held.append(solver._integrator.graphs.bytes))
        return out
    kw = dict(options={"step_size": 0.05}) if method == "rk4" else dict(rtol=1e-10, atol=1e-12)
    solver = pnode.ODESolver(func, method=method, checkpoint=pnode.Checkpoint("graphs"),
                             adjoint_params=list(net.parameters()), **kw)
    y0 = torch.randn(16, 8, dtype=torch.float64)
    torch.autograd.grad(solver(y0, T[[0, 2]])[-1].pow(2).sum(), list(net.parameters()))
    peak = solver.stats["graph_bytes"]
    assert solver.stats["graph_steps"] >= 10 and len(held) >= solver.stats["steps"]
    assert all(b <= a for a, b in zip(held, held[1:])), held  # never grows back
    assert held[0] > 0.8 * peak and held[-1] < 0.2 * peak, (held[0], held[-1], peak)
    assert solver._integrator.graphs.bytes == 0  # the rest freed when the adjoint ends


def test_stored_graphs_keep_their_heap_for_the_next_iteration():
    """On glibc, a solve with stored graphs raises the allocator's trim threshold above
    their bytes (freed and handed back to the system, they were faulted in again every
    iteration); PNODE_KEEP_HEAP=0 leaves the allocator alone."""
    script = ("import torch, pnode, pnode.runtime as r\n"
              "f = torch.nn.Linear(4, 4).double()\n"
              "s = pnode.ODESolver(lambda t, y: f(y), method='rk4', options={'step_size': 0.1},\n"
              "                    checkpoint=pnode.Checkpoint('graphs'))\n"
              "y = s(torch.randn(3, 4, dtype=torch.float64), torch.tensor([0.0, 1.0]).double())\n"
              "print(r.heap_trim_threshold(), s.stats['graph_bytes'])\n")
    base = {k: v for k, v in subprocess_env().items() if not k.startswith("MALLOC_")}
    out = run_python("-c", script, env=base)
    assert out.returncode == 0, out.stderr
    trim, nbytes = map(int, out.stdout.split())
    assert nbytes > 0 and trim >= nbytes
    out = run_python("-c", script, env=dict(base, PNODE_KEEP_HEAP="0"))
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[0]) == 0


def test_default_keeps_stage_graphs_of_explicit_methods():
    """Checkpoint() ("auto"): an explicit solve keeps its stage graphs (within 512 MiB),
    fixed or adaptive steps; an implicit one stores states and stages; same gradients as
    "all"."""
    func = make_func()
    for case, graphs in (("rk4", True), ("dopri5", True), ("crank_nicolson", False)):
        ref, _ = gradient(func, pnode.Checkpoint("all"), **CASES[case])
        g, st = gradient(func, None, **CASES[case])
        assert rel_err(g, ref) <= 1e-12
        assert (st["graph_steps"] == st["steps"]) if graphs else (st["graph_steps"] == 0), (case, st)


@pytest.mark.parametrize("strategy", ["auto", "solution"])
def test_adaptive_solve_beyond_the_first_trajectory_stack(strategy, monkeypatch):
    """An adaptive solve's store-all stack starts at a few thousand steps (PETSc's own
    start is max_num_steps, zeroed at every solve) and grows: a longer solve keeps every
    step. The start is lowered to 64 here so that a 300-step solve outgrows it several
    times over (PETSc doubles the stack) in a fraction of a second. The gradient of
    y' = -a y at t = 1 is -y0 exp(-a), to the solver's tolerance (1e-9 relative stated here)."""
    monkeypatch.setattr(pnode.checkpoint, "STACK_STEPS", 64)
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.5], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    solver = pnode.ODESolver(lambda t, y: -a * y, method="dopri5", rtol=1e-10, atol=1e-12,
                             options={"max_step": 1 / 300}, checkpoint=pnode.Checkpoint(strategy), adjoint_params=[a])
    y1 = solver(y0, t)[-1]
    (g,) = torch.autograd.grad(y1.sum(), [a])
    assert solver.stats["steps"] > pnode.checkpoint.STACK_STEPS
    assert solver.stats["adjoint_steps"] == solver.stats["steps"]
    if strategy == "auto":  # every step kept: nothing recomputed
        assert solver.stats["recomputed_steps"] == 0, solver.stats
    assert abs(y1.item() - 1.5 * math.exp(-0.7)) < 1e-9
    assert abs(g.item() + 1.5 * math.exp(-0.7)) < 1e-9 * 1.5
