"""ppp.sqlalchemy.PPPPool: SQLAlchemy on a ppp Pool, on both twins (``ppp_pool_class``).

Against SQLite (a file) and a real PostgreSQL through psycopg 3: Core and ORM
round trips, many threads on a small pool (no connection in two threads at
once, PostgreSQL sessions within the pool's size, waiters served FIFO), a
backend killed with ``pg_terminate_backend`` (invalidated and replaced),
pre-ping, recycle, dispose, fork, pool events in QueuePool's order, the
parameter mapping, and cases equivalent to SQLAlchemy's own pool tests
(test/engine/test_pool.py: QueuePool sizes and overflow, timeout, reset on
return, invalidation, detach, garbage-collected checkouts, recreate, events),
written here against a fake DB-API and the real drivers.  Also runs the
README's "With SQLAlchemy" example.

PostgreSQL tests skip when the server is down, unless ``PPP_REQUIRE_SERVERS``
is set.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ppp._backend import FALSY

sa = pytest.importorskip("sqlalchemy")

from sqlalchemy import event, exc, text  # noqa: E402
from sqlalchemy.orm import (  # noqa: E402
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    scoped_session,
    sessionmaker,
)
from sqlalchemy.pool import QueuePool  # noqa: E402
from sqlalchemy.pool.base import _ConnDialect  # noqa: E402

from ppp.sqlalchemy import PPPPool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("PPP_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_DSN = os.environ.get("PPP_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres")
DEADLINE = 30.0
EVENTS = ("connect", "checkout", "checkin", "reset", "invalidate", "soft_invalidate", "close")


def servers_required() -> bool:
    return os.environ.get("PPP_REQUIRE_SERVERS", "").strip().lower() not in FALSY


def wait_for(what: str, check: Callable[[], bool], limit: float = DEADLINE) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {limit} s: {what}")
        time.sleep(0.005)


_pg_state: list[str | None] = []


def pg_or_skip() -> None:
    if not _pg_state:
        try:
            import psycopg

            psycopg.connect(PG_DSN, connect_timeout=5).close()  # the admin session's
            probe = sa.create_engine(
                PG_URL, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 5}
            )
            probe.connect().close()  # the engines'
            probe.dispose()
            _pg_state.append(None)
        except Exception as err:
            _pg_state.append(f"PostgreSQL ({PG_DSN!r}) is not reachable: {err}")
    if _pg_state[0] is not None:
        if servers_required():
            pytest.fail(f"{_pg_state[0]} (PPP_REQUIRE_SERVERS is set)", pytrace=False)
        pytest.skip(_pg_state[0])


class PgAdmin:
    """An autocommit session of the test's own, reading pg_stat_activity."""

    def __init__(self) -> None:
        import psycopg

        self.conn = psycopg.connect(PG_DSN, autocommit=True)
        self.lock = threading.Lock()

    def sessions(self, app: str) -> int:
        with self.lock:
            row = self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchone()
        assert row is not None
        return int(row[0])

    def states(self, app: str) -> list[str]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT state FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchall()
        return [row[0] for row in rows]

    def terminate(self, pid: int) -> None:
        with self.lock:
            self.conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

    def gone(self, pid: int) -> bool:
        with self.lock:
            row = self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
        return row is not None and row[0] == 0

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def pg_admin() -> Iterator[PgAdmin]:
    pg_or_skip()
    admin = PgAdmin()
    yield admin
    admin.close()


class Engines:
    """Makes engines on a database (SQLite file or PostgreSQL), disposed at the end.

    PostgreSQL engines get an ``application_name`` of their own (``app``)."""

    def __init__(self, kind: str, tmp_path: Path, pool_cls: Any) -> None:
        self.kind = kind
        self.pool_cls = pool_cls
        self.app = f"ppp-sa-{uuid.uuid4().hex[:10]}"
        self.url = PG_URL if kind == "pg" else f"sqlite:///{tmp_path / 'sa.db'}"
        self.engines: list[Any] = []

    def __call__(self, poolclass: Any = PPPPool, **kw: Any) -> Any:
        if poolclass is PPPPool:
            kw.setdefault("ppp_pool_class", self.pool_cls)
        if self.kind == "pg":
            kw.setdefault("connect_args", {"application_name": self.app})
        engine = sa.create_engine(self.url, poolclass=poolclass, **kw)
        self.engines.append(engine)
        return engine

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()


@pytest.fixture(params=["sqlite", "pg"])
def engines(request: pytest.FixtureRequest, tmp_path: Path, Pool: Any) -> Iterator[Engines]:
    if request.param == "pg":
        pg_or_skip()
    made = Engines(request.param, tmp_path, Pool)
    yield made
    made.close()


@pytest.fixture
def pg_engines(tmp_path: Path, Pool: Any) -> Iterator[Engines]:
    pg_or_skip()
    made = Engines("pg", tmp_path, Pool)
    yield made
    made.close()


def backend_pid(conn: Any) -> int:
    return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())


def record_events(pool: Any, log: list[tuple[str, Any]]) -> None:
    """Append ``(event name, DB-API connection)`` to ``log`` for each pool event."""
    for name in EVENTS:

        def listener(*args: Any, _name: str = name) -> None:
            log.append((_name, args[0]))

        event.listen(pool, name, listener)


# ------------------------------------------------------------------ round trips


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = f"ppp_sa_items_{os.getpid()}"  # runs in parallel never share it
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


