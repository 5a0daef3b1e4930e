"""pnode.info() (versions, revolve linked) and a warning-free import."""
from petsc4py import PETSc

import pnode
from helpers import run_python, subprocess_env


def test_info_reports_revolve_and_versions(capsys):
    pnode.info()
    out = capsys.readouterr().out
    for key in ("pnode", "torch", "petsc ", "revolve", "petsc4py", "mpi4py", "scalar_type"):
        assert key in out
    from pnode.versions import info_dict
    d = info_dict()
    major, minor = (int(x) for x in d["petsc"].split(".")[:2])
    assert (major, minor) >= (3, 23)
    assert d["revolve"] is True
    assert PETSc.Sys.hasExternalPackage("revolve")


def test_warning_free_import():
    out = run_python("-W", "error", "-c", "import pnode", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stdout + out.stderr


def test_info_reports_the_paths_in_use():
    """The library, PETSc directory and petsc4py reported are those this interpreter loaded
    (a cached wheel's recorded build paths may name another environment)."""
    import os
    import sys

    import petsc4py

    from pnode.versions import info_dict
    d = info_dict()
    prefix = os.path.realpath(sys.prefix)
    lib = d["petsc_lib"]
    assert os.path.exists(lib) and os.path.realpath(lib).startswith(prefix), (lib, prefix)
    assert os.path.realpath(lib).startswith(os.path.realpath(d["petsc_dir"]))
    assert os.path.dirname(petsc4py.__file__) in d["petsc4py"]


_BLAS_PROBE = ("import pnode, json; from pnode.clib import blas_threads; "
               "print(json.dumps(blas_threads()))")


def _blas_threads_with(**env):
    import json
    clean = {k: v for k, v in subprocess_env().items()
             if k not in ("OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS", "PNODE_BLAS_THREADS", "OMP_NUM_THREADS")}
    clean.update(env)
    out = run_python("-c", _BLAS_PROBE, timeout=120, env=clean)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_petsc_blas_runs_on_one_thread_unless_asked():
    """PETSc's threaded BLAS would spin on the cores torch computes on: pnode sets it to
    one thread at import, PNODE_BLAS_THREADS chooses another count, and a user's own
    OPENBLAS_NUM_THREADS is left as they set it."""
    default = _blas_threads_with()
    assert default, "no BLAS library of PETSc's found in /proc/self/maps"
    assert set(default.values()) == {1}, default
    assert set(_blas_threads_with(PNODE_BLAS_THREADS="2").values()) == {2}
    assert set(_blas_threads_with(OPENBLAS_NUM_THREADS="2").values()) == {2}
