"""The demo's server: a Flask app on werkzeug's threaded server, which starts a
thread per request, with handlers that read the database through a module-level
``db = Proxy()`` set up in ``init_app`` -- the README's Flask example.

``examples/demo.py`` runs one server process per variant::

    python examples/demo_server.py --variant ppp --sqlite /tmp/demo/demo.db
    python examples/demo_server.py --variant ppp --dsn "host=127.0.0.1 dbname=test"

Variants (``--variant``):

- ``ppp``: ``db`` is a pooled ``Proxy``; ``teardown_request`` gives the
  connection back with ``db._ret_obj()``.  Which twin runs (compiled or pure)
  is the process's choice: set ``PPP_NO_EXTENSIONS=1`` for the pure one.
- ``ppp-forget``: the same, but nothing calls ``_ret_obj()``: the connection
  goes back to the pool when the request's thread ends.
- ``per-request``: baseline, a new connection for each request, closed at
  teardown.
- ``psycopg_pool``: baseline on PostgreSQL, ``psycopg_pool.ConnectionPool``,
  connection returned at teardown.
- ``sqlalchemy-ppp`` and ``sqlalchemy-queuepool``: SQLAlchemy Core, an Engine
  on ``ppp.sqlalchemy.PPPPool`` or on SQLAlchemy's ``QueuePool`` (pool size
  ``--pool-size``, no overflow); a request's connection is checked out at its
  first query and closed at teardown.

When ready it prints ``serving http://127.0.0.1:PORT backend=...``; it serves
until SIGTERM or SIGINT, then closes its pool and prints a last JSON line with
the connections it opened and closed.  Endpoints: ``/item/<id>`` (one query),
``/stats`` (JSON: the demo's counters and the pool's ``stats()``) and
``/metrics`` (Prometheus text format, with prometheus-client).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from flask import Flask, Response, g, jsonify

import ppp

VARIANTS = (
    "ppp",
    "ppp-forget",
    "per-request",
    "psycopg_pool",
    "sqlalchemy-ppp",
    "sqlalchemy-queuepool",
)

db = ppp.Proxy()  # module level: handlers import it before it is set up


# ------------------------------------------------------------------ database


class Counter:
    """Connections opened and closed, counted by the demo's own connect and close."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened = 0
        self.closed = 0

    def open(self) -> None:
        with self.lock:
            self.opened += 1

    def close(self) -> None:
        with self.lock:
            self.closed += 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {"opened": self.opened, "closed": self.closed}


COUNTER = Counter()


class Database:
    """Where the demo's data lives, with the pool hooks of the README's recipes."""

    item_sql: str
    where: str

    def connect(self) -> Any:
        raise NotImplementedError

    def reset(self, conn: Any) -> None:
        """``retter``: end whatever transaction the request left open."""
        conn.rollback()

    def health(self, conn: Any) -> bool:
        raise NotImplementedError

    def close(self, conn: Any) -> None:
        """``closer``."""
        conn.close()


class CountedSQLite(sqlite3.Connection):
    """A sqlite3 connection whose close is counted once."""

    _counted_close = False

    def close(self) -> None:
        if not self._counted_close:
            self._counted_close = True
            COUNTER.close()
        super().close()


class SQLiteDatabase(Database):
    def __init__(self, path: str, table: str) -> None:
        self.path = path
        self.where = f"SQLite {path}"
        self.item_sql = f'SELECT id, name, price FROM "{table}" WHERE id = ?'

    def connect(self) -> Any:
        # check_same_thread=False: a pooled connection serves many threads, one at a time
        conn = sqlite3.connect(self.path, check_same_thread=False, factory=CountedSQLite)
        COUNTER.open()
        return conn

    def health(self, conn: Any) -> bool:
        try:
            conn.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True


