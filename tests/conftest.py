"""The ``backend`` fixture runs every test on both Pool twins."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import sysconfig
from types import ModuleType
from typing import Any

import pytest

import ppp
from ppp._backend import extensions_disabled

TWINS = {"cython": "ppp._pool", "python": "ppp._pool_py"}

# A free-threaded CPython (3.13t, 3.14t): `make test-ft` runs the suite there with
# PYTHON_GIL=0 and the session fails if the GIL is on at its start or end.
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

# Fixtures whose one value pytest-run-parallel shares between the threads that
# run a test at once (`make test-ft`): tests asserting on their state cannot run
# thread-parallel, and are marked thread_unsafe with this reason.
SHARED_FIXTURES = {
    "counter": "asserts on what the shared `counter` fixture made or closed",
    "clock": "moves the shared fake `clock` fixture",
    "pool_log": "reads the shared log capture and sets the 'ppp' logger's level",
    "caplog": "reads the shared log capture and sets the logger's level",
}


def gil_enabled() -> bool:
    """True when the GIL is on (always, on a default build)."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else bool(is_enabled())


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.hasplugin("run-parallel"):
        # pytest-run-parallel's marker, known without the plugin (--strict-markers)
        config.addinivalue_line(
            "markers", "thread_unsafe(reason): cannot run in pytest-run-parallel's threads"
        )


def pytest_sessionstart(session: pytest.Session) -> None:
    if FREE_THREADED and gil_enabled():
        pytest.exit("free-threaded build: the GIL is on at session start", returncode=3)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if FREE_THREADED and gil_enabled():
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "free-threaded build: the GIL was turned on during the run", red=True
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [
        f"ppp {ppp.__version__}: BACKEND={ppp.BACKEND} ({ppp._impl.__file__})",
        f"PPP_NO_EXTENSIONS={os.environ.get('PPP_NO_EXTENSIONS', '')!r}",
    ]
    if FREE_THREADED:
        lines.append(f"free-threaded build, GIL enabled: {gil_enabled()}")
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cython`` need the compiled twin: with PPP_NO_EXTENSIONS set (a
    pure install, or leg 2) they skip; otherwise a missing extension is an error.
    Tests using a fixture of SHARED_FIXTURES are marked thread_unsafe."""
    for item in items:
        for name in getattr(item, "fixturenames", ()):
            if name in SHARED_FIXTURES and item.get_closest_marker("thread_unsafe") is None:
                item.add_marker(pytest.mark.thread_unsafe(reason=SHARED_FIXTURES[name]))
    if not extensions_disabled():
        return
    skip = pytest.mark.skip(reason="PPP_NO_EXTENSIONS is set: compiled twin not under test")
    for item in items:
        if "cython" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(
    scope="session",
    params=[pytest.param("cython", marks=pytest.mark.cython), "python"],
)
def backend(request: pytest.FixtureRequest) -> ModuleType:
    """The twin module under test.  The compiled leg errors (never skips) when the
    extension does not import, unless PPP_NO_EXTENSIONS asks for pure Python."""
    name = request.param
    if name == "cython" and extensions_disabled():
        pytest.skip("PPP_NO_EXTENSIONS is set: compiled twin not under test")
    try:
        return importlib.import_module(TWINS[name])
    except ImportError as exc:  # pragma: no cover - a broken build
        pytest.fail(f"the compiled twin did not import: {exc}", pytrace=False)


@pytest.fixture
def Pool(backend: ModuleType) -> Any:
    return backend.Pool


@pytest.fixture
def pool_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture the "ppp" logger at DEBUG."""
    caplog.set_level(logging.DEBUG, logger="ppp")
    return caplog


class FakeClock:
    """A monotonic clock that moves only when told to (``clock=`` of Pool)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Counter:
    """A ``fun`` that makes distinct objects and remembers what it made and closed."""

    def __init__(self) -> None:
        self.made: list[int] = []
        self.closed: list[Any] = []

    def __call__(self, n: int) -> dict[str, int]:
        self.made.append(n)
        return {"n": n}

    def close(self, obj: Any) -> None:
        self.closed.append(obj)


@pytest.fixture
def counter() -> Counter:
    return Counter()
