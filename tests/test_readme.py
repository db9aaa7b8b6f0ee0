"""Every ```python block of README.md and docs/*.md runs, as it is written.

Each block runs in a fresh interpreter (``python -X dev -W error``) whose
current folder is a new temporary folder, once per twin (the ``backend``
fixture: ``PPP_NO_EXTENSIONS=1`` for the pure one), and must exit 0 within
:data:`TIMEOUT` seconds.  Blocks run against SQLite (or nothing) unless they
say otherwise.  An HTML comment on the line right before the fence says so:

- ``<!-- requires: postgresql -->`` (or ``mariadb``, ``redis``): the block
  talks to that server on 127.0.0.1 (the machine's test servers: PostgreSQL
  ``host=127.0.0.1 dbname=test user=postgres``); it is skipped when the server
  does not answer, unless ``PPP_REQUIRE_SERVERS`` is set: then it fails;
- ``<!-- not-run: why -->``: the block is not run (a signature, a fragment, a
  package's modules).  Command lines and configuration files are not
  python-fenced at all (``sh``, ``ini``, ``text``).

A block whose first line is ``# name.py`` is also written to the temporary
folder as ``name.py`` before any block of its document runs, so that a block
can import another (the Flask quick start's ``app.py`` imports ``db.py``).

``test_inventory`` fails on a python block with an unknown or empty marker and
prints how many blocks run, need a server, or are not run.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120.0
FALSY = {"", "0", "false", "no", "off"}
SERVERS = ("postgresql", "mariadb", "redis")
PG_DSN = "host=127.0.0.1 dbname=test user=postgres connect_timeout=5"

FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*(not-run|requires)\s*:\s*(.*?)\s*-->$")
FILE_HEADER = re.compile(r"^# ([\w/]+)\.py\b")


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository
    line: int  # line of the opening fence, 1-based
    code: str
    marker: str  # "run", "not-run" or "requires"
    arg: str  # the reason (not-run) or the server (requires)

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def file_name(self) -> str | None:
        """``name.py`` when the block's first line is ``# name.py``."""
        first = self.code.splitlines()[0] if self.code else ""
        match = FILE_HEADER.match(first)
        return f"{match.group(1)}.py" if match else None


def documents() -> list[Path]:
    """README.md and docs/*.md (docs/ may be absent: the sdist's test sources)."""
    docs = sorted((ROOT / "docs").glob("*.md")) if (ROOT / "docs").is_dir() else []
    return [ROOT / "README.md", *docs]


def parse(path: Path) -> list[Block]:
    """The python blocks of one Markdown file, with the marker right before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    doc = path.relative_to(ROOT).as_posix()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        ticks, lang = match.groups()
        end = i + 1
        while end < len(lines) and lines[end].strip() != ticks:
            end += 1
        if lang == "python":
            marker, arg = "run", ""
            prev = lines[i - 1].strip() if i > 0 else ""
            found = MARKER.match(prev)
            if found:
                marker, arg = found.group(1), found.group(2)
            elif prev.startswith("<!--") and not prev.startswith("<!-- section:"):
                marker, arg = "unknown", prev
            code = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(doc, i + 1, code, marker, arg))
        i = end + 1
    return blocks


@cache
def all_blocks() -> tuple[Block, ...]:
    return tuple(b for path in documents() for b in parse(path))


def runnable() -> list[Block]:
    return [b for b in all_blocks() if b.marker in ("run", "requires")]


# ------------------------------------------------------------------ servers


def servers_required() -> bool:
    return os.environ.get("PPP_REQUIRE_SERVERS", "").strip().lower() not in FALSY


@cache
def server_down(name: str) -> str | None:
    """Why ``name`` cannot be reached (None when it answers)."""
    try:
        if name == "postgresql":
            import psycopg

            with psycopg.connect(PG_DSN) as conn:
                conn.execute("SELECT 1")
        elif name == "mariadb":
            import pymysql  # type: ignore[import-untyped]

            conn = pymysql.connect(
                host="127.0.0.1", user="root", password="", database="test", connect_timeout=5
            )
            conn.close()
        elif name == "redis":
            import redis

            client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5.0)
            try:
                client.ping()
            finally:
                client.close()
        else:
            return f"unknown server {name!r}"
    except Exception as exc:  # any failure to reach it
        return f"{type(exc).__name__}: {exc}"
    return None


def need_server(name: str) -> None:
    why = server_down(name)
    if why is None:
        return
    message = f"{name} is not reachable ({why})"
    if servers_required():
        pytest.fail(f"{message} and PPP_REQUIRE_SERVERS is set", pytrace=False)
    pytest.skip(message)


def missing_modules(block: Block, local: set[str]) -> list[str]:
    """Top-level modules the block imports that are not installed (an install
    without the ``test`` extra, such as a free-threaded wheel test), leaving out
    the document's own ``# name.py`` modules."""
    names: set[str] = set()
    for node in ast.parse(block.code).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names - local if importlib.util.find_spec(n) is None)


