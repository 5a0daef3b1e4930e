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
    subst = {".venv/bin/python": sys.executable, "python": sys.executable, ".venv/bin/mpiexec": MPIEXEC}
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
