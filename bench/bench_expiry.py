"""Housekeeping over 10,000 idle objects: the scan that finds nothing, and the one that expires all.

ppp's pools run on a fake clock (``clock=``) with a housekeeping period so long
that its thread never runs a round by itself: each round is
``pool._hk_round()``, called here.  ProxyPatternPool's round is its
``_hkRound`` under its lock followed by ``_empty`` (its closing step), the same
work its housekeeping thread does.  Its clock is the wall clock, so "nothing
expires" is a long ``max_avail_delay`` and "all expire" a tiny one.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from benchkit import Maker, scaled, tag

NIDLE = 10_000
ROUNDS = 40  # scan rounds (about 1 ms each)
EXPIRE_ROUNDS = 20  # each needs 10,000 objects made again, untimed


class FakeClock:
    """A monotonic clock the benchmark moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ppp_pool(backend: ModuleType, clock: FakeClock, maker: Maker) -> Any:
    return backend.Pool(maker, max_size=0, min_size=0, max_avail_delay=60.0, delay=1e9, clock=clock)


def _fill_idle(pool: Any, n: int) -> None:
    """Leave ``n`` idle objects in ``pool`` (creating those it lacks)."""
    objs = [pool.get() for _ in range(n)]
    for obj in objs:
        pool.ret(obj)


def _ppp_label(backend: ModuleType) -> tuple[str, str]:
    twin = backend.Pool._backend
    return f"ppp-{twin}", "ppp compiled" if twin == "cython" else "ppp pure"


def test_scan_ppp(benchmark: Any, backend: ModuleType) -> None:
    n = scaled(benchmark, NIDLE, 100)
    clock, maker = FakeClock(), Maker()
    pool = _ppp_pool(backend, clock, maker)
    impl, label = _ppp_label(backend)
    tag(benchmark, "pool-expiry-scan", impl, label, n)
    try:
        _fill_idle(pool, n)
        benchmark.pedantic(pool._hk_round, rounds=ROUNDS, warmup_rounds=1)
        stats = pool.stats()
        assert stats["navail"] == n and stats["nrecycled"] == 0, stats
        assert stats["hk_errors"] == 0, stats
    finally:
        pool.shutdown()


def test_expire_all_ppp(benchmark: Any, backend: ModuleType) -> None:
    n = scaled(benchmark, NIDLE, 100)
    clock, maker = FakeClock(), Maker()
    pool = _ppp_pool(backend, clock, maker)
    impl, label = _ppp_label(backend)
    tag(benchmark, "pool-expiry-all", impl, label, n)

    def setup() -> None:
        _fill_idle(pool, n)
        assert pool.stats()["navail"] == n
        clock.now += 61.0  # every idle object is now past max_avail_delay

    def expire() -> None:
        pool._hk_round()
        assert not pool._avail

    try:
        benchmark.pedantic(expire, setup=setup, rounds=EXPIRE_ROUNDS, warmup_rounds=1)
        stats = pool.stats()
        assert stats["nobjs"] == 0 and stats["hk_errors"] == 0, stats
        assert stats["nrecycled"] == stats["ncreated"] == maker.count, stats
    finally:
        pool.shutdown()


def _ppp11_pool(max_avail_delay: float, maker: Maker) -> Any:
    ppp11 = pytest.importorskip(
        "ProxyPatternPool", reason="peer ProxyPatternPool is not installed (pip install .[bench])"
    )
    # delay=1e9: its housekeeping thread sleeps for good; the rounds are called here
    return ppp11.Pool(maker, max_size=0, min_size=0, max_avail_delay=max_avail_delay, delay=1e9)


def _ppp11_round(pool: Any) -> None:
    with pool._lock:
        pool._hkRound()
    pool._empty()


def test_scan_proxypatternpool(benchmark: Any) -> None:
    n = scaled(benchmark, NIDLE, 100)
    pool = _ppp11_pool(3600.0, Maker())
    tag(benchmark, "pool-expiry-scan", "ProxyPatternPool", "ProxyPatternPool 11.6", n, ref=True)
    try:
        _fill_idle(pool, n)
        benchmark.pedantic(_ppp11_round, args=(pool,), rounds=ROUNDS, warmup_rounds=1)
        assert len(pool._avail) == n and pool._nrecycled == 0
    finally:
        pool.shutdown()


def test_expire_all_proxypatternpool(benchmark: Any) -> None:
    n = scaled(benchmark, NIDLE, 100)
    maker = Maker()
    pool = _ppp11_pool(1e-9, maker)
    tag(benchmark, "pool-expiry-all", "ProxyPatternPool", "ProxyPatternPool 11.6", n, ref=True)

    def setup() -> None:
        _fill_idle(pool, n)
        assert len(pool._avail) == n

    def expire() -> None:
        _ppp11_round(pool)
        assert not pool._avail

    try:
        benchmark.pedantic(expire, setup=setup, rounds=EXPIRE_ROUNDS, warmup_rounds=1)
        assert pool._nrecycled == pool._ncreated == maker.count
    finally:
        pool.shutdown()
