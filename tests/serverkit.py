"""A small kit to test ppp under real servers: start a server process on
127.0.0.1, load it with many concurrent HTTP clients asking for rows by id,
watch its PostgreSQL sessions, stop it by its PID.

Used by ``tests/test_servers.py`` and ``tools/deploy_table.py``.  The apps and
the server runners live in ``tests/server_apps/``.  Every wait has a deadline;
every process started here is stopped here, by its own PID.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
APPS = HERE / "server_apps"
PG_DSN = os.environ.get(
    "PPP_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=5"
)
FALSY = ("", "0", "false", "no", "off")
NROWS = 500


def servers_required() -> bool:
    """``PPP_REQUIRE_SERVERS`` set (to anything but a false word) turns skips into failures."""
    return os.environ.get("PPP_REQUIRE_SERVERS", "").strip().lower() not in FALSY


def new_tag(prefix: str = "ppp_srv") -> str:
    """A name unique to one test: table name and PostgreSQL application_name."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def pg_connect(dsn: str = PG_DSN, **kwargs: Any) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True, **kwargs)


def free_port() -> int:
    """A port that was free a moment ago (the caller retries when it is taken since)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ------------------------------------------------------------------ the data


class RowTable:
    """``CREATE TABLE name(id int primary key, val text, hits int)`` with ``NROWS``
    rows whose ``val`` is ``row-<id>-<random>``, known to the test."""

    def __init__(self, name: str, nrows: int = NROWS, dsn: str = PG_DSN) -> None:
        self.name = name
        self.dsn = dsn
        salt = uuid.uuid4().hex[:8]
        self.rows = {i: f"row-{i}-{salt}-{random.randrange(10**9)}" for i in range(1, nrows + 1)}
        with pg_connect(dsn) as conn:
            conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, val text NOT NULL, hits int)")
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {name} (id, val, hits) VALUES (%s, %s, 0)",
                    list(self.rows.items()),
                )

    def hits(self) -> int:
        with pg_connect(self.dsn) as conn:
            (n,) = conn.execute(f"SELECT COALESCE(SUM(hits), 0) FROM {self.name}").fetchone()
            return int(n)

    def drop(self) -> None:
        with pg_connect(self.dsn) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {self.name}")


# ------------------------------------------------------------------ sessions


class SessionWatch:
    """Samples ``pg_stat_activity`` for one application_name every ``every``
    seconds in a thread: the peak count, every backend pid seen."""

    def __init__(self, app_name: str, dsn: str = PG_DSN, every: float = 0.05) -> None:
        self.app_name = app_name
        self.every = every
        self.conn = pg_connect(dsn)
        self.lock = threading.Lock()
        self.peak = 0
        self.nsamples = 0
        self.pids: set[int] = set()
        self.states: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> int:
        """One sample now: the number of sessions (recorded into the peak)."""
        with self.lock:
            rows = self.conn.execute(
                "SELECT pid, state FROM pg_stat_activity WHERE application_name = %s",
                (self.app_name,),
            ).fetchall()
            self.nsamples += 1
            self.peak = max(self.peak, len(rows))
            for pid, state in rows:
                self.pids.add(pid)
                self.states[str(state)] = self.states.get(str(state), 0) + 1
            return len(rows)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def start(self) -> SessionWatch:
        self._thread = threading.Thread(target=self._run, name="session-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def wait_gone(self, limit: float = 10.0) -> int:
        """Sessions left once they are all gone or ``limit`` seconds passed
        (a backend takes a moment to exit after its client goes)."""
        deadline = time.monotonic() + limit
        while True:
            n = self.sample()
            if n == 0 or time.monotonic() > deadline:
                return n
            time.sleep(0.05)

    def close(self) -> None:
        self.stop()
        self.conn.close()


# ------------------------------------------------------------------ the log


def pg_log_path() -> Path | None:
    """The PostgreSQL server log written to now (Debian: /var/log/postgresql/)."""
    logs = sorted(Path("/var/log/postgresql").glob("postgresql-*.log"), key=_mtime)
    return logs[-1] if logs else None


def _mtime(p: Path) -> float:
    return p.stat().st_mtime


class LogWindow:
    """The lines a log gets between ``__init__`` and ``lines()``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.start = path.stat().st_size if path is not None else 0

    def lines(self) -> list[str]:
        if self.path is None:
            return []
        with self.path.open("rb") as f:
            f.seek(self.start)
            return f.read().decode("utf-8", "replace").splitlines()


