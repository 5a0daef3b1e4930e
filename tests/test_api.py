"""Public API behaviour: validation, errors, PETSc options and prefixes, ODEBlock."""
import subprocess
import sys
import textwrap

import pytest
import torch
from petsc4py import PETSc
from torch import nn

import pnode
from helpers import rel_err
from reference import rk_solve, rk_tableau

T01 = torch.tensor([0.0, 1.0], dtype=torch.float64)


def decay(t, y):
    return -y


# ---------------------------------------------------------------- argument validation
@pytest.mark.parametrize("t, match", [
    (torch.tensor([[0.0, 1.0]]), "t must be a 1-D"),
    (torch.tensor([0.0, 1.0, 0.5]), "strictly increasing or strictly decreasing"),
    (torch.tensor([0.0, 0.0]), "strictly"),
    (torch.tensor([0.0, float("nan")]), "finite"),
])
def test_bad_t(t, match):
    with pytest.raises(ValueError, match=match):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), t)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown method 'rk45'.*dopri5.*rk4"):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), T01, method="rk45")


@pytest.mark.parametrize("opts, match", [
    ({"step_size": 0.0}, r"options\['step_size'\] must be a positive"),
    ({"step_size": -0.1}, r"options\['step_size'\] must be a positive"),
    ({"max_num_steps": 0}, r"options\['max_num_steps'\]"),
    ({"stepsize": 0.1}, "unknown options"),
    ({"theta": 0.3}, "needs an implicit method"),
])
def test_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), T01, method="rk4", options=opts)


def test_bad_dtype_and_tolerance():
    with pytest.raises(TypeError, match="y0 must be float32 or float64"):
        pnode.odeint(decay, torch.ones(2, dtype=torch.int64), T01)
    with pytest.raises(TypeError, match="y0 must be float32 or float64"):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float16), T01)
    with pytest.raises(ValueError, match="rtol must be positive"):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), T01, rtol=-1.0)


def test_bad_checkpoint():
    with pytest.raises(ValueError, match="strategy 'revolve' is unknown"):
        pnode.Checkpoint("revolve")
    with pytest.raises(ValueError, match="exactly one of max_ram or max_memory"):
        pnode.Checkpoint("binomial")
    with pytest.raises(ValueError, match="max_ram must be a positive int"):
        pnode.Checkpoint("binomial", max_ram=0)
    with pytest.raises(ValueError, match="max_memory='lots'"):
        pnode.Checkpoint("binomial", max_memory="lots")


def test_func_output_shape_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"returned shape \(2,\) but the state has shape \(3,\)"):
        pnode.odeint(lambda t, y: y[:2], torch.ones(3, dtype=torch.float64), T01)


def test_adjoint_kwargs_accepted_with_warning():
    with pytest.warns(UserWarning, match="ignores adjoint_rtol"):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), T01, adjoint_rtol=1e-3)
    with pytest.raises(TypeError, match="unexpected keyword"):
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), T01, foo=1)


# ---------------------------------------------------------------- failures
class Boom(Exception):
    pass


def test_exception_in_func_propagates_unchanged():
    def bad(t, y):
        if t > 0.5:
            raise Boom("inside func")
        return -y
    with pytest.raises(Boom, match="inside func"):
        pnode.odeint(bad, torch.ones(3, dtype=torch.float64), T01)


def test_exception_in_backward_propagates_unchanged():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3, dtype=torch.float64))

        def forward(self, t, y):
            if torch.is_grad_enabled() and y.requires_grad:
                raise Boom("in backward")
            return -self.w * y
    ys = pnode.odeint(M(), torch.ones(3, dtype=torch.float64), T01)
    with pytest.raises(Boom, match="in backward"):
        ys.sum().backward()


def test_blow_up_raises_solver_error():
    y0 = torch.full((3,), 10.0, dtype=torch.float64)
    with pytest.raises(pnode.SolverError) as info:
        pnode.odeint(lambda t, y: y ** 2, y0, T01)
    assert info.value.reason == "NAN" and 0 < info.value.time < 1 and info.value.steps > 0
    with pytest.raises(pnode.SolverError, match="not finite") as info:
        pnode.odeint(lambda t, y: y ** 2, y0, T01, method="rk4", options={"step_size": 0.1})
    assert info.value.reason == "NAN"


