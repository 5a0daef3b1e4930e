"""The stiff examples run end to end (reduced settings) and write their plots.

Each example runs as a subprocess, as a user would start it, so that PETSc sees the
example's own command line; the settings are cut down to a few seconds of solving.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name, args, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_stiff_robertson_runs(tmp_path):
    out = tmp_path / "rob.png"
    # two L-BFGS iterations cannot reach 1%: --tol inf only checks that it runs
    stdout = run_example("stiff_robertson.py", ["--iters", "2", "--points", "12", "--tol", "inf",
                                                "--out", str(out)])
    assert out.exists() and out.stat().st_size > 0
    assert "rel. error" in stdout and "RECOVERED" in stdout
    assert "steps per solve" in stdout


def test_stiff_neural_runs(tmp_path):
    out = tmp_path / "neural.png"
    stdout = run_example("stiff_neural.py", ["--iters", "2", "--stiffness", "1e3", "--batch", "8",
                                             "--out", str(out)])
    assert out.exists() and out.stat().st_size > 0
    assert "| kencarp4" in stdout and "| dopri5" in stdout
