"""The examples keep running end to end, each as a subprocess started as a user would start
it (so that PETSc sees the example's own command line), with settings cut down to a few
seconds of solving (helpers.run_example asserts a zero exit):

- spiral.py (``make demo``): a few iterations, a PETSc option passed through, no --flag
  reported as an unused PETSc option;
- stiff_robertson.py and stiff_neural.py: write their plots and their tables;
- ks_pde.py: two iterations on a 32-point grid, with its plot;
- classifier.py: one tiny epoch (with the PNG and a PETSc option passed through), and a
  tiny --compare (one subprocess per gradient configuration). About 15 s of CPU time in
  all; the timeouts leave room for a loaded machine, where starting Python with torch,
  PETSc and scikit-learn alone can take 15 s of wall time;
- cnf.py: a few iterations on 1 rank (with the PNG) and under ``mpiexec -n 2``
  (data-parallel, Hutchinson trace on the digits data);
- sde_gan.py: three tiny iterations (reversible Heun adjoint generator, CDE discriminator)
  with the PNG.
"""
import re

from helpers import run_example

CLASSIFIER_TINY = ["--epochs", "1", "--limit", "100", "--batch-size", "50", "--steps", "2", "--quiet"]
CNF_SMALL = ["--train-size", "1000", "--test-size", "300", "--batch-size", "64"]


# ---------------------------------------------------------------- spiral
def test_spiral_example_runs(tmp_path):
    out = tmp_path / "spiral.png"
    proc = run_example("spiral.py", "--iters", "5", "--data-size", "200", "--out", out, "-ts_rk_type", "5bs",
                       timeout=300, cwd=tmp_path)
    assert "mean abs error" in proc.stdout and out.exists()
    assert "(PETSc TS rk 5bs)" in proc.stdout  # what ran, not --method's default name
    assert "unused" not in proc.stdout + proc.stderr  # --flags stay out of PETSc's way


# ---------------------------------------------------------------- stiff
def test_stiff_robertson_runs(tmp_path):
    out = tmp_path / "rob.png"
    # two L-BFGS iterations cannot reach 1%: --tol inf only checks that it runs
    stdout = run_example("stiff_robertson.py", "--iters", "2", "--points", "12", "--tol", "inf",
                         "--out", out).stdout
    assert out.exists() and out.stat().st_size > 0
    # two iterations leave the rates far off: the run must not claim them recovered
    assert "rel. error" in stdout and "NOT CHECKED (--tol inf)" in stdout and "RECOVERED" not in stdout
    assert "steps per solve" in stdout


def test_stiff_neural_runs(tmp_path):
    out = tmp_path / "neural.png"
    stdout = run_example("stiff_neural.py", "--iters", "2", "--stiffness", "1e3", "--batch", "8",
                         "--out", out).stdout
    assert out.exists() and out.stat().st_size > 0
    assert "| kencarp4" in stdout and "| dopri5" in stdout


def test_ks_pde_runs(tmp_path):
    out = tmp_path / "ks.png"
    stdout = run_example("ks_pde.py", "--iterations", "2", "--n", "32", "--batch", "8", "--pairs", "16",
                         "--window", "2", "--hidden", "16", "--horizon", "2", "--out", out).stdout
    assert out.exists() and out.stat().st_size > 10000
    assert re.search(r"iteration\s+2\s+loss \S+", stdout) and "held-out rollout" in stdout


# ---------------------------------------------------------------- classifier
def test_classifier_one_epoch_with_png(tmp_path):
    png = tmp_path / "classifier.png"
    out = run_example("classifier.py", *CLASSIFIER_TINY, "--recompute-forward", "--checkpoint", "binomial",
                      "--max-ram", "2", "--out", png, "-block0_ts_type", "rk", "-block0_ts_rk_type", "4",
                      timeout=240).stdout
    m = re.search(r"test accuracy (\S+) \(360 test images, 100 training images\)", out)
    assert m, out
    assert 0.0 <= float(m.group(1)) <= 1.0
    assert "time per epoch" in out and "peak memory" in out
    assert re.search(r"over all blocks", out)
    assert png.exists() and png.stat().st_size > 10000


def test_classifier_compare_table(tmp_path):
    png = tmp_path / "compare.png"
    out = run_example("classifier.py", *CLASSIFIER_TINY, "--compare", "--blocks", "1", "--out", png,
                      timeout=240).stdout
    assert png.exists() and png.stat().st_size > 0
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and "configuration" not in ln]
    assert [r.split("|")[1].strip() for r in rows] == [
        "store-all per block", "block recomputation", "block recomputation + binomial"], out
    accs = {r.split("|")[2].strip() for r in rows}
    assert len(accs) == 1, out  # same gradients, so the same training run


# ---------------------------------------------------------------- cnf
def cnf_nll_line(out):
    m = re.search(r"test NLL \(nats/sample\): CNF (\S+)\s+single Gaussian (\S+)", out)
    assert m, out
    return float(m.group(1)), float(m.group(2))


def test_example_one_rank_moons_with_png(tmp_path):
    png = tmp_path / "cnf.png"
    out = run_example("cnf.py", "--iters", "3", "--out", png, "--grid", "40", "--samples", "300",
                      *CNF_SMALL).stdout
    nll, gauss = cnf_nll_line(out)
    assert 0 < nll < 5 and 1.5 < gauss < 2.5
    assert png.exists() and png.stat().st_size > 10000


def test_example_two_ranks_digits():
    out = run_example("cnf.py", "--data", "digits", "--iters", "2", "--hidden", "32", "--out", "",
                      *CNF_SMALL, ranks=2).stdout
    assert "on 2 rank(s)" in out and "trace=hutchinson" in out
    nll, gauss = cnf_nll_line(out)
    assert abs(nll) < 1e4 and abs(gauss) < 1e4


# ---------------------------------------------------------------- sde_gan
def test_sde_gan_runs(tmp_path):
    png = tmp_path / "gan.png"
    out = run_example("sde_gan.py", "--iterations", "3", "--batch", "16", "--t-size", "6",
                      "--out", png).stdout
    assert "iteration     3" in out and "trained 3 iterations" in out
    stats = re.findall(r"generated mean (\S+) std (\S+)", out)
    assert len(stats) == 4 and all(float(sd) >= 0 for _, sd in stats), out
    assert png.exists() and png.stat().st_size > 10000


# ---------------------------------------------------------------- --help
def test_help_states_each_default_once():
    """``--help`` of every example: no option's help says its default twice (argparse's
    ArgumentDefaultsHelpFormatter appends one to help texts that already state it)."""
    import os
    from helpers import EXAMPLES
    for name in sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py") and not f.startswith("_")):
        text = run_example(name, "--help").stdout
        entries = re.split(r"\n  (?=-)", text)
        twice = [e.split()[0] for e in entries if "(default: " in e and e.lower().count("default") > 1]
        assert not twice, f"{name}: {twice}"
