"""pnode.runtime: every process-wide effect is listed by pnode.info() and has its opt-out;
the C prototypes follow the PETSc build's number types."""
import ctypes
import json

import numpy as np
import pytest
from petsc4py import PETSc

from helpers import run_python, subprocess_env
from pnode import clib

_EFFECTS = "import pnode, json; print(json.dumps(pnode.runtime.effects()))"


def effects_with(ranks=None, **env):
    clean = {k: v for k, v in subprocess_env().items() if not k.startswith("PNODE_")}
    clean.update(env)
    out = run_python("-c", _EFFECTS, ranks=ranks, timeout=120, env=clean)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("int_type, want", [(np.int32, ctypes.c_int32), (np.int64, ctypes.c_int64)])
def test_petsc_int_follows_the_build(int_type, want):
    # a PETSc built with --with-64-bit-indices gets 64-bit PetscInt arguments
    assert clib.petsc_ctypes(int_type, np.float64) == (want, ctypes.c_double)


def test_prototypes_use_this_builds_petsc_int():
    fns = clib.petsc_functions()
    pint = clib.petsc_ctypes(PETSc.IntType, PETSc.RealType)[0]
    assert fns["PetscInt"] is pint
    assert fns["TSRKRegister"].argtypes[1] is pint and fns["TSRKRegister"].argtypes[2] is pint
    assert fns["TSARKIMEXRegister"].argtypes[11] is pint
    assert fns["TSRKGetTableau"].argtypes[1]._type_ is pint


@pytest.mark.parametrize("scalar, real, match", [(np.complex128, np.float64, "--with-scalar-type=real"),
                                                 (np.float32, np.float32, "--with-precision=double")])
def test_complex_or_single_precision_petsc_is_refused(scalar, real, match):
    with pytest.raises(RuntimeError, match=match):
        clib.check_petsc_build(scalar, real)
    clib.check_petsc_build(np.float64, np.float64)  # what pnode runs on


def test_tableau_read_back_through_the_prototypes():
    # a registered tableau comes back exactly as declared (wrong argument types would
    # scramble or truncate it)
    from pnode.tableaus import TABLEAUS
    tab = TABLEAUS["tsit5"]
    ts = PETSc.TS().create(comm=PETSc.COMM_SELF)
    try:
        ts.setType("rk")
        ts.setRKType("tsit5")
        A, b, c, bembed = clib.rk_tableau(ts)
    finally:
        ts.destroy()
    assert A == [float(x) for x in tab.dense_A()] and b == [float(x) for x in tab.b]
    assert c == list(tab.c) and bembed is not None


def test_every_effect_is_listed_by_info():
    import io
    import pnode
    buf = io.StringIO()
    pnode.info(file=buf)
    for name in ("petsc_init", "petsc_build", "blas_threads", "tableaus", "printing", "mpi_abort", "close_at_exit"):
        assert f"effect: {name}" in buf.getvalue()


def test_default_effects_and_their_opt_outs():
    default = effects_with()
    assert default["petsc_init"].endswith("-no_signal_handler")
    assert default["tableaus"].startswith("registered: tsit5")
    assert default["printing"].startswith("sys.stdout")
    assert default["mpi_abort"] == "off (one rank)"
    off = effects_with(PNODE_PETSC_SIGNAL_HANDLER="1", PNODE_TABLEAUS="0", PNODE_PETSC_PRINT="c",
                       PNODE_BLAS_THREADS="2")
    assert "-no_signal_handler" not in off["petsc_init"]
    assert off["tableaus"].startswith("not registered")
    assert off["printing"].startswith("PETSc's own")
    assert off["blas_threads"].startswith("2 thread")


def test_mpi_abort_hook_is_on_under_mpiexec_unless_opted_out():
    assert effects_with(ranks=2)["mpi_abort"].startswith("on:")
    assert effects_with(ranks=2, PNODE_MPI_ABORT="0")["mpi_abort"] == "off (PNODE_MPI_ABORT=0)"


def test_import_changes_only_what_is_listed():
    # the interpreter-level hooks a library could change: only those pnode lists move
    script = ("import sys, atexit, threading; before = (sys.excepthook, threading.excepthook, sys.displayhook)\n"
              "import pnode; after = (sys.excepthook, threading.excepthook, sys.displayhook)\n"
              "print(before == after, pnode.runtime.effects()['mpi_abort'])")
    clean = {k: v for k, v in subprocess_env().items() if not k.startswith("PNODE_")}
    out = run_python("-c", script, env=clean)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "off", "(one", "rank)"]
