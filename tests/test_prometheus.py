"""The README's Prometheus export (``examples/prometheus_ppp.py``): the metrics
follow the pool's ``stats()`` on both twins, one family per metric whatever the
number of pools, and a valid exposition."""

from __future__ import annotations

import importlib.util
import math
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import ppp

PATH = Path(__file__).resolve().parent.parent / "examples" / "prometheus_ppp.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prometheus_ppp", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prometheus_ppp = load_example()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    assert got is not None, f"no sample {name}{labels}"
    return got


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_metrics_follow_the_pool(Pool: Any, registry: CollectorRegistry) -> None:
    created: list[int] = []

    def fun(n: int) -> list[int]:
        created.append(n)
        return [n]

    pool = Pool(fun, max_size=2, min_size=0)
    registry.register(prometheus_ppp.PoolCollector({"db": pool}))
    try:
        assert value(registry, "ppp_pool_objects", pool="db") == 0
        assert value(registry, "ppp_pool_max_size", pool="db") == 2
        assert math.isnan(value(registry, "ppp_pool_wait_seconds", pool="db", quantile="0.5"))

        a, b = pool.get(), pool.get()
        assert value(registry, "ppp_pool_in_use", pool="db") == 2
        assert value(registry, "ppp_pool_idle", pool="db") == 0
        assert value(registry, "ppp_pool_created_total", pool="db") == 2
        assert value(registry, "ppp_pool_gets_total", pool="db") == 2
        with pytest.raises(ppp.TimeOut):
            pool.get(timeout=0)
        assert value(registry, "ppp_pool_timeouts_total", pool="db") == 1

        # a waiter, served when b comes back
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(pool.get(timeout=30)))
        waiter.start()
        deadline = time.monotonic() + 10
        while value(registry, "ppp_pool_waiting", pool="db") != 1:
            assert time.monotonic() < deadline, "the waiter never waited"
            time.sleep(0.005)
        time.sleep(0.02)
        pool.ret(b)
        waiter.join(10)
        assert got == [b]
        assert value(registry, "ppp_pool_waiting", pool="db") == 0
        assert value(registry, "ppp_pool_max_waiting", pool="db") == 1
        assert value(registry, "ppp_pool_waits_total", pool="db") == 1
        waited = value(registry, "ppp_pool_wait_seconds", pool="db", quantile="1")
        assert waited >= 0.02
        assert value(registry, "ppp_pool_wait_seconds", pool="db", quantile="0.5") == waited

        pool.ret(a)
        pool.ret(got[0])
        pool.ret(a)  # a second return: refused, counted
        assert value(registry, "ppp_pool_returns_total", pool="db") == 3  # b, a, b again
        assert value(registry, "ppp_pool_bad_returns_total", pool="db") == 1
        assert value(registry, "ppp_pool_idle", pool="db") == 2
        assert value(registry, "ppp_pool_in_use", pool="db") == 0
    finally:
        pool.shutdown()
    assert value(registry, "ppp_pool_objects", pool="db") == 0
    assert value(registry, "ppp_pool_closed_total", pool="db") == 2
    assert created == [0, 1]


def test_retirements_are_counted(Pool: Any, registry: CollectorRegistry) -> None:
    now = [0.0]
    pool = Pool(
        lambda n: object(),
        max_size=3,
        min_size=0,
        max_use=2,
        max_lifetime=10.0,
        health=lambda o: False,
        delay=1e9,
        clock=lambda: now[0],
    )
    registry.register(prometheus_ppp.PoolCollector({"p": pool}))
    try:
        for _ in range(2):
            with pool.obj():
                pass
        assert value(registry, "ppp_pool_worn_out_total", pool="p") == 1
        with pool.obj():
            now[0] += 11.0
        assert value(registry, "ppp_pool_expired_total", pool="p") == 1
        with pool.obj():
            pass
        pool._hk_round()  # health says no to the idle one
        assert value(registry, "ppp_pool_bad_health_total", pool="p") == 1
        assert value(registry, "ppp_pool_closed_total", pool="p") == 3
        assert value(registry, "ppp_pool_created_total", pool="p") == 3
    finally:
        pool.shutdown()


def test_several_pools_one_family_each(Pool: Any, registry: CollectorRegistry) -> None:
    first = Pool(lambda n: [n], max_size=1, min_size=1)
    second = Pool(lambda n: [n], max_size=0, min_size=0)
    collector = prometheus_ppp.PoolCollector({"first": first})
    collector.add("second", second)
    with pytest.raises(ValueError, match="'second' is already exported"):
        collector.add("second", second)
    registry.register(collector)
    try:
        with second.obj():
            text = generate_latest(registry).decode()
        families = list(text_string_to_metric_families(text))
        names = [f.name for f in families]
        assert len(names) == len(set(names)), names  # each family once
        expected = {m for m in prometheus_ppp.COUNTERS} | set(prometheus_ppp.GAUGES)
        assert expected | {"ppp_pool_wait_seconds"} == set(names)
        for family in families:
            pools = {s.labels["pool"] for s in family.samples if not s.name.endswith("_created")}
            assert pools == {"first", "second"}, family.name
            assert family.type == ("counter" if family.name in prometheus_ppp.COUNTERS else "gauge")
        assert value(registry, "ppp_pool_objects", pool="first") == 1
        assert value(registry, "ppp_pool_in_use", pool="second") == 0
        assert value(registry, "ppp_pool_gets_total", pool="second") == 1
        assert value(registry, "ppp_pool_max_size", pool="second") == 0
        collector.remove("first")
        assert registry.get_sample_value("ppp_pool_objects", {"pool": "first"}) is None
    finally:
        first.shutdown()
        second.shutdown()
