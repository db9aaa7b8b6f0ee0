"""ppp pools real connections: PostgreSQL (psycopg 3), MariaDB (PyMySQL), Redis
(redis-py) and SQLite, checked from the server's side.

Each database has a driver that opens connections under a per-test tag and asks
the server which of them are alive (``pg_stat_activity``, MariaDB's process
list, ``CLIENT LIST``; for SQLite the process's open file descriptors on the
database file).  The tests then prove what a pool is for: threads that come and
go never hold more sessions than ``max_size``, forgotten connections do not
leak, ``retter`` rolls back, a session killed on the server is found by
``health`` and replaced, and ``max_lifetime`` really reconnects; and through a
``Proxy``, a thread that ends without ``_ret_obj()`` still gives its connection
back.

A server that does not answer skips its tests with a clear message, unless
``PPP_REQUIRE_SERVERS`` is set (CI does): then they fail.  Other programs may
use the same servers at the same time, so every test only looks at, and only
kills, sessions it opened itself, and uses tables or keys named ``ppp_it_*``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ppp._backend import FALSY
from ppp.proxy import _for_twin

PG_DSN = os.environ.get(
    "PPP_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=5"
)
MARIADB = {
    "host": os.environ.get("PPP_MARIADB_HOST", "127.0.0.1"),
    "port": int(os.environ.get("PPP_MARIADB_PORT", "3306")),
    "user": os.environ.get("PPP_MARIADB_USER", "root"),
    "password": os.environ.get("PPP_MARIADB_PASSWORD", ""),
    "database": os.environ.get("PPP_MARIADB_DATABASE", "test"),
}
REDIS_URL = os.environ.get("PPP_REDIS_URL", "redis://127.0.0.1:6379/0")

SETTLE = 10.0  # seconds a server gets to notice a closed or killed session


def servers_required() -> bool:
    """``PPP_REQUIRE_SERVERS`` set (to anything but a false word) turns skips into failures."""
    return os.environ.get("PPP_REQUIRE_SERVERS", "").strip().lower() not in FALSY


def wait_for(what: str, check: Callable[[], bool], limit: float = SETTLE) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {limit} s: {what}")
        time.sleep(0.02)


def new_tag() -> str:
    return f"ppp_it_{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------ drivers


class Driver:
    """One database: how to connect, reset, check and kill a connection, and how
    to ask the server which of this test's sessions are alive."""

    name = "?"
    #: whether ``live`` reports server session ids that ``session`` also gives
    server_ids = True

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards the admin connection and the registry
        self.sessions: dict[int, Hashable] = {}  # id(conn) -> server session id

    # what each driver provides
    def where(self) -> str:
        raise NotImplementedError

    def open_admin(self) -> None:
        raise NotImplementedError

    def close_admin(self) -> None:
        raise NotImplementedError

    def connect(self, tag: str) -> Any:
        raise NotImplementedError

    def live(self, tag: str) -> set[Hashable]:
        """Session ids of ``tag`` that the server holds open right now."""
        raise NotImplementedError

    def kill(self, conn: Any) -> None:
        """Kill ``conn``'s session from the server side."""
        raise NotImplementedError

    def echo(self, conn: Any, value: int) -> int:
        """A round trip that must give ``value`` back."""
        raise NotImplementedError

    def reset(self, conn: Any) -> None:
        """The ``retter`` hook of the recipe: roll back whatever is open."""
        raise NotImplementedError

    def health(self, conn: Any) -> bool:
        """The ``health`` hook of the recipe: a cheap round trip, False when dead."""
        raise NotImplementedError

    def close(self, conn: Any) -> None:
        """The ``closer`` hook of the recipe."""
        raise NotImplementedError

    def create_table(self, table: str) -> None:
        raise NotImplementedError

    def drop_table(self, table: str) -> None:
        raise NotImplementedError

    def write_uncommitted(self, conn: Any, table: str) -> None:
        """Open a transaction on ``conn`` that writes to ``table`` and leave it open."""
        raise NotImplementedError

    def in_transaction(self, conn: Any) -> bool:
        raise NotImplementedError

    def committed(self, table: str, conn: Any | None = None) -> int:
        """Rows of ``table`` as seen by the admin session, or by ``conn``."""
        raise NotImplementedError

    # shared
    def session(self, conn: Any) -> Hashable:
        with self.lock:
            return self.sessions[id(conn)]

    def _remember(self, conn: Any, session: Hashable) -> None:
        with self.lock:
            self.sessions[id(conn)] = session


