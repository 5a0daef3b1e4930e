"""examples/classifier.py keeps running: one tiny epoch (with the PNG and a PETSc option
passed through), and a tiny --compare (one subprocess per gradient configuration).
About 15 s of CPU time in all; the timeouts leave room for a loaded machine, where
starting Python with torch, PETSc and scikit-learn alone can take 15 s of wall time."""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLE = os.path.join(ROOT, "examples", "classifier.py")
TINY = ["--epochs", "1", "--limit", "100", "--batch-size", "50", "--steps", "2", "--quiet"]


def run(args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, EXAMPLE, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_classifier_one_epoch_with_png(tmp_path):
    png = tmp_path / "classifier.png"
    out = run([*TINY, "--recompute-forward", "--checkpoint", "binomial", "--max-ram", "2",
               "--out", str(png), "-block0_ts_type", "rk", "-block0_ts_rk_type", "4"])
    m = re.search(r"test accuracy (\S+) \(360 test images, 100 training images\)", out)
    assert m, out
    assert 0.0 <= float(m.group(1)) <= 1.0
    assert "time per epoch" in out and "peak memory" in out
    assert re.search(r"over all blocks", out)
    assert png.exists() and png.stat().st_size > 10000


def test_classifier_compare_table():
    out = run([*TINY, "--compare", "--blocks", "1"])
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and "configuration" not in ln]
    assert [r.split("|")[1].strip() for r in rows] == [
        "store-all per block", "block recomputation", "block recomputation + binomial"], out
    accs = {r.split("|")[2].strip() for r in rows}
    assert len(accs) == 1, out  # same gradients, so the same training run
