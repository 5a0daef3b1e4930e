"""Data parallelism under a real mpiexec: 1, 2 and 3 ranks (uneven shards, 3 ranks
oversubscribed on 2 cores) give the same loss, gradients (1e-10 relative, float64) and
number of adaptive steps; a rank that raises ends the job quickly with a non-zero exit."""
import time

import numpy as np
import pytest

from helpers import run_python, run_worker


def test_mpiexec_runs_mpi4py():
    out = run_python("-c", "from mpi4py import MPI; c = MPI.COMM_WORLD; v = c.gather(c.allreduce(c.rank + 1));"
                     "c.rank == 0 and print(*v)", ranks=2, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "3"]


CASES = ["dopri5", "rk4", "kencarp4", "crank_nicolson", "dopri5-binomial", "dopri5-graphs", "rk4-graphs-budget"]


@pytest.mark.parametrize("case,plain", [("dopri5-graphs", "dopri5"), ("rk4-graphs-budget", "rk4")])
def test_stored_graphs_give_the_same_gradients_under_mpi(case, plain, runs):
    for n, d in runs.items():
        a, b = dict(np.load(d / f"{case}.npz")), dict(np.load(d / f"{plain}.npz"))
        for key in b:
            assert np.abs(a[key] - b[key]).max() <= 1e-12 * max(np.abs(b[key]).max(), 1e-300), (n, key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every case on 1, 2 and 3 ranks (one mpiexec per rank count)."""
    dirs = {}
    for n in (1, 2, 3):
        d = tmp_path_factory.mktemp(f"ranks{n}")
        proc = run_worker("workers/mpi_worker.py", "all", d, ranks=n)
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


def test_sparse_jacobian_on_two_ranks(tmp_path):
    """options['sparsity'] with the batch split over 2 ranks (5 samples: uneven shards;
    the AIJ matrix on the communicator, block Jacobi with one LU per rank by default):
    the same solution and gradients as one rank to 1e-10 relative, for the default PC,
    GAMG and a linear part; PETSc's sequential ILU raises an error naming the option."""
    dirs = {}
    for n in (1, 2):
        d = dirs[n] = tmp_path / f"ranks{n}"
        d.mkdir()
        proc = run_worker("workers/sparse_mpi_worker.py", d, ranks=n)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    for case in ("default", "gamg", "linear"):
        ref, got = dict(np.load(dirs[1] / f"{case}.npz")), dict(np.load(dirs[2] / f"{case}.npz"))
        for key in ref:
            assert np.abs(got[key] - ref[key]).max() <= 1e-10 * np.abs(ref[key]).max(), (case, key)
    message = (dirs[2] / "ilu.txt").read_text()
    assert "options['sparsity'] on 2 ranks" in message and "-sub_pc_type ilu" in message, message


def test_failing_rank_ends_the_job_quickly(tmp_path):
    start = time.time()
    proc = run_worker("workers/mpi_worker.py", "raise", "-", ranks=2, timeout=60)
    assert proc.returncode != 0
    assert time.time() - start < 30
    assert "deliberate failure on rank 1" in proc.stdout + proc.stderr
