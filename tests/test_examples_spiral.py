"""The spiral example (``make demo``) runs end to end with a reduced setting."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_spiral_example_runs(tmp_path):
    out = tmp_path / "spiral.png"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "spiral.py"), "--iters", "5",
                           "--data-size", "200", "--out", str(out), "-ts_rk_type", "5dp"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "mean abs error" in proc.stdout and out.exists()
    assert "unused" not in proc.stdout + proc.stderr  # --flags stay out of PETSc's way