def eof_lines(lines: Sequence[str], pids: set[int]) -> list[str]:
    """The "unexpected EOF" lines among ``lines`` logged by one of ``pids``
    (the default Debian ``log_line_prefix`` is ``%m [%p] %q%u@%d``)."""
    out = []
    for line in lines:
        if "unexpected EOF" not in line:
            continue
        m = re.search(r"\[(\d+)\]", line)
        if m and int(m.group(1)) in pids:
            out.append(line)
    return out


# ------------------------------------------------------------------ the server


class ServerFailed(Exception):
    """The server process did not come up."""


@dataclass
class Server:
    """One server process: ``argv`` with ``{port}`` filled in, stopped by PID."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    stop_seconds: float = 0.0
    killed: bool = False
    _log: IO[bytes] | None = None

    def start(self, ready_limit: float = 30.0, tries: int = 3) -> Server:
        """Start on a free port and wait until it answers ``/health``; a port
        taken in between (the server exits at once) is retried."""
        for attempt in range(tries):
            self.port = free_port()
            argv = [a.replace("{port}", str(self.port)) for a in self.argv]
            self._log = self.log_path.open("ab")
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            if self._wait_ready(ready_limit):
                return self
            self.stop(2.0)
            if "Address already in use" not in self.log() or attempt == tries - 1:
                break
        raise ServerFailed(f"server did not answer: {' '.join(argv)}\n{self.log()[-3000:]}")

    def _wait_ready(self, limit: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        return True
                finally:
                    conn.close()
            except OSError:
                pass
            time.sleep(0.05)
        return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, bound: float = 10.0) -> float:
        """SIGTERM, then SIGKILL after ``bound`` seconds; returns the seconds the
        stop took.  Workers left by a killed master (same session) are killed too."""
        proc = self.proc
        if proc is None:
            return 0.0
        t0 = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(bound)
            except subprocess.TimeoutExpired:
                self.killed = True
                proc.kill()
                proc.wait(10)
        self.stop_seconds = time.monotonic() - t0
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: orphaned workers
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None
        return self.stop_seconds

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""


# ------------------------------------------------------------------ the load


STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass
class LoadResult:
    requests: int = 0
    ok: int = 0
    errors: int = 0
    wrong: int = 0
    seconds: float = 0.0
    error_samples: list[str] = field(default_factory=list)
    wrong_samples: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    # backend pid -> server pids that reported using it (a backend seen by two
    # processes is a connection shared across a fork)
    backends: dict[int, set[int]] = field(default_factory=dict)
    server_pids: set[int] = field(default_factory=set)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def shared_backends(self) -> int:
        return sum(1 for pids in self.backends.values() if len(pids) > 1)

    def summary(self) -> str:
        return (
            f"{self.requests} requests in {self.seconds:.1f} s ({self.rps:.0f}/s): "
            f"{self.errors} errors {self.error_kinds}, {self.wrong} wrong rows, "
            f"{self.retries} retried on a closed keep-alive connection, "
            f"{len(self.server_pids)} server pids, {len(self.backends)} backends "
            f"({self.shared_backends} seen by two processes)"
        )


def load(
    port: int,
    rows: dict[int, str],
    *,
    clients: int = 32,
    seconds: float = 4.0,
    path: str = "/row/{id}",
    method: str = "GET",
    max_requests: int = 200_000,
    timeout: float = 15.0,
    reconnect: int = 8,
) -> LoadResult:
    """``clients`` threads, each with its own keep-alive connection (opened anew
    every ``reconnect`` requests or so, so that every worker process of a
    pre-forking server gets some), ask for random rows for ``seconds`` (at most
    ``max_requests`` in all) and check every answer against ``rows``."""
    res = LoadResult()
    lock = threading.Lock()
    ids = list(rows)
    deadline = time.monotonic() + seconds
    budget = [max_requests]

    def note_error(text: str) -> None:
        kind = text.split(":")[0]
        with lock:
            res.errors += 1
            res.error_kinds[kind] = res.error_kinds.get(kind, 0) + 1
            if len(res.error_samples) < 20:
                res.error_samples.append(text)

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            while time.monotonic() < deadline:
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                    res.requests += 1
                i = rng.choice(ids)
                if rng.randrange(reconnect) == 0:
                    conn.close()
                try:
                    try:
                        reused = conn.sock is not None
                        conn.request(method, path.format(id=i))
                        resp = conn.getresponse()
                    except STALE:
                        # A kept-alive connection the server closed meanwhile (a
                        # worker recycled): retried once on a new connection, as
                        # HTTP clients do for idempotent requests.
                        conn.close()
                        if not reused or method != "GET":
                            raise
                        with lock:
                            res.retries += 1
                        conn.request(method, path.format(id=i))
                        resp = conn.getresponse()
                    body = resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    note_error(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    res.statuses[resp.status] = res.statuses.get(resp.status, 0) + 1
                if resp.status != 200:
                    note_error(f"HTTP {resp.status}: {body[:300]!r}")
                    continue
                try:
                    data = json.loads(body)
                    val, backend, pid = data["val"], int(data["backend"]), int(data["pid"])
                except (ValueError, KeyError, TypeError) as exc:
                    note_error(f"bad body {body[:200]!r}: {exc}")
                    continue
                with lock:
                    res.server_pids.add(pid)
                    res.backends.setdefault(backend, set()).add(pid)
                    if data.get("id") == i and val == rows[i]:
                        res.ok += 1
                    else:
                        res.wrong += 1
                        if len(res.wrong_samples) < 20:
                            res.wrong_samples.append(f"asked {i}, got {data!r}")
        finally:
            conn.close()

    t0 = time.monotonic()
    threads = [
        threading.Thread(target=client, args=(n,), name=f"client-{n}", daemon=True)
        for n in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + timeout + 30)
    res.seconds = time.monotonic() - t0
    return res


# ------------------------------------------------------------------ scenarios


SERVERS = ("gunicorn", "gunicorn-preload", "waitress", "werkzeug")


def server_argv(
    kind: str,
    *,
    workers: int = 3,
    threads: int = 8,
    max_requests: int = 0,
    python: str = sys.executable,
) -> list[str]:
    """The command line of one kind of server serving ``ppp_server_app:app``
    (``{port}`` is filled in by :meth:`Server.start`)."""
    if kind.startswith("gunicorn"):
        argv = [
            python,
            "-m",
            "gunicorn",
            "-c",
            str(APPS / "gunicorn_conf.py"),
            "--pythonpath",
            str(APPS),
            "-k",
            "gthread",
            "-w",
            str(workers),
            "--threads",
            str(threads),
            "-b",
            "127.0.0.1:{port}",
        ]
        if kind == "gunicorn-preload":
            argv.append("--preload")
        if max_requests:
            argv += ["--max-requests", str(max_requests), "--max-requests-jitter", "20"]
        return [*argv, "ppp_server_app:app"]
    if kind == "waitress":
        return [python, str(APPS / "run_waitress.py"), "{port}", str(threads)]
    if kind == "werkzeug":
        return [python, str(APPS / "run_werkzeug.py"), "{port}"]
    if kind == "waitress-cli":  # waitress's own command: no SIGTERM handler
        return [
            python,
            "-m",
            "waitress",
            "--host=127.0.0.1",
            "--port={port}",
            f"--threads={threads}",
            "ppp_server_app:app",
        ]
    raise ValueError(f"unknown server kind {kind!r}")


def processes_of(kind: str, workers: int) -> int:
    """How many processes hold a pool: gunicorn's workers, plus its master when
    the app is loaded there (``--preload``: the import-time start-up query)."""
    if kind == "gunicorn":
        return workers
    if kind == "gunicorn-preload":
        return workers + 1
    return 1


def app_env(
    app_name: str,
    table: str,
    variant: str,
    *,
    max_size: int = 4,
    timeout: float = 5.0,
    dsn: str = PG_DSN,
    prepare: str = "default",
) -> dict[str, str]:
    """The environment of a server process: the app reads its settings from it;
    ``PPP_NO_EXTENSIONS`` is inherited, so the server runs this run's twin."""
    env = dict(os.environ)
    env.update(
        PPP_APP_DSN=f"{dsn} application_name={app_name}",
        PPP_APP_TABLE=table,
        PPP_APP_VARIANT=variant,
        PPP_APP_MAX_SIZE=str(max_size),
        PPP_APP_TIMEOUT=str(timeout),
        PPP_APP_PREPARE=prepare,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(APPS), os.environ.get("PYTHONPATH")) if p),
    )
    env.pop("PYTHONDEVMODE", None)
    return env