class Postgres(Driver):
    name = "postgresql"

    def where(self) -> str:
        return f"PostgreSQL ({PG_DSN!r}, PPP_PG_DSN)"

    def open_admin(self) -> None:
        import psycopg

        self.admin = psycopg.connect(PG_DSN, autocommit=True, application_name="ppp_it_admin")

    def close_admin(self) -> None:
        self.admin.close()

    def connect(self, tag: str) -> Any:
        import psycopg

        conn = psycopg.connect(PG_DSN, application_name=tag)
        self._remember(conn, conn.info.backend_pid)
        return conn

    def live(self, tag: str) -> set[Hashable]:
        with self.lock:
            rows = self.admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (tag,)
            ).fetchall()
        return {pid for (pid,) in rows}

    def kill(self, conn: Any) -> None:
        pid = self.session(conn)
        with self.lock:
            row = self.admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        assert row == (True,), f"could not terminate backend {pid}"

    def echo(self, conn: Any, value: int) -> int:
        row = conn.execute("SELECT %s::int", (value,)).fetchone()
        conn.rollback()
        return int(row[0])

    def reset(self, conn: Any) -> None:
        conn.rollback()

    def health(self, conn: Any) -> bool:
        import psycopg

        try:
            conn.execute("SELECT 1")
            conn.rollback()
        except psycopg.Error:
            return False
        return True

    def close(self, conn: Any) -> None:
        conn.close()

    def create_table(self, table: str) -> None:
        from psycopg import sql

        with self.lock:
            self.admin.execute(sql.SQL("CREATE TABLE {} (v int)").format(sql.Identifier(table)))

    def drop_table(self, table: str) -> None:
        from psycopg import sql

        with self.lock:
            self.admin.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))

    def write_uncommitted(self, conn: Any, table: str) -> None:
        from psycopg import sql

        conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(sql.Identifier(table)))

    def in_transaction(self, conn: Any) -> bool:
        from psycopg.pq import TransactionStatus

        return bool(conn.info.transaction_status != TransactionStatus.IDLE)

    def committed(self, table: str, conn: Any | None = None) -> int:
        from psycopg import sql

        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        if conn is not None:
            n = conn.execute(query).fetchone()[0]
            conn.rollback()
            return int(n)
        with self.lock:
            row = self.admin.execute(query).fetchone()
        assert row is not None
        return int(row[0])


