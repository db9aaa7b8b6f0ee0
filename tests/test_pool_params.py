"""Bad parameters are rejected at construction, naming the parameter; the twins
expose the same public names and signatures."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

HOOKS = ["opener", "getter", "retter", "closer", "health", "stats", "tracer", "clock"]


def fun(n: int) -> object:
    return object()


def test_fun_must_be_callable(Pool: Any) -> None:
    with pytest.raises(TypeError, match="fun must be callable"):
        Pool(42)


@pytest.mark.parametrize("hook", HOOKS)
def test_hooks_must_be_callable(Pool: Any, hook: str) -> None:
    with pytest.raises(TypeError, match=f"{hook} must be callable"):
        Pool(fun, **{hook: "not callable"})


@pytest.mark.parametrize("name", ["max_size", "min_size", "max_use"])
def test_negative_counts(Pool: Any, name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be >= 0"):
        Pool(fun, **{name: -1})


@pytest.mark.parametrize("name", ["max_size", "min_size", "max_use", "health_freq"])
@pytest.mark.parametrize("value", [1.5, "3", True])
def test_counts_must_be_ints(Pool: Any, name: str, value: Any) -> None:
    with pytest.raises(TypeError, match=f"{name} must be an int"):
        Pool(fun, **{name: value})


@pytest.mark.parametrize(
    "name",
    ["timeout", "max_avail_delay", "max_using_delay", "max_using_delay_kill", "delay",
     "max_lifetime", "handoff_after"],
)  # fmt: skip
def test_negative_or_nan_delays(Pool: Any, name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be >= 0"):
        Pool(fun, **{name: -0.5})
    with pytest.raises(ValueError, match=name):
        Pool(fun, **{name: float("nan")})
    with pytest.raises(TypeError, match=f"{name} must be a number"):
        Pool(fun, **{name: "1"})


def test_min_size_above_max_size(Pool: Any) -> None:
    with pytest.raises(ValueError, match=r"min_size \(3\) must not exceed max_size \(2\)"):
        Pool(fun, min_size=3, max_size=2)
    Pool(fun, min_size=3, max_size=0)  # unlimited: fine


def test_health_freq_at_least_one(Pool: Any) -> None:
    with pytest.raises(ValueError, match="health_freq must be >= 1"):
        Pool(fun, health_freq=0)


def test_leak_trace_and_log_level_types(Pool: Any) -> None:
    with pytest.raises(TypeError, match="leak_trace"):
        Pool(fun, leak_trace="yes")
    with pytest.raises(TypeError, match="log_level"):
        Pool(fun, log_level=1.5)
    with pytest.raises(ValueError, match="Unknown level"):
        Pool(fun, log_level="LOUD")


def test_get_timeout_checked(Pool: Any) -> None:
    pool = Pool(fun, min_size=1)
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        pool.get(timeout=-1)
    with pytest.raises(TypeError, match="timeout must be a number"):
        pool.get(timeout="soon")
    s = pool.stats()
    assert (s["nusing"], s["navail"]) == (0, 1)  # nothing changed


def test_positional_parameters_match_proxypatternpool(Pool: Any) -> None:
    names = list(inspect.signature(Pool).parameters)
    assert names[:18] == [
        "fun", "max_size", "min_size", "timeout", "max_use", "max_avail_delay",
        "max_using_delay", "max_using_delay_kill", "health_freq", "delay", "opener",
        "getter", "retter", "closer", "health", "stats", "tracer", "log_level",
    ]  # fmt: skip
    assert names[18:] == [
        "max_lifetime", "leak_trace", "clock", "health_timeout", "after_fork",
        "handoff_after",
    ]  # fmt: skip


def shape(func: Any) -> list[tuple[str, Any, Any]]:
    """A signature without annotations (Cython does not keep them)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()]


def public_names(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


@pytest.mark.cython
def test_twins_expose_the_same_public_api() -> None:
    from ppp import _pool, _pool_py

    assert public_names(_pool.Pool) == public_names(_pool_py.Pool)
    for name in public_names(_pool_py.Pool) | {"__init__"}:
        py, cy = getattr(_pool_py.Pool, name), getattr(_pool.Pool, name)
        if callable(py):
            assert shape(py) == shape(cy), name
