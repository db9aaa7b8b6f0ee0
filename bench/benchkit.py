"""Shared pieces of the benchmarks: stand-in objects, every pool behind one face, the loops.

Sub-microsecond operations are timed as a loop of many operations per round
(``extra_info["ops"]``); ``bench/report.py`` divides the round's median by it and
compares each case with its group's reference (``extra_info["ref"]``), which is
measured in the same run.  Peers are optional (``pip install .[bench]``): a
missing one skips with a note, never errors.
"""

from __future__ import annotations

import hashlib
import os
import platform
import queue
import threading
import time
import types
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, cast

import pytest

UNROLL = 10  # operations written out per loop iteration, so loop overhead stays ~1 ns

# --------------------------------------------------------------------- groups

#: group id -> (title, unit of the per-operation figure)
GROUPS: dict[str, tuple[str, str]] = {
    "pool-pair": ("Pool get+ret, 1 thread, max_size=8", "ns per get+ret"),
    "pool-with": ("`with pool.obj()`, 1 thread, max_size=8", "ns per with-block"),
    "pool-options": ("ppp get+ret with one option switched on, 1 thread", "ns per get+ret"),
}
for _work in ("cpu", "nogil"):
    for _n in (2, 8, 32):
        GROUPS[f"pool-contended-{_work}-{_n}"] = (
            f"{_n} threads on a pool of {max(1, _n // 2)}, "
            + ("CPU work holding the GIL" if _work == "cpu" else "work that releases the GIL")
            + " between get and ret",
            "ns wall per pair (all threads)",
        )
GROUPS["pool-expiry-scan"] = (
    "Housekeeping round over 10,000 idle objects, none expiring",
    "ns per idle object",
)
GROUPS["pool-expiry-all"] = (
    "Housekeeping round expiring 10,000 idle objects",
    "ns per idle object",
)
GROUPS["pool-stats-stall"] = (
    "get+ret in another thread while `stats()` runs over 1,000,000 objects",
    "time of one stats() call; the longest get+ret stall is in the note",
)
_SCOPES = {
    "shared": "shared object (obj=)",
    "thread": "per-thread object, no pool (fun=, max_size=None)",
    "pooled": "per-thread object from a pool (fun=, max_size=16)",
    "versatile": "per-thread-and-task object (scope=VERSATILE, max_size=16)",
}
for _op, _what in (("read", "attribute read"), ("call", "method call")):
    for _scope, _desc in _SCOPES.items():
        GROUPS[f"proxy-{_op}-{_scope}"] = (f"Proxy {_what}, {_desc}", f"ns per {_what}")
GROUPS["proxy-churn"] = (
    "2,000 short threads (16 alive at most) reading through Proxy(fun, max_size=16)",
    "µs per thread",
)
GROUPS["sqlalchemy-pair"] = (
    "SQLAlchemy `pool.connect()` + `close()`, 1 thread, pool_size=8: PPPPool vs QueuePool",
    "ns per checkout+checkin",
)
for _n in (8, 32):
    GROUPS[f"sqlalchemy-contended-{_n}"] = (
        f"{_n} threads on a SQLAlchemy pool of {_n // 2}, CPU work between checkout and "
        "checkin: PPPPool vs QueuePool",
        "ns wall per pair (all threads)",
    )


def tag(
    benchmark: Any, group: str, impl: str, label: str, ops: int, ref: bool = False, **info: Any
) -> None:
    """Name a measurement for the report: its group, who it measures, how many operations."""
    assert group in GROUPS, group
    benchmark.group = group
    benchmark.extra_info.update(impl=impl, label=label, ops=ops, ref=ref, **info)


def scaled(benchmark: Any, full: int, smoke: int) -> int:
    """``full`` when measuring, ``smoke`` under ``--benchmark-disable`` (one quick call)."""
    return smoke if benchmark.disabled else full


ROUND_TIME = 250e-6  # target length of one round of a single-thread loop
CASE_TIME = 0.5  # measured time per case (rounds x round length)
MIN_ROUNDS, MAX_ROUNDS = 25, 1000


