"""Run test code in a forked child, under a timeout, and hear back from it.

``start(body)`` forks; the child arms ``faulthandler.dump_traceback_later(timeout,
exit=True)`` (a hang prints every thread's stack, then the child exits 1), runs
``body(link)`` and ends with ``os._exit`` (never returning into pytest).  The
child talks to the parent through pipes: ``link.send(value)`` and
``link.recv()`` exchange JSON values; the value ``body`` returns (or the
traceback it raised) is the last message.  The parent waits with a deadline
(``select`` on the pipe, ``waitpid`` polled with ``WNOHANG``): a child still
there at its deadline gets ``SIGABRT`` (faulthandler's fatal-signal handler,
inherited from pytest, dumps its stacks), then ``SIGKILL``, and the test fails.

Two CPython facts shape this kit:

- ``faulthandler.dump_traceback_later`` in a forked child hangs for ever when
  the parent had one armed at the fork (its C state says a watchdog thread is
  running, and ``cancel`` waits for that thread, which the child does not have).
  pytest arms one for every test (``faulthandler_timeout``), so fork tests use
  :func:`parent_watchdog` instead: it disarms pytest's and watches the parent
  from a plain thread (which dumps the stacks on a hang, as pytest's would).
- Python 3.12+ warns (``DeprecationWarning``) when a multi-threaded process
  forks, and ``filterwarnings = error`` would turn that into an exception raised
  in the parent *after* the child exists: :func:`fork` silences that one warning.
"""

from __future__ import annotations

import faulthandler
import json
import os
import select
import signal
import statistics
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

CHILD_TIMEOUT = 20.0  # seconds a child may take before its stacks are dumped
GRACE = 5.0  # the parent's deadline is the child's timeout plus this
FORK_WARNING = r"This process .* is multi-threaded, use of fork\(\) may lead to deadlocks"


def fork() -> int:
    """``os.fork()`` without Python 3.12's warning about forking with threads."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", FORK_WARNING, DeprecationWarning)
        return os.fork()


class Obj:
    """A pooled object that knows which process created it, and its creation number."""

    __slots__ = ("__weakref__", "n", "pid")

    def __init__(self, n: int) -> None:
        self.n = n
        self.pid = os.getpid()

    def __repr__(self) -> str:
        return f"<Obj n={self.n} pid={self.pid}>"


# ------------------------------------------------------------------ the child


class Link:
    """The child's end: JSON values to and from the parent."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self._rfd = rfd
        self._wfd = wfd
        self._buf = b""

    def send(self, value: Any) -> None:
        _write_line(self._wfd, {"msg": value})

    def recv(self) -> Any:
        """Block until the parent sends a value (the child's watchdog bounds it)."""
        while b"\n" not in self._buf:
            chunk = os.read(self._rfd, 65536)
            if not chunk:
                raise EOFError("the parent closed the link")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)


def _write_line(fd: int, value: Any) -> None:
    data = json.dumps(value, default=repr).encode() + b"\n"
    while data:
        data = data[os.write(fd, data) :]


def _child(body: Callable[[Link], Any], link: Link, timeout: float, t0: float) -> None:
    code = 70
    t1 = time.monotonic()
    try:
        faulthandler.dump_traceback_later(timeout, exit=True, file=2)
        try:
            value = body(link)
        except BaseException:
            _write_line(link._wfd, {"error": traceback.format_exc()})
            code = 3
        else:
            now = time.monotonic()
            _write_line(link._wfd, {"result": value, "seconds": now - t0, "in_child": now - t1})
            code = 0
    except BaseException:  # even the report failed: the exit code tells
        code = 71
    finally:
        os._exit(code)


# ------------------------------------------------------------------ the parent


@dataclass
class Outcome:
    """What became of one child."""

    pid: int
    exitcode: int | None = None  # as os.waitstatus_to_exitcode (-N: killed by signal N)
    result: Any = None
    error: str | None = None
    hung: bool = False
    seconds: float | None = None  # from just before the fork to the result
    in_child: float | None = None  # from the child's first line to the result
    messages: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exitcode == 0 and self.error is None and not self.hung

    def describe(self) -> str:
        if self.hung:
            return f"child {self.pid} hung (no result before its deadline; stacks on stderr)"
        if self.error is not None:
            return f"child {self.pid} failed (exit {self.exitcode}):\n{self.error}"
        return f"child {self.pid} exited {self.exitcode}"