class MariaDB(Driver):
    name = "mariadb"

    def __init__(self) -> None:
        super().__init__()
        self.tagged: dict[str, set[int]] = {}

    def where(self) -> str:
        shown = {k: v for k, v in MARIADB.items() if k != "password"}
        return f"MariaDB ({shown}, PPP_MARIADB_*)"

    def _connect(self, autocommit: bool) -> Any:
        import pymysql  # type: ignore[import-untyped]

        return pymysql.connect(**MARIADB, autocommit=autocommit, connect_timeout=5)

    def open_admin(self) -> None:
        self.admin = self._connect(autocommit=True)

    def close_admin(self) -> None:
        self.admin.close()

    def _query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        with self.lock, self.admin.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def connect(self, tag: str) -> Any:
        conn = self._connect(autocommit=False)
        thread_id = conn.thread_id()
        self._remember(conn, thread_id)
        with self.lock:
            self.tagged.setdefault(tag, set()).add(thread_id)
        return conn

    def live(self, tag: str) -> set[Hashable]:
        # The process list has no application name: look for the ids this tag opened.
        with self.lock:
            ids = sorted(self.tagged.get(tag, ()))
        if not ids:
            return set()
        marks = ", ".join(["%s"] * len(ids))
        query = f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({marks})"
        rows = self._query(query, ids)
        return {int(i) for (i,) in rows}

    def kill(self, conn: Any) -> None:
        self._query("KILL %s", (self.session(conn),))

    def echo(self, conn: Any, value: int) -> int:
        with conn.cursor() as cur:
            cur.execute("SELECT %s", (value,))
            (got,) = cur.fetchone()
        return int(got)

    def reset(self, conn: Any) -> None:
        conn.rollback()

    def health(self, conn: Any) -> bool:
        import pymysql

        try:
            conn.ping(reconnect=False)
        except pymysql.err.Error:
            return False
        return True

    def close(self, conn: Any) -> None:
        if conn.open:
            conn.close()

    def create_table(self, table: str) -> None:
        self._query(f"CREATE TABLE `{table}` (v INT) ENGINE=InnoDB")

    def drop_table(self, table: str) -> None:
        self._query(f"DROP TABLE IF EXISTS `{table}`")

    def write_uncommitted(self, conn: Any, table: str) -> None:
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO `{table}` VALUES (1)")

    def in_transaction(self, conn: Any) -> bool:
        with conn.cursor() as cur:
            cur.execute("SELECT @@in_transaction")
            (flag,) = cur.fetchone()
        return bool(flag)

    def committed(self, table: str, conn: Any | None = None) -> int:
        query = f"SELECT COUNT(*) FROM `{table}`"
        if conn is None:
            return int(self._query(query)[0][0])
        with conn.cursor() as cur:
            cur.execute(query)
            (n,) = cur.fetchone()
        conn.rollback()
        return int(n)


class Redis(Driver):
    name = "redis"

    def where(self) -> str:
        return f"Redis ({REDIS_URL!r}, PPP_REDIS_URL)"

    def open_admin(self) -> None:
        import redis

        self.admin = redis.Redis.from_url(REDIS_URL, client_name="ppp_it_admin", socket_timeout=5)
        self.admin.ping()

    def close_admin(self) -> None:
        self.admin.close()

    def connect(self, tag: str) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One socket per pooled client, and no silent reconnection: a dead
        # connection must fail so that ``health`` sees it.
        conn = redis.Redis.from_url(
            REDIS_URL,
            client_name=tag,
            single_connection_client=True,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=5,
        )
        self._remember(conn, conn.client_id())
        return conn

    def live(self, tag: str) -> set[Hashable]:
        with self.lock:
            clients = self.admin.client_list()
        return {int(c["id"]) for c in clients if c.get("name") == tag}

    def kill(self, conn: Any) -> None:
        client_id = self.session(conn)
        with self.lock:
            killed = self.admin.client_kill_filter(_id=str(client_id))
        assert killed == 1, f"CLIENT KILL ID {client_id} killed {killed}"

    def echo(self, conn: Any, value: int) -> int:
        return int(conn.echo(str(value)))

    def reset(self, conn: Any) -> None:
        import redis

        try:
            conn.execute_command("DISCARD")  # drops a MULTI left open (and any WATCH)
        except redis.ResponseError:  # "DISCARD without MULTI": nothing was open
            pass

    def health(self, conn: Any) -> bool:
        import redis

        try:
            return bool(conn.ping())
        except redis.RedisError:
            return False

    def close(self, conn: Any) -> None:
        conn.close()

    def create_table(self, table: str) -> None:
        with self.lock:
            self.admin.delete(table)

    drop_table = create_table

    def write_uncommitted(self, conn: Any, table: str) -> None:
        assert conn.execute_command("MULTI") in (b"OK", True)
        assert conn.execute_command("SET", table, "1") in (b"QUEUED", False)

    def in_transaction(self, conn: Any) -> bool:
        # Inside MULTI every command is queued instead of run.
        reply = conn.execute_command("ECHO", "probe")
        return bool(reply == b"QUEUED")

    def committed(self, table: str, conn: Any | None = None) -> int:
        if conn is not None:
            return int(conn.exists(table))
        with self.lock:
            return int(self.admin.exists(table))


