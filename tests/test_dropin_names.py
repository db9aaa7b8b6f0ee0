"""Moving from ProxyPatternPool is ``import ppp``: every name ProxyPatternPool 11.6
defines at module level (not its own imports of the standard library) is
importable from ``ppp``, with the same meaning."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import importlib.metadata
import logging
import typing
from types import ModuleType
from typing import Any

import pytest

import ppp

upstream = pytest.importorskip("ProxyPatternPool")

# what ProxyPatternPool imports for itself (``from typing import Any`` ...)
STDLIB_IMPORTS = (
    typing.Any,
    typing.Callable,
    enum.Enum,
    dataclasses.dataclass,
    contextlib.contextmanager,
    importlib.metadata.version,
)


def upstream_names() -> set[str]:
    names = set()
    for name, value in vars(upstream).items():
        if name.startswith("_") and name != "__version__":
            continue
        if isinstance(value, ModuleType) or any(value is s for s in STDLIB_IMPORTS):
            continue
        names.add(name)
    return names


def test_every_upstream_name_is_importable() -> None:
    names = upstream_names()
    assert {"log", "FunHook", "PoolHook", "TraceHook", "StatsHook", "HealthHook"} <= names
    missing = sorted(n for n in names if not hasattr(ppp, n))
    assert not missing, f"ProxyPatternPool names missing from ppp: {missing}"
    for name in names - {"__version__"}:
        assert name in ppp.__all__, name


def test_log_is_the_ppp_logger() -> None:
    assert ppp.log is logging.getLogger("ppp") is upstream.log


@pytest.mark.parametrize("name", ["FunHook", "PoolHook", "TraceHook", "StatsHook", "HealthHook"])
def test_hook_aliases_take_what_upstream_takes(name: str) -> None:
    ours, theirs = getattr(ppp, name), getattr(upstream, name)
    assert typing.get_origin(ours) is typing.get_origin(theirs)
    (our_args, our_ret), (their_args, their_ret) = typing.get_args(ours), typing.get_args(theirs)
    assert our_args == their_args
    # a PoolHook's result is ignored: ours accepts any (upstream says None)
    assert our_ret == their_ret or (name == "PoolHook" and our_ret is Any)


def test_exceptions_are_the_same_hierarchy() -> None:
    for name in ("PPPException", "PoolException", "TimeOut", "ProxyException"):
        ours = getattr(ppp, name)
        parents = [c.__name__ for c in ours.__mro__ if c.__module__.startswith("ppp")]
        theirs = [c.__name__ for c in getattr(upstream, name).__mro__ if c is not Exception]
        assert parents == [n for n in theirs if n not in ("BaseException", "object")]


def test_hooks_typed_with_the_aliases_drive_a_pool(Pool: Any) -> None:
    seen: list[str] = []
    fun: ppp.FunHook = lambda n: {"n": n}  # noqa: E731
    retter: ppp.PoolHook = lambda o: seen.append("ret")  # noqa: E731
    tracer: ppp.TraceHook = lambda o: f"obj{o['n']}"  # noqa: E731
    stats: ppp.StatsHook = lambda o: {"n": o["n"]}  # noqa: E731
    health: ppp.HealthHook = lambda o: True  # noqa: E731
    pool = Pool(fun, max_size=2, retter=retter, tracer=tracer, stats=stats, health=health)
    try:
        with pool.obj() as obj:
            assert obj == {"n": 0}
        assert seen == ["ret"]
        assert pool.stats()["avail"][0]["n"] == 0
    finally:
        pool.shutdown()