class PostgresDatabase(Database):
    def __init__(self, dsn: str, table: str, app_name: str) -> None:
        import psycopg
        from psycopg import sql

        class CountedConnection(psycopg.Connection[Any]):
            """psycopg connection whose opening and first close are counted (psycopg_pool
            opens its connections through ``connection_class.connect`` too)."""

            @classmethod
            def connect(cls, *args: Any, **kwargs: Any) -> Any:
                conn = super().connect(*args, **kwargs)
                COUNTER.open()
                return conn

            def close(self) -> None:
                if not self.closed:
                    COUNTER.close()
                super().close()

        self.connection_class = CountedConnection
        self.dsn = dsn
        self.app_name = app_name
        self.where = "PostgreSQL"
        self.item_sql = (
            sql.SQL("SELECT id, name, price FROM {} WHERE id = %s")
            .format(sql.Identifier(table))
            .as_string(None)
        )

    def connect(self) -> Any:
        return self.connection_class.connect(self.dsn, application_name=self.app_name)

    def health(self, conn: Any) -> bool:
        import psycopg

        try:
            conn.execute("SELECT 1")
            conn.rollback()
        except psycopg.Error:
            return False
        return True


# ------------------------------------------------------------------ baselines


class PerRequest:
    """Baseline without a pool: a new connection at a request's first query,
    closed at its teardown."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def execute(self, query: str, args: Any = ()) -> Any:
        if "conn" not in g:
            g.conn = self.database.connect()
        return g.conn.execute(query, args)

    def teardown(self, exc: BaseException | None) -> None:
        conn = g.pop("conn", None)
        if conn is not None:
            conn.close()

    def stats(self) -> dict[str, Any] | None:
        return None

    def close(self) -> None:
        pass


class PsycopgPool(PerRequest):
    """Baseline on PostgreSQL: psycopg_pool's ConnectionPool, returned at teardown."""

    def __init__(self, database: PostgresDatabase, size: int) -> None:
        super().__init__(database)
        from psycopg_pool import ConnectionPool

        self.pool = ConnectionPool(
            database.dsn,
            min_size=1,
            max_size=size,
            timeout=30,
            kwargs={"application_name": database.app_name},
            connection_class=database.connection_class,
            open=True,
        )
        self.pool.wait(30)

    def execute(self, query: str, args: Any = ()) -> Any:
        if "conn" not in g:
            g.conn = self.pool.getconn()
        return g.conn.execute(query, args)

    def teardown(self, exc: BaseException | None) -> None:
        conn = g.pop("conn", None)
        if conn is not None:
            conn.rollback()  # as ppp's retter does; psycopg_pool warns otherwise
            self.pool.putconn(conn)

    def stats(self) -> dict[str, Any] | None:
        return dict(self.pool.get_stats())

    def close(self) -> None:
        self.pool.close()


class SQLAlchemyCore(PerRequest):
    """SQLAlchemy Core on an Engine whose pool is ppp's ``PPPPool`` or ``QueuePool``;
    connections come from the demo's own ``connect`` (``creator``), so they are counted."""

    def __init__(self, database: Database, size: int, on_ppp: bool) -> None:
        super().__init__(database)
        import sqlalchemy as sa
        from sqlalchemy.pool import QueuePool

        from ppp.sqlalchemy import PPPPool

        url = "postgresql+psycopg://" if isinstance(database, PostgresDatabase) else "sqlite://"
        self.on_ppp = on_ppp
        self.engine = sa.create_engine(
            url,
            creator=database.connect,
            poolclass=PPPPool if on_ppp else QueuePool,
            pool_size=size,
            max_overflow=0,
            pool_timeout=30,
        )

    def execute(self, query: str, args: Any = ()) -> Any:
        if "conn" not in g:
            g.conn = self.engine.connect()
        return g.conn.exec_driver_sql(query, args)

    def stats(self) -> dict[str, Any] | None:
        pool: Any = self.engine.pool
        return pool.ppp_stats() if self.on_ppp else {"status": pool.status()}

    def close(self) -> None:
        self.engine.dispose()


# ------------------------------------------------------------------ the app