class SQLite(Driver):
    """No server: the file descriptors this process holds on the database file
    stand for the sessions, and closing a connection behind the pool's back
    stands for a kill.  One file serves the module's tests, which run one at a
    time, so ``live`` counts every connection to it whatever the tag."""

    name = "sqlite"
    server_ids = False

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def where(self) -> str:
        return f"SQLite in {self.folder}"

    @property
    def path(self) -> str:
        return str(self.folder / "ppp_it.db")

    def open_admin(self) -> None:
        if not Path("/proc/self/fd").is_dir():
            raise OSError("no /proc/self/fd to count open database files")

    def close_admin(self) -> None:
        pass

    def connect(self, tag: str) -> Any:
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._remember(conn, id(conn))
        return conn

    def live(self, tag: str) -> set[Hashable]:
        path, fds = self.path, set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == path:
                    fds.add(int(fd))
            except OSError:  # closed meanwhile
                pass
        return set(fds)

    def kill(self, conn: Any) -> None:
        conn.close()

    def echo(self, conn: Any, value: int) -> int:
        return int(conn.execute("SELECT ?", (value,)).fetchone()[0])

    def reset(self, conn: Any) -> None:
        conn.rollback()

    def health(self, conn: Any) -> bool:
        try:
            conn.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    def close(self, conn: Any) -> None:
        conn.close()

    def _admin(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def create_table(self, table: str) -> None:
        admin = self._admin()
        with admin:
            admin.execute(f'CREATE TABLE "{table}" (v INTEGER)')
        admin.close()

    def drop_table(self, table: str) -> None:
        admin = self._admin()
        with admin:
            admin.execute(f'DROP TABLE IF EXISTS "{table}"')
        admin.close()

    def write_uncommitted(self, conn: Any, table: str) -> None:
        conn.execute(f'INSERT INTO "{table}" VALUES (1)')

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.in_transaction)

    def committed(self, table: str, conn: Any | None = None) -> int:
        query = f'SELECT count(*) FROM "{table}"'
        if conn is not None:
            return int(conn.execute(query).fetchone()[0])
        admin = self._admin()
        try:
            return int(admin.execute(query).fetchone()[0])
        finally:
            admin.close()


@pytest.fixture(scope="module", params=["postgresql", "mariadb", "redis", "sqlite"])
def driver(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Driver]:
    """A reachable database, or a skip (a failure under PPP_REQUIRE_SERVERS)."""
    drivers: dict[str, Callable[[], Driver]] = {
        "postgresql": Postgres,
        "mariadb": MariaDB,
        "redis": Redis,
        "sqlite": lambda: SQLite(tmp_path_factory.mktemp("sqlite")),
    }
    drv = drivers[request.param]()
    try:
        drv.open_admin()
    except Exception as exc:
        message = f"{drv.where()} is not reachable: {type(exc).__name__}: {exc}"
        if servers_required():
            pytest.fail(f"{message} (PPP_REQUIRE_SERVERS is set)", pytrace=False)
        pytest.skip(message)
    yield drv
    drv.close_admin()


