"""ppp under the servers people run (issues 10 and 12): each test starts a real
server process on 127.0.0.1 serving ``tests/server_apps/ppp_server_app.py`` (a
Flask app whose module-level ``db`` is a pooled ``Proxy`` of psycopg
connections, ``max_size=4`` per process, made at import time with the README's
``with db._obj() as conn:`` start-up query), loads it for a few seconds with
many concurrent clients asking for rows by id, then stops it by its PID with
SIGTERM.  Checked every time:

- zero wrong rows and zero errors;
- no PostgreSQL backend answered two server processes (a connection shared
  across a fork);
- PostgreSQL sessions (``pg_stat_activity`` by the test's own
  ``application_name``) never above processes × ``max_size`` at any sample,
  and none left once the server has stopped;
- the server stops in under 5 s (SIGTERM; SIGKILL only after 15 s);
- the clean shutdown hooks (``tests/server_apps/gunicorn_conf.py``,
  ``run_waitress.py``, ``run_werkzeug.py``) leave no "unexpected EOF" line in
  the PostgreSQL log from the test's sessions.

Servers: gunicorn's gthread worker (with and without ``--preload``, with
``--max-requests``), waitress (8 threads) and werkzeug's threaded server.
Handlers either give the connection back in ``teardown_request``, or never
call ``_ret_obj()`` and are served through ``ppp.wsgi.RequestScope`` /
``ppp.flask.PoolReturn``.  A last test puts PgBouncer (transaction mode) in
front of PostgreSQL with several gunicorn workers behind it.

The servers run the twin of the run (``PPP_NO_EXTENSIONS`` is inherited):
leg 1 of ``make test`` serves with the compiled twin, leg 2 with the pure one.
Without PostgreSQL (or gunicorn, waitress, pgbouncer) these tests skip, unless
``PPP_REQUIRE_SERVERS`` is set: then they fail.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serverkit as sk

import ppp

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("flask")

WORKERS = 3
THREADS = 6
MAX_SIZE = 4
SECONDS = 3.0
CLIENTS = 24
STOP_LIMIT = 5.0


def need(what: str, ok: bool) -> None:
    """Skip (or fail under PPP_REQUIRE_SERVERS) when ``what`` is missing."""
    if ok:
        return
    message = f"{what} is not available"
    if sk.servers_required():
        pytest.fail(f"{message} and PPP_REQUIRE_SERVERS is set", pytrace=False)
    pytest.skip(message)


def need_module(name: str) -> None:
    need(f"the {name} package", importlib.util.find_spec(name) is not None)


@pytest.fixture(scope="module")
def table() -> Iterator[sk.RowTable]:
    try:
        with sk.pg_connect() as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        need(f"PostgreSQL at {sk.PG_DSN!r} ({exc})", False)
    with sk.row_table() as t:
        yield t


def wsgi_variant(variant: str) -> None:
    """The middleware variants need ppp.wsgi / ppp.flask (issue 12)."""
    module = {"scope": "ppp.wsgi", "flask": "ppp.flask"}.get(variant)
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} does not exist yet (request-scoped return, issue 12)")


def check(r: sk.RunResult, *, shared_ok: bool = False) -> None:
    """The criteria of issues 10 and 12, with the evidence in the message."""
    why = f"{r.summary()}\nerrors: {r.load.error_samples[:3]}\nwrong: {r.load.wrong_samples[:3]}"
    why += f"\nserver log tail:\n{r.log_tail[-2500:]}"
    assert r.backend == ppp.BACKEND, why
    assert r.load.ok > 0, why
    assert r.load.errors == 0, why
    assert r.load.wrong == 0, why
    if not shared_ok:
        assert r.load.shared_backends == 0, why
    assert r.peak_sessions <= r.processes * r.max_size, why
    assert r.sessions_after == 0, why
    assert not r.killed, why
    assert r.stop_seconds < STOP_LIMIT, why
    assert r.eof_lines == [], why


def run(kind: str, variant: str, table: sk.RowTable, tmp_path: Path, **kw: Any) -> sk.RunResult:
    need_module("gunicorn" if kind.startswith("gunicorn") else kind)
    wsgi_variant(variant)
    kw.setdefault("workers", WORKERS)
    kw.setdefault("threads", THREADS if kind.startswith("gunicorn") else 8)
    return sk.run_scenario(
        kind,
        variant,
        table,
        tmp_path,
        clients=CLIENTS,
        seconds=SECONDS,
        max_size=MAX_SIZE,
        **kw,
    )


# ------------------------------------------------------------------ gunicorn


@pytest.mark.parametrize("variant", ["return", "scope"])
def test_gunicorn_gthread(variant: str, table: sk.RowTable, tmp_path: Path) -> None:
    check(run("gunicorn", variant, table, tmp_path))


def test_gunicorn_gthread_max_requests(table: sk.RowTable, tmp_path: Path) -> None:
    """Workers recycled every ~100 requests: each exiting worker shuts its pool
    down (``worker_exit``), so sessions stay bounded and none is left."""
    # a recycled worker's backends may get their pids reused: no shared check
    check(run("gunicorn", "return", table, tmp_path, max_requests=100), shared_ok=True)


@pytest.mark.parametrize("variant", ["return", "scope"])
def test_gunicorn_preload(
    variant: str, table: sk.RowTable, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``--preload``: the pool and the start-up query's connection are made in
    the master, then the workers are forked (issue 10)."""
    check(run("gunicorn-preload", variant, table, tmp_path))