def test_max_num_steps_raises_solver_error():
    with pytest.raises(pnode.SolverError, match="max_num_steps=3") as info:
        pnode.odeint(decay, torch.ones(2, dtype=torch.float64), T01, options={"max_num_steps": 3})
    assert info.value.steps == 3 and info.value.time < 1.0


# ---------------------------------------------------------------- PETSc options
def test_petsc_options_dict_applies_and_does_not_leak():
    y0 = torch.ones(2, dtype=torch.float64)
    with pnode.ODESolver(decay, method="dopri5", petsc_options={"ts_rk_type": "4", "ts_adapt_type": "none",
                                                               "ts_time_step": 0.25}) as s:
        s(y0, T01)
        assert s.petsc_ts.getRKType() == "4" and s.stats["steps"] == 4
    assert not PETSc.Options().hasName("-ts_rk_type")
    with pnode.ODESolver(decay, method="dopri5") as s:
        s(y0, T01)
        assert s.petsc_ts.getRKType() == "5dp"


def test_prefix_reads_its_own_options():
    db = PETSc.Options()
    db.setValue("-enc_ts_rk_type", "3")
    try:
        with pnode.ODESolver(decay, method="rk4", prefix="enc_", options={"step_size": 0.1}) as a, \
             pnode.ODESolver(decay, method="rk4", options={"step_size": 0.1}) as b:
            a(torch.ones(2, dtype=torch.float64), T01)
            b(torch.ones(2, dtype=torch.float64), T01)
            assert a.petsc_ts.getRKType() == "3" and b.petsc_ts.getRKType() == "4"
    finally:
        db.delValue("-enc_ts_rk_type")


