"""The demo (``make demo``, ``examples/``) end to end with a few requests, so it
never rots: its table, its checks, its chart, its server's endpoints, and the
leak report the README quotes."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ppp
from ppp._backend import FALSY

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PG_DSN = os.environ.get(
    "PPP_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=5"
)
POOLED = ("ppp-compiled", "ppp-pure", "ppp-forget", "psycopg_pool", "sqla-ppp", "sqla-queuepool")


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def parse_table(stdout: str) -> list[dict[str, str]]:
    """The rows of the demo's table, as dicts keyed by its header."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert lines, f"no table in:\n{stdout}"
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]
    return [dict(zip(head, row, strict=True)) for row in rows]


def run_demo(
    tmp_path: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    png, data = tmp_path / "demo.png", tmp_path / "demo.json"
    proc = run(
        str(EXAMPLES / "demo.py"),
        *("-n", "60", "-c", "6", "--pool-size", "3"),
        *("--png", str(png), "--json", str(data)),
        *extra,
    )
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout}\n{proc.stderr}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"chart: {png}" in proc.stdout
    return proc, json.loads(data.read_text())


def check_outcomes(proc: subprocess.CompletedProcess[str], data: dict[str, Any]) -> None:
    """What must hold whatever the database: every request served, every check ok,
    pools within their size, the per-request baseline one connection per request."""
    rows = {row["variant"]: row for row in parse_table(proc.stdout)}
    outcomes = {o["variant"]: o for o in data["outcomes"]}
    assert rows.keys() == outcomes.keys()
    for name, o in outcomes.items():
        assert not o["skipped"], (name, o["skipped"])
        assert o["problems"] == [], (name, o["problems"])
        assert o["requests"] == 60 and o["errors"] == 0, name
        assert o["rps"] > 0 and 0 < o["p50_ms"] <= o["p99_ms"], name
        assert o["opened"] == o["closed"], name  # nothing left open at exit
        assert rows[name]["errors"] == "0" and rows[name]["check"] == "ok", rows[name]
        assert rows[name]["opened"] == str(o["opened"])
        if name in POOLED:
            assert 1 <= o["opened"] <= 3, (name, o["opened"])
        else:
            assert o["opened"] == 60, (name, o["opened"])
        # the progress bar's last state, on stderr (not a terminal: one line per variant)
        assert f"{name}" in proc.stderr and "60/60" in proc.stderr
    assert outcomes["ppp-compiled"]["backend"] == "cython"
    assert outcomes["ppp-pure"]["backend"] == "python"
    assert outcomes["ppp-forget"]["backend"] == "cython"


@pytest.mark.cython  # its first variant runs the compiled twin
def test_demo_on_sqlite(tmp_path: Path) -> None:
    proc, data = run_demo(tmp_path, "--sqlite-dir", str(tmp_path / "db"))
    assert data["database"].startswith("SQLite")
    assert [o["variant"] for o in data["outcomes"]] == [
        "ppp-compiled",
        "ppp-pure",
        "per-request",
        "ppp-forget",
        "sqla-ppp",
        "sqla-queuepool",
    ]
    check_outcomes(proc, data)
    assert "pg peak" not in proc.stdout
    assert not (tmp_path / "db" / "demo.db").exists()  # cleaned up


def postgres_or_skip() -> None:
    try:
        import psycopg

        psycopg.connect(PG_DSN).close()
    except Exception as exc:
        message = f"PostgreSQL ({PG_DSN!r}, PPP_PG_DSN) is not reachable: {exc}"
        if os.environ.get("PPP_REQUIRE_SERVERS", "").strip().lower() not in FALSY:
            pytest.fail(f"{message} (PPP_REQUIRE_SERVERS is set)", pytrace=False)
        pytest.skip(message)


@pytest.mark.cython  # its first variant runs the compiled twin
def test_demo_on_postgres(tmp_path: Path) -> None:
    """With --dsn: the psycopg_pool variant joins, and pg_stat_activity agrees."""
    postgres_or_skip()
    proc, data = run_demo(tmp_path, "--dsn", PG_DSN)
    assert data["database"].startswith("PostgreSQL")
    names = [o["variant"] for o in data["outcomes"]]
    assert names == [
        "ppp-compiled",
        "ppp-pure",
        "per-request",
        "psycopg_pool",
        "ppp-forget",
        "sqla-ppp",
        "sqla-queuepool",
    ]
    check_outcomes(proc, data)
    for o in data["outcomes"]:
        if o["variant"] in POOLED:
            # every pooled connection is still open when the load ends
            assert o["pg_live"] == o["opened"] and 1 <= o["pg_peak"] <= 3, o
        else:
            # closed sessions linger in pg_stat_activity while their backend exits,
            # so the per-request peak can pass the client count: no upper bound here
            assert o["pg_live"] == 0 and o["pg_peak"] >= 1, o
    rows = parse_table(proc.stdout)
    assert all(
        row["pg live"] == str(o["pg_live"]) for row, o in zip(rows, data["outcomes"], strict=True)
    )


