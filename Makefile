# pnode: `make demo` and `make test` build the environment (.venv/) when it is missing.
PY      := .venv/bin/python
STAMP   := .venv/.pnode-ready
EXAMPLE ?= examples/spiral.py
MPIEXEC := .venv/bin/mpiexec
PYTEST_ARGS ?=

.PHONY: install test test-mpi demo docs bench clean

$(STAMP): scripts/install.sh pyproject.toml $(wildcard scripts/revolve/*)
	bash scripts/install.sh
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) $(EXAMPLE)

docs: $(STAMP)
	@$(PY) -c "import sphinx, myst_parser" 2>/dev/null || PNODE_EXTRAS=test,examples,docs bash scripts/install.sh
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf .venv docs/_build build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
