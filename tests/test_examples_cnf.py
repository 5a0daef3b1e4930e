"""examples/cnf.py keeps running: a few iterations on 1 rank (with the PNG) and under
``mpiexec -n 2`` (data-parallel, Hutchinson trace on the digits data)."""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLE = os.path.join(ROOT, "examples", "cnf.py")
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
SMALL = ["--train-size", "1000", "--test-size", "300", "--batch-size", "64"]


def nll_line(out):
    m = re.search(r"test NLL \(nats/sample\): CNF (\S+)\s+single Gaussian (\S+)", out)
    assert m, out
    return float(m.group(1)), float(m.group(2))


def run(cmd, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_example_one_rank_moons_with_png(tmp_path):
    png = tmp_path / "cnf.png"
    out = run([sys.executable, EXAMPLE, "--iters", "3", "--out", str(png), "--grid", "40", "--samples", "300", *SMALL])
    nll, gauss = nll_line(out)
    assert 0 < nll < 5 and 1.5 < gauss < 2.5
    assert png.exists() and png.stat().st_size > 10000


def test_example_two_ranks_digits():
    out = run([MPIEXEC, "-n", "2", sys.executable, EXAMPLE, "--data", "digits", "--iters", "2",
               "--hidden", "32", "--out", "", *SMALL])
    assert "on 2 rank(s)" in out and "trace=hutchinson" in out
    nll, gauss = nll_line(out)
    assert abs(nll) < 1e4 and abs(gauss) < 1e4