class Child:
    """The parent's end of one forked child."""

    def __init__(self, pid: int, rfd: int, wfd: int, timeout: float, t0: float) -> None:
        self.pid = pid
        self.timeout = timeout
        self.deadline = t0 + timeout + GRACE
        self._rfd = rfd
        self._wfd = wfd
        self._buf = b""
        self._eof = False
        self.outcome = Outcome(pid)
        self._finished = False

    def _pump(self, until: float, for_message: bool = False) -> bool:
        """Read what the child wrote until EOF (or, with ``for_message``, until a
        message is there); False when ``until`` passes first."""
        while not self._eof:
            if for_message and self.outcome.messages:
                return True
            left = until - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self._rfd], [], [], min(left, 0.1))
            if not ready:
                continue
            chunk = os.read(self._rfd, 65536)
            if not chunk:
                self._eof = True
                break
            self._buf += chunk
            self._parse()
        return True

    def _parse(self) -> None:
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            item = json.loads(line)
            if "msg" in item:
                self.outcome.messages.append(item["msg"])
            elif "error" in item:
                self.outcome.error = item["error"]
            else:
                self.outcome.result = item["result"]
                self.outcome.seconds = item["seconds"]
                self.outcome.in_child = item["in_child"]

    def recv(self) -> Any:
        """The child's next ``link.send`` value; fails the test if it ends or hangs first."""
        self._pump(self.deadline, for_message=True)
        if not self.outcome.messages:
            raise AssertionError(f"no message from the child: {self.finish().describe()}")
        return self.outcome.messages.pop(0)

    def send(self, value: Any) -> None:
        _write_line(self._wfd, value)

    def finish(self) -> Outcome:
        """Wait for the result and the exit, up to the deadline; kill a hung child."""
        if self._finished:
            return self.outcome
        self._finished = True
        out = self.outcome
        if not self._pump(self.deadline):
            out.hung = True
        status = None
        while status is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                status = st
            elif time.monotonic() > self.deadline:
                out.hung = True
                status = _kill(self.pid)
            else:
                time.sleep(0.002)
        out.exitcode = os.waitstatus_to_exitcode(status)
        if out.exitcode != 0 and out.error is None and out.result is None:
            out.hung = out.hung or out.exitcode == 1  # faulthandler's exit after its dump
        os.close(self._rfd)
        os.close(self._wfd)
        return out


def _kill(pid: int) -> int:
    """SIGABRT first (the child's faulthandler dumps its stacks), then SIGKILL."""
    for sig, wait in ((signal.SIGABRT, 3.0), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        end = time.monotonic() + wait
        while time.monotonic() < end:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            time.sleep(0.01)
    _, status = os.waitpid(pid, 0)
    return status


def start(body: Callable[[Link], Any], timeout: float = CHILD_TIMEOUT) -> Child:
    """Fork a child that runs ``body(link)`` under ``timeout`` seconds."""
    up_r, up_w = os.pipe()
    down_r, down_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    t0 = time.monotonic()
    pid = fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(up_r)
            os.close(down_w)
        finally:
            _child(body, Link(down_r, up_w), timeout, t0)
    os.close(up_w)
    os.close(down_r)
    return Child(pid, up_r, down_w, timeout, t0)


def run(body: Callable[[Link], Any], timeout: float = CHILD_TIMEOUT) -> Any:
    """Run ``body`` in a child; its return value, or the test fails with the child's story."""
    out = start(body, timeout).finish()
    if not out.ok:
        raise AssertionError(out.describe())
    return out.result


def check_all(outcomes: list[Outcome], what: str) -> None:
    """Fail naming how many children hung or failed, with the first stories."""
    bad = [o for o in outcomes if not o.ok]
    if bad:
        hung = sum(o.hung for o in bad)
        stories = "\n---\n".join(o.describe() for o in bad[:3])
        raise AssertionError(
            f"{what}: {len(bad)} of {len(outcomes)} children failed ({hung} hung):\n{stories}"
        )


def figures(outcomes: list[Outcome]) -> dict[str, Any]:
    """Child durations for the report: from just before the fork (the parent's GIL
    wait and the fork itself included) and in the child alone, median and max."""
    data: dict[str, Any] = {"children": len(outcomes)}
    for key in ("seconds", "in_child"):
        times = sorted(t for t in (getattr(o, key) for o in outcomes) if t is not None)
        if times:
            data[f"{key}_median"] = round(statistics.median(times), 4)
            data[f"{key}_max"] = round(times[-1], 4)
    return data


# ------------------------------------------------------------------ the parent's guard


@contextmanager
def parent_watchdog(limit: float = 120.0) -> Iterator[None]:
    """Disarm pytest's faulthandler timer (children could not arm their own) and
    watch the parent from a thread instead: after ``limit`` seconds it dumps every
    thread's stack, as pytest's ``faulthandler_timeout`` does."""
    faulthandler.cancel_dump_traceback_later()
    done = threading.Event()

    def watch() -> None:
        if not done.wait(limit):
            sys.stderr.write(f"\nfork test still running after {limit} s: stacks follow\n")
            faulthandler.dump_traceback(file=sys.__stderr__ or sys.stderr, all_threads=True)

    thread = threading.Thread(target=watch, name="fork-test-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)
