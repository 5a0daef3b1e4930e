#!/usr/bin/env bash
# Makes a venv from carried wheels on a machine without a package registry: pnode, PETSc,
# petsc4py, mpich, mpi4py, tqdm from WHEELDIR (pip --no-index --no-deps), and torch, numpy,
# pytest, torchdiffeq from BASE_PYTHON's own site-packages (a .pth: nothing is copied, and
# the venv's wheels come first on sys.path, so its mpi4py wins over the base's).
#
# Usage: scripts/device_env.sh VENV WHEELDIR BASE_PYTHON
set -euo pipefail
[ $# -eq 3 ] || { sed -n '2,/^set -e/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 2; }
VENV=$1 WHEELS=$2 BASE=$3
ls "$WHEELS"/petsc4py-*.whl >/dev/null 2>&1 || { echo "device_env.sh: no petsc4py wheel in $WHEELS" >&2; exit 1; }
rm -rf "$VENV"
PIP=("$VENV/bin/python" -m pip)
if ! "$BASE" -m venv "$VENV" 2>/dev/null; then  # no ensurepip (Debian without python3-venv)
  rm -rf "$VENV" && "$BASE" -m venv --without-pip "$VENV"
  PIP=("$BASE" -m pip --python "$VENV/bin/python")
fi
"${PIP[@]}" install -q --disable-pip-version-check --no-index --no-deps --ignore-installed \
  "$WHEELS"/petsc-*.whl "$WHEELS"/petsc4py-*.whl "$WHEELS"/mpich-*.whl "$WHEELS"/mpi4py-*.whl \
  "$WHEELS"/tqdm-*.whl "$WHEELS"/pnode-*.whl
# after the install: pip would take a base's copy of the same version as installed already
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# the base's site-packages (a venv's or the system's), .pth files there processed too
"$BASE" -c 'import site, sys
dirs = [p for p in site.getsitepackages() + [site.getusersitepackages()] if p]
print("import site; " + "; ".join("site.addsitedir(%r)" % d for d in dirs))' > "$site/_pnode_base.pth"
if [ "${PNODE_REQUIRE_TORCH:-1}" = 1 ]; then
  "$VENV/bin/python" -c 'import torch, numpy' \
    || { echo "device_env.sh: torch/numpy not importable through $BASE" >&2; exit 1; }
fi
