"""The ``backend`` fixture runs every test on both Pool twins."""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType
from typing import Any

import pytest

import ppp
from ppp._backend import extensions_disabled

TWINS = {"cython": "ppp._pool", "python": "ppp._pool_py"}


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"ppp {ppp.__version__}: BACKEND={ppp.BACKEND} ({ppp._impl.__file__})",
        f"PPP_NO_EXTENSIONS={os.environ.get('PPP_NO_EXTENSIONS', '')!r}",
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cython`` need the compiled twin: with PPP_NO_EXTENSIONS set (a
    pure install, or leg 2) they skip; otherwise a missing extension is an error."""
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