# ------------------------------------------------------------------ tests


def test_inventory() -> None:
    """Every python block is run, needs a known server, or says why it is not run."""
    blocks = all_blocks()
    assert blocks, "no python block found in README.md"
    bad = [b.id for b in blocks if b.marker == "unknown"]
    assert not bad, f"python blocks with an unknown marker right before them: {bad}"
    empty = [b.id for b in blocks if b.marker == "not-run" and not b.arg]
    assert not empty, f"not-run blocks must say why: {empty}"
    unknown = [b.id for b in blocks if b.marker == "requires" and b.arg not in SERVERS]
    assert not unknown, f"requires: one of {SERVERS}: {unknown}"
    names = [b.file_name for b in blocks if b.file_name and b.marker != "not-run"]
    assert len(names) == len(set(names)), f"two blocks write the same file: {names}"
    counts = {m: sum(b.marker == m for b in blocks) for m in ("run", "requires", "not-run")}
    print(
        f"python blocks: {len(blocks)} in {len(documents())} documents; "
        f"{counts['run']} run as they are, {counts['requires']} need a server, "
        f"{counts['not-run']} not run: "
        + "; ".join(f"{b.id} ({b.arg})" for b in blocks if b.marker == "not-run")
    )


@pytest.mark.parametrize("block", runnable(), ids=lambda b: b.id)
def test_block_runs(block: Block, backend: ModuleType, tmp_path: Path) -> None:
    """The block exits 0 in a fresh interpreter with this twin active."""
    local = [
        b for b in all_blocks() if b.doc == block.doc and b.file_name and b.marker != "not-run"
    ]
    provided = {str(b.file_name).split("/")[0].removesuffix(".py") for b in local}
    missing = missing_modules(block, provided)
    if missing:
        pytest.skip(f"{block.id} imports {', '.join(missing)}, not installed here")
    if block.marker == "requires":
        need_server(block.arg)
    for other in local:  # the document's ``# name.py`` modules, importable
        target = tmp_path / str(other.file_name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(other.code, encoding="utf-8")
    script = tmp_path / "_readme_block.py"
    script.write_text(block.code, encoding="utf-8")
    env = dict(os.environ)
    env.pop("PPP_NO_EXTENSIONS", None)
    if backend.Pool._backend == "python":
        env["PPP_NO_EXTENSIONS"] = "1"
    try:
        proc = subprocess.run(
            [sys.executable, "-X", "dev", "-W", "error", str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.id} did not finish within {TIMEOUT} s: {exc.stderr!r}")
    assert proc.returncode == 0, (
        f"{block.id} failed (exit {proc.returncode}) on {backend.Pool._backend}:\n"
        f"--- code\n{block.code}--- stdout\n{proc.stdout[-3000:]}\n"
        f"--- stderr\n{proc.stderr[-6000:]}"
    )