def fresh(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of function ``fn`` with its own code object.

    CPython 3.11+ specialises each bytecode for the types it sees (an inline
    cache in the code object): one loop function fed a proxy in one test and a
    plain object in the next -- or both in turn, when a reference is paired --
    runs de-specialised and slower.  Every measured loop is therefore a fresh copy."""
    assert isinstance(fn, types.FunctionType), fn
    return types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )


def _calibrate(loop: Callable[..., Any], args: tuple[Any, ...]) -> tuple[int, float]:
    """Operations per round for a round of about ``ROUND_TIME``, and the time per operation."""
    n = UNROLL
    while True:
        start = time.perf_counter()
        loop(*args, n)
        elapsed = time.perf_counter() - start
        if elapsed >= ROUND_TIME / 5 or n >= 10**7:
            break
        n *= 4
    per_op = elapsed / n
    return max(UNROLL, round(ROUND_TIME / per_op / UNROLL) * UNROLL), per_op


def paired_ratio(benchmark: Any, ops: int, ref_per_op: list[float], warmup: int) -> float:
    """The median over rounds of (this round's time per op / the reference's just before).

    Measuring the reference right before each round cancels the slow drift of this
    shared machine's load, which a ratio of two medians taken minutes apart does not."""
    data = benchmark.stats.stats.data
    refs = ref_per_op[warmup:]
    ratios: list[float] = sorted(d / ops / r for d, r in zip(data, refs, strict=True))
    return ratios[len(ratios) // 2]


WARMUP = 3


def measure_loop(
    benchmark: Any,
    loop: Callable[..., Any],
    args: tuple[Any, ...],
    group: str,
    impl: str,
    label: str,
    ref: bool = False,
    paired: tuple[Callable[..., Any], tuple[Any, ...]] | None = None,
    **info: Any,
) -> Any:
    """Time ``loop(*args, n)``, a loop of ``n`` operations, in many short rounds.

    ``n`` is calibrated so that a round lasts about ``ROUND_TIME``: short rounds
    let the median skip the rounds in which this shared machine preempted us,
    and long enough ones keep the timer's own cost negligible.  With ``paired``
    (the group reference's loop and arguments), the reference runs untimed by
    pytest-benchmark but timed here before every round, and
    ``extra_info["paired_ratio"]`` records the median per-round ratio.  Returns
    the loop's result (under ``--benchmark-disable``: one call of 20 operations)."""
    loop = fresh(loop)
    if benchmark.disabled:
        tag(benchmark, group, impl, label, 2 * UNROLL, ref=ref, **info)
        if paired is not None:
            paired[0](*paired[1], 2 * UNROLL)
        return benchmark.pedantic(loop, args=(*args, 2 * UNROLL))
    n, per_op = _calibrate(loop, args)
    rounds = min(MAX_ROUNDS, max(MIN_ROUNDS, round(CASE_TIME / (n * per_op))))
    tag(benchmark, group, impl, label, n, ref=ref, **info)
    if paired is None:
        return benchmark.pedantic(loop, args=(*args, n), rounds=rounds, warmup_rounds=WARMUP)
    ref_loop, ref_args = fresh(paired[0]), paired[1]
    ref_n, _ = _calibrate(ref_loop, ref_args)
    ref_per_op: list[float] = []

    def time_reference() -> None:
        start = time.perf_counter()
        ref_loop(*ref_args, ref_n)
        ref_per_op.append((time.perf_counter() - start) / ref_n)

    result = benchmark.pedantic(
        loop, args=(*args, n), setup=time_reference, rounds=rounds, warmup_rounds=WARMUP
    )
    benchmark.extra_info["paired_ratio"] = paired_ratio(benchmark, n, ref_per_op, WARMUP)
    return result


def machine_name() -> str:
    """CPU model and core count, for the report and the README."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


# ------------------------------------------------------------------- objects


class Conn:
    """A stand-in DB-API connection: what is measured is the pool, not a database."""

    threadsafety = 1

    def __init__(self, n: int = 0) -> None:
        self.n = n
        self.x = n
        self.closed = False

    def m(self) -> int:
        return self.x

    def cursor(self) -> None:
        return None

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _fake_dbapi() -> types.ModuleType:
    """A DB-API module over :class:`Conn`, which DBUtils needs to find its exceptions."""
    mod = types.ModuleType("fake_dbapi")
    mod.connect = Conn  # type: ignore[attr-defined]
    mod.threadsafety = 1  # type: ignore[attr-defined]
    for name in ("Error", "OperationalError", "InterfaceError", "InternalError"):
        setattr(mod, name, type(name, (Exception,), {}))
    return mod


# --------------------------------------------------------------------- faces


class Maker:
    """The ``fun`` a pool creates with: makes :class:`Conn` objects and counts them."""

    def __init__(self) -> None:
        self._made: list[int] = []  # list.append is atomic: creations may race

    def __call__(self, n: int = 0) -> Conn:
        self._made.append(n)
        return Conn(n)

    @property
    def count(self) -> int:
        return len(self._made)


@dataclass
class Face:
    """One pool behind a common face, so every loop runs the same code on each.

    ``ret(get())`` is a get+return pair; ``key(handle)`` is the identity of the
    object underneath (peers hand out wrappers); ``ctx()`` is the pool's own
    context manager; ``check()`` asserts the pool's invariants once all threads
    are done: nothing still out, no more objects created than ``size``."""

    impl: str
    label: str
    size: int
    maker: Maker
    pool: Any
    get: Callable[[], Any]
    ret: Callable[[Any], Any]
    ctx: Callable[[], AbstractContextManager[Any]]
    close: Callable[[], Any]
    check_pool: Callable[[], None]
    key: Callable[[Any], int] = id

    def check(self) -> None:
        made = self.maker.count
        assert made <= self.size, f"{self.label}: {made} objects created for a size of {self.size}"
        self.check_pool()


def ppp_face(Pool: Any, size: int, **kwargs: Any) -> Face:
    """ppp's Pool (either twin) with ``max_size=size``; ``kwargs`` go to the Pool."""
    backend = Pool._backend
    maker = Maker()
    pool = Pool(maker, **{"max_size": size, **kwargs})

    def check_pool() -> None:
        s = pool.stats()
        assert s["nusing"] == 0 and s["ntimeouts"] == 0 and s["nobjs"] <= size, s

    label = "ppp compiled" if backend == "cython" else "ppp pure"
    return Face(
        f"ppp-{backend}",
        label,
        size,
        maker,
        pool,
        pool.get,
        pool.ret,
        pool.obj,
        pool.shutdown,
        check_pool,
    )


def simplequeue_face(size: int) -> Face:
    """The floor: a ``queue.SimpleQueue`` holding ``size`` objects."""
    maker = Maker()
    q: queue.SimpleQueue[Conn] = queue.SimpleQueue()
    for n in range(size):
        q.put(maker(n))

    def check_pool() -> None:
        assert q.qsize() == size, q.qsize()

    def no_ctx() -> AbstractContextManager[Any]:
        raise NotImplementedError("SimpleQueue has no context manager: see try_finally_loop")

    return Face(
        "SimpleQueue",
        "queue.SimpleQueue",
        size,
        maker,
        q,
        q.get,
        q.put,
        no_ctx,
        lambda: None,
        check_pool,
    )


def _skip_missing(module: str, peer: str) -> Any:
    return pytest.importorskip(
        module, reason=f"peer {peer} is not installed (pip install .[bench]): skipped"
    )


def proxypatternpool_face(size: int) -> Face:
    """ProxyPatternPool 11.6, the package ppp replaces."""
    ppp11 = _skip_missing("ProxyPatternPool", "ProxyPatternPool")
    maker = Maker()
    pool = ppp11.Pool(maker, max_size=size, timeout=30.0)

    def check_pool() -> None:
        assert not pool._using and pool._nobjs <= size, (pool._using, pool._nobjs)

    return Face(
        "ProxyPatternPool",
        "ProxyPatternPool 11.6",
        size,
        maker,
        pool,
        pool.get,
        pool.ret,
        pool.obj,
        pool.shutdown,
        check_pool,
    )


def sqlalchemy_face(size: int) -> Face:
    """SQLAlchemy's QueuePool, without reset-on-return (no DB-API call is timed)."""
    _skip_missing("sqlalchemy", "SQLAlchemy")
    from sqlalchemy.pool import QueuePool
    from sqlalchemy.pool.base import _ConnectionFairy

    maker = Maker()
    pool = QueuePool(
        cast(Any, maker), pool_size=size, max_overflow=0, timeout=30.0, reset_on_return=None
    )

    def check_pool() -> None:
        assert pool.checkedout() == 0, pool.status()

    return Face(
        "SQLAlchemy",
        "SQLAlchemy QueuePool",
        size,
        maker,
        pool,
        pool.connect,
        _ConnectionFairy.close,
        pool.connect,
        pool.dispose,
        check_pool,
        key=lambda c: id(c.dbapi_connection),
    )


def dbutils_face(size: int) -> Face:
    """DBUtils' PooledDB, blocking at ``maxconnections``, no ping, no reset."""
    _skip_missing("dbutils", "DBUtils")
    from dbutils.pooled_db import (  # type: ignore[import-untyped]
        PooledDB,
        PooledDedicatedDBConnection,
    )

    maker = Maker()
    dbapi = _fake_dbapi()
    dbapi.connect = maker  # type: ignore[attr-defined]
    pool = PooledDB(
        dbapi,
        mincached=0,
        maxcached=size,
        maxshared=0,
        maxconnections=size,
        blocking=True,
        reset=False,
        ping=0,
    )

    def check_pool() -> None:
        assert pool._connections == 0, pool._connections

    return Face(
        "DBUtils",
        "DBUtils PooledDB",
        size,
        maker,
        pool,
        pool.connection,
        PooledDedicatedDBConnection.close,
        pool.connection,
        pool.close,
        check_pool,
        key=lambda c: id(c._con._con),
    )


PG_CONNINFO = os.environ.get(
    "PPP_BENCH_PG", "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"
)


def psycopg_face(size: int) -> Face:
    """psycopg_pool's ConnectionPool over real connections to the local PostgreSQL.

    Its objects are real connections, so it cannot count creations through a
    ``fun``: ``check`` reads the pool's own statistics instead."""
    psycopg = _skip_missing("psycopg", "psycopg")
    psycopg_pool = _skip_missing("psycopg_pool", "psycopg_pool")
    try:
        psycopg.connect(PG_CONNINFO).close()
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL unreachable at {PG_CONNINFO!r}: {exc}"
        if os.environ.get("PPP_REQUIRE_SERVERS") == "1":
            pytest.fail(message)
        pytest.skip(f"psycopg_pool skipped: {message}")
    pool = psycopg_pool.ConnectionPool(
        PG_CONNINFO, min_size=size, max_size=size, timeout=30.0, open=True
    )
    pool.wait(timeout=30.0)

    def check_pool() -> None:
        stats = pool.get_stats()
        assert stats["connections_num"] <= size, stats
        assert stats.get("requests_errors", 0) == 0, stats
        assert stats["pool_available"] == stats["pool_size"] <= size, stats

    return Face(
        "psycopg_pool",
        "psycopg_pool (PostgreSQL)",
        size,
        Maker(),
        pool,
        pool.getconn,
        pool.putconn,
        pool.connection,
        pool.close,
        check_pool,
    )


PEERS: dict[str, Callable[[int], Face]] = {
    "SimpleQueue": simplequeue_face,
    "ProxyPatternPool": proxypatternpool_face,
    "SQLAlchemy": sqlalchemy_face,
    "DBUtils": dbutils_face,
    "psycopg_pool": psycopg_face,
}

# --------------------------------------------------------------------- loops


def pair_loop(get: Callable[[], Any], ret: Callable[[Any], Any], n: int) -> None:
    """``n`` get+return pairs in one thread."""
    for _ in range(n // UNROLL):
        ret(get())
        ret(get())
        ret(get())
        ret(get())
        ret(get())
        ret(get())
        ret(get())
        ret(get())
        ret(get())
        ret(get())


def with_loop(ctx: Callable[[], AbstractContextManager[Any]], n: int) -> None:
    """``n`` with-blocks on the pool's own context manager."""
    for _ in range(n // UNROLL):
        with ctx():
            pass
        with ctx():
            pass
        with ctx():
            pass
        with ctx():
            pass
        with ctx():
            pass
        with ctx():
            pass
        with ctx():
            pass
        with ctx():
            pass
        with ctx():
            pass
        with ctx():
            pass


def try_finally_loop(get: Callable[[], Any], ret: Callable[[Any], Any], n: int) -> None:
    """The floor of a with-block: get, then return in ``finally``, written inline."""
    for _ in range(n // UNROLL):
        o = get()
        try:
            pass
        finally:
            ret(o)
        o = get()
        try:
            pass
        finally:
            ret(o)
        o = get()
        try:
            pass
        finally:
            ret(o)
        o = get()
        try:
            pass
        finally:
            ret(o)
        o = get()
        try:
            pass
        finally:
            ret(o)
        o = get()
        try:
            pass
        finally:
            ret(o)
        o = get()
        try:
            pass
        finally:
            ret(o)
        o = get()
        try:
            pass
        finally:
            ret(o)
        o = get()
        try:
            pass
        finally:
            ret(o)
        o = get()
        try:
            pass
        finally:
            ret(o)


# ------------------------------------------------------------- contended work

_BLOB = os.urandom(16 * 1024)


def cpu_work() -> int:
    """About a microsecond of pure-Python arithmetic that holds the GIL."""
    x = 0
    for i in range(24):
        x += i * i
    return x


def nogil_work() -> int:
    """SHA-256 of 16 KiB: CPU work during which ``hashlib`` releases the GIL."""
    return hashlib.sha256(_BLOB).digest()[0]


WORKS: dict[str, Callable[[], int]] = {"cpu": cpu_work, "nogil": nogil_work}

JOIN_TIMEOUT = 120.0  # far above the pools' own 30 s timeout: a hang shows as TimeOut


def contended_round(face: Face, nthreads: int, pairs: int, work: Callable[[], int]) -> Any:
    """Set up one contended round: ``nthreads`` started threads waiting for a start signal.

    Returns the ``(args, kwargs)`` that :func:`run_contended` takes.  Each thread
    does ``pairs // nthreads`` pairs; it marks the object it holds as its own
    before the work and checks the mark after it, so an object handed to two
    threads at once is counted as an error."""
    go = threading.Event()
    errors: list[str] = []
    owners: dict[int, object] = {}
    per_thread = pairs // nthreads
    get, ret, key = face.get, face.ret, face.key

    def body() -> None:
        me = object()
        bad = 0
        go.wait()
        try:
            for _ in range(per_thread):
                h = get()
                k = key(h)
                if owners.get(k) is not None:
                    bad += 1
                owners[k] = me
                work()
                if owners.get(k) is not me:
                    bad += 1
                owners[k] = None
                ret(h)
        except BaseException as exc:  # a TimeOut or a peer's error fails the round
            errors.append(f"{type(exc).__name__}: {exc}")
        if bad:
            errors.append(f"{bad} double hand-outs seen")

    threads = [threading.Thread(target=body, daemon=True) for _ in range(nthreads)]
    for t in threads:
        t.start()
    return (face, go, threads, errors), {}


def run_contended(
    face: Face, go: threading.Event, threads: list[threading.Thread], errors: list[str]
) -> None:
    """Start the threads, wait for them all, and assert that nothing went wrong."""
    go.set()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    alive = sum(t.is_alive() for t in threads)
    assert not alive, f"{face.label}: {alive} thread(s) still running after {JOIN_TIMEOUT} s"
    assert not errors, f"{face.label}: {errors[:5]}"
    face.check()