def test_gunicorn_preload_max_requests(
    table: sk.RowTable, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    check(run("gunicorn-preload", "return", table, tmp_path, max_requests=100), shared_ok=True)


def test_harness_stops_gunicorn_only_once_a_replaced_worker_has_started(
    table: sk.RowTable, tmp_path: Path
) -> None:
    """Control of the harness, not of ppp.  A worker is replaced (killed here;
    ``--max-requests`` does the same as a load ends) and the SIGTERM reaches
    the master while it forks the replacement, which runs the master's signal
    handlers until it installs its own and so loses the SIGTERM (gunicorn
    #1910): the master then waits its whole ``graceful_timeout`` (6 s here, past
    the 5 s limit).
    Fork and start are slowed down (``PPP_TEST_SLOW_FORK``, 0.5 s each, as on a
    loaded machine) so that the SIGTERM lands there every time.  The harness's
    wait for settled workers, used by every test above, must take the stop
    out of that race.  If the control ever stops quickly, gunicorn has fixed
    the race: the README's gunicorn section should say so."""
    need_module("gunicorn")
    graceful = int(STOP_LIMIT) + 1  # a lost SIGTERM fails the limit

    def stop_after_replacement(settle: bool) -> float:
        env = sk.app_env(sk.new_tag("ppp_app"), table.name, "return")
        env.update(PPP_TEST_SLOW_FORK="0.5", PPP_TEST_GRACEFUL_TIMEOUT=str(graceful))
        argv = sk.server_argv("gunicorn-preload", workers=2, threads=2)
        server = sk.Server(argv, env, tmp_path / f"settle-{settle}.log")
        server.start()
        try:
            assert sk.wait_gunicorn_workers_ready(server, 2), server.log()[-2000:]
            forks = server.log().count("ppp-test: forking")
            os.kill(min(sk.live_children(server.pid)), signal.SIGKILL)
            deadline = time.monotonic() + 10.0
            while server.log().count("ppp-test: forking") == forks:
                assert time.monotonic() < deadline, "no replacement forked"
                time.sleep(0.02)
            if settle:
                assert sk.wait_gunicorn_workers_ready(server, 2), server.log()[-2000:]
        finally:
            stopped = server.stop(15.0)
        return stopped

    lost = stop_after_replacement(settle=False)
    assert lost >= graceful - 0.5, f"the race did not lose the SIGTERM: stop {lost:.1f} s"
    stopped = stop_after_replacement(settle=True)
    assert stopped < STOP_LIMIT, f"stop {stopped:.1f} s with the workers settled"


# ------------------------------------------------------------------ waitress, werkzeug


@pytest.mark.parametrize("variant", ["return", "scope", "flask"])
def test_waitress(variant: str, table: sk.RowTable, tmp_path: Path) -> None:
    """waitress keeps 8 threads for its whole life: without a return at the end
    of each request, 4 of them would hold the 4 connections forever."""
    check(run("waitress", variant, table, tmp_path))


@pytest.mark.parametrize("variant", ["return", "scope"])
def test_werkzeug(variant: str, table: sk.RowTable, tmp_path: Path) -> None:
    check(run("werkzeug", variant, table, tmp_path))


def test_unclean_exit_is_seen(table: sk.RowTable, tmp_path: Path) -> None:
    """Control for the "unexpected EOF" check of every test above: waitress's
    own command line installs no SIGTERM handler, so the process dies at once
    with the forgetful handlers' connections inside a transaction, and the
    check must see PostgreSQL log it."""
    need_module("waitress")
    log = sk.pg_log_path()
    need(f"the PostgreSQL log under /var/log/postgresql ({log})", log is not None)
    r = sk.run_scenario(
        "waitress-cli", "forget", table, tmp_path, threads=8, clients=16, seconds=2.0
    )
    assert r.eof_lines, r.summary()


# ------------------------------------------------------------------ PgBouncer


def test_pgbouncer_transaction_mode(table: sk.RowTable, tmp_path: Path) -> None:
    """Three gunicorn workers of pooled proxies (12 client connections) behind
    PgBouncer in transaction mode capped at 3 server connections, every request
    committing an UPDATE: no error, and PostgreSQL never sees more than 3 of
    PgBouncer's sessions.  psycopg connects with ``prepare_threshold=None``
    (the README's recipe): PgBouncer 1.18 does not carry prepared statements
    from one server session to another."""
    need("pgbouncer (Debian package pgbouncer)", sk.pgbouncer_path() is not None)
    need_module("gunicorn")
    cap = 3
    before = table.hits()
    with sk.bouncer_role(table) as role:
        bouncer = sk.PgBouncer(tmp_path, role, cap)
        bouncer.start()
        try:
            r = sk.run_scenario(
                "gunicorn",
                "return",
                table,
                tmp_path,
                workers=WORKERS,
                threads=THREADS,
                clients=CLIENTS,
                seconds=SECONDS,
                max_size=MAX_SIZE,
                path="/bump/{id}",
                method="POST",
                prepare="none",
                bouncer=bouncer,
            )
        finally:
            bouncer.stop()
    why = f"{r.summary()}\nerrors: {r.load.error_samples[:3]}\n{r.log_tail[-2000:]}"
    why += f"\npgbouncer log tail:\n{bouncer.log()[-1500:]}"
    assert r.load.errors == 0, why
    assert r.load.wrong == 0, why
    assert r.load.ok > 0, why
    assert 0 < r.peak_sessions <= cap, why
    assert r.sessions_after == 0, why
    assert r.stop_seconds < STOP_LIMIT, why
    assert table.hits() - before == r.load.ok, why
