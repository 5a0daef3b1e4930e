"""Under mpiexec every job ends: a pnode call that fails on one rank (first call,
mid-solve, backward) raises on every rank, and then

- uncaught, the job ends within seconds with a non-zero exit code and the traceback of
  the rank that raised (pnode aborts the job on an uncaught exception);
- caught, every rank solves again cleanly and the job exits with code 0 (no collective
  is left unmatched, at exit included: PETSc's garbage cleanup used to hang there).

Each case is its own ``mpiexec`` job (tests/workers/mpi_exit_worker.py), given
:data:`LIMIT` seconds before it counts as hung and is killed.
"""
import re

import pytest

from helpers import run_job

LIMIT = 20  # seconds; a job starts 2-3 interpreters that each import torch and PETSc
CASES = ["explicit", "implicit", "imex", "binomial", "graphs", "block", "cnf", "sde"]
PHASES = ["first", "mid", "backward"]
WORKER = "workers/mpi_exit_worker.py"


def _job(case, phase, mode, ranks):
    code, out, err, seconds = run_job(WORKER, case, phase, mode, ranks=ranks, limit=LIMIT)
    assert code is not None, f"hung: killed after {seconds:.0f} s\n{out[-1500:]}\n{err[-3000:]}"
    return code, out, err


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("case", CASES)
def test_uncaught_failure_ends_the_job_with_the_raising_ranks_traceback(case, phase, ranks):
    code, out, err = _job(case, phase, "raise", ranks)
    assert code != 0, out[-1500:] + err[-3000:]
    assert f"Boom: rank {ranks - 1}: " in err, err[-3000:]


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("case", CASES)
def test_caught_failure_then_clean_solve_exits_normally(case, phase):
    code, out, err = _job(case, phase, "catch", 2)
    assert code == 0, out[-1500:] + err[-3000:]
    assert sorted(re.findall(r"clean (\d)", out)) == ["0", "1"], out
    assert "caught Boom 1" in out, out
    if case != "sde":  # an SDE solve has no collective: the other rank never hears of it
        assert "caught SolverError 0" in out, out