def test_core_round_trip(engines: Engines) -> None:
    engine = engines(pool_size=2, max_overflow=1)
    table = f"ppp_sa_core_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY, name varchar(20))"))
    try:
        with engine.begin() as conn:
            conn.execute(text(f"INSERT INTO {table} VALUES (:i, :n)"), [{"i": 1, "n": "one"}])
        with engine.connect() as conn:  # rolled back: reset on return leaves nothing behind
            conn.execute(text(f"INSERT INTO {table} VALUES (2, 'two')"))
        with engine.connect() as conn:
            rows = conn.execute(text(f"SELECT id, name FROM {table} ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "one")]
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {table}"))
    pool = engine.pool
    assert isinstance(pool, PPPPool) and isinstance(pool.ppp_pool, engines.pool_cls)
    stats = pool.ppp_stats()
    assert stats is not None
    assert stats["nusing"] == 0 and stats["nuses"] == stats["nreturns"] == 5
    assert stats["nobjs"] == 1  # one thread, one connection reused
    assert pool.checkedout() == 0 and pool.checkedin() == 1


def test_orm_round_trip(engines: Engines) -> None:
    engine = engines(pool_size=2, max_overflow=0)
    Base.metadata.create_all(engine)
    try:
        with Session(engine) as session:
            session.add_all([Item(id=1, name="a"), Item(id=2, name="b")])
            session.commit()
        with Session(engine) as session:
            session.add(Item(id=3, name="c"))
            session.flush()
            session.rollback()
        with Session(engine) as session:
            item = session.get(Item, 2)
            assert item is not None and item.name == "b"
            item.name = "B"
            session.commit()
            names = session.scalars(sa.select(Item.name).order_by(Item.id)).all()
        assert names == ["a", "B"]
    finally:
        Base.metadata.drop_all(engine)
    assert engine.pool.checkedout() == 0


def test_orm_sessions_in_threads(engines: Engines) -> None:
    """A scoped_session per thread, 8 threads writing on a pool of 2 + 1."""
    engine = engines(pool_size=2, max_overflow=1, pool_timeout=60)
    Base.metadata.create_all(engine)
    Scoped = scoped_session(sessionmaker(engine))
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(10):
                Scoped.add(Item(id=k * 100 + i, name=f"{k}-{i}"))
                Scoped.commit()
                assert Scoped.get(Item, k * 100 + i) is not None
        except BaseException as err:
            errors.append(err)
        finally:
            Scoped.remove()

    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        with Session(engine) as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Item)) == 80
    finally:
        Base.metadata.drop_all(engine)
    stats = engine.pool.ppp_stats()
    assert stats["nusing"] == 0 and stats["nobjs"] <= 3 and stats["ntimeouts"] == 0


# ------------------------------------------------------------------ threads


@pytest.mark.parametrize("overflow", [0, 1])
def test_many_threads_small_pool(
    engines: Engines, pg_admin_optional: PgAdmin | None, overflow: int
) -> None:
    """16 threads, pool of 2 (+ 1 overflow), many rounds: a connection is never in two
    threads at once, at most 2 (3) exist, and as many PostgreSQL sessions.  (With
    overflow, closed sessions linger in pg_stat_activity while their backends exit:
    the sampled peak is then bounded by the connections open plus those closing.)"""
    engine = engines(pool_size=2, max_overflow=overflow, pool_timeout=60)
    most = 2 + overflow
    nthreads, rounds = 16, 25
    owners: dict[int, int] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        assert pg_admin_optional is not None
        while not stop.is_set():
            peak[0] = max(peak[0], pg_admin_optional.sessions(engines.app))
            time.sleep(0.002)

    def work(k: int) -> None:
        try:
            for i in range(rounds):
                with engine.connect() as conn:
                    key = id(conn.connection.dbapi_connection)
                    with lock:
                        assert key not in owners, f"connection in threads {owners[key]} and {k}"
                        owners[key] = k
                        assert len(owners) <= most
                    value = conn.execute(text("SELECT :v"), {"v": k * 1000 + i}).scalar()
                    assert value == k * 1000 + i
                    with lock:
                        del owners[key]
        except BaseException as err:
            errors.append(err)

    watcher = threading.Thread(target=watch) if pg_admin_optional is not None else None
    if watcher is not None:
        watcher.start()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive()
    stop.set()
    if watcher is not None:
        watcher.join()
    assert errors == []
    stats = engine.pool.ppp_stats()
    assert stats["nusing"] == 0 and stats["nobjs"] <= most and stats["ntimeouts"] == 0
    # each check-in is a ret, or a discard when pool_size are idle already (overflow)
    assert stats["nuses"] == nthreads * rounds == stats["nreturns"] + stats["ndiscarded"]
    assert engine.pool.checkedin() <= 2  # pool_size idle at most: overflow closed
    if pg_admin_optional is not None:
        if not overflow:
            assert 1 <= peak[0] <= most
        # closed sessions linger in pg_stat_activity while their backends exit
        app, nobjs = engines.app, stats["nobjs"]
        wait_for("sessions = connections", lambda: pg_admin_optional.sessions(app) == nobjs)


@pytest.fixture
def pg_admin_optional(engines: Engines) -> Iterator[PgAdmin | None]:
    if engines.kind != "pg":
        yield None
        return
    admin = PgAdmin()
    yield admin
    admin.close()


def waiting(engine: Any, n: int) -> bool:
    return bool(engine.pool.ppp_stats()["nwaiting"] == n)


def test_waiters_served_fifo(engines: Engines) -> None:
    """A full pool: threads queued one after another get the connection in that order."""
    engine = engines(pool_size=1, max_overflow=0, pool_timeout=60)
    order: list[int] = []
    held = engine.connect()
    threads = []

    def work(k: int) -> None:
        with engine.connect() as conn:
            order.append(k)
            conn.execute(text("SELECT 1"))

    for k in range(6):
        t = threading.Thread(target=work, args=(k,))
        t.start()
        threads.append(t)
        wait_for(f"waiter {k} queued", functools.partial(waiting, engine, k + 1))
    held.close()
    for t in threads:
        t.join(60)
    assert order == list(range(6))
    stats = engine.pool.ppp_stats()
    assert stats["nobjs"] == 1 and stats["max_waiting"] == 6 and stats["nwaits"] == 6


def test_timeout(engines: Engines) -> None:
    engine = engines(pool_size=1, max_overflow=1, pool_timeout=0.05)
    with engine.connect(), engine.connect():
        with pytest.raises(exc.TimeoutError, match="limit of size 1 overflow 1") as info:
            engine.connect()
        assert info.value.code == "3o7r"
    stats = engine.pool.ppp_stats()
    assert stats["ntimeouts"] == 1 and stats["nusing"] == 0


# ------------------------------------------------------------------ disconnects


