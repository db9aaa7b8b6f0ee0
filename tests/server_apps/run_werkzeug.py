"""Serve ``ppp_server_app`` with werkzeug's threaded server (a thread per
request): ``run_werkzeug.py PORT``.

SIGTERM becomes ``SystemExit`` in the main thread, which leaves
``serve_forever``; ``server_close()`` closes the listening socket and waits for
the requests in flight, then the pools are shut down before the process exits.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import ppp_server_app
from werkzeug.serving import ThreadedWSGIServer, make_server


def stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    port = int(sys.argv[1])
    server = make_server("127.0.0.1", port, ppp_server_app.app, threaded=True)
    # server_close() then waits for the requests in flight, whose threads give
    # their connections back as they end (werkzeug's default: daemon threads,
    # killed at exit holding them)
    assert isinstance(server, ThreadedWSGIServer)
    server.daemon_threads = False
    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        ppp_server_app.shutdown_pools()


if __name__ == "__main__":
    main()
