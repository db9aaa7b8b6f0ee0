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


# Parameters and name suffixes that tell apart the cases of one group (who is
# measured), as opposed to those that make another group (what is measured).
_IMPL_PARAMS = frozenset({"backend", "peer", "returns", "option"})
_IMPL_SUFFIXES = frozenset({"ppp", "peer", "floor", "direct", "bare", "proxypatternpool"})
_REF_SUFFIXES = frozenset({"floor", "direct", "bare"})


def _is_ref(item: pytest.Item) -> bool:
    """Whether ``item`` measures its group's reference (it runs first in the group)."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("peer") == "SimpleQueue":
        return True
    return getattr(item, "originalname", item.name).rpartition("_")[2] in _REF_SUFFIXES


def _group_key(item: pytest.Item) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    name = getattr(item, "originalname", item.name)
    head, _, tail = name.rpartition("_")
    if tail in _IMPL_SUFFIXES:
        name = head
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    what = tuple(sorted((k, str(v)) for k, v in params.items() if k not in _IMPL_PARAMS))
    return str(item.path), name, what


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the cases of one group one after the other.

    This machine's load drifts over minutes; a group's ratios are only fair when
    its reference and its cases are measured close together in time.  (pytest
    would otherwise run, say, every direct read before any proxy read.)"""
    bench_dir = Path(__file__).parent
    keys = {id(item): _group_key(item) for item in items if bench_dir in item.path.parents}
    first: dict[tuple[str, str, tuple[tuple[str, str], ...]], int] = {}
    for i, item in enumerate(items):
        if id(item) in keys:
            first.setdefault(keys[id(item)], i)
    order = {
        id(item): (first[keys[id(item)]], not _is_ref(item)) if id(item) in keys else (i, False)
        for i, item in enumerate(items)
    }
    items.sort(key=lambda item: order[id(item)])


def pytest_report_header(config: pytest.Config) -> list[str]:
    from benchkit import machine_name

    return [
        f"ppp bench: BACKEND={ppp.BACKEND}, {machine_name()}, "
        f"{platform.python_implementation()} {platform.python_version()}",
        f"PPP_NO_EXTENSIONS={os.environ.get('PPP_NO_EXTENSIONS', '')!r}",
    ]
