"""gunicorn configuration of the server tests: clean shutdown of the pools.

``worker_exit`` runs in each worker after it stopped serving (SIGTERM,
``--max-requests``); ``on_exit`` runs in the master before it exits, which
holds a pool of its own when the app was imported there (``--preload``).
Both close the idle pooled connections, so PostgreSQL sees each session end
with a proper goodbye instead of a dropped socket.
"""

from __future__ import annotations

import sys
from typing import Any

graceful_timeout = 10
# gunicorn 24+ opens a control socket at a fixed path in $HOME: tests run several at once.
control_socket_disable = True


def _shutdown() -> None:
    app = sys.modules.get("ppp_server_app")
    if app is not None:
        app.shutdown_pools()


def post_worker_init(worker: Any) -> None:
    # the harness sends SIGTERM only once no worker is still starting (serverkit.py)
    print(f"ppp-test: worker ready pid={worker.pid}", file=sys.stderr, flush=True)


def worker_exit(server: Any, worker: Any) -> None:
    _shutdown()


def on_exit(server: Any) -> None:
    _shutdown()
