"""ppp doing its main job: a threaded WSGI server that starts a thread per
request, each request needing a database connection.

For each variant this runner starts ``demo_server.py`` in its own process on
127.0.0.1 (an ephemeral port), sends it N requests from C concurrent clients
(``demo_load.py``), reads the server's ``/stats``, stops it, and checks that
every connection the server opened was closed.  On PostgreSQL it also watches
``pg_stat_activity`` for the server's sessions (its ``application_name``) and
checks the count against the demo's own.  Then it prints a table and writes a
PNG bar chart.

    python examples/demo.py                       # SQLite in a temporary folder
    python examples/demo.py --dsn "host=127.0.0.1 dbname=test user=postgres"
    PPP_DEMO_DSN=postgresql://... python examples/demo.py -n 5000 -c 32

The exit status is 1 when a request failed or a check did not hold.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from demo_load import ITEMS, LoadResult, run_load

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Variant:
    name: str
    server: str  # demo_server.py --variant
    pure: bool  # run the server with PPP_NO_EXTENSIONS=1
    backend: str | None  # the ppp backend the server must report, if any
    postgres_only: bool = False
    about: str = ""


VARIANTS = {
    v.name: v
    for v in (
        Variant("ppp-compiled", "ppp", False, "cython", about="Proxy over the compiled Pool"),
        Variant("ppp-pure", "ppp", True, "python", about="Proxy over the pure-Python Pool"),
        Variant("per-request", "per-request", False, None, about="new connection per request"),
        Variant("psycopg_pool", "psycopg_pool", False, None, True, "psycopg_pool.ConnectionPool"),
        Variant("ppp-forget", "ppp-forget", False, "cython", about="handlers never _ret_obj()"),
        Variant("sqla-ppp", "sqlalchemy-ppp", False, "cython", about="Core on PPPPool"),
        Variant("sqla-queuepool", "sqlalchemy-queuepool", False, None, about="Core on QueuePool"),
    )
}


@dataclass
class Outcome:
    """One variant's figures and the checks it failed (``problems``)."""

    variant: str
    backend: str = "-"
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    errors: int = 0
    opened: int = 0
    closed: int = 0
    pg_peak: int | None = None
    pg_live: int | None = None
    pool_peak_waiting: int | None = None
    skipped: str = ""
    problems: list[str] = field(default_factory=list)
    server_log: str = ""


# ------------------------------------------------------------------ databases


class DemoDatabase:
    """The data the handlers read: ITEMS rows of (id, name, price)."""

    table = "ppp_demo_items"
    label = "?"

    def server_args(self) -> list[str]:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError


class SQLiteDemo(DemoDatabase):
    def __init__(self, folder: str | None) -> None:
        self.own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="ppp-demo-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "demo.db"
        self.label = f"SQLite ({self.path})"
        conn = sqlite3.connect(self.path)
        with conn:
            conn.execute(f'DROP TABLE IF EXISTS "{self.table}"')
            conn.execute(f'CREATE TABLE "{self.table}" (id INTEGER PRIMARY KEY, name, price)')
            conn.executemany(
                f'INSERT INTO "{self.table}" VALUES (?, ?, ?)',
                [(i, f"item {i}", round(i * 1.25, 2)) for i in range(1, ITEMS + 1)],
            )
        conn.close()

    def server_args(self) -> list[str]:
        return ["--sqlite", str(self.path), "--table", self.table]

    def cleanup(self) -> None:
        if self.own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            self.path.unlink(missing_ok=True)


class PostgresDemo(DemoDatabase):
    """A table of our own (``ppp_demo_items_<pid>``, dropped at the end) and a
    monitor session that reads ``pg_stat_activity``."""

    def __init__(self, dsn: str) -> None:
        import psycopg
        from psycopg import sql

        self.dsn = dsn
        self.table = f"ppp_demo_items_{os.getpid()}"
        self.ident = sql.Identifier(self.table)
        self.admin = psycopg.connect(dsn, autocommit=True, application_name="ppp-demo-admin")
        info = self.admin.info
        self.label = (
            f"PostgreSQL {info.server_version // 10000} ({info.host}:{info.port}/{info.dbname})"
        )
        self.lock = threading.Lock()
        self.admin.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.ident))
        self.admin.execute(
            sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, name text, price numeric)").format(
                self.ident
            )
        )
        self.admin.execute(
            sql.SQL(
                "INSERT INTO {} SELECT i, 'item ' || i, round(i * 1.25, 2)::float8 "
                "FROM generate_series(1, %s) i"
            ).format(self.ident),
            (ITEMS,),
        )

    def server_args(self) -> list[str]:
        return ["--dsn", self.dsn, "--table", self.table]

    def sessions(self, app_name: str) -> int:
        """Sessions PostgreSQL holds open now for ``application_name``."""
        with self.lock:
            row = self.admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app_name,)
            ).fetchone()
        assert row is not None
        return int(row[0])

    def cleanup(self) -> None:
        from psycopg import sql

        with self.lock:
            self.admin.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.ident))
            self.admin.close()


