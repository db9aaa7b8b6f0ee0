"""The deployment table of issue 12: ppp under the servers people run, with
and without forgotten returns, beside psycopg_pool and SQLAlchemy's QueuePool,
and behind PgBouncer; printed as a markdown table.

    .venv/bin/python tools/deploy_table.py                 # every row, 10 s of load each
    .venv/bin/python tools/deploy_table.py --seconds 5 --only waitress
    PPP_NO_EXTENSIONS=1 .venv/bin/python tools/deploy_table.py   # the pure twin

Each row starts a server on 127.0.0.1 (``tests/serverkit.py``), loads it with
32 clients asking for rows by id, samples PostgreSQL's sessions of the app,
stops it with SIGTERM (SIGKILL after 40 s) and counts what went wrong.  The
app is ``tests/server_apps/ppp_server_app.py``, 4 connections per process.

Handlers: ``return`` gives the connection back in ``teardown_request``;
``forget`` never calls ``_ret_obj()``; ``forget + RequestScope`` is the same
app wrapped in ``ppp.wsgi.RequestScope``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import serverkit as sk  # noqa: E402

import ppp  # noqa: E402

HANDLERS = {
    "return": "return",
    "forget": "forget",
    "scope": "forget + RequestScope",
    "flask": "forget + PoolReturn",
    "psycopg_pool": "psycopg_pool",
    "sqlalchemy": "SQLAlchemy QueuePool",
}
ROWS: list[tuple[str, str]] = [
    ("gunicorn", "return"),
    ("gunicorn", "forget"),
    ("gunicorn", "scope"),
    ("gunicorn", "psycopg_pool"),
    ("gunicorn", "sqlalchemy"),
    ("gunicorn-preload", "return"),
    ("gunicorn-preload", "forget"),
    ("gunicorn-preload", "scope"),
    ("waitress", "return"),
    ("waitress", "forget"),
    ("waitress", "scope"),
    ("waitress", "psycopg_pool"),
    ("waitress", "sqlalchemy"),
    ("werkzeug", "return"),
    ("werkzeug", "forget"),
    ("werkzeug", "scope"),
]
SERVER_NAMES = {
    "gunicorn": "gunicorn gthread -w 3 --threads 8",
    "gunicorn-preload": "gunicorn gthread --preload -w 3 --threads 8",
    "waitress": "waitress, 8 threads",
    "werkzeug": "werkzeug threaded",
}


def row_text(name: str, handlers: str, r: sk.RunResult, cap: int) -> str:
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(r.load.error_kinds.items()))
    return (
        f"| {name} | {handlers} | {r.load.rps:.0f} | {r.load.errors}"
        f"{f' ({kinds})' if kinds else ''} | {r.load.wrong} | {r.peak_sessions} / {cap} | "
        f"{r.sessions_after} | {r.stop_seconds:.1f}{' (killed)' if r.killed else ''} | "
        f"{len(r.eof_lines)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load per row")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--only", action="append", default=[], help="rows whose server matches")
    parser.add_argument("--no-bouncer", action="store_true", help="skip the PgBouncer rows")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="ppp_deploy_"))
    print(f"ppp {ppp.__version__}, BACKEND={ppp.BACKEND}; {args.seconds:.0f} s of load per row")
    print(f"{args.clients} clients; 4 connections per process; server logs in {log_dir}\n")
    print(
        "| server | handlers | req/s | errors | wrong rows | sessions peak / cap "
        "| sessions after stop | stop (s) | unexpected EOF |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = [(k, v) for k, v in ROWS if not args.only or any(o in k for o in args.only)]
    with sk.row_table() as table:
        for kind, variant in rows:
            r = sk.run_scenario(
                kind,
                variant,
                table,
                log_dir,
                workers=3,
                threads=8,
                clients=args.clients,
                seconds=args.seconds,
                stop_bound=40.0,
            )
            cap = r.processes * r.max_size
            print(row_text(SERVER_NAMES[kind], HANDLERS[variant], r, cap), flush=True)
        if not args.no_bouncer and sk.pgbouncer_path() and not args.only:
            for prepare in ("default", "none"):
                with sk.bouncer_role(table) as role:
                    bouncer = sk.PgBouncer(Path(tempfile.mkdtemp(dir=log_dir)), role, 3)
                    bouncer.start()
                    try:
                        r = sk.run_scenario(
                            "gunicorn",
                            "return",
                            table,
                            log_dir,
                            workers=3,
                            threads=8,
                            clients=args.clients,
                            seconds=args.seconds,
                            stop_bound=40.0,
                            path="/bump/{id}",
                            method="POST",
                            prepare=prepare,
                            bouncer=bouncer,
                        )
                    finally:
                        bouncer.stop()
                name = "PgBouncer 3 server conns, gunicorn -w 3 --threads 8"
                threshold = "None" if prepare == "none" else "5 (default)"
                handlers = f"return, commit; prepare_threshold={threshold}"
                print(row_text(name, handlers, r, 3), flush=True)


if __name__ == "__main__":
    main()
