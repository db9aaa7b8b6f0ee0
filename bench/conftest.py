"""Benchmark set-up: the tests' ``backend`` fixture, collection of ``bench_*.py``, peers.

``bench/`` is not a package, so the fixtures of ``tests/conftest.py`` are loaded
from that file by path (under a private module name) and re-exported here: the
benchmarks run each ppp case on both twins exactly as the tests do, and a
change to that fixture reaches both.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path
from types import ModuleType

import pytest

import ppp

ROOT = Path(__file__).resolve().parent.parent


def _load_tests_conftest() -> ModuleType:
    name = "_ppp_tests_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_tests_conftest = _load_tests_conftest()
backend = _tests_conftest.backend  # the session fixture: params cython, python


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect ``bench_*.py`` (pytest's default only collects ``test_*.py``)."""
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)  # an explicit path is collected already
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_report_header(config: pytest.Config) -> list[str]:
    from benchkit import machine_name

    return [
        f"ppp bench: BACKEND={ppp.BACKEND}, {machine_name()}, "
        f"{platform.python_implementation()} {platform.python_version()}",
        f"PPP_NO_EXTENSIONS={os.environ.get('PPP_NO_EXTENSIONS', '')!r}",
    ]