def test_command_line_overrides_code(tmp_path):
    script = tmp_path / "cli.py"
    script.write_text(textwrap.dedent("""
        import torch, pnode
        s = pnode.ODESolver(lambda t, y: -y, method="dopri5", options={"step_size": 0.5})
        s(torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64))
        print(s.petsc_ts.getType(), s.petsc_ts.getRKType(), s.stats["steps"])
        s.close()
    """))
    out = subprocess.run([sys.executable, str(script), "-ts_rk_type", "4", "-ts_time_step", "0.1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["rk", "4", "10"]


def test_unused_petsc_option_is_reported(tmp_path):
    script = tmp_path / "unused.py"
    script.write_text("import pnode\n")
    out = subprocess.run([sys.executable, str(script), "-ts_tpye", "rk", "-options_left"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ts_tpye" in out.stdout + out.stderr


# ---------------------------------------------------------------- ODEBlock
class Field(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3).double()

    def forward(self, t, y):
        return torch.tanh(self.lin(y))


def test_odeblock_is_a_module_with_prefixes_and_exact_gradients():
    torch.manual_seed(0)
    blocks = [pnode.ODEBlock(Field(), t1=0.5, method="rk4", options={"step_size": 0.1}) for _ in range(2)]
    p0 = int(blocks[0].solver.prefix.removeprefix("block").rstrip("_"))
    assert blocks[1].solver.prefix == f"block{p0 + 1}_"
    model = nn.Sequential(*blocks)
    assert len(list(model.parameters())) == 4
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    out = model(x)
    assert out.shape == x.shape
    g = torch.autograd.grad(out.pow(2).sum(), [x, *model.parameters()])

    def ref(x):
        for blk in blocks:
            x = rk_solve(blk.func, x, blk.solver.step_times, [0.0, 0.5], rk_tableau("4"))[-1]
        return x
    r = torch.autograd.grad(ref(x).pow(2).sum(), [x, *model.parameters()])
    for a, b in zip(g, r):
        assert rel_err(a, b) <= 1e-10


def test_odeblock_recompute_forward_same_gradients():
    torch.manual_seed(1)
    f = Field()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    res = []
    for recompute in (False, True):
        blk = pnode.ODEBlock(f, t1=1.0, recompute_forward=recompute, method="dopri5", rtol=1e-6)
        y = blk(x)
        res.append((y.detach(), *torch.autograd.grad(y.sum(), [x, *f.parameters()]), blk.stats["steps"]))
        blk.solver.close()
    (ya, *ga, na), (yb, *gb, nb) = res
    assert torch.equal(ya, yb) and na == nb
    for a, b in zip(ga, gb):
        assert rel_err(a, b) <= 1e-12


def test_no_grad_forward_keeps_no_trajectory_and_matches():
    f = Field()
    x = torch.randn(4, 3, dtype=torch.float64)
    with pnode.ODESolver(f, method="dopri5") as s:
        with torch.no_grad():
            a = s(x, T01)
        b = s(x, T01)
        assert torch.equal(a, b) and not a.requires_grad and b.requires_grad


def test_stats_and_step_times():
    with pnode.ODESolver(Field(), method="dopri5") as s:
        ys = s(torch.randn(2, 3, dtype=torch.float64), torch.linspace(0, 1, 3, dtype=torch.float64))
        ys.sum().backward()
        st = s.stats
        for key in ("steps", "rejected_steps", "rhs_evals", "jvp_evals", "vjp_evals", "newton_iterations",
                    "linear_iterations", "adjoint_steps", "recomputed_steps", "checkpoints",
                    "checkpoint_bytes"):
            assert key in st
        assert st["adjoint_steps"] == st["steps"] == len(s.step_times) - 1
        assert s.step_times[0] == 0.0 and s.step_times[-1] == 1.0
        assert st["rhs_evals"] >= 6 * st["steps"] and st["vjp_evals"] > 0


def test_info_reports_revolve_and_versions(capsys):
    pnode.info()
    out = capsys.readouterr().out
    for key in ("pnode", "torch", "petsc ", "revolve", "petsc4py", "mpi4py", "scalar_type"):
        assert key in out
    from pnode.info import info_dict
    d = info_dict()
    major, minor = (int(x) for x in d["petsc"].split(".")[:2])
    assert (major, minor) >= (3, 23)
    assert d["revolve"] is True
    assert PETSc.Sys.hasExternalPackage("revolve")


def test_warning_free_import():
    out = subprocess.run([sys.executable, "-W", "error", "-c", "import pnode"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stdout + out.stderr



def test_solver_is_usable_after_a_failed_solve():
    with pnode.ODESolver(lambda t, y: y ** 2) as s:
        with pytest.raises(pnode.SolverError):
            s(torch.full((3,), 10.0, dtype=torch.float64), T01)
        ys = s(torch.full((3,), 0.1, dtype=torch.float64), T01)
        assert abs(float(ys[-1, 0]) - 1 / 9) < 1e-6  # y' = y^2, y(0) = 0.1: y(1) = 1/9


def test_changing_the_number_of_output_times():
    """PETSc 3.26 cannot resize evaluation times in place (it crashed): pnode rebuilds."""
    y0 = torch.ones(3, dtype=torch.float64)
    for n in (2, 6, 3):
        ys = pnode.odeint(decay, y0, torch.linspace(0, 1, n, dtype=torch.float64))
        assert ys.shape == (n, 3) and abs(float(ys[-1, 0]) - 0.36787944117) < 1e-6


def test_fixed_step_survives_a_short_first_output_interval():
    with pnode.ODESolver(decay, method="rk4", options={"step_size": 0.1}) as s:
        s(torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 0.001, 1.0], dtype=torch.float64))
        assert s.stats["steps"] == 11  # 0.001, then full 0.1 steps, the last one shortened
    with pnode.ODESolver(decay, method="rk4") as s:  # no step_size: one step per interval
        s(torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 0.01, 1.0], dtype=torch.float64))
        assert s.stats["steps"] == 2


def test_output_times_reached_within_petsc_tolerance():
    """Adaptive steps may reach an output time to within PETSc's tolerance, not bit-exactly
    (here 0.025025...); outputs and the adjoint's segments must still line up."""
    t = torch.linspace(0.0, 25.0, 1000, dtype=torch.float64)[:10]
    f = nn.Linear(2, 2).double()
    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    with pnode.ODESolver(lambda t, y: f(y ** 3), method="dopri5", rtol=1e-6, atol=1e-8,
                         adjoint_params=list(f.parameters())) as s:
        ys = s(y0, t)
        ys.sum().backward()
        assert ys.shape == (10, 1, 2) and s.stats["adjoint_steps"] == s.stats["steps"]