@dataclass
class RunResult:
    kind: str
    variant: str
    processes: int
    max_size: int
    load: LoadResult
    peak_sessions: int
    sessions_after: int
    stop_seconds: float
    killed: bool
    eof_lines: list[str]
    log_tail: str
    backend: str = ""
    settled: bool = True  # gunicorn: workers settled before the SIGTERM

    def summary(self) -> str:
        return (
            f"{self.kind}/{self.variant} [{self.backend}]: {self.load.summary()}; "
            f"sessions peak {self.peak_sessions} (cap {self.processes * self.max_size}), "
            f"after stop {self.sessions_after}; stop {self.stop_seconds:.1f} s"
            f"{' (SIGKILL)' if self.killed else ''}"
            f"{'' if self.settled else ' (workers not settled before SIGTERM)'}; "
            f"{len(self.eof_lines)} unexpected EOF"
        )


@contextlib.contextmanager
def row_table(dsn: str = PG_DSN) -> Iterator[RowTable]:
    table = RowTable(new_tag("ppp_rows"), dsn=dsn)
    try:
        yield table
    finally:
        table.drop()


_READY = re.compile(r"ppp-test: worker ready pid=(\d+)")
_LEAVING = re.compile(r"\[(\d+)\] \[INFO\] Autorestarting worker")