def test_terminated_backend_is_invalidated_and_replaced(
    pg_engines: Engines, pg_admin: PgAdmin
) -> None:
    engine = pg_engines(pool_size=2, max_overflow=0)
    log: list[tuple[str, Any]] = []
    record_events(engine.pool, log)
    with engine.connect() as conn:
        pid = backend_pid(conn)
        dead = conn.connection.dbapi_connection
        pg_admin.terminate(pid)
        wait_for("backend gone", lambda: pg_admin.gone(pid))
        with pytest.raises(exc.OperationalError) as info:
            conn.exec_driver_sql("SELECT 1")
        assert info.value.connection_invalidated and conn.invalidated
    assert ("invalidate", dead) in log and ("close", dead) in log
    assert dead.closed
    with engine.connect() as conn:
        assert backend_pid(conn) != pid
    stats = engine.pool.ppp_stats()
    assert stats["nobjs"] == 1 and stats["nusing"] == 0
    wait_for("one session", lambda: pg_admin.sessions(pg_engines.app) == 1)
    names = [name for name, _ in log]
    assert names.count("connect") == 2 and names.count("invalidate") == 1


def test_pre_ping_replaces_a_dead_idle_connection(pg_engines: Engines, pg_admin: PgAdmin) -> None:
    engine = pg_engines(pool_size=2, max_overflow=0, pool_pre_ping=True)
    with engine.connect() as conn:
        pid = backend_pid(conn)
    pg_admin.terminate(pid)
    wait_for("backend gone", lambda: pg_admin.gone(pid))
    with engine.connect() as conn:  # the ping fails, SQLAlchemy reconnects: no error here
        new_pid = backend_pid(conn)
    assert new_pid != pid
    assert engine.pool.ppp_stats()["nobjs"] == 1
    wait_for("one session", lambda: pg_admin.sessions(pg_engines.app) == 1)


def test_health_true_retires_dead_idle_connections(pg_engines: Engines, pg_admin: PgAdmin) -> None:
    """ppp_kwargs health=True: housekeeping pings idle connections and drops dead ones."""
    engine = pg_engines(
        pool_size=2, max_overflow=0, ppp_kwargs={"health": True, "delay": 0.02, "health_freq": 1}
    )
    closed: list[Any] = []
    event.listen(engine.pool, "close", lambda dbapi, rec: closed.append(dbapi))
    with engine.connect() as a, engine.connect() as b:
        pids = [backend_pid(a), backend_pid(b)]
        victim = a.connection.dbapi_connection
    pg_admin.terminate(pids[0])
    wait_for("dead one retired", lambda: engine.pool.ppp_stats()["bad_health"] >= 1)
    wait_for("dead one closed", lambda: closed == [victim])  # the closer runs just after
    # the healthy one stays (a checkout during its health check may open another)
    with engine.connect() as conn:
        assert backend_pid(conn) != pids[0]
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    assert not pg_admin.gone(pids[1])  # the healthy one was kept
    stats = engine.pool.ppp_stats()
    assert stats["bad_health"] == 1 and stats["nobjs"] <= 2
    # the pings' transactions were rolled back: no session is "idle in transaction"
    wait_for(
        "idle sessions only",
        lambda: pg_admin.states(pg_engines.app) == ["idle"] * engine.pool.ppp_stats()["nobjs"],
    )


def test_recycle(engines: Engines) -> None:
    engine = engines(pool_size=1, max_overflow=0, pool_recycle=3600)
    log: list[tuple[str, Any]] = []
    record_events(engine.pool, log)
    records: list[Any] = []
    event.listen(engine.pool, "checkin", lambda dbapi, rec: records.append(rec))
    with engine.connect() as conn:
        first = conn.connection.dbapi_connection
    records[-1].starttime -= 7200  # older than pool_recycle
    with engine.connect() as conn:
        second = conn.connection.dbapi_connection
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    assert second is not first
    names = [(name, c is first) for name, c in log if name in ("connect", "close")]
    assert names == [("connect", True), ("close", True), ("connect", False)]
    assert engine.pool.ppp_stats()["nobjs"] == 1  # recycled in place, same ppp object


def test_dispose(engines: Engines, pg_admin_optional: PgAdmin | None) -> None:
    """engine.dispose(): idle connections closed now, one in use when it comes back;
    the engine goes on with a new pool."""
    engine = engines(pool_size=3, max_overflow=0)
    closed: list[Any] = []
    event.listen(engine.pool, "close", lambda dbapi, rec: closed.append(dbapi))
    a, b, c = engine.connect(), engine.connect(), engine.connect()
    idle = {id(a.connection.dbapi_connection), id(b.connection.dbapi_connection)}
    a.close()
    b.close()
    old = engine.pool
    old_ppp = old.ppp_pool
    engine.dispose()
    assert {id(x) for x in closed} == idle
    assert old_ppp.stats()["shutdown"] and old.ppp_pool is None
    if pg_admin_optional is not None:
        wait_for("idle sessions closed", lambda: pg_admin_optional.sessions(engines.app) == 1)
    inuse = c.connection.dbapi_connection
    c.close()
    assert closed[-1] is inuse and len(closed) == 3
    assert engine.pool is not old
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    assert isinstance(engine.pool.ppp_pool, engines.pool_cls)
    if pg_admin_optional is not None:
        wait_for("one session", lambda: pg_admin_optional.sessions(engines.app) == 1)


def test_pool_dispose_moves_waiters_to_the_next_ppp_pool(engines: Engines) -> None:
    engine = engines(pool_size=1, max_overflow=0, pool_timeout=60)
    pool = engine.pool
    held = pool.connect()
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(pool.connect()))
    t.start()
    wait_for("waiter queued", lambda: pool.ppp_stats()["nwaiting"] == 1)
    first = pool.ppp_pool
    pool.dispose()  # the pool itself, as QueuePool allows: it stays usable
    t.join(60)
    assert len(got) == 1 and pool.ppp_pool is not first
    assert got[0].dbapi_connection is not held.dbapi_connection
    held.close()  # back to the shut-down ppp Pool: closed
    got[0].close()
    assert first.stats()["nobjs"] == 0 and pool.ppp_stats()["navail"] == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("mode", ["dispose", "plain", "lock-held"])
