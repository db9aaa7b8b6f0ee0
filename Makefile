# ppp — the commands people and CI run.  `make test` works on a fresh clone:
# it makes its own virtual environment, installs ppp with the extension
# required, and runs the suite on both backends.

SHELL := /bin/bash
PYTHON ?= $(shell tools/find-python)
VENV ?= .venv
VPY := $(VENV)/bin/python
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: help venv install test test-fast lint types clean build

help:
	@echo "make demo    the main job: a threaded server under thread churn, variants side by side"
	@echo "make test    run the suite on both backends (creates $(VENV))"
	@echo "make lint    ruff and cython-lint"
	@echo "make types   mypy --strict and stubtest"
	@echo "make bench   benchmarks beside the peers: bench/results/ (table and chart)"
	@echo "make soak    a million pairs and 100,000 proxy thread lifetimes, memory flat"
	@echo "make wheels wheels-test   manylinux wheels per CPython, then tested installed"
	@echo "make clean   remove build products and caches"

$(VPY):
	@test -n "$(PYTHON)" || { echo "no Python 3.10-3.13 found" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

# Reinstall (editable, so .py edits need nothing) when the build configuration
# or a Cython source changes.
$(STAMP): $(VPY) pyproject.toml setup.py $(wildcard ppp/*.pyx)
	$(VPY) -m pip install -q "setuptools>=77" "Cython>=3.1" wheel
	PPP_REQUIRE_EXTENSIONS=1 $(VPY) -m pip install -q --no-build-isolation -e ".[test,bench,dev]"
	$(VPY) -c "import ppp, sys; assert ppp.BACKEND == 'cython', ppp.BACKEND; print('installed', ppp.__version__, ppp.BACKEND)"
	@touch $(STAMP)

venv install: $(STAMP)

# Both legs run under `python -X dev` (ResourceWarnings become errors).
# Leg 1 runs every test on both twins side by side (the `backend` fixture);
# leg 2 runs the suite again with PPP_NO_EXTENSIONS=1, where ppp.Pool and
# ppp.Proxy are the pure twin (the compiled parameters skip there).
test: $(STAMP)
	@echo "=== leg 1/2: compiled and pure twins (ppp.BACKEND=cython) ==="
	$(VPY) -X dev -m pytest $(PYTEST_ARGS)
	@echo "=== leg 2/2: pure twin only (PPP_NO_EXTENSIONS=1, ppp.BACKEND=python) ==="
	PPP_NO_EXTENSIONS=1 $(VPY) -X dev -m pytest -m "not cython" $(PYTEST_ARGS)
	@echo "=== benchmarks, once each, unmeasured (smoke: both legs) ==="
	$(MAKE) --no-print-directory bench-smoke

lint: $(STAMP)
	$(VENV)/bin/ruff check ppp tests bench examples tools
	$(VENV)/bin/ruff format --check ppp tests bench examples tools
	PATH=$(VENV)/bin:$$PATH cython-lint ppp/*.pyx

types: $(STAMP)
	$(VENV)/bin/mypy ppp tests
	$(VENV)/bin/mypy ppp bench
	$(VENV)/bin/mypy ppp examples
	$(VPY) -m mypy.stubtest ppp._pool ppp._proxy --allowlist tools/stubtest-allowlist.txt

build: $(STAMP)

clean:
	rm -rf build dist wheelhouse *.egg-info ppp/*.c ppp/*.so ppp/*.html
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Targets of later work live in mk/*.mk (bench, wheels, demo, soak).
-include mk/*.mk