def init_app(app: Flask) -> None:
    """Set up ``db`` from the app's config, as the README's Flask example does."""
    database: Database = app.config["DATABASE"]
    variant = app.config["VARIANT"]
    if variant in ("ppp", "ppp-forget"):
        db._set_pool(
            max_size=app.config["POOL_SIZE"],
            min_size=1,
            timeout=30.0,
            retter=database.reset,  # roll back what the request left open
            closer=database.close,
            health=database.health,  # checked every 60 s while idle
        )
        db.set_fun(lambda n: database.connect())
        if variant == "ppp":
            app.teardown_request(lambda exc: db._ret_obj())
        # ppp-forget: no teardown; the thread's end gives the connection back
    else:
        baseline: PerRequest
        if variant == "psycopg_pool":
            baseline = PsycopgPool(database, app.config["POOL_SIZE"])  # type: ignore[arg-type]
        elif variant.startswith("sqlalchemy-"):
            baseline = SQLAlchemyCore(database, app.config["POOL_SIZE"], variant.endswith("-ppp"))
        else:
            baseline = PerRequest(database)
        db.set_obj(baseline)
        app.teardown_request(baseline.teardown)


def pool_stats() -> dict[str, Any] | None:
    """The pool's own figures: ppp's ``stats()``, psycopg_pool's ``get_stats()``."""
    pool = db._pool
    if pool is not None:
        return pool.stats()  # type: ignore[no-any-return]
    if db._has_obj():
        return db.stats()  # type: ignore[no-any-return]
    return None


def create_app(variant: str, database: Database, pool_size: int) -> Flask:
    app = Flask("ppp_demo")
    app.config.update(VARIANT=variant, DATABASE=database, POOL_SIZE=pool_size)
    init_app(app)
    item_sql = database.item_sql

    @app.get("/item/<int:item_id>")
    def item(item_id: int) -> Any:
        row = db.execute(item_sql, (item_id,)).fetchone()
        if row is None:
            return jsonify(error=f"no item {item_id}"), 404
        return jsonify(id=row[0], name=row[1], price=row[2])

    @app.get("/stats")
    def stats() -> Any:
        return jsonify(
            variant=variant,
            backend=ppp.BACKEND,
            database=database.where,
            connections=COUNTER.snapshot(),
            pool=pool_stats(),
        )

    @app.get("/metrics")
    def metrics() -> Any:
        try:
            from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        except ImportError:
            return Response("prometheus-client is not installed\n", 501, mimetype="text/plain")
        from prometheus_ppp import PoolCollector

        if db._pool is None:
            return Response(f"variant {variant} has no ppp pool\n", 404, mimetype="text/plain")
        registry = CollectorRegistry()
        registry.register(PoolCollector({"db": db._pool}))
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    return app


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=VARIANTS, default="ppp")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sqlite", metavar="PATH", help="SQLite database file")
    where.add_argument("--dsn", help="PostgreSQL connection string")
    parser.add_argument("--table", default="ppp_demo_items")
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument("--app-name", default="ppp-demo", help="PostgreSQL application_name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)

    from werkzeug.serving import make_server

    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    database: Database
    if args.sqlite:
        database = SQLiteDatabase(args.sqlite, args.table)
    else:
        database = PostgresDatabase(args.dsn, args.table, args.app_name)
    if args.variant == "psycopg_pool" and not isinstance(database, PostgresDatabase):
        parser.error("the psycopg_pool variant needs --dsn (PostgreSQL)")
    app = create_app(args.variant, database, args.pool_size)
    server = make_server(args.host, args.port, app, threaded=True)  # a thread per request
    signal.signal(signal.SIGTERM, _stop)
    print(
        f"serving http://{args.host}:{server.server_port} backend={ppp.BACKEND} "
        f"variant={args.variant}",
        flush=True,
    )
    stop: Callable[[], None] = db._pool.shutdown if db._pool is not None else db.close
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if db._pool is not None:  # the last request threads may still be ending
            deadline = time.monotonic() + 5.0
            while db._pool.stats()["nusing"] and time.monotonic() < deadline:
                time.sleep(0.01)
        stop()
        print(json.dumps({"final": COUNTER.snapshot()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