def _started_workers(log: str) -> set[int]:
    """The pids whose last word in the log is "ready" (not "leaving" since):
    read in order, so that a pid reused by a later worker counts as that one."""
    state: dict[int, bool] = {}
    for line in log.splitlines():
        if m := _READY.search(line):
            state[int(m.group(1))] = True
        elif m := _LEAVING.search(line):
            state[int(m.group(1))] = False
    return {pid for pid, ready in state.items() if ready}


def wait_gunicorn_workers_ready(server: Server, workers: int, bound: float = 15.0) -> bool:
    """Wait until gunicorn's workers are settled: exactly ``workers`` live
    children of the master, each past the end of its start (``post_worker_init``,
    logged by gunicorn_conf.py) and none leaving for ``--max-requests``; or
    ``bound`` seconds.  Returns whether they settled.

    A SIGTERM that reaches a worker between its fork and its own handlers is
    lost: until then it runs the master's, which only queue the signal
    (benoitc/gunicorn #1910), so the master waits its whole ``graceful_timeout``
    and then kills it.  With ``--max-requests`` a worker is often being
    replaced as the load ends, and the master forks the replacement only once
    it has reaped the old one, so waiting only for the workers already logged
    as booting is not enough: the replacement may not exist yet, or not have
    logged yet.  Once settled nothing changes, since the load is over; the stop
    time measured afterwards is then the pools' and the workers', not that
    race's."""
    if server.proc is None:  # never started, or already stopped
        return False
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        live = live_children(server.pid)
        if len(live) == workers and live <= _started_workers(server.log()):
            return True
        time.sleep(0.05)
    return False


