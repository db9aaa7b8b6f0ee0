"""gunicorn configuration of the server tests: clean shutdown of the pools.

``worker_exit`` runs in each worker after it stopped serving (SIGTERM,
``--max-requests``); ``on_exit`` runs in the master before it exits, which
holds a pool of its own when the app was imported there (``--preload``).
Both close the idle pooled connections, so PostgreSQL sees each session end
with a proper goodbye instead of a dropped socket.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

graceful_timeout = int(os.environ.get("PPP_TEST_GRACEFUL_TIMEOUT", "10"))
# test_servers.py's control of the harness: a slow fork and a slow worker start
# (a loaded machine), to widen the window in which gunicorn loses a SIGTERM
_SLOW_FORK = float(os.environ.get("PPP_TEST_SLOW_FORK", "0"))
# gunicorn 24+ opens a control socket at a fixed path in $HOME: tests run several at once.
control_socket_disable = True


def _shutdown() -> None:
    app = sys.modules.get("ppp_server_app")
    if app is not None:
        app.shutdown_pools()


def pre_fork(server: Any, worker: Any) -> None:
    if _SLOW_FORK:
        print("ppp-test: forking", file=sys.stderr, flush=True)
        time.sleep(_SLOW_FORK)


def post_fork(server: Any, worker: Any) -> None:
    if _SLOW_FORK:
        time.sleep(_SLOW_FORK)


def post_worker_init(worker: Any) -> None:
    # the harness sends SIGTERM only once the workers are settled (serverkit.py)
    print(f"ppp-test: worker ready pid={worker.pid}", file=sys.stderr, flush=True)


def worker_exit(server: Any, worker: Any) -> None:
    _shutdown()


def on_exit(server: Any) -> None:
    _shutdown()
