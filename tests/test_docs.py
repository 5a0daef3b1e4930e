"""The documentation keeps working: every command marked ``<!-- runnable -->`` in README.md
and docs/ runs (exit 0, no PETSc error or unused-option warning), and every Python snippet of
README.md and the quickstart executes, in order, in one namespace per file (each file in its
own subprocess, as a reader would paste it)."""
import os
import re
import shlex
import subprocess
import sys

import pytest

from helpers import MPIEXEC, ROOT, run_python, subprocess_env

DOCS = [os.path.join(ROOT, "README.md")] + sorted(
    os.path.join(d, f) for d, _, fs in os.walk(os.path.join(ROOT, "docs")) if "_build" not in d
    for f in fs if f.endswith(".md"))
RUNNABLE = re.compile(r"<!-- runnable -->\s*```(?:bash|text)\n(.*?)```", re.S)
PYTHON = re.compile(r"```python\n(.*?)```", re.S)


def _commands():
    out = []
    for path in DOCS:
        with open(path) as fh:
            for block in RUNNABLE.findall(fh.read()):
                for line in block.splitlines():
                    line = line.split(" #")[0].strip()
                    if line:
                        out.append(pytest.param(line, id=f"{os.path.basename(path)}: {line[:60]}"))
    return out


def _argv(line):
    words = shlex.split(line)
    # only the venv's programs are replaced: a bare `python` or `mpiexec` in the docs is
    # not the venv's for a reader either, so it must fail here too
    subst = {".venv/bin/python": sys.executable, ".venv/bin/mpiexec": MPIEXEC}
    return [subst.get(w, os.path.join(ROOT, w) if w.startswith(("examples/", "benchmarks/")) else w)
            for w in words]


def test_some_commands_are_marked():
    assert len(_commands()) >= 3


@pytest.mark.parametrize("line", _commands())
def test_documented_command_runs(line, tmp_path):
    proc = subprocess.run(_argv(line), cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=subprocess_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "PETSC ERROR" not in out and "There are options you set that were not used" not in out, out[-3000:]


@pytest.mark.parametrize("name", ["README.md", "docs/quickstart.md"])
def test_python_snippets_execute(name, tmp_path):
    with open(os.path.join(ROOT, name)) as fh:
        blocks = PYTHON.findall(fh.read())
    assert blocks
    script = tmp_path / "snippets.py"
    script.write_text("\n\n".join(blocks))
    proc = run_python(str(script), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "PETSC ERROR" not in proc.stdout + proc.stderr


def test_method_table_lists_every_registered_method():
    from pnode.methods import METHODS
    with open(os.path.join(ROOT, "docs", "guides", "stiff.md")) as fh:
        text = fh.read()
    missing = [name for name in METHODS if f"| `{name}`" not in text]
    assert not missing, missing


def _mpi_programs():
    """Python blocks that open with ``# name.py`` and that their page runs with
    ``.venv/bin/mpiexec -n N .venv/bin/python name.py``: (page, name, N, source)."""
    out = []
    for path in DOCS:
        with open(path) as fh:
            text = fh.read()
        for block in PYTHON.findall(text):
            head = re.match(r"# (\w+\.py)\n", block)
            run = head and re.search(r"\.venv/bin/mpiexec -n (\d+) \.venv/bin/python %s" % re.escape(head[1]), text)
            if run:
                out.append(pytest.param(block, int(run[1]), id=f"{os.path.basename(path)}: {head[1]}"))
    return out


def test_some_mpi_programs_are_documented():
    assert len(_mpi_programs()) >= 2


@pytest.mark.parametrize("source, ranks", _mpi_programs())
def test_documented_mpi_program_runs(source, ranks, tmp_path):
    """A page's MPI program runs as the page says: pasted into a file, under the venv's
    mpiexec (the imports it needs are in the snippet)."""
    script = tmp_path / "program.py"
    script.write_text(source)
    proc = run_python(str(script), ranks=ranks, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "PETSC ERROR" not in proc.stdout + proc.stderr


def test_mpi_commands_name_the_venvs_programs():
    """Every ``mpiexec -n N PROGRAM`` in the docs runs the venv's mpiexec and the venv's
    python: a bare ``mpiexec`` is not installed by ``make install``, and a bare ``python``
    under it lacks pnode."""
    bad = []
    for path in DOCS:
        with open(path) as fh:
            for m in re.finditer(r"(\S*)mpiexec -n \d+ (\S+)", fh.read()):
                if m[1].lstrip("`") != ".venv/bin/" or m[2] != ".venv/bin/python":
                    bad.append(f"{os.path.basename(path)}: {m[0]}")
    assert not bad, bad