class Counted:
    """The pool's ``fun`` and ``closer`` for one test: connects under a tag and
    counts every open and close, remembering the sessions it closed."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.tag = new_tag()
        self.lock = threading.Lock()
        self.opened = 0
        self.closed_sessions: list[Hashable] = []

    def fun(self, n: int) -> Any:
        conn = self.driver.connect(self.tag)
        with self.lock:
            self.opened += 1
        return conn

    def closer(self, conn: Any) -> None:
        session = self.driver.session(conn)
        with self.lock:
            self.closed_sessions.append(session)
        self.driver.close(conn)

    @property
    def nclosed(self) -> int:
        with self.lock:
            return len(self.closed_sessions)

    def live(self) -> set[Hashable]:
        return self.driver.live(self.tag)

    def closed(self) -> set[Hashable]:
        with self.lock:
            return set(self.closed_sessions)


class Sampler(threading.Thread):
    """Asks the server for the tag's sessions over and over while threads work,
    and records every sample that breaks ``check(live)``."""

    def __init__(self, counted: Counted, check: Callable[[set[Hashable]], str | None]) -> None:
        super().__init__(name="ppp-it-sampler", daemon=True)
        self.counted = counted
        self.check = check
        self.stop = threading.Event()
        self.peak = 0
        self.violations: list[str] = []
        self.error: BaseException | None = None
        self.sampled = threading.Event()  # the first sample is taken (or failed)

    def start(self) -> None:
        """Start, and return once the first sample is taken: on a loaded machine
        the threads under watch could otherwise finish before it."""
        super().start()
        assert self.sampled.wait(30), "the sampler never took a sample"

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                live = self.counted.live()
                self.sampled.set()
                self.peak = max(self.peak, len(live))
                problem = self.check(live)
                if problem:
                    self.violations.append(problem)
                time.sleep(0.005)
        except BaseException as exc:  # reported by finish()
            self.error = exc
            self.sampled.set()

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        assert not self.is_alive(), "sampler did not stop"
        if self.error is not None:
            raise self.error
        assert not self.violations, self.violations[:5]


def run_threads(n: int, target: Callable[[int], None]) -> list[BaseException]:
    """Start ``n`` short-lived threads on ``target(i)``, join them, return their errors."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def body(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), name=f"ppp-it-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), f"{t.name} hangs"
    return errors


def settle_closed(counted: Counted) -> None:
    """Every session the closer closed is gone from the server."""
    closed = counted.closed()
    if counted.driver.server_ids:
        wait_for(
            f"closed {counted.driver.name} sessions leave the server",
            lambda: not (counted.live() & closed),
        )


# ------------------------------------------------------------------- tests

MAX_SIZE = 4
ROUNDS = 10
THREADS = 16
USES = 5  # borrows per thread in the churn test


def test_churn_never_exceeds_max_size(driver: Driver, Pool: Any) -> None:
    """Threads come and go, each borrowing a few times: the server never holds more
    than max_size sessions, and after every round exactly the pool's objects."""
    counted = Counted(driver)
    pool = Pool(
        counted.fun,
        max_size=MAX_SIZE,
        min_size=1,
        timeout=30,
        retter=driver.reset,
        closer=counted.closer,
        health=driver.health,
    )

    def check(live: set[Hashable]) -> str | None:
        return f"{len(live)} sessions > max_size" if len(live) > MAX_SIZE else None

    sampler = Sampler(counted, check)
    sampler.start()
    try:
        for rnd in range(ROUNDS):

            def work(i: int, rnd: int = rnd) -> None:
                for k in range(USES):
                    value = rnd * 1000 + i * 10 + k
                    with pool.obj() as conn:
                        assert driver.echo(conn, value) == value

            errors = run_threads(THREADS, work)
            assert not errors, errors[:3]
            stats = pool.stats()
            assert stats["nusing"] == 0 and stats["nwaiting"] == 0
            assert 1 <= stats["nobjs"] <= MAX_SIZE
            assert counted.opened - counted.nclosed == stats["nobjs"]
            assert len(counted.live()) == stats["nobjs"], f"round {rnd}: server and pool disagree"
    finally:
        sampler.finish()
        pool.shutdown()
    assert sampler.peak <= MAX_SIZE
    stats = pool.stats()
    assert stats["nuses"] == ROUNDS * THREADS * USES == stats["nreturns"]
    assert stats["ncreated"] == counted.opened <= MAX_SIZE  # nothing retired: no reconnects
    assert stats["nobjs"] == 0 and counted.nclosed == counted.opened
    wait_for(f"no {driver.name} session left after shutdown", lambda: not counted.live())


