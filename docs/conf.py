"""Sphinx configuration for pnode's documentation (builds offline).

Build: .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html
"""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

# pnode initialises PETSc with sys.argv when it is imported (autodoc imports it). Sphinx's
# own arguments (-W, -b, ...) are no PETSc options: hide them during the import, or PETSc
# would report them as unused options at exit.
_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import pnode  # noqa: E402
finally:
    sys.argv = _argv

project = "pnode"
author = "the pnode developers"
copyright = "pnode developers; BSD-2-Clause"
version = release = pnode.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Markdown (MyST)
myst_enable_extensions = ["dollarmath", "amsmath", "deflist"]
myst_heading_anchors = 3

# Docstrings are Google style.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True  # show `comm=MPI.COMM_WORLD`, not the object's repr

html_theme = "alabaster"
html_title = f"pnode {release}"
html_static_path = ["_static"]  # custom.css: alabaster includes it after its own
# A wider page (alabaster's default body is 940 px, too narrow for the code and the tables).
html_theme_options = {"page_width": "min(1400px, 96vw)", "sidebar_width": "230px", "body_max_width": "none"}


def _benchmark_sections_are_orphans(app, docname, source):
    """docs/benchmarks_<name>.md (written by each benchmark script) are also assembled into
    benchmarks.md, which the navigation lists; each stays reachable as its own page (other
    pages link to it) without a second, uncaptioned list of eight pages in the sidebar."""
    if docname.startswith("benchmarks_"):
        source[0] = "---\norphan: true\n---\n" + source[0]


def setup(app):
    app.connect("source-read", _benchmark_sections_are_orphans)
