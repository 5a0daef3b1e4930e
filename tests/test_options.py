"""PETSc options: the petsc_options dict (applied, not leaked), solver prefixes, the
command line over code, and the report of unused options."""
import textwrap
import warnings

import pytest

import torch
from petsc4py import PETSc

import pnode
from helpers import T01, decay, run_python


def run_script(tmp_path, source, *args):
    """``source`` (dedented) as a script of its own, with ``args`` on its command line;
    asserts a zero exit and returns the CompletedProcess."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    out = run_python(script, *args, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


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
    out = run_python(script, "-ts_rk_type", "4", "-ts_time_step", "0.1", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["rk", "4", "10"]


def test_unused_petsc_option_is_reported(tmp_path):
    script = tmp_path / "unused.py"
    script.write_text("import pnode\n")
    out = run_python(script, "-ts_tpye", "rk", "-options_left", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ts_tpye" in out.stdout + out.stderr


def test_signals_are_left_to_python():
    """A closed pipe and SIGTERM end the process as Python would: no PETSc crash banner."""
    import subprocess
    import sys
    from helpers import subprocess_env
    pipe = subprocess.run(f"{sys.executable} -c \"import pnode; [print(i) for i in range(10**6)]\" | head -1",
                          shell=True, capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert pipe.stdout.strip() == "0"
    assert "PETSC ERROR" not in pipe.stderr and "MPI_Abort" not in pipe.stderr, pipe.stderr[-500:]
    term = subprocess.run(["timeout", "-s", "TERM", "8", sys.executable, "-c",
                           "import pnode, time; print('ready', flush=True); time.sleep(60)"],
                          capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert "ready" in term.stdout and term.returncode != 0
    assert "PETSC ERROR" not in term.stderr, term.stderr[-500:]


def test_foreign_flags_do_not_reach_petsc(tmp_path):
    """Jupyter's ``-f kernel.json`` and a script's own short flags are not PETSc's: no
    unused-option report; PETSc's own (prefixed or not) still arrive."""
    script = tmp_path / "flags.py"
    script.write_text("import torch, pnode\n"
                      "s = pnode.ODESolver(lambda t, y: -y, method='rk4', prefix='enc_')\n"
                      "s(torch.ones(1, dtype=torch.float64), [0.0, 1.0]); print(s.petsc_ts.getRKType())\n")
    out = run_python(script, "-f", "kernel.json", "-n", "3", "-v", "-h", "-enc_ts_rk_type", "3", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "3"
    assert "were not used" not in out.stdout + out.stderr


def test_notebook_style_run_shows_petsc_output_in_sys_stdout(tmp_path):
    """As in a Jupyter kernel: argv carries ``-f kernel.json`` and sys.stdout is a Python
    object. PETSc's ``ts_monitor`` lines land in that object, in order with print(), and
    nothing is reported at exit."""
    out = run_script(tmp_path, """
        import io, sys
        buf = io.StringIO(); real = sys.stdout; sys.stdout = buf
        import torch, pnode
        print('before')
        pnode.odeint(lambda t, y: -y, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0]),
                     method='rk4', options={'step_size': 0.25}, petsc_options={'ts_monitor': None})
        print('after')
        sys.stdout = real
        print(repr(buf.getvalue()))
    """, "-f", "kernel.json")
    captured = eval(out.stdout.strip().splitlines()[-1])
    lines = captured.splitlines()
    assert lines[0] == "before" and lines[-1] == "after", captured
    assert sum("TS dt 0.25" in x for x in lines) == 5, captured
    assert "WARNING" not in out.stdout + out.stderr and "PETSC" not in out.stderr


def test_misspelt_petsc_option_warns_with_a_suggestion():
    with pytest.warns(UserWarning, match=r"'ts_monitr'.*did you mean 'ts_monitor'"):
        pnode.odeint(lambda t, y: -y, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0]),
                     petsc_options={"ts_monitr": None})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # options PETSc reads are not reported
        pnode.odeint(lambda t, y: -y, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0]),
                     petsc_options={"ts_adapt_dt_max": 0.5, "ts_max_reject": 20})


def test_misspelt_command_line_option_warns_early_with_a_suggestion(tmp_path):
    """A typo on the command line is reported at the first solve, with the option meant,
    as petsc_options' typos are; a correct option a solve does not read is not."""
    out = run_script(tmp_path, """
        import warnings, torch, pnode
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            for _ in range(2):
                pnode.odeint(lambda t, y: -y, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0]))
        print('WARNINGS', [str(x.message) for x in w])
    """, "-ts_rk_tpye", "5bs", "-snes_monitor")
    line = next(x for x in out.stdout.splitlines() if x.startswith("WARNINGS"))
    assert line.count("did you mean -ts_rk_type?") == 1, line
    assert "snes_monitor" not in line, line


def test_tableau_without_estimator_takes_fixed_steps(tmp_path):
    """-ts_rk_type 4 on an adaptive method: fixed steps (one per output interval), said once,
    whatever the number of output times of each call."""
    out = run_script(tmp_path, """
        import warnings, torch, pnode
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            s = pnode.ODESolver(lambda t, y: -y)
            for n in (5, 5, 3, 2):
                ys = s(torch.ones(1, dtype=torch.float64), torch.linspace(0, 1, n, dtype=torch.float64))
                print(s.stats['steps'], float(ys[-1]))
        print(len([x for x in w if 'no error estimator' in str(x.message)]))
    """, "-ts_rk_type", "4")
    *runs, n_warn = out.stdout.strip().splitlines()
    assert n_warn == "1", out.stdout
    rk4 = {4: 0.3678942, 2: 0.3681708, 1: 0.375}  # RK4 on y' = -y to t = 1 in 4, 2, 1 steps (7 digits)
    for line, n in zip(runs, (4, 4, 2, 1)):
        steps, y1 = line.split()
        assert int(steps) == n and abs(float(y1) - rk4[n]) < 1e-7, out.stdout
