"""What a forgotten connection looks like in the log, for real.

A pooled ``db = Proxy()`` over SQLite, with ``max_using_delay`` and
``leak_trace``.  Request threads give their connection back at teardown (or,
if they forget, when they end); a long-lived worker thread never does.  After
``max_using_delay`` the housekeeper logs one warning naming the holder thread
and the stack where it took the connection::

    python examples/leak_report.py
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import ppp

db = ppp.Proxy()
stop = threading.Event()


def connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, check_same_thread=False)


def refresh_totals() -> None:
    """A worker's job that uses ``db`` and never calls ``db._ret_obj()``."""
    db.execute("SELECT count(*) FROM sqlite_master").fetchone()


def worker() -> None:
    refresh_totals()
    stop.wait(10)  # the thread lives on, holding its connection


def main() -> int:
    logging.basicConfig(stream=sys.stdout, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="ppp-leak-") as folder:
        path = str(Path(folder) / "app.db")
        db._set_pool(
            max_size=4,
            max_using_delay=0.5,  # warn about any connection held longer
            leak_trace=True,  # and say who took it, and where
            closer=lambda conn: conn.close(),
        )
        db.set_fun(lambda n: connect(path))
        thread = threading.Thread(target=worker, name="totals-worker")
        thread.start()
        time.sleep(1.0)  # the housekeeper runs every 0.25 s: one warning
        stop.set()
        thread.join()
        db._pool.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
