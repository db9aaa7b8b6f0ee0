"""``ppp.prometheus``: the metrics follow the pool's ``stats()`` on both twins, one
family per metric whatever the number of pools, a valid exposition scraped with
``generate_latest`` from a real prometheus-client registry, pooled proxies read
through their pool, and ``examples/prometheus_ppp.py`` serving it over HTTP."""

from __future__ import annotations

import builtins
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import ppp
from ppp import prometheus as prometheus_ppp
from ppp import proxy as proxy_module

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "prometheus_ppp.py"


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
        assert value(registry, "ppp_pool_wait_seconds_count", pool="db") == 1

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
            kind = "counter" if family.name in prometheus_ppp.COUNTERS else "gauge"
            assert family.type == ("summary" if family.name == "ppp_pool_wait_seconds" else kind)
        assert value(registry, "ppp_pool_objects", pool="first") == 1
        assert value(registry, "ppp_pool_in_use", pool="second") == 0
        assert value(registry, "ppp_pool_gets_total", pool="second") == 1
        assert value(registry, "ppp_pool_max_size", pool="second") == 0
        collector.remove("first")
        assert registry.get_sample_value("ppp_pool_objects", {"pool": "first"}) is None
    finally:
        first.shutdown()
        second.shutdown()


def scraped(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry's exposition text, as a real scrape sees it."""
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def expected_samples(name: str, stats: dict[str, Any]) -> dict[Any, float]:
    label = (("pool", name),)
    want: dict[Any, float] = {}
    for metric, (key, _) in prometheus_ppp.COUNTERS.items():
        want[(f"{metric}_total", label)] = float(stats[key])
    for metric, (key, _) in prometheus_ppp.GAUGES.items():
        want[(metric, label)] = float(stats[key] or 0)
    want[("ppp_pool_wait_seconds_count", label)] = float(stats["nwaits"])
    for quantile, key in prometheus_ppp.WAIT_QUANTILES.items():
        got = stats["wait_time"][key]
        want[("ppp_pool_wait_seconds", (("pool", name), ("quantile", quantile)))] = (
            math.nan if got is None else float(got)
        )
    return want


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_scrape_matches_stats_under_threads(Pool: Any) -> None:
    """Rounds of threads contending for 3 objects (waits, timeouts, bad returns);
    after each round the scraped exposition equals ``stats()`` sample for sample."""
    registry = CollectorRegistry()
    pool = Pool(lambda n: [n], max_size=3, min_size=1, timeout=30)
    registry.register(prometheus_ppp.PoolCollector({"db": pool}))
    try:
        for round_ in range(6):
            errors: list[BaseException] = []
            barrier = threading.Barrier(8)

            def worker(
                k: int,
                barrier: threading.Barrier = barrier,
                errors: list[BaseException] = errors,
            ) -> None:
                try:
                    barrier.wait()
                    for i in range(40):
                        try:
                            obj = pool.get(timeout=0 if (k + i) % 7 == 0 else 30)
                        except ppp.TimeOut:
                            continue
                        try:
                            time.sleep(0)
                        finally:
                            pool.ret(obj)
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
                assert not t.is_alive()
            assert errors == []
            stats = pool.stats()
            got = scraped(registry)
            want = expected_samples("db", stats)
            for key, wanted in want.items():
                assert key in got, key
                assert same(got[key], wanted), (round_, key, got[key], wanted)
            assert stats["nusing"] == 0 and stats["nuses"] == stats["nreturns"]
            assert got[("ppp_pool_objects", (("pool", "db"),))] <= 3
    finally:
        pool.shutdown()


def test_pooled_proxy_is_read_through_its_pool(backend: ModuleType) -> None:
    Proxy = proxy_module._for_twin(backend)
    db: Any = Proxy(max_size=2, min_size=0)
    registry = CollectorRegistry()
    registry.register(prometheus_ppp.PoolCollector({"db": db}))  # before it is set
    assert registry.get_sample_value("ppp_pool_objects", {"pool": "db"}) is None
    db.set_fun(lambda n: {"n": n})
    try:
        held: list[Any] = []
        done = threading.Event()

        def hold() -> None:
            held.append(db._get_obj())  # this thread keeps it until it ends
            done.wait(30)

        thread = threading.Thread(target=hold)
        thread.start()
        deadline = time.monotonic() + 30
        while not held:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        assert value(registry, "ppp_pool_in_use", pool="db") == 1
        assert value(registry, "ppp_pool_gets_total", pool="db") == 1
        done.set()
        thread.join(30)
        assert value(registry, "ppp_pool_in_use", pool="db") == 0  # the thread's end gave it back
        assert value(registry, "ppp_pool_returns_total", pool="db") == 1
        first = db._pool
        db.set_fun(lambda n: {"m": n})  # a new pool: read from now on
        assert db._pool is not first
        assert value(registry, "ppp_pool_gets_total", pool="db") == 0
    finally:
        db._pool.shutdown()


def test_bad_sources(registry: CollectorRegistry) -> None:
    collector = prometheus_ppp.PoolCollector()
    with pytest.raises(TypeError, match="Pool or Proxy"):
        collector.add("x", object())
    with pytest.raises(TypeError, match="non-empty str"):
        collector.add("", object())
    with pytest.raises(KeyError):
        collector.remove("nobody")


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_prometheus(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("prometheus_client"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_prometheus)
    with pytest.raises(ImportError, match=re.escape('pip install "ppp-pool[prometheus]"')):
        prometheus_ppp.PoolCollector()


def test_importing_ppp_prometheus_needs_no_prometheus_client() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import ppp, ppp.prometheus\n"
        "try:\n    ppp.prometheus.PoolCollector()\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "ppp-pool[prometheus]" in out.stdout, out


def test_example_serves_the_metrics(backend: ModuleType) -> None:
    """``examples/prometheus_ppp.py`` run as a program: scrape its /metrics."""
    twin = "1" if backend.__name__ == "ppp._pool_py" else ""  # the program's ppp.Proxy
    env = dict(os.environ, PYTHONUNBUFFERED="1", PPP_NO_EXTENSIONS=twin)
    command = [sys.executable, str(EXAMPLE), "--port", "0", "--seconds", "60"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "the example printed nothing in 60 s"
            line = proc.stdout.readline()
            match = re.search(r"http://127\.0\.0\.1:\d+/metrics", line)
            assert match, (line, proc.poll())
            assert f"backend {'python' if twin else 'cython'}" in line
            deadline = time.monotonic() + 30
            while True:
                with urllib.request.urlopen(match.group(0), timeout=30) as response:
                    text = response.read().decode()
                families = {f.name: f for f in text_string_to_metric_families(text)}
                gets = [
                    s.value for s in families["ppp_pool_gets"].samples if s.name.endswith("_total")
                ]
                if gets and gets[0] > 0:
                    break
                assert time.monotonic() < deadline, "the example's pool was never used"
                time.sleep(0.05)
            objects = families["ppp_pool_objects"].samples[0]
            assert objects.labels == {"pool": "db"} and 1 <= objects.value <= 4
        finally:
            proc.terminate()  # SIGTERM: the example stops its threads, shuts the pool down
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