def test_forgotten_connections_are_killed_not_leaked(driver: Driver, Pool: Any) -> None:
    """Some threads end without returning their connection: max_using_delay_kill
    takes it back (closed on the server), so the others never starve."""
    counted = Counted(driver)
    kill_after = 3.0  # long enough that no busy holder is killed on a loaded machine
    pool = Pool(
        counted.fun,
        max_size=MAX_SIZE,
        min_size=1,
        timeout=30,
        max_using_delay_kill=kill_after,
        delay=0.05,
        retter=driver.reset,
        closer=counted.closer,
    )
    forgotten = 0

    def check(live: set[Hashable]) -> str | None:
        # Sessions not yet closed are held by the pool (at most max_size) or were
        # killed and wait for their closer: nkilled - closes (only kills close here).
        # Read in this order: live (done), closed, then the pool's kill count.
        closed = counted.closed()
        unclosed = live - closed
        bound = MAX_SIZE + pool.stats()["nkilled"] - len(closed)
        return f"{len(unclosed)} unclosed sessions > {bound}" if len(unclosed) > bound else None

    sampler = Sampler(counted, check)
    sampler.start()
    try:
        for rnd in range(ROUNDS):
            forget = rnd % 4 == 0  # thread 0 of rounds 0, 4, 8: a free slot is always left

            def work(i: int, rnd: int = rnd, forget: bool = forget) -> None:
                conn = pool.get()
                assert driver.echo(conn, rnd * 100 + i) == rnd * 100 + i
                if forget and i == 0:
                    return  # the thread ends holding it
                pool.ret(conn)

            errors = run_threads(THREADS, work)
            assert not errors, errors[:3]
            forgotten += forget
        wait_for("every forgotten connection killed", lambda: pool.stats()["nusing"] == 0)
    finally:
        sampler.finish()
    stats = pool.stats()
    # A slow legitimate holder may also be killed; its late return is then refused.
    assert stats["nkilled"] == forgotten + stats["nbad_returns"]
    # a kill counts under the lock; its closer runs after, in the housekeeper
    wait_for("every killed connection closed", lambda: counted.nclosed >= stats["nkilled"])
    assert counted.nclosed == stats["nkilled"]
    settle_closed(counted)
    assert len(counted.live()) == stats["nobjs"] == counted.opened - counted.nclosed
    pool.shutdown()
    wait_for(f"no {driver.name} session left after shutdown", lambda: not counted.live())


def test_retter_rolls_back(driver: Driver, Pool: Any) -> None:
    """A connection given back inside a transaction comes out clean: the write
    is gone, on that connection and for everyone else."""
    counted = Counted(driver)
    table = new_tag()
    driver.create_table(table)
    try:
        with Pool(
            counted.fun, max_size=1, min_size=0, retter=driver.reset, closer=counted.closer
        ) as pool:
            conn = pool.get()
            driver.write_uncommitted(conn, table)
            assert driver.in_transaction(conn)
            pool.ret(conn)
            again = pool.get()
            assert again is conn  # the very same connection, reused
            assert not driver.in_transaction(again)
            assert driver.committed(table, again) == 0
            assert driver.committed(table) == 0
            pool.ret(again)
            assert pool.stats()["ncreated"] == 1
    finally:
        driver.drop_table(table)
    wait_for(f"no {driver.name} session left after shutdown", lambda: not counted.live())