def test_fork(pg_engines: Engines, pg_admin: PgAdmin, mode: str) -> None:
    """In a forked child, with Engine.dispose(close=False) or without it, the engine
    makes its own connection and never touches (nor closes) the parent's, even when
    the fork caught the pool's start lock held."""
    engine = pg_engines(pool_size=2, max_overflow=0)
    with engine.connect() as conn:
        parent_pid = backend_pid(conn)
    read, write = os.pipe()
    held = mode == "lock-held"
    if held:
        engine.pool._start_lock.acquire()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        child = os.fork()
    if child != 0 and held:
        engine.pool._start_lock.release()
    if child == 0:  # pragma: no cover - the child
        code = 1
        try:
            signal.alarm(60)  # a hang (a lock the fork caught held) kills the child
            os.close(read)
            if mode == "dispose":
                engine.dispose(close=False)
            with engine.connect() as conn:
                mine = backend_pid(conn)
            os.write(write, str(mine).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(child, 0)
    with os.fdopen(read) as f:
        child_backend = int(f.read() or 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_backend and child_backend != parent_pid
    wait_for("child's session gone", lambda: pg_admin.gone(child_backend))
    with engine.connect() as conn:  # the parent's connection survived the child
        assert backend_pid(conn) == parent_pid
        assert conn.exec_driver_sql("SELECT 2").scalar() == 2


# ------------------------------------------------------------------ events


def event_script(engine: Any, pg_admin: PgAdmin | None) -> list[tuple[str, int]]:
    """One script of checkouts, returns, overflow, invalidation, soft invalidation,
    detach and dispose; the pool events it fires, connections numbered by first use."""
    log: list[tuple[str, Any]] = []
    record_events(engine.pool, log)
    conns = [engine.connect() for _ in range(3)]  # pool_size=2, max_overflow=1
    for c in reversed(conns):
        c.close()  # the third return overflows: closed
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    with engine.connect() as conn:
        conn.invalidate()
    with engine.connect() as conn:  # reconnects
        conn.exec_driver_sql("SELECT 1")
        conn.connection.invalidate(soft=True)
    with engine.connect() as conn:  # the soft-invalidated one is replaced
        conn.exec_driver_sql("SELECT 1")
        if pg_admin is not None:
            pid = backend_pid(conn)
    if pg_admin is not None:
        pg_admin.terminate(pid)
        wait_for("backend gone", lambda: pg_admin.gone(pid))
        with engine.connect() as conn, pytest.raises(exc.OperationalError):
            conn.exec_driver_sql("SELECT 1")
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    raw = engine.raw_connection()
    raw.detach()
    raw.close()
    before = len(log)
    engine.dispose()
    ids: dict[int, int] = {}
    keep = [c for _, c in log]  # noqa: F841  (no id is reused while numbering)
    numbered = [(name, ids.setdefault(id(c), len(ids)) if c is not None else -1) for name, c in log]
    # dispose closes the idle connections in the pool's own order
    return numbered[:before] + sorted(numbered[before:])


def test_events_in_queuepool_order(engines: Engines, pg_admin_optional: PgAdmin | None) -> None:
    kw: dict[str, Any] = {"pool_size": 2, "max_overflow": 1, "pool_use_lifo": True}
    expected = event_script(engines(QueuePool, **kw), pg_admin_optional)
    got = event_script(engines(**kw), pg_admin_optional)
    assert got == expected
    names = [n for n, _ in got]
    for name in ("connect", "checkout", "checkin", "reset", "invalidate", "soft_invalidate"):
        assert name in names, name


# -------------------------------------- SQLAlchemy's pool tests, equivalent cases


class FakeDBAPIConnection:
    """A DB-API connection that records what the pool does to it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls: list[str] = []
        self.closed = False

    def cursor(self) -> Any:
        self.calls.append("cursor")
        return self

    def execute(self, *args: Any) -> None:
        pass

    def rollback(self) -> None:
        self.calls.append("rollback")

    def commit(self) -> None:
        self.calls.append("commit")

    def close(self) -> None:
        self.calls.append("close")
        self.closed = True


class Creator:
    def __init__(self) -> None:
        self.made: list[FakeDBAPIConnection] = []
        self.lock = threading.Lock()

    def __call__(self) -> Any:
        with self.lock:
            conn = FakeDBAPIConnection(len(self.made))
            self.made.append(conn)
        return conn


@pytest.fixture
def creator() -> Creator:
    return Creator()


@pytest.fixture
def make_pool(Pool: Any, creator: Creator) -> Iterator[Callable[..., Any]]:
    pools: list[Any] = []

    def make(**kw: Any) -> Any:
        pool = PPPPool(creator, ppp_pool_class=Pool, **kw)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.dispose()


class Traced:
    """A creator whose connections write what happens to them into one trace."""

    def __init__(self, trace: list[Any]) -> None:
        self.trace = trace
        self.made: list[FakeDBAPIConnection] = []
        self.fail = False

    def __call__(self) -> Any:
        if self.fail:
            self.trace.append(("connect failed",))
            raise OSError("connect failed")
        conn = TracedConnection(len(self.made), self.trace)
        self.made.append(conn)
        return conn


class TracedConnection(FakeDBAPIConnection):
    def __init__(self, n: int, trace: list[Any]) -> None:
        super().__init__(n)
        self.trace = trace

    def rollback(self) -> None:
        self.trace.append((self.n, "rollback"))

    def commit(self) -> None:
        self.trace.append((self.n, "commit"))

    def close(self) -> None:
        self.trace.append((self.n, "close"))
        self.closed = True


def trace_events(pool: Any, trace: list[Any]) -> None:
    names = (*EVENTS, "first_connect", "detach", "close_detached")
    for name in names:

        def listener(*args: Any, _name: str = name) -> None:
            conn = args[0]
            trace.append((getattr(conn, "n", None), _name))

        event.listen(pool, name, listener)


def sizes(pool: Any, trace: list[Any]) -> None:
    trace.append(("sizes", pool.checkedin(), pool.checkedout(), pool.overflow()))


def scenario_dialect(pool: Any, creator: Traced, trace: list[Any]) -> list[Any]:
    """PoolDialectTest: rollback and close go through the pool's dialect."""

    class Dialect(_ConnDialect):
        def do_rollback(self, conn: Any) -> None:
            trace.append("R")
            conn.rollback()

        def do_commit(self, conn: Any) -> None:
            trace.append("C")
            conn.commit()

        def do_close(self, conn: Any) -> None:
            trace.append("CL")
            conn.close()

    pool._dialect = Dialect()
    pool.connect().close()
    pool.dispose()
    again = pool.recreate()
    again.connect().close()
    return [again]


def scenario_recreated_listeners(pool: Any, creator: Traced, trace: list[Any]) -> list[Any]:
    """PoolEventsTest: first_connect, connect, checkout on a pool and its recreation."""
    trace_events(pool, trace)
    pool.connect()
    again = pool.recreate()
    again.connect()
    pool.connect()
    return [again]


def scenario_close_on_dispose(pool: Any, creator: Traced, trace: list[Any]) -> list[Any]:
    """PoolEventsTest.test_close: 'close' fires for an idle connection at dispose only."""
    trace_events(pool, trace)
    c1 = pool.connect()
    c1.close()
    trace.append("disposing")
    pool.dispose()
    return []


def scenario_detach(pool: Any, creator: Traced, trace: list[Any]) -> list[Any]:
    """test_detach, test_detach_close, test_info: detached connections leave the pool."""
    trace_events(pool, trace)
    c1 = pool.connect()
    c1.info["x"] = 1
    c1.detach()
    sizes(pool, trace)
    trace.append(("info kept", c1.info.get("x")))
    c2 = pool.connect()
    trace.append(("info of next", dict(c2.info)))
    c1.close()
    c2.close()
    sizes(pool, trace)
    return []


def scenario_soft_invalidate(pool: Any, creator: Traced, trace: list[Any]) -> list[Any]:
    """test_soft_invalidate_event_*, test_recycle_on_soft_invalidate."""
    trace_events(pool, trace)
    c1 = pool.connect()
    c1.invalidate(soft=True)
    trace.append(("valid after soft", c1.is_valid))
    c1.close()
    c1 = pool.connect()
    c1.close()
    return []


def scenario_invalidate(pool: Any, creator: Traced, trace: list[Any]) -> list[Any]:
    """test_invalidate_event_*, test_recycle_on_invalidate: the record reconnects."""
    trace_events(pool, trace)
    errors: list[Any] = []
    event.listen(pool, "invalidate", lambda conn, rec, err: errors.append(err))
    c1 = pool.connect()
    c1.invalidate(ValueError("boom"))
    c1 = pool.connect()
    c1.invalidate()
    c1 = pool.connect()
    c1.close()
    sizes(pool, trace)
    trace.append(("errors", [repr(e) for e in errors]))
    return []


def scenario_gc_checkin(pool: Any, creator: Traced, trace: list[Any]) -> list[Any]:
    """test_checkin_event_gc, test_mixed_close: a dropped checkout is reset and checked in."""
    trace_events(pool, trace)
    c1 = pool.connect()
    c2 = pool.connect()
    c1.close()
    del c2
    gc.collect()
    sizes(pool, trace)
    return []


def scenario_failed_connect(pool: Any, creator: Traced, trace: list[Any]) -> list[Any]:
    """test_overflow_reset_on_failed_connect: a failed connect gives its slot back."""
    c1 = pool.connect()
    creator.fail = True
    for _ in range(3):
        try:
            pool.connect()
        except OSError:
            trace.append("raised")
    sizes(pool, trace)
    creator.fail = False
    c2 = pool.connect()
    sizes(pool, trace)
    c1.close()
    c2.close()
    sizes(pool, trace)
    return []


def scenario_pool_invalidation(pool: Any, creator: Traced, trace: list[Any]) -> list[Any]:
    """test_invalidate (a disconnect on one connection invalidates the older ones)."""
    trace_events(pool, trace)
    c1, c2 = pool.connect(), pool.connect()
    c1.close()
    time.sleep(0.001)
    pool._invalidate(c2)
    c1, c2 = pool.connect(), pool.connect()
    c1.close()
    c2.close()
    return []


def scenario_recycle(pool: Any, creator: Traced, trace: list[Any]) -> list[Any]:
    """test_recycle: a connection older than recycle is replaced at checkout."""
    trace_events(pool, trace)
    pool._recycle = 3600
    c1 = pool.connect()
    c1._connection_record.starttime -= 7200
    c1.close()
    c1 = pool.connect()
    c1.close()
    return []


def scenario_reset_styles(pool: Any, creator: Traced, trace: list[Any]) -> list[Any]:
    """ResetOnReturnTest: rollback, commit or nothing when a connection comes back."""
    made = []
    for reset in ("rollback", "commit", None):
        other = pool.__class__(creator, pool_size=1, max_overflow=0, reset_on_return=reset)
        other.connect().close()
        made.append(other)
    return made


def scenario_recreate_without_dispose(pool: Any, creator: Traced, trace: list[Any]) -> list[Any]:
    """Engine.dispose(close=False): a new pool, the old one left as it is (nothing closed;
    a connection checked out from it goes back to it)."""
    trace_events(pool, trace)
    held, idle = pool.connect(), pool.connect()
    idle.close()
    again = pool.recreate()
    held.close()
    sizes(pool, trace)
    trace.append(("closed", [c.closed for c in creator.made]))
    again.connect().close()
    sizes(again, trace)
    return [again]


SCENARIOS: dict[str, Callable[[Any, Traced, list[Any]], list[Any]]] = {
    "recreate-without-dispose": scenario_recreate_without_dispose,
    "dialect": scenario_dialect,
    "recreated-listeners": scenario_recreated_listeners,
    "close-on-dispose": scenario_close_on_dispose,
    "detach": scenario_detach,
    "soft-invalidate": scenario_soft_invalidate,
    "invalidate": scenario_invalidate,
    "gc-checkin": scenario_gc_checkin,
    "failed-connect": scenario_failed_connect,
    "pool-invalidation": scenario_pool_invalidation,
    "recycle": scenario_recycle,
    "reset-styles": scenario_reset_styles,
}


def run_scenario(name: str, make: Callable[..., Any]) -> list[Any]:
    trace: list[Any] = []
    creator = Traced(trace)
    pool = make(creator, pool_size=2, max_overflow=1, timeout=5)
    extra = SCENARIOS[name](pool, creator, trace)
    before = len(trace)
    for p in (pool, *extra):
        p.dispose()
    # each pool closes its idle connections at dispose in its own order
    return trace[:before] + sorted(trace[before:], key=repr)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_sa_scenario_as_queuepool(name: str, Pool: Any) -> None:
    """Scenarios after SQLAlchemy's own pool tests: PPPPool's trace (DB-API calls, pool
    events, sizes) equals QueuePool's (``use_lifo=True``, the order ppp hands out)."""

    def pppool(creator: Any, **kw: Any) -> Any:
        return PPPPool(creator, ppp_pool_class=Pool, **kw)

    def queuepool(creator: Any, **kw: Any) -> Any:
        return QueuePool(creator, use_lifo=True, **kw)

    expected = run_scenario(name, queuepool)
    got = run_scenario(name, pppool)
    assert got == expected
    assert got  # the scenario traced something


def test_sa_hanging_connect_blocks_nobody(Pool: Any) -> None:
    """As test_hanging_connect_within_overflow: while one thread's connect hangs, other
    threads still check out idle connections and give them back."""
    entered, release = threading.Event(), threading.Event()
    made: list[FakeDBAPIConnection] = []

    def creator() -> Any:
        if made and not release.is_set():
            entered.set()
            release.wait(60)
        conn = FakeDBAPIConnection(len(made))
        made.append(conn)
        return conn

    pool: Any = PPPPool(creator, pool_size=2, max_overflow=1, timeout=30, ppp_pool_class=Pool)
    try:
        held = pool.connect()  # the first connection: no hang
        hanging = threading.Thread(target=lambda: pool.connect().close())
        hanging.start()
        assert entered.wait(30)  # the second connect hangs (an overflow slot is free)
        held.close()
        for _ in range(20):  # meanwhile the idle one goes round
            other = pool.connect()
            assert other.dbapi_connection is made[0]
            other.close()
        assert hanging.is_alive()
        release.set()
        hanging.join(30)
        stats = pool.ppp_stats()
        assert stats["nusing"] == 0 and stats["nobjs"] <= 3 and stats["nwaits"] == 0
    finally:
        release.set()
        pool.dispose()


def test_sa_queuepool_sizes_and_overflow(make_pool: Callable[..., Any], creator: Creator) -> None:
    """As QueuePoolTest's overflow cases: size/checkedin/checkedout/overflow as QueuePool."""
    qp = QueuePool(Creator(), pool_size=2, max_overflow=1)
    pp = make_pool(pool_size=2, max_overflow=1)
    for pool in (qp, pp):
        assert (pool.size(), pool.checkedin(), pool.checkedout(), pool.overflow()) == (2, 0, 0, -2)
    figures = []
    for pool in (qp, pp):
        seen = []
        conns = []
        for _ in range(3):
            conns.append(pool.connect())
            seen.append((pool.checkedin(), pool.checkedout(), pool.overflow()))
        while conns:
            conns.pop().close()
            seen.append((pool.checkedin(), pool.checkedout(), pool.overflow()))
        figures.append(seen)
    assert figures[0] == figures[1]
    assert len(creator.made) == 3 and creator.made[0].closed  # the overflow one, returned last
    assert not creator.made[1].closed and not creator.made[2].closed


def test_sa_max_overflow_threads(make_pool: Callable[..., Any], creator: Creator) -> None:
    """As QueuePoolTest.test_max_overflow: threads never make more than size + overflow."""
    pool = make_pool(pool_size=3, max_overflow=2, timeout=60)
    live: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(30):
            conn = pool.connect()
            with lock:
                live.append(sum(not c.closed for c in creator.made))
            time.sleep(0)
            conn.close()

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert max(live) <= 5  # open connections; overflow ones are closed on return, remade
    assert pool.checkedout() == 0 and pool.checkedin() <= 3


@pytest.mark.parametrize("size,overflow,max_size", [(5, 10, 15), (0, 10, 0), (3, -1, 0), (2, 0, 2)])
def test_sa_size_mapping(
    make_pool: Callable[..., Any], size: int, overflow: int, max_size: int
) -> None:
    pool = make_pool(pool_size=size, max_overflow=overflow)
    assert pool.ppp_stats()["max_size"] == max_size and pool.size() == size


def test_sa_unlimited_pool_keeps_all(make_pool: Callable[..., Any], creator: Creator) -> None:
    """pool_size=0: no limit, every connection is kept idle (QueuePool's queue of size 0)."""
    pool = make_pool(pool_size=0)
    conns = [pool.connect() for _ in range(20)]
    for c in conns:
        c.close()
    assert pool.checkedin() == 20 and not any(c.closed for c in creator.made)


@pytest.mark.parametrize(
    "reset,calls",
    [("rollback", ["rollback"]), ("commit", ["commit"]), (None, [])],
)
def test_sa_reset_on_return(
    make_pool: Callable[..., Any], creator: Creator, reset: Any, calls: list[str]
) -> None:
    pool = make_pool(pool_size=1, max_overflow=0, reset_on_return=reset)
    conn = pool.connect()
    conn.close()
    assert creator.made[0].calls == calls


def test_sa_invalidate_reconnects(make_pool: Callable[..., Any], creator: Creator) -> None:
    pool = make_pool(pool_size=1, max_overflow=0)
    conn = pool.connect()
    assert conn.dbapi_connection is creator.made[0]
    conn.invalidate()
    assert creator.made[0].closed and not conn.is_valid
    conn = pool.connect()
    assert conn.dbapi_connection is creator.made[1]
    conn.close()
    assert pool.ppp_stats()["nobjs"] == 1


def test_sa_pool_invalidation_recycles_older_connections(
    make_pool: Callable[..., Any], creator: Creator
) -> None:
    """As test_recycle_pool_no_race / _invalidate: a pool-wide invalidation makes every
    connection older than it reconnect at checkout."""
    pool = make_pool(pool_size=2, max_overflow=0)
    a, b = pool.connect(), pool.connect()
    a.close()
    time.sleep(0.001)  # strictly later: SQLAlchemy compares time.time() stamps
    pool._invalidate(b)  # as a disconnect error on b does
    assert creator.made[1].closed  # b itself, now
    b_is_valid = b.is_valid
    assert not b_is_valid
    c, d = pool.connect(), pool.connect()
    assert {id(c.dbapi_connection), id(d.dbapi_connection)} == {id(x) for x in creator.made[2:]}
    assert creator.made[0].closed and len(creator.made) == 4
    c.close()
    d.close()


def test_sa_detach(make_pool: Callable[..., Any], creator: Creator) -> None:
    pool = make_pool(pool_size=1, max_overflow=0)
    conn = pool.connect()
    conn.detach()
    assert pool.checkedout() == 0  # its slot is back
    other = pool.connect()
    assert other.dbapi_connection is not creator.made[0]
    conn.close()  # a detached connection is really closed
    assert creator.made[0].closed
    other.close()


def test_sa_garbage_collected_checkout_is_returned(
    make_pool: Callable[..., Any], creator: Creator
) -> None:
    """As test_gc: a checked-out connection dropped without close() goes back to the pool."""
    pool = make_pool(pool_size=1, max_overflow=0, timeout=5)
    conn = pool.connect()
    del conn
    gc.collect()
    assert pool.checkedout() == 0
    again = pool.connect()
    assert again.dbapi_connection is creator.made[0] and creator.made[0].calls == ["rollback"]
    again.close()


def test_sa_recreate_keeps_the_parameters(make_pool: Callable[..., Any], Pool: Any) -> None:
    pool = make_pool(
        pool_size=3,
        max_overflow=4,
        timeout=7.0,
        recycle=99,
        pre_ping=True,
        reset_on_return="commit",
        ppp_kwargs={"max_use": 5},
    )
    log: list[str] = []
    event.listen(pool, "connect", lambda *a: log.append("connect"))
    new: Any = pool.recreate()
    try:
        assert isinstance(new, PPPPool) and new is not pool
        assert (new.size(), new._max_overflow, new.timeout(), new._recycle) == (3, 4, 7.0, 99)
        assert new._pre_ping and new._reset_on_return is pool._reset_on_return
        stats = new.ppp_stats()
        assert stats is not None and stats["max_use"] == 5 and isinstance(new.ppp_pool, Pool)
        new.connect().close()
        assert log == ["connect"]  # listeners carried over
    finally:
        new.dispose()


def detach_script(pool: Any) -> list[str]:
    log: list[str] = []
    names = ("first_connect", "connect", "checkout", "checkin", "reset", "close", "detach")
    for name in (*names, "close_detached"):
        event.listen(pool, name, lambda *a, _n=name: log.append(_n))
    pool.connect().close()
    pool.connect().close()
    conn = pool.connect()
    conn.detach()
    conn.close()
    pool.connect().close()
    return log


def test_sa_pool_events_and_first_connect(make_pool: Callable[..., Any]) -> None:
    """As PoolEventsTest: first_connect once, then connect, checkout, reset, checkin,
    detach and close_detached, as QueuePool fires them."""
    expected = detach_script(QueuePool(Creator(), pool_size=1, max_overflow=0))
    got = detach_script(make_pool(pool_size=1, max_overflow=0))
    assert got == expected
    assert got[:5] == ["first_connect", "connect", "checkout", "reset", "checkin"]
    assert got.count("first_connect") == 1 and "close_detached" in got


def test_sa_connect_failure_frees_the_slot(make_pool: Callable[..., Any], Pool: Any) -> None:
    fail = [True]

    def creator() -> Any:
        if fail[0]:
            raise OSError("server down")
        return FakeDBAPIConnection(0)

    pool: Any = PPPPool(creator, pool_size=1, max_overflow=0, timeout=1, ppp_pool_class=Pool)
    try:
        with pytest.raises(OSError, match="server down"):
            pool.connect()
        fail[0] = False
        pool.connect().close()
        assert pool.ppp_stats()["nobjs"] == 1
    finally:
        pool.dispose()


def test_sa_checkout_disconnect_is_retried(make_pool: Callable[..., Any], creator: Creator) -> None:
    """As test_pool's DisconnectionError in a checkout listener: SQLAlchemy invalidates
    and reconnects the record in place; ppp still holds one object."""
    pool = make_pool(pool_size=1, max_overflow=0)
    fail = [1]

    def checkout(dbapi: Any, rec: Any, proxy: Any) -> None:
        if fail[0]:
            fail[0] -= 1
            raise exc.DisconnectionError("gone")

    event.listen(pool, "checkout", checkout)
    conn = pool.connect()
    assert conn.dbapi_connection is creator.made[1] and creator.made[0].closed
    conn.close()
    assert pool.ppp_stats()["nobjs"] == 1 and pool.checkedin() == 1


def test_sa_info_lives_with_the_connection(make_pool: Callable[..., Any]) -> None:
    """As test_pool's info tests: ``info`` persists across checkouts, is cleared when
    the connection is invalidated; ``record_info`` outlives the connection."""
    pool = make_pool(pool_size=1, max_overflow=0)
    conn = pool.connect()
    conn.info["a"] = 1
    conn.record_info["b"] = 2
    conn.close()
    conn = pool.connect()
    assert conn.info == {"a": 1} and conn.record_info == {"b": 2}
    conn.invalidate()
    conn = pool.connect()
    assert conn.info == {} and conn.record_info == {"b": 2}
    conn.close()


def test_sa_double_checkin_warns_and_counts_once(make_pool: Callable[..., Any]) -> None:
    pool = make_pool(pool_size=1, max_overflow=0)
    conn = pool.connect()
    rec = conn._connection_record
    conn.close()
    with pytest.warns(exc.SAWarning, match="Double checkin"):
        rec.checkin()
    stats = pool.ppp_stats()
    assert stats["nreturns"] == 1 and stats["nbad_returns"] == 0 and pool.checkedin() == 1


def test_dispose_under_load(make_pool: Callable[..., Any], creator: Creator) -> None:
    """Threads check out and in while the pool is disposed again and again: no
    connection in two threads at once, no error, and in the end every connection
    made is closed (idle ones at dispose, those in use when they came back)."""
    pool = make_pool(pool_size=2, max_overflow=1, timeout=60)
    owners: dict[int, int] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    done = threading.Event()

    def work(k: int) -> None:
        try:
            for _ in range(150):
                conn = pool.connect()
                key = id(conn.dbapi_connection)
                with lock:
                    assert key not in owners, "a connection in two threads"
                    owners[key] = k
                time.sleep(0)
                with lock:
                    del owners[key]
                conn.close()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    disposals = 0
    while any(t.is_alive() for t in threads):
        pool.dispose()
        disposals += 1
        time.sleep(0.002)
    for t in threads:
        t.join()
    done.set()
    assert errors == [] and disposals > 1
    pool.dispose()
    assert all(c.closed for c in creator.made), sum(not c.closed for c in creator.made)


# ------------------------------------------------------------------ ppp's own


def test_ppp_kwargs_max_use(make_pool: Callable[..., Any], creator: Creator) -> None:
    pool = make_pool(pool_size=1, max_overflow=0, ppp_kwargs={"max_use": 3})
    for _ in range(7):
        pool.connect().close()
    assert [c.closed for c in creator.made] == [True, True, False]
    assert pool.ppp_stats()["nwornout"] == 2


def test_ppp_kwargs_kill_long_held(
    make_pool: Callable[..., Any], creator: Creator, pool_log: pytest.LogCaptureFixture
) -> None:
    """max_using_delay_kill: the slot is freed at once, the connection closed when it
    comes back (never under its holder); leak_trace names the holder's stack."""
    pool = make_pool(
        pool_size=1,
        max_overflow=0,
        ppp_kwargs={"max_using_delay_kill": 0.05, "leak_trace": True, "delay": 0.01},
    )
    held = pool.connect()
    wait_for("killed", lambda: pool.ppp_stats()["nkilled"] == 1)
    assert not creator.made[0].closed
    other = pool.connect()  # the freed slot
    assert other.dbapi_connection is creator.made[1]
    held.close()
    wait_for("killed one closed", lambda: creator.made[0].closed)  # the closer may run late
    other.close()
    assert pool.ppp_stats()["nobjs"] == 1
    assert any("test_ppp_kwargs_kill_long_held" in r.getMessage() for r in pool_log.records)


def test_ppp_kwargs_hooks_see_the_dbapi_connection(make_pool: Callable[..., Any]) -> None:
    pool = make_pool(
        pool_size=1,
        max_overflow=0,
        ppp_kwargs={"tracer": lambda c: f"fake#{c.n}", "stats": lambda c: {"n": c.n}},
    )
    pool.connect().close()
    stats = pool.ppp_stats()
    assert stats["avail"][0]["stats"] == {"n": 0}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"ppp_kwargs": {"closer": print}}, "'close' pool event"),
        ({"ppp_kwargs": {"max_size": 3}}, "pool_size and max_overflow"),
        ({"ppp_kwargs": {"nope": 1}}, "unknown ppp Pool parameter 'nope'"),
        ({"pool_size": 2, "ppp_kwargs": {"min_size": 3}}, r"min_size \(3\) must not exceed"),
        ({"pool_size": -1}, "pool_size must be >= 0"),
        ({"ppp_kwargs": {"health": True}}, "health=True pings with the dialect"),
    ],
)
def test_bad_parameters(kwargs: dict[str, Any], match: str, creator: Creator, Pool: Any) -> None:
    with pytest.raises(exc.ArgumentError, match=match):
        PPPPool(creator, ppp_pool_class=Pool, **kwargs)


