#!/usr/bin/env bash
# Builds a second environment whose PETSc uses 64-bit indices (--with-64-bit-indices) and
# runs the tests that reach PETSc's C API through ctypes (pnode.clib: tableau
# registration and read-back, the adaptor type, the argument-type derivation) and a
# sample of solves, explicit, implicit and IMEX, with their exact-gradient checks.
#
#   bash scripts/check_64bit_indices.sh [VENV]     (default VENV: /tmp/pnode-int64)
#
# About 15 minutes on 2 cores the first time (PETSc and petsc4py are built; the wheels are
# cached under ~/.cache/pnode keyed by the configure options), seconds afterwards.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-/tmp/pnode-int64}
PNODE_VENV="$VENV" PNODE_PETSC_CONFIGURE="--with-64-bit-indices" bash "$ROOT/scripts/install.sh"
"$VENV/bin/python" -c "from petsc4py import PETSc; import numpy; \
assert numpy.dtype(PETSc.IntType).itemsize == 8, PETSc.IntType; print('PetscInt is', numpy.dtype(PETSc.IntType))"
cd "$ROOT"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_runtime.py tests/test_explicit.py \
  tests/test_implicit.py tests/test_torchdiffeq_compat.py -k "not mpi" "${@:2}"
