# Free-threaded CPython (issue 14).  `make test-ft` builds, once, a CPython
# configured with --disable-gil from Debian's source package
# (tools/ft_build_python.sh; cached in ~/.cache/ppp/cpython-ft-<version>), makes
# its own venv $(FT_VENV) with the test dependencies that install there
# (tools/ft_requirements.py: no gevent/eventlet/greenlet, pure psycopg), installs
# ppp there (editable, extension required: it builds the cpython-3XXt .so files
# beside the default build's), then runs, with the GIL off (PYTHON_GIL=0, and
# tests/conftest.py fails the session if the GIL is on at its start or end):
#   1. the whole suite, both twins side by side (the `backend` fixture);
#   2. the Pool and Proxy tests under pytest-run-parallel, each test run by
#      $(FT_THREADS) threads at once (tests that cannot are marked thread_unsafe).
# `make test`'s second leg (PPP_NO_EXTENSIONS=1: ppp.Pool and ppp.Proxy pure)
# is left out to keep CI short: FT_PURE_LEG=1 adds it.
# `make bench-ft` runs bench/bench_ft.py there (its table: README).

FT_VENV ?= .venv-ft
FT_VPY := $(FT_VENV)/bin/python
FT_STAMP := $(FT_VENV)/.installed
FT_THREADS ?= 4
FT_PYTEST_ARGS ?=
FT_PARALLEL_TESTS ?= tests/test_pool_basic.py tests/test_pool_housekeeping.py \
	tests/test_pool_params.py tests/test_pool_threads.py tests/test_pool_waiting.py \
	tests/test_proxy.py tests/test_proxy_threads.py
FT_BENCH_ARGS ?=

.PHONY: ft-venv test-ft bench-ft

$(FT_VPY):
	py=$$(tools/ft_build_python.sh) && "$$py" -m venv --clear $(FT_VENV)
	$(FT_VPY) -m pip install -q --upgrade pip

# Only ppp's own .so files for this interpreter are built (in place, beside the
# default build's): the default venv's are left alone.
$(FT_STAMP): $(FT_VPY) pyproject.toml setup.py tools/ft_requirements.py $(wildcard ppp/*.pyx)
	$(FT_VPY) -m pip install -q "setuptools>=77" "Cython>=3.1" wheel
	$(FT_VPY) tools/ft_requirements.py > $(FT_VENV)/requirements.txt
	@# --prefer-binary: the newest release with a wheel here (hypothesis and
	@# matplotlib have releases whose sdist alone would need a Rust or C toolchain).
	$(FT_VPY) -m pip install -q --prefer-binary -r $(FT_VENV)/requirements.txt
	$(FT_VPY) -m pip install -q --no-deps $$($(FT_VPY) tools/ft_requirements.py --no-deps)
	PPP_REQUIRE_EXTENSIONS=1 $(FT_VPY) -m pip install -q --no-build-isolation --no-deps -e .
	@# Without PYTHON_GIL set: importing ppp and its compiled modules keeps the GIL off.
	$(FT_VPY) -c "import glob, importlib, os, sys, ppp; \
	  mods = [importlib.import_module('ppp.' + os.path.basename(p)[:-4]) for p in glob.glob('ppp/*.pyx')]; \
	  assert ppp.BACKEND == 'cython', ppp.BACKEND; \
	  assert not sys._is_gil_enabled(), 'importing ppp turned the GIL on'; \
	  print('installed', ppp.__version__, ppp.BACKEND, 'on', sys.version.split()[0], 'free-threaded, GIL off:', [m.__name__ for m in mods])"
	@touch $(FT_STAMP)

ft-venv: $(FT_STAMP)

FT_PURE_LEG ?=

test-ft: $(FT_STAMP)
	@echo "=== free-threaded: compiled and pure twins, PYTHON_GIL=0 ==="
	PYTHON_GIL=0 $(FT_VPY) -X dev -m pytest $(FT_PYTEST_ARGS)
ifneq ($(FT_PURE_LEG),)
	@echo "=== free-threaded: pure twin only (PPP_NO_EXTENSIONS=1), PYTHON_GIL=0 ==="
	PYTHON_GIL=0 PPP_NO_EXTENSIONS=1 $(FT_VPY) -X dev -m pytest -m "not cython" $(FT_PYTEST_ARGS)
endif
	@echo "=== free-threaded: Pool and Proxy tests, $(FT_THREADS) threads each (pytest-run-parallel) ==="
	PYTHON_GIL=0 $(FT_VPY) -X dev -m pytest --parallel-threads=$(FT_THREADS) $(FT_PARALLEL_TESTS) $(FT_PYTEST_ARGS)

bench-ft: $(FT_STAMP)
	PYTHON_GIL=0 $(FT_VPY) -m pytest bench/bench_ft.py -q -p no:cacheprovider $(FT_BENCH_ARGS)
