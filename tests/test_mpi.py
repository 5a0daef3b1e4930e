"""Data parallelism under a real mpiexec: 1, 2 and 3 ranks (uneven shards, 3 ranks
oversubscribed on 2 cores) give the same loss, gradients (1e-10 relative, float64) and
number of adaptive steps; a rank that raises ends the job quickly with a non-zero exit."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def mpirun(n, *args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, os.path.join(HERE, "mpi_worker.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_mpiexec_runs_mpi4py():
    out = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-c",
                          "from mpi4py import MPI; c = MPI.COMM_WORLD; v = c.gather(c.allreduce(c.rank + 1));"
                          "c.rank == 0 and print(*v)"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "3"]


CASES = ["dopri5", "rk4", "kencarp4", "crank_nicolson", "dopri5-binomial"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every case on 1, 2 and 3 ranks (one mpiexec per rank count)."""
    dirs = {}
    for n in (1, 2, 3):
        d = tmp_path_factory.mktemp(f"ranks{n}")
        proc = mpirun(n, "all", str(d))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        dirs[n] = d
    return dirs


@pytest.mark.parametrize("case", CASES)
def test_same_loss_and_gradients_on_1_2_3_ranks(case, runs):
    results = {n: dict(np.load(d / f"{case}.npz")) for n, d in runs.items()}
    ref = results[1]
    for n in (2, 3):
        r = results[n]
        assert r["steps"] == ref["steps"]
        for key in ref:
            a, b = r[key], ref[key]
            assert np.abs(a - b).max() <= 1e-10 * max(np.abs(b).max(), 1e-300), (n, key)


def test_failing_rank_ends_the_job_quickly(tmp_path):
    start = time.time()
    proc = mpirun(2, "raise", "-", timeout=60)
    assert proc.returncode != 0
    assert time.time() - start < 30
    assert "deliberate failure on rank 1" in proc.stdout + proc.stderr
