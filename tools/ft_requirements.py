"""Print the test requirements for the free-threaded venv of `make test-ft` (issue 14).

They are the ``test`` extra of pyproject.toml, adapted: no gevent, eventlet or
greenlet (no free-threaded wheels, and importing greenlet turns the GIL back
on), pure ``psycopg`` instead of ``psycopg[binary]``; plus pytest-run-parallel,
and ProxyPatternPool from the ``bench`` extra.
With ``--no-deps`` it prints instead the packages to install without their
dependencies: SQLAlchemy, whose metadata asks for greenlet on x86_64 and
aarch64 (it runs without it, asyncio aside).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

DROP = {"gevent", "eventlet", "greenlet"}
FROM_BENCH = {"proxypatternpool"}  # the drop-in tests compare names with it
NO_DEPS = {"sqlalchemy"}
EXTRA = ["pytest-run-parallel>=0.7", "typing-extensions>=4.6"]


def name_of(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match, requirement
    return match.group(0).lower().replace("_", "-")


def main(argv: list[str]) -> int:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    test = extras["test"] + [r for r in extras["bench"] if name_of(r) in FROM_BENCH]
    reqs = [r.replace("psycopg[binary]", "psycopg") for r in test if name_of(r) not in DROP]
    if "--no-deps" in argv:
        print("\n".join(r for r in reqs if name_of(r) in NO_DEPS))
    else:
        print("\n".join([r for r in reqs if name_of(r) not in NO_DEPS] + EXTRA))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