def test_ppp_parameter_errors_raise_at_construction(creator: Creator, Pool: Any) -> None:
    with pytest.raises(ValueError, match="max_use"):
        PPPPool(creator, ppp_pool_class=Pool, ppp_kwargs={"max_use": -1})


def test_min_size_fills_after_the_dialect_is_ready(engines: Engines) -> None:
    """min_size > 0: the ppp Pool starts at the first checkout (when the engine's
    events are in place), then keeps min_size connections."""
    engine = engines(pool_size=3, max_overflow=0, ppp_kwargs={"min_size": 2})
    assert engine.pool.ppp_pool is None
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    assert engine.dialect.server_version_info is not None
    assert engine.pool.ppp_stats()["nobjs"] == 2


def test_create_engine_passes_ppp_arguments(engines: Engines, Pool: Any) -> None:
    engine = engines(pool_size=2, max_overflow=3, pool_timeout=4, ppp_kwargs={"max_use": 9})
    stats = engine.pool.ppp_stats()
    assert (stats["max_size"], stats["max_use"]) == (5, 9)
    assert engine.pool.timeout() == 4 and isinstance(engine.pool.ppp_pool, Pool)
    assert "Pool size: 2" in engine.pool.status()


def test_echo_pool_logs_under_sqlalchemy_pool(
    engines: Engines, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.pool")
    engine = engines(pool_size=1, max_overflow=0, pool_logging_name="mine")
    engine.connect().close()
    engine.dispose()
    names = {r.name for r in caplog.records}
    assert "sqlalchemy.pool.impl.PPPPool.mine" in names
    assert any("Pool disposed" in r.getMessage() for r in caplog.records)


def test_asyncio_engines_are_refused(Pool: Any) -> None:
    pytest.importorskip("greenlet")
    from sqlalchemy.ext.asyncio import create_async_engine

    with pytest.raises(exc.ArgumentError, match="cannot be used with asyncio engine"):
        create_async_engine(PG_URL.replace("+psycopg:", "+psycopg_async:"), poolclass=PPPPool)


def test_import_ppp_does_not_import_sqlalchemy() -> None:
    code = "import sys, ppp; assert 'sqlalchemy' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_without_sqlalchemy_the_module_imports_and_says_what_is_missing() -> None:
    """As an install without the extra (the wheel checks import every ppp module)."""
    code = (
        "import sys\n"
        "sys.modules['sqlalchemy'] = None  # as if not installed\n"
        "import ppp.sqlalchemy\n"
        "try:\n"
        "    ppp.sqlalchemy.PPPPool(lambda: None)\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "needs SQLAlchemy 2: pip install 'ppp-pool[sqlalchemy]'" in proc.stdout


def test_use_lifo_false_is_logged_as_not_applying(
    engines: Engines, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqlalchemy.pool")
    engine = engines(pool_size=2, max_overflow=0, pool_use_lifo=False)
    a, b = engine.connect(), engine.connect()
    first, second = a.connection.dbapi_connection, b.connection.dbapi_connection
    a.close()
    b.close()
    with engine.connect() as conn:  # LIFO all the same: the last one returned
        assert conn.connection.dbapi_connection is second is not first
    assert any("use_lifo=False does not apply" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ README


def readme_block(heading: str) -> str:
    text_ = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text_.index(f"\n## {heading}\n")
    section = text_[start + 1 :]
    end = section.find("\n## ", 1)
    section = section if end < 0 else section[:end]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, f"no python block under {heading!r}"
    return "\n".join(blocks)


def test_readme_example(tmp_path: Path, backend: Any) -> None:
    """The README's "With SQLAlchemy" code, in a fresh interpreter with this twin active."""
    script = tmp_path / "example.py"
    script.write_text(readme_block("With SQLAlchemy"), encoding="utf-8")
    env = dict(os.environ)
    env.pop("PPP_NO_EXTENSIONS", None)
    if backend.Pool._backend == "python":
        env["PPP_NO_EXTENSIONS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"backend={backend.Pool._backend}" in proc.stdout