def test_without_retter_the_transaction_stays_open(driver: Driver, Pool: Any) -> None:
    """The control experiment: with no retter the next borrower inherits the
    open transaction, which is why the recipes roll back on return."""
    counted = Counted(driver)
    table = new_tag()
    driver.create_table(table)
    try:
        with Pool(counted.fun, max_size=1, min_size=0, closer=counted.closer) as pool:
            conn = pool.get()
            driver.write_uncommitted(conn, table)
            pool.ret(conn)
            with pool.obj() as again:
                assert again is conn
                assert driver.in_transaction(again)
                driver.reset(again)
    finally:
        driver.drop_table(table)


def test_killed_session_is_found_by_health_and_replaced(
    driver: Driver, Pool: Any, pool_log: pytest.LogCaptureFixture
) -> None:
    """A session killed on the server side is caught by the health round while it
    sits idle, closed, and a fresh one takes its place."""
    counted = Counted(driver)
    pool = Pool(
        counted.fun,
        max_size=2,
        min_size=2,
        timeout=10,
        health=driver.health,
        delay=0.05,
        retter=driver.reset,
        closer=counted.closer,
    )
    try:
        wait_for("the pool fills to min_size", lambda: pool.stats()["navail"] == 2)
        first, second = pool.get(), pool.get()
        victim, survivor = driver.session(first), driver.session(second)
        pool.ret(second)
        pool.ret(first)
        if driver.server_ids:
            assert counted.live() == {victim, survivor}
        driver.kill(first)
        if driver.server_ids:
            wait_for("the killed session leaves the server", lambda: victim not in counted.live())
        wait_for("health notices the dead connection", lambda: pool.stats()["bad_health"] >= 1)
        wait_for("the pool refills to min_size", lambda: pool.stats()["navail"] == 2)
        stats = pool.stats()
        assert stats["bad_health"] == 1 and stats["ncreated"] == 3 and stats["nobjs"] == 2
        assert counted.closed() == {victim}
        a, b = pool.get(), pool.get()
        assert first not in (a, b) and second in (a, b)
        for k, conn in enumerate((a, b)):
            assert driver.echo(conn, 40 + k) == 40 + k
        if driver.server_ids:
            replacement = driver.session(a if b is second else b)
            assert counted.live() == {survivor, replacement} and replacement != victim
        else:
            assert len(counted.live()) == 2
        pool.ret(a)
        pool.ret(b)
    finally:
        pool.shutdown()
    assert any("bad health" in r.getMessage() for r in pool_log.records)
    wait_for(f"no {driver.name} session left after shutdown", lambda: not counted.live())


def test_max_lifetime_really_reconnects(driver: Driver, Pool: Any) -> None:
    """Past max_lifetime an idle connection is closed by housekeeping and one in
    use is closed on return; either way the next get is a new server session."""
    counted = Counted(driver)
    lifetime = 0.4
    pool = Pool(
        counted.fun,
        max_size=2,
        min_size=1,
        max_lifetime=lifetime,
        delay=0.05,
        retter=driver.reset,
        closer=counted.closer,
    )
    try:
        # idle past its lifetime: housekeeping retires it and refills
        conn = pool.get()
        old = driver.session(conn)
        pool.ret(conn)
        wait_for("housekeeping retires the idle connection", lambda: counted.nclosed >= 1)
        wait_for("and refills min_size", lambda: pool.stats()["navail"] == 1)
        fresh = pool.get()
        assert fresh is not conn and driver.echo(fresh, 7) == 7
        if driver.server_ids:
            assert driver.session(fresh) != old
            wait_for("the retired session leaves the server", lambda: old not in counted.live())
        # held past its lifetime: closed when it comes back
        held = driver.session(fresh)
        time.sleep(lifetime * 1.5)
        assert held not in counted.closed()
        pool.ret(fresh)
        assert held in counted.closed()  # closed by ret itself, not later
        stats = pool.stats()
        assert stats["nexpired"] >= 2
        if driver.server_ids:
            wait_for("the expired session leaves the server", lambda: held not in counted.live())
    finally:
        pool.shutdown()
    settle_closed(counted)
    wait_for(f"no {driver.name} session left after shutdown", lambda: not counted.live())


