"""Serve a ppp pool's metrics to Prometheus with ``ppp.prometheus``.

    pip install "ppp-pool[prometheus]"
    python examples/prometheus_ppp.py --port 9100 --seconds 60

A pooled proxy of SQLite connections is used by a few threads while
prometheus-client serves ``/metrics``.  ``PoolCollector`` is re-exported here so
that older code doing ``from prometheus_ppp import PoolCollector`` keeps working.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import threading

from prometheus_client import CollectorRegistry, start_http_server

import ppp
from ppp.prometheus import PoolCollector

__all__ = ["PoolCollector", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a ppp pool's metrics.")
    parser.add_argument("--port", type=int, default=9100, help="0: any free port")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to serve")
    args = parser.parse_args(argv)

    db = ppp.Proxy(
        fun=lambda n: sqlite3.connect(":memory:", check_same_thread=False),
        max_size=4,
        retter=lambda conn: conn.rollback(),
        closer=lambda conn: conn.close(),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())  # a clean stop
    registry = CollectorRegistry()  # or prometheus_client.REGISTRY
    registry.register(PoolCollector({"db": db}))
    server, thread = start_http_server(args.port, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    print(f"metrics at {url} (ppp backend {ppp.BACKEND})", flush=True)

    def work() -> None:
        while not stop.is_set():
            with db._obj() as conn:
                conn.execute("SELECT 1").fetchone()
            stop.wait(0.01)

    workers = [threading.Thread(target=work) for _ in range(8)]
    for worker in workers:
        worker.start()
    try:
        stop.wait(args.seconds)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        server.shutdown()
        server.server_close()
        db._pool.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
