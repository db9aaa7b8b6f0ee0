"""Serve ``ppp_server_app`` with waitress: ``run_waitress.py PORT [THREADS]``.

waitress installs no signal handler: on SIGTERM a process dies without running
``atexit`` or closing anything, and PostgreSQL logs each pooled session's
dropped socket.  So SIGTERM is turned into ``SystemExit``; waitress's loop then
stops its worker threads (``server.run()`` handles ``SystemExit``), and the
pools are shut down before the process exits.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import ppp_server_app
from waitress import create_server  # type: ignore[import-untyped]


def stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    port = int(sys.argv[1])
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    server = create_server(ppp_server_app.app, host="127.0.0.1", port=port, threads=threads)
    signal.signal(signal.SIGTERM, stop)
    try:
        server.run()  # returns after SystemExit, worker threads stopped
    finally:
        ppp_server_app.shutdown_pools()


if __name__ == "__main__":
    main()