def handler_that_forgets(pool: Any, driver: Driver, kept: list[Any]) -> None:
    """Borrows a connection and never gives it back: the bug leak_trace points at."""
    conn = pool.get()
    driver.echo(conn, 1)
    kept.append(conn)


def test_leak_trace_names_the_forgetful_thread(
    driver: Driver, Pool: Any, pool_log: pytest.LogCaptureFixture
) -> None:
    """max_using_delay with leak_trace logs the holder thread and where it got
    the connection, so a forgotten connection is easy to find."""
    counted = Counted(driver)
    kept: list[Any] = []
    pool = Pool(
        counted.fun,
        max_size=2,
        min_size=0,
        max_using_delay=0.2,
        delay=0.05,
        leak_trace=True,
        closer=counted.closer,
    )
    try:
        t = threading.Thread(
            target=handler_that_forgets, args=(pool, driver, kept), name="forgetful-request"
        )
        t.start()
        t.join(30)

        def warned() -> bool:
            return any("max_using_delay" in r.getMessage() for r in pool_log.records)

        wait_for("the long-held warning", warned)
        (record,) = [r for r in pool_log.records if "max_using_delay" in r.getMessage()]
        message = record.getMessage()
        assert record.levelno == logging.WARNING
        assert "by thread 'forgetful-request'" in message
        assert "in handler_that_forgets" in message and "conn = pool.get()" in message
        assert __file__ in message
        assert pool.stats()["using"][0]["holder"] == "forgetful-request"
        pool.ret(kept.pop())
    finally:
        pool.shutdown()
    wait_for(f"no {driver.name} session left after shutdown", lambda: not counted.live())


def test_proxy_threads_that_forget_give_back_at_thread_end(
    driver: Driver, backend: ModuleType
) -> None:
    """The main job with a module-level ``db = Proxy()``: short-lived threads use
    the connection through the proxy, half of them never call ``_ret_obj()``;
    their connection still comes back through ``retter`` when the thread ends, so
    the server never holds more than max_size sessions and nothing reconnects."""
    counted = Counted(driver)
    resets = 0
    resets_lock = threading.Lock()

    def retter(conn: Any) -> None:
        nonlocal resets
        driver.reset(conn)
        with resets_lock:
            resets += 1

    db = _for_twin(backend)()
    db._set_pool(
        max_size=MAX_SIZE,
        min_size=1,
        timeout=30,
        retter=retter,
        closer=counted.closer,
        health=driver.health,
    )
    db.set_fun(counted.fun)
    pool = db._pool

    def check(live: set[Hashable]) -> str | None:
        return f"{len(live)} sessions > max_size" if len(live) > MAX_SIZE else None

    sampler = Sampler(counted, check)
    sampler.start()
    try:
        for rnd in range(ROUNDS):

            def request(i: int, rnd: int = rnd) -> None:
                for k in range(USES):  # the same connection for the whole "request"
                    value = rnd * 1000 + i * 10 + k
                    assert driver.echo(db, value) == value  # forwarded to this thread's own
                if i % 2:
                    db._ret_obj()  # half the handlers tidy up, the others forget

            errors = run_threads(THREADS, request)
            assert not errors, errors[:3]
            wait_for(
                "forgotten connections back at thread end", lambda: pool.stats()["nusing"] == 0
            )
            stats = pool.stats()
            assert stats["nuses"] == stats["nreturns"] == (rnd + 1) * THREADS
            assert len(counted.live()) == stats["nobjs"] <= MAX_SIZE
    finally:
        sampler.finish()
        pool.shutdown()
    assert sampler.peak <= MAX_SIZE
    assert resets == ROUNDS * THREADS  # every borrow went back through retter
    assert counted.opened == pool.stats()["ncreated"] <= MAX_SIZE  # no reconnection
    assert counted.nclosed == counted.opened
    wait_for(f"no {driver.name} session left after shutdown", lambda: not counted.live())