def test_demo_rejects_bad_arguments(tmp_path: Path) -> None:
    proc = run(str(EXAMPLES / "demo.py"), "--variants", "ppp-compiled,nope")
    assert proc.returncode == 2 and "unknown variant(s) nope" in proc.stderr
    proc = run(str(EXAMPLES / "demo.py"), "--variants", "psycopg_pool")
    assert proc.returncode == 2 and "psycopg_pool variant needs --dsn" in proc.stderr
    proc = run(str(EXAMPLES / "demo.py"), "-n", "0")
    assert proc.returncode == 2 and "must be >= 1" in proc.stderr


class DemoServer:
    """``demo_server.py`` in a child process, on an ephemeral port."""

    def __init__(self, variant: str, db_path: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / "demo_server.py"),
                *("--variant", variant, "--sqlite", str(db_path), "--pool-size", "2"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.base = ""

    def url(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:"), line
        return line.split()[1]

    def get(self, path: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as reply:
                return reply.status, reply.headers["Content-Type"], reply.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers["Content-Type"], err.read()

    def stop(self) -> dict[str, int]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        final: dict[str, int] = json.loads(out.strip().splitlines()[-1])["final"]
        return final


@pytest.fixture
def demo_db(tmp_path: Path) -> Path:
    path = tmp_path / "demo.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE ppp_demo_items (id INTEGER PRIMARY KEY, name, price)")
        conn.executemany(
            "INSERT INTO ppp_demo_items VALUES (?, ?, ?)", [(i, f"item {i}", i) for i in (1, 2)]
        )
    conn.close()
    return path


@pytest.fixture
def server(request: pytest.FixtureRequest, demo_db: Path) -> Iterator[DemoServer]:
    srv = DemoServer(request.param, demo_db)
    try:
        srv.base = srv.url()
        yield srv
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.communicate()


@pytest.mark.parametrize("server", ["ppp"], indirect=True)
def test_server_item_stats_and_metrics(server: DemoServer) -> None:
    status, _, body = server.get("/item/2")
    assert status == 200 and json.loads(body) == {"id": 2, "name": "item 2", "price": 2}
    status, _, body = server.get("/item/99")
    assert status == 404 and json.loads(body) == {"error": "no item 99"}

    status, ctype, body = server.get("/stats")
    assert status == 200 and ctype == "application/json"
    stats = json.loads(body)
    assert stats["variant"] == "ppp" and stats["backend"] in ("cython", "python")
    pool = stats["pool"]
    assert pool["max_size"] == 2 and pool["nuses"] == 2 == pool["nreturns"]
    assert pool["nusing"] == 0 and pool["nobjs"] == stats["connections"]["opened"] == 1

    status, ctype, body = server.get("/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    text = body.decode()
    assert 'ppp_pool_gets_total{pool="db"} 2.0' in text  # two items; /stats borrows none
    assert 'ppp_pool_max_size{pool="db"} 2.0' in text
    assert 'ppp_pool_in_use{pool="db"} 0.0' in text

    final = server.stop()
    assert final == {"opened": 1, "closed": 1}


@pytest.mark.parametrize("server", ["ppp-forget"], indirect=True)
def test_server_forgetting_handlers_lose_nothing(server: DemoServer) -> None:
    """Handlers never call _ret_obj(): every connection still comes back when its
    request's thread ends, through the normal return."""
    for k in range(20):
        status, _, body = server.get(f"/item/{k % 2 + 1}")
        assert status == 200, body
    for _ in range(100):  # the last thread may still be ending
        pool = json.loads(server.get("/stats")[2])["pool"]
        if pool["nusing"] == 0:
            break
        time.sleep(0.05)
    assert pool["nusing"] == 0 and pool["nuses"] == 20 == pool["nreturns"]
    assert pool["nobjs"] <= 2 and pool["nbad_returns"] == 0
    final = server.stop()
    assert final["opened"] == final["closed"] <= 2


@pytest.mark.parametrize("server", ["per-request"], indirect=True)
def test_server_per_request_baseline(server: DemoServer) -> None:
    for k in range(5):
        assert server.get(f"/item/{k % 2 + 1}")[0] == 200
    stats = json.loads(server.get("/stats")[2])
    assert stats["pool"] is None and stats["connections"] == {"opened": 5, "closed": 5}
    status, _, body = server.get("/metrics")
    assert status == 404 and b"no ppp pool" in body
    assert server.stop() == {"opened": 5, "closed": 5}


def test_leak_report_names_the_holder() -> None:
    """The README's leak report is produced by examples/leak_report.py."""
    proc = run(str(EXAMPLES / "leak_report.py"), timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("held longer than max_using_delay") == 1, out
    assert "by thread 'totals-worker' (use 1)" in out
    assert "in refresh_totals" in out and 'db.execute("SELECT count(*)' in out
    # ppp's own frames are cut: no frame of the stack is in the package's folder
    # (whatever the clone's path: it may itself contain "ppp/")
    package = Path(ppp.__file__).resolve().parent
    frames = re.findall(r'File "([^"]+)"', out.split("got at:")[1])
    assert frames, out
    assert not [f for f in frames if Path(f).resolve().is_relative_to(package)], out