def live_children(pid: int) -> set[int]:
    """The pids of ``pid``'s children that have not exited (zombies left out),
    from /proc (this kernel has no /proc/PID/task/TID/children)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def run_scenario(
    kind: str,
    variant: str,
    table: RowTable,
    log_dir: Path,
    *,
    workers: int = 3,
    threads: int = 8,
    max_requests: int = 0,
    clients: int = 32,
    seconds: float = 4.0,
    max_size: int = 4,
    timeout: float = 5.0,
    stop_bound: float = 15.0,
    path: str = "/row/{id}",
    method: str = "GET",
    prepare: str = "default",
    bouncer: PgBouncer | None = None,
) -> RunResult:
    """Start one server, load it, stop it; everything measured on the way.

    With ``bouncer`` the app connects through that PgBouncer, the sessions
    watched are PgBouncer's (by its role), and the bouncer is stopped after
    the server, before the sessions left are counted."""
    app_name = new_tag("ppp_app")
    dsn = PG_DSN if bouncer is None else bouncer.dsn
    env = app_env(
        app_name, table.name, variant, max_size=max_size, timeout=timeout, dsn=dsn, prepare=prepare
    )
    argv = server_argv(kind, workers=workers, threads=threads, max_requests=max_requests)
    log_path = log_dir / f"{app_name}.log"
    server = Server(argv, env, log_path)
    watch = SessionWatch(app_name) if bouncer is None else RoleWatch(bouncer.role)
    window = LogWindow(pg_log_path())
    settled = True
    try:
        server.start()
        watch.start()
        result = load(
            server.port, table.rows, clients=clients, seconds=seconds, path=path, method=method
        )
        watch.sample()
    finally:
        if kind.startswith("gunicorn"):
            settled = wait_gunicorn_workers_ready(server, workers)
        stop_seconds = server.stop(stop_bound)
        watch.stop()
    try:
        if bouncer is not None:
            watch.sample()
            bouncer.stop()
        after = watch.wait_gone(10.0)
    finally:
        watch.close()
    backend = ""
    m = re.search(r"backend=(\w+)", server.log())
    if m:
        backend = m.group(1)
    return RunResult(
        kind=kind,
        variant=variant,
        processes=processes_of(kind, workers),
        max_size=max_size,
        load=result,
        peak_sessions=watch.peak,
        sessions_after=after,
        stop_seconds=stop_seconds,
        killed=server.killed,
        eof_lines=eof_lines(window.lines(), watch.pids),
        log_tail=server.log()[-4000:],
        backend=backend,
        settled=settled,
    )


# ------------------------------------------------------------------ PgBouncer


def pgbouncer_path() -> str | None:
    """Debian's ``pgbouncer`` (in /usr/sbin, which a user's PATH may lack)."""
    import shutil

    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


def pg_upstream(dsn: str = PG_DSN) -> tuple[str, int]:
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(dsn)
    return str(info.get("host") or "127.0.0.1"), int(str(info.get("port") or 5432))


class PgBouncer:
    """A test-owned PgBouncer in transaction mode on 127.0.0.1, in the
    foreground (not a daemon), stopped by its PID.  Its server connections log
    in to PostgreSQL as ``role`` (made by the caller), so that
    ``pg_stat_activity.usename`` tells them apart from every other session;
    ``cap`` is both ``default_pool_size`` and ``max_db_connections``."""

    def __init__(self, workdir: Path, role: str, cap: int, dsn: str = PG_DSN) -> None:
        self.workdir = workdir
        self.role = role
        self.cap = cap
        self.host, self.upstream_port = pg_upstream(dsn)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "pgbouncer.log"
        self._log: IO[bytes] | None = None

    def _write_config(self) -> Path:
        users = self.workdir / "userlist.txt"
        users.write_text('"postgres" ""\n')
        ini = self.workdir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"test = host={self.host} port={self.upstream_port} dbname=test user={self.role}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.cap}\n"
            f"max_db_connections = {self.cap}\n"
            "min_pool_size = 0\n"
            "reserve_pool_size = 0\n"
            "max_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
        return ini

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=test user=postgres connect_timeout=5"

    def start(self, limit: float = 15.0, tries: int = 3) -> PgBouncer:
        exe = pgbouncer_path()
        if exe is None:
            raise ServerFailed("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
        for _ in range(tries):
            self.port = free_port()
            ini = self._write_config()
            # PgBouncer refuses to run as root: it reads its files, then becomes postgres.
            argv = [exe, *(["-u", "postgres"] if os.geteuid() == 0 else []), str(ini)]
            self._log = self.log_path.open("ab")
            self.proc = subprocess.Popen(
                argv,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with pg_connect(self.dsn, prepare_threshold=None) as conn:
                        conn.execute("SELECT 1").fetchone()
                    return self
                except Exception:
                    time.sleep(0.05)
            self.stop()
        raise ServerFailed(f"pgbouncer did not answer\n{self.log()[-3000:]}")

    def stop(self, bound: float = 10.0) -> None:
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(bound)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""


class RoleWatch(SessionWatch):
    """:class:`SessionWatch` by ``usename`` instead of application_name."""

    def sample(self) -> int:
        with self.lock:
            rows = self.conn.execute(
                "SELECT pid, state FROM pg_stat_activity WHERE usename = %s",
                (self.app_name,),
            ).fetchall()
            self.nsamples += 1
            self.peak = max(self.peak, len(rows))
            for pid, state in rows:
                self.pids.add(pid)
                self.states[str(state)] = self.states.get(str(state), 0) + 1
            return len(rows)


@contextlib.contextmanager
def bouncer_role(table: RowTable, dsn: str = PG_DSN) -> Iterator[str]:
    """A login role for PgBouncer's server connections, allowed to read and
    update ``table``; dropped afterwards."""
    role = new_tag("ppp_bnc")
    with pg_connect(dsn) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT, UPDATE ON {table.name} TO {role}")
    try:
        yield role
    finally:
        with pg_connect(dsn) as conn:
            conn.execute(f"REVOKE ALL ON {table.name} FROM {role}")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                (n,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,)
                ).fetchone()
                if not n:
                    break
                time.sleep(0.05)
            conn.execute(f"DROP ROLE IF EXISTS {role}")


# ------------------------------------------------------------------ fork safety probe

_FORK_PROBE = """
import os, ppp
class Made:
    def __init__(self, n):
        self.pid = os.getpid()
pool = ppp.Pool(Made, max_size=2, min_size=1)
pool.ret(pool.get())
db = ppp.Proxy(fun=Made, max_size=2)
with db._obj() as conn:
    pass
pid = os.fork()
if pid == 0:
    try:
        ok = pool.get(timeout=2).pid == os.getpid() and db._get_obj(2).pid == os.getpid()
        os._exit(0 if ok else 1)
    except BaseException:
        os._exit(2)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""
_fork_safe: dict[str, bool] = {}


def fork_safe() -> bool:
    """Whether the ppp of this run (its active twin) gives a forked child fresh
    objects: a child's first ``get`` after the parent pooled one, through a Pool
    and through a pooled Proxy.  Run once per process, in a subprocess."""
    key = os.environ.get("PPP_NO_EXTENSIONS", "")
    if key not in _fork_safe:
        try:
            out = subprocess.run(
                [sys.executable, "-c", _FORK_PROBE],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            _fork_safe[key] = out.returncode == 0 and out.stdout.strip() == "0"
        except subprocess.TimeoutExpired:
            _fork_safe[key] = False
    return _fork_safe[key]
