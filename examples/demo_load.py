"""The demo's load generator: N requests from C concurrent clients, each request
on a new TCP connection (``Connection: close``), so that werkzeug's threaded
server starts a new thread for every one of them: threads come and go.

Each reply is checked (status 200, the item asked for), and its latency kept::

    python examples/demo_load.py http://127.0.0.1:8000 -n 1500 -c 16
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import urlsplit

ITEMS = 1000  # rows in the demo table; request i asks for item i % ITEMS + 1


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a sorted list (nan when empty)."""
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


@dataclass
class LoadResult:
    """What one run of the load generator measured."""

    requests: int
    concurrency: int
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, good replies only
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        """Good replies per second of wall-clock time."""
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    @property
    def p50(self) -> float:
        return percentile(sorted(self.latencies), 0.50)

    @property
    def p99(self) -> float:
        return percentile(sorted(self.latencies), 0.99)


class Progress:
    """A one-line progress bar, redrawn ten times a second on ``stream``."""

    def __init__(self, label: str, total: int, stream: TextIO, width: int = 30) -> None:
        self.label, self.total, self.stream, self.width = label, total, stream, width
        self.start = time.perf_counter()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def line(self, done: int, errors: int) -> str:
        filled = self.width * done // max(self.total, 1)
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        bar = "#" * filled + "." * (self.width - filled)
        return (
            f"\r  {self.label:<14} [{bar}] {done:>{len(str(self.total))}}/{self.total}"
            f"  {rate:7.0f} req/s  {errors} errors"
        )

    def _run(self) -> None:
        while not self.stopped.wait(0.1):
            self.stream.write(self.line(*self.counts()))
            self.stream.flush()

    def counts(self) -> tuple[int, int]:  # replaced by run_load
        return 0, 0

    def begin(self, counts: Callable[[], tuple[int, int]]) -> None:
        self.counts = counts  # type: ignore[method-assign]
        if self.stream.isatty():  # elsewhere (a log, a pipe) only the final line
            self.thread.start()

    def end(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()
        self.stream.write(self.line(*self.counts()) + "\n")
        self.stream.flush()


def run_load(
    url: str,
    requests: int,
    concurrency: int,
    *,
    label: str = "",
    progress: TextIO | None = None,
    timeout: float = 30.0,
) -> LoadResult:
    """Send ``requests`` GETs of ``/item/<k>`` from ``concurrency`` client threads."""
    if requests < 1 or concurrency < 1:
        raise ValueError(f"requests and concurrency must be >= 1, got {requests}, {concurrency}")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = LoadResult(requests=requests, concurrency=concurrency)
    lock = threading.Lock()
    next_index = 0
    done = 0

    def take() -> int:
        nonlocal next_index
        with lock:
            i = next_index
            next_index += 1
        return i

    def one(i: int) -> None:
        item = i % ITEMS + 1
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", f"/item/{item}", headers={"Connection": "close"})
            reply = conn.getresponse()
            body = reply.read()
        finally:
            conn.close()
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {body[:200]!r}")
        got = json.loads(body)
        if got.get("id") != item:
            raise RuntimeError(f"asked for item {item}, got {got!r}")

    def client() -> None:
        nonlocal done
        while (i := take()) < requests:
            start = time.perf_counter()
            try:
                one(i)
            except Exception as exc:
                with lock:
                    result.errors += 1
                    done += 1
                    if len(result.error_samples) < 5:
                        result.error_samples.append(f"{type(exc).__name__}: {exc}")
                continue
            latency = time.perf_counter() - start
            with lock:
                result.latencies.append(latency)
                done += 1

    def counts() -> tuple[int, int]:
        with lock:
            return done, result.errors

    bar = Progress(label, requests, progress) if progress is not None else None
    threads = [
        threading.Thread(target=client, name=f"client-{k}", daemon=True) for k in range(concurrency)
    ]
    start = time.perf_counter()
    if bar is not None:
        bar.begin(counts)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.elapsed = time.perf_counter() - start
    if bar is not None:
        bar.end()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the demo server, e.g. http://127.0.0.1:8000")
    parser.add_argument("-n", "--requests", type=int, default=1500)
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    result = run_load(args.url, args.requests, args.concurrency, label="load", progress=sys.stderr)
    print(
        f"{result.rps:.0f} req/s  p50 {result.p50 * 1e3:.2f} ms  p99 {result.p99 * 1e3:.2f} ms"
        f"  {result.errors} errors"
    )
    for sample in result.error_samples:
        print("  error:", sample)
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