class SessionWatch(threading.Thread):
    """Samples the server's PostgreSQL sessions every few milliseconds: the peak."""

    def __init__(self, database: PostgresDemo, app_name: str) -> None:
        super().__init__(name="pg-watch", daemon=True)
        self.database, self.app_name = database, app_name
        self.stop = threading.Event()
        self.peak = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.peak = max(self.peak, self.database.sessions(self.app_name))
                time.sleep(0.005)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> int:
        self.stop.set()
        self.join()
        if self.error is not None:
            raise self.error
        return self.peak


# ------------------------------------------------------------------ one variant


class Server:
    """``demo_server.py`` in a child process; its stderr goes to a temporary file."""

    def __init__(self, args: list[str], pure: bool) -> None:
        env = dict(os.environ)
        env.pop("PPP_NO_EXTENSIONS", None)
        if pure:
            env["PPP_NO_EXTENSIONS"] = "1"
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed by stderr())
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "demo_server.py"), *args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, name="server-stdout", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self.ready.set()
        self.ready.set()

    def start(self, timeout: float = 30.0) -> tuple[str, str]:
        """Wait for the ``serving URL backend=...`` line; return (url, backend)."""
        if not self.ready.wait(timeout) or not self.lines:
            self.stop()
            raise RuntimeError(f"the demo server did not start:\n{self.stderr()}")
        words = self.lines[0].split()
        if words[0] != "serving":
            self.stop()
            raise RuntimeError(f"unexpected first line {self.lines[0]!r}:\n{self.stderr()}")
        return words[1], words[2].removeprefix("backend=")

    def get_json(self, url: str) -> Any:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return json.load(reply)

    def stop(self) -> dict[str, int] | None:
        """SIGTERM, wait, and return the server's final ``{"opened", "closed"}``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(10)
        for line in reversed(self.lines):
            if line.startswith("{"):
                final: dict[str, int] = json.loads(line)["final"]
                return final
        return None

    def stderr(self) -> str:
        """What the server wrote on stderr (its log); the file is closed after."""
        if self.log.closed:
            return ""
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        return text


def run_variant(variant: Variant, database: DemoDatabase, args: argparse.Namespace) -> Outcome:
    out = Outcome(variant.name)
    app_name = f"ppp-demo-{os.getpid()}-{variant.name}"
    server_args = [
        "--variant",
        variant.server,
        "--pool-size",
        str(args.pool_size),
        "--app-name",
        app_name,
        *database.server_args(),
    ]
    server = Server(server_args, variant.pure)
    pg = database if isinstance(database, PostgresDemo) else None
    try:
        url, backend = server.start()
        if variant.backend is not None:
            out.backend = backend
            if backend != variant.backend:
                out.skipped = f"needs the {variant.backend} backend, the server has {backend}"
                return out
        watch = SessionWatch(pg, app_name) if pg is not None else None
        if watch is not None:
            watch.start()
        result: LoadResult = run_load(
            url,
            args.requests,
            args.concurrency,
            label=variant.name,
            progress=sys.stderr if args.progress else None,
        )
        stats = server.get_json(f"{url}/stats")
        if watch is not None:
            out.pg_peak = watch.finish()
            out.pg_live = pg.sessions(app_name) if pg is not None else None
        out.requests, out.errors = result.requests, result.errors
        out.rps, out.p50_ms, out.p99_ms = result.rps, result.p50 * 1e3, result.p99 * 1e3
        out.problems += [f"request failed: {e}" for e in result.error_samples]
        opened, closed = stats["connections"]["opened"], stats["connections"]["closed"]
        pool = stats["pool"]
        if pool is not None and "max_waiting" in pool:
            out.pool_peak_waiting = pool["max_waiting"]
        if out.pg_live is not None and out.pg_live != opened - closed:
            out.problems.append(
                f"pg_stat_activity shows {out.pg_live} sessions, the demo counts "
                f"{opened} opened - {closed} closed"
            )
        pooled = variant.server != "per-request"
        if pooled and out.pg_peak is not None and out.pg_peak > args.pool_size:
            out.problems.append(f"{out.pg_peak} sessions at once > pool size {args.pool_size}")
    finally:
        final = server.stop()
        out.server_log = server.stderr().strip()
    if final is None:
        out.problems.append("the server did not report its connections at exit")
    else:
        out.opened, out.closed = final["opened"], final["closed"]
        if out.opened != out.closed:
            out.problems.append(f"{out.opened - out.closed} connection(s) left open at exit")
    if pg is not None:
        deadline = time.monotonic() + 10
        while (left := pg.sessions(app_name)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            out.problems.append(f"{left} PostgreSQL session(s) still open after the server exit")
    pools = ("ppp", "ppp-forget", "psycopg_pool", "sqlalchemy-ppp", "sqlalchemy-queuepool")
    if variant.server in pools and out.opened > args.pool_size:
        out.problems.append(f"{out.opened} connections opened > pool size {args.pool_size}")
    if out.errors:
        out.problems.append(f"{out.errors} request(s) failed")
    return out


# ------------------------------------------------------------------ report


def table(outcomes: list[Outcome], postgres: bool) -> str:
    head = ["variant", "backend", "req/s", "p50 ms", "p99 ms", "opened"]
    if postgres:
        head += ["pg peak", "pg live"]
    head += ["errors", "check"]
    rows = [head]
    for o in outcomes:
        if o.skipped:
            rows.append([o.variant, o.backend, "skipped: " + o.skipped])
            continue
        row = [o.variant, o.backend, f"{o.rps:.0f}", f"{o.p50_ms:.2f}", f"{o.p99_ms:.2f}"]
        row.append(str(o.opened))
        if postgres:
            row += [str(o.pg_peak), str(o.pg_live)]
        row += [str(o.errors), "FAIL" if o.problems else "ok"]
        rows.append(row)
    widths = [
        max(len(r[i]) for r in rows if i < len(r) and len(r) == len(head)) for i in range(len(head))
    ]
    lines = []
    for n, r in enumerate(rows):
        if len(r) < len(head):  # a skipped variant
            lines.append(f"| {r[0]:<{widths[0]}} | {r[1]:<{widths[1]}} | {r[2]}")
            continue
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def chart(outcomes: list[Outcome], path: Path, title: str) -> None:
    """Bar charts of requests/s, p99 latency and connections opened per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [o for o in outcomes if not o.skipped]
    names = [o.variant for o in shown]
    colours = ["#4878d0" if o.variant.startswith("ppp") else "#ee854a" for o in shown]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    panels: list[tuple[str, list[float], bool]] = [
        ("requests / s (higher is better)", [o.rps for o in shown], False),
        ("p99 latency, ms (lower is better)", [o.p99_ms for o in shown], False),
        ("connections opened (log scale)", [float(max(o.opened, 1)) for o in shown], True),
    ]
    for ax, (label, values, log) in zip(axes, panels, strict=True):
        bars = ax.bar(names, values, color=colours)
        ax.set_title(label, fontsize=10)
        if log:
            ax.set_yscale("log")
        ax.bar_label(
            bars,
            labels=[f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.1f}" for v in values],
            fontsize=8,
        )
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PPP_DEMO_DSN") or None,
        help="PostgreSQL connection string (default: $PPP_DEMO_DSN, else SQLite)",
    )
    parser.add_argument("--sqlite-dir", help="folder for the SQLite file (default: a temp folder)")
    parser.add_argument("-n", "--requests", type=int, default=1500, help="requests per variant")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--pool-size", type=int, default=8, help="max_size of the pools")
    parser.add_argument(
        "--variants", help=f"comma-separated subset of: {', '.join(VARIANTS)} (default: all)"
    )
    parser.add_argument("--png", default="build/demo/ppp-demo.png", help="bar chart to write")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.pool_size < 1:
        parser.error("--requests, --concurrency and --pool-size must be >= 1")
    postgres = bool(args.dsn)
    if args.variants:
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in names if v not in VARIANTS]
        if unknown:
            parser.error(
                f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}"
            )
    else:
        names = [n for n, v in VARIANTS.items() if postgres or not v.postgres_only]
    chosen = [VARIANTS[n] for n in names]
    if not postgres and any(v.postgres_only for v in chosen):
        parser.error("the psycopg_pool variant needs --dsn (PostgreSQL)")

    database: DemoDatabase = PostgresDemo(args.dsn) if postgres else SQLiteDemo(args.sqlite_dir)
    print(
        f"ppp demo: {database.label}, {args.requests} requests x {len(chosen)} variants, "
        f"{args.concurrency} concurrent clients, pool size {args.pool_size}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        flush=True,
    )
    outcomes: list[Outcome] = []
    try:
        for variant in chosen:
            outcomes.append(run_variant(variant, database, args))
    finally:
        database.cleanup()
    print()
    print(table(outcomes, postgres))
    print()
    for o in outcomes:
        for problem in o.problems:
            print(f"{o.variant}: {problem}")
        if o.server_log:
            print(f"{o.variant}: server log:\n    " + o.server_log.replace("\n", "\n    "))
    png = Path(args.png)
    chart(
        outcomes,
        png,
        f"ppp demo: {database.label.split(' (')[0]}, {args.requests} requests, "
        f"{args.concurrency} clients, pool size {args.pool_size}",
    )
    print(f"chart: {png}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "database": database.label,
                    "requests": args.requests,
                    "concurrency": args.concurrency,
                    "pool_size": args.pool_size,
                    "outcomes": [asdict(o) for o in outcomes],
                },
                indent=2,
            )
        )
    return 1 if any(o.problems for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
