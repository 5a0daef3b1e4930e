#!/usr/bin/env bash
# The device check, one command: install pnode from the carried wheels into a venv (no
# network), run the CUDA tests (tests/test_cuda.py) and the GPU benchmark (benchmarks/gpu.py:
# CNF training iteration and batched stiff MLP, pnode against torchdiffeq on the same
# device), and write OUTDIR/report.md and OUTDIR/report.json (plus the logs). Meant to end
# within the device machine's 10 minutes a command: install ~1 min, tests <= 5 min (killed
# after), benchmark <= 3 min (each row's timed runs capped at --budget-s).
#
# Usage: scripts/gpu_check.sh OUTDIR [--device cuda|cpu] [--python PY] [--wheels DIR]
#   --device  cuda (default) or cpu: the same script, tests (PNODE_TEST_DEVICE) and
#             benchmark on the CPU, for a dry run on a machine without a GPU
#   --python  the interpreter with torch (default python3)
#   --wheels  default .device/pyX.Y for PY's version (scripts/build_device_wheels.sh)
# Exit status: 0 when every test passed (skips count as failures on --device cuda: a CUDA
# test that skipped did not prove anything).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 1 ] || { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 2; }
OUT=$1; shift
DEVICE=cuda PYTHON=python3 WHEELS=
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;; esac
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || exit 2
WHEELS=${WHEELS:-$ROOT/.device/py$PYVER}
VENV=${PNODE_GPU_VENV:-/tmp/pnode-gpu-venv}
mkdir -p "$OUT"
START=$SECONDS
say() { printf '[gpu_check %4ds] %s\n' "$((SECONDS - START))" "$*" | tee -a "$OUT/steps.log"; }

say "device=$DEVICE python=$PYTHON ($PYVER) wheels=$WHEELS"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || say "nvidia-smi failed (see nvidia-smi.txt)"
fi
say "installing from the carried wheels into $VENV (no network)"
if ! bash "$ROOT/scripts/device_env.sh" "$VENV" "$WHEELS" "$PYTHON" > "$OUT/install.log" 2>&1; then
  say "install failed:"; tail -n 30 "$OUT/install.log"; exit 1
fi
PY="$VENV/bin/python"
export PYTHONPATH="$ROOT" OMP_NUM_THREADS=1 PNODE_TEST_DEVICE=$DEVICE
"$PY" -c 'import torch, pnode, petsc4py, mpi4py, sys
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), "pnode", pnode.__version__, "petsc4py", petsc4py.__version__,
      "mpi4py", mpi4py.__version__)' 2>&1 | tee "$OUT/versions.txt"

say "tests/test_cuda.py (PNODE_TEST_DEVICE=$DEVICE, at most 300 s)"
(cd "$ROOT" && timeout -k 10 300 "$PY" -m pytest -q -rA -p no:cacheprovider tests/test_cuda.py \
   --junitxml "$OUT/tests.xml") > "$OUT/tests.log" 2>&1
TEST_RC=$?
tail -n 3 "$OUT/tests.log"

say "benchmarks/gpu.py (at most 200 s)"
bench_args=(--device "$DEVICE" --json "$OUT/bench.json" --repeats 3 --budget-s 20)
[ "$DEVICE" = cpu ] && bench_args+=(--quick)
(cd "$ROOT" && timeout -k 10 200 "$PY" benchmarks/gpu.py "${bench_args[@]}") > "$OUT/bench.log" 2>&1
BENCH_RC=$?
tail -n 8 "$OUT/bench.log"

say "report"
"$PY" "$ROOT/scripts/gpu_report.py" "$OUT" "$DEVICE" "$TEST_RC" "$BENCH_RC" "$((SECONDS - START))"
RC=$?
say "done in $((SECONDS - START)) s: $OUT/report.md"
exit $RC
