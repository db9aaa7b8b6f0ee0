"""The app the server tests serve: Flask, with a module-level pooled ``db``.

Settings come from the environment (``tests/serverkit.py`` sets them):
``PPP_APP_DSN`` (with a unique ``application_name``), ``PPP_APP_TABLE``,
``PPP_APP_VARIANT``, ``PPP_APP_MAX_SIZE``, ``PPP_APP_TIMEOUT`` and
``PPP_APP_PREPARE`` (``none``: ``prepare_threshold=None``, for PgBouncer).

The pool is made at import time, and the README's start-up pattern (``with
db._obj() as conn:``) runs at import too: under ``gunicorn --preload`` both
happen in the master, before the workers are forked.

Variants (``PPP_APP_VARIANT``):

- ``return``: ``teardown_request`` gives the connection back (``db._ret_obj()``);
- ``forget``: handlers never call ``_ret_obj()`` and nothing returns for them;
- ``scope``: handlers never call ``_ret_obj()``; ``ppp.wsgi.RequestScope``
  wraps the app and gives the connection back at the end of each request;
- ``flask``: the same through ``ppp.flask.PoolReturn``;
- ``psycopg_pool`` and ``sqlalchemy``: baselines, a ``ConnectionPool`` and a
  ``QueuePool`` of the same size, connection returned by a ``with`` block.

Endpoints: ``/health``; ``GET /row/<id>`` reads a row; ``POST /bump/<id>``
updates it and commits.  Both answer ``{"id", "val", "backend", "pid"}``:
``backend`` is ``pg_backend_pid()``, ``pid`` this process.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from flask import Flask, Response, jsonify

import ppp

DSN = os.environ["PPP_APP_DSN"]
TABLE = os.environ["PPP_APP_TABLE"]
VARIANT = os.environ.get("PPP_APP_VARIANT", "return")
MAX_SIZE = int(os.environ.get("PPP_APP_MAX_SIZE", "4"))
TIMEOUT = float(os.environ.get("PPP_APP_TIMEOUT", "5"))
PREPARE: dict[str, Any] = (
    {"prepare_threshold": None} if os.environ.get("PPP_APP_PREPARE") == "none" else {}
)
PPP_VARIANTS = ("return", "forget", "scope", "flask")

READ = f"SELECT val, pg_backend_pid() FROM {TABLE} WHERE id = %s"
BUMP = f"UPDATE {TABLE} SET hits = hits + 1 WHERE id = %s RETURNING val, pg_backend_pid()"


def connect(n: int = 0) -> Any:
    import psycopg

    return psycopg.connect(DSN, **PREPARE)


app = Flask(__name__)
pool: Any = None
engine: Any = None

if VARIANT in PPP_VARIANTS:
    db = ppp.Proxy(
        fun=connect,
        max_size=MAX_SIZE,
        timeout=TIMEOUT,
        retter=lambda conn: conn.rollback(),
        closer=lambda conn: conn.close(),
    )
    with db._obj() as conn:  # the README's start-up pattern, at import time
        conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()

    def read(sql: str, i: int, commit: bool) -> tuple[str, int]:
        val, backend = db.execute(sql, (i,)).fetchone()
        if commit:
            db.commit()
        return val, backend

elif VARIANT == "psycopg_pool":
    db = ppp.Proxy()
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        DSN, min_size=1, max_size=MAX_SIZE, timeout=TIMEOUT, kwargs=PREPARE, open=True
    )

    def read(sql: str, i: int, commit: bool) -> tuple[str, int]:
        with pool.connection() as conn:  # commits on exit
            val, backend = conn.execute(sql, (i,)).fetchone()
            return val, backend

elif VARIANT == "sqlalchemy":
    import sqlalchemy

    db = ppp.Proxy()
    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://",
        creator=connect,
        pool_size=MAX_SIZE,
        max_overflow=0,
        pool_timeout=TIMEOUT,
    )

    def read(sql: str, i: int, commit: bool) -> tuple[str, int]:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(sql.replace("%s", "%(i)s"), {"i": i}).one()
            if commit:
                conn.commit()
            return row[0], row[1]

else:
    raise SystemExit(f"unknown PPP_APP_VARIANT {VARIANT!r}")


if VARIANT == "return":

    @app.teardown_request
    def give_back(exc: BaseException | None) -> None:
        db._ret_obj()

elif VARIANT == "scope":
    from ppp.wsgi import RequestScope

    app.wsgi_app = RequestScope(app.wsgi_app, db)  # type: ignore[method-assign]

elif VARIANT == "flask":
    from ppp.flask import PoolReturn

    PoolReturn(app, db)


@app.get("/health")
def health() -> str:
    return "ok"


@app.get("/row/<int:i>")
def row(i: int) -> Response:
    val, backend = read(READ, i, False)
    return jsonify(id=i, val=val, backend=backend, pid=os.getpid())


@app.post("/bump/<int:i>")
def bump(i: int) -> Response:
    val, backend = read(BUMP, i, True)
    return jsonify(id=i, val=val, backend=backend, pid=os.getpid())


def shutdown_pools() -> None:
    """Close every pooled connection not in use: what a server's exit hook calls."""
    if db._pool is not None:
        db._pool.shutdown()
    if pool is not None:
        pool.close(timeout=1.0)
    if engine is not None:
        engine.dispose()


print(f"ppp_server_app pid={os.getpid()} backend={ppp.BACKEND} variant={VARIANT}", file=sys.stderr)
