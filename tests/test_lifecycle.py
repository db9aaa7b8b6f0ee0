"""A pool's life and death, and clean errors (issue 11, SPEC §5), on both twins.

- A Pool that is garbage-collected closes its idle objects, never one in use.
- A Pool still alive at interpreter exit closes its idle objects, never one in
  use, and exit does not hang (20 subprocess runs, with and without a
  housekeeping thread).
- ``copy.copy``, ``copy.deepcopy`` and ``pickle.dumps`` of a Pool raise a
  ``TypeError`` saying that a Pool cannot be copied or pickled.
- ``fun`` returning ``None`` is a clear error at ``get`` (naming ``fun``) and
  loses no slot.
- Exceptions raised through a Proxy (``TimeOut``, a failing ``fun``) carry no
  internal chained exception.
"""

from __future__ import annotations

import copy
import gc
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from invariants import Maker, Res, check_counts, check_pool, wait_for

import ppp
from ppp import PoolException, TimeOut
from ppp.proxy import _for_twin

PPP_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(ppp.__file__)))
DEADLINE = 10.0

# ------------------------------------------------------------- garbage collection


@pytest.mark.parametrize("housekeeping", [False, True])
def test_collected_pool_closes_idle_objects(Pool: Any, housekeeping: bool) -> None:
    """``del pool`` + ``gc.collect()``: the idle objects are closed, the one in use
    is not (its holder still uses it)."""
    maker = Maker()
    extra = {"max_avail_delay": 60.0} if housekeeping else {}
    pool = Pool(maker.fun, max_size=5, min_size=3, closer=maker.closer, **extra)
    held = pool.get()
    idle = [res for res in maker.snapshot().values() if res is not held]
    assert len(idle) == 2
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    wait_for(lambda: gc.collect() >= 0 and ref() is None, "the pool collected", DEADLINE)
    wait_for(lambda: all(res.closed for res in idle), "its idle objects closed", DEADLINE)
    assert all(res.closed == 1 for res in idle)
    assert not held.closed, "an object in use was closed when its pool was collected"


# ------------------------------------------------------------------ exit

EXIT_SCRIPT = textwrap.dedent(
    """
    import importlib, os, sys

    mod = importlib.import_module(sys.argv[1])

    def fun(n):
        return [n]

    def closer(obj):
        os.write(1, f"closed {obj[0]}\\n".encode())

    extra = {"max_avail_delay": 60.0} if sys.argv[2] == "1" else {}
    pool = mod.Pool(fun, max_size=4, min_size=3, closer=closer, **extra)
    held = pool.get()
    os.write(1, f"held {held[0]}\\n".encode())
    # exit now: the pool is alive (a module global), one object in use
    """
)


def test_pool_alive_at_exit_closes_idle_objects(backend: ModuleType, tmp_path: Any) -> None:
    """20 runs of a script that exits with a live pool (3 objects, one in use), half
    of them with a housekeeping thread: each closes the 2 idle objects, never the
    one in use, and exits in time."""
    script = tmp_path / "exit_with_pool.py"
    script.write_text(EXIT_SCRIPT)
    env = dict(os.environ, PYTHONPATH=PPP_PARENT)
    problems: list[str] = []
    for batch in range(4):
        procs = [
            subprocess.Popen(
                [sys.executable, "-X", "dev", str(script), backend.__name__, str(i % 2)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(5)
        ]
        for i, proc in enumerate(procs):
            run = f"run {batch * 5 + i} (housekeeping={bool(i % 2)})"
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                problems.append(f"{run}: exit hung (killed after 30 s)")
                continue
            pairs = [line.split() for line in out.splitlines() if line.strip()]
            held = [int(n) for word, n in pairs if word == "held"]
            closed = sorted(int(n) for word, n in pairs if word == "closed")
            if proc.returncode != 0:
                problems.append(f"{run}: exit status {proc.returncode}: {err[-500:]}")
            elif len(held) != 1 or closed != sorted({0, 1, 2} - set(held)):
                problems.append(f"{run}: held {held}, closed {closed} (want the 2 idle ones)")
    assert not problems, f"{len(problems)} of 20 runs:\n" + "\n".join(problems)


def test_exit_close_where_no_thread_may_start(Pool: Any, monkeypatch: Any) -> None:
    """CPython 3.12 refuses new threads at exit (RuntimeError from Thread.start in
    an atexit callback): the exit hook then closes the idle objects itself."""
    import ppp._common as common

    closed: list[Any] = []
    pool = Pool(fun=lambda n: Res(n), max_size=3, closer=closed.append)
    held = pool.get()
    idle = [pool.get(), pool.get()]
    for obj in idle:
        pool.ret(obj)
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name == "ppp-exit-close":
            raise RuntimeError("can't create new thread at interpreter shutdown")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    monkeypatch.setattr(common, "_live", weakref.WeakSet([pool]))
    common._close_at_exit()
    assert sorted(o.n for o in closed) == sorted(o.n for o in idle)
    assert held not in closed


# ------------------------------------------------------------------ copies


def _pickler(protocol: int) -> Callable[[Any], Any]:
    return lambda obj: pickle.dumps(obj, protocol)


COPIERS: dict[str, Callable[[Any], Any]] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    **{f"pickle{p}": _pickler(p) for p in range(pickle.HIGHEST_PROTOCOL + 1)},
}


@pytest.mark.parametrize("how", list(COPIERS))
def test_pool_cannot_be_copied_or_pickled(Pool: Any, how: str) -> None:
    """A copy would share the lock and lists but not the counters: refused with a
    TypeError that says so, and the pool is untouched."""
    maker = Maker()
    pool = Pool(maker.fun, max_size=2, min_size=1, closer=maker.closer)
    held = pool.get()
    with pytest.raises(TypeError, match=r"(?i)\bpool\b.*\bcannot be (copied|pickled)"):
        COPIERS[how](pool)
    check_pool(pool, [held], maker)
    pool.ret(held)
    pool.shutdown()


# ------------------------------------------------------------- fun returns None


@pytest.mark.parametrize("min_size", [0, 1])
def test_fun_returning_none_is_a_clear_error(Pool: Any, min_size: int) -> None:
    """``fun`` returning None (a forgotten ``return``): ``get`` raises PoolException
    or TypeError naming ``fun``, every time, and no slot is lost (a lost slot would
    show as TimeOut on ``get(0)``).  The constructor's fill does not raise."""
    calls: list[int] = []

    def fun(n: int) -> None:
        calls.append(n)

    pool = Pool(fun, max_size=1, min_size=min_size)
    try:
        for _ in range(3):
            with pytest.raises((PoolException, TypeError), match=r"\bfun\b") as info:
                pool.get(0)
            assert not isinstance(info.value, TimeOut), f"a slot was lost: {info.value!r}"
        s = pool.stats()
        assert (s["nobjs"], s["nusing"], s["npending"], s["nwaiting"]) == (0, 0, 0, 0)
        assert len(calls) >= 3
    finally:
        pool.shutdown()


# ------------------------------------------------------- clean Proxy tracebacks


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything chained to it (context and cause)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [item.__context__, item.__cause__]
    return seen


def _assert_clean(exc: BaseException, *own: type[BaseException]) -> None:
    chain = _chain(exc)
    internal = [e for e in chain[1:] if not isinstance(e, own)]
    assert not internal, (
        f"{exc!r} carries internal chained exception(s): {internal!r} "
        f"(__context__={exc.__context__!r})"
    )


def test_proxy_timeout_has_no_internal_context(backend: ModuleType) -> None:
    """``TimeOut`` from a pooled Proxy: no ``AttributeError: '_thread._local' object
    has no attribute 'o'`` (or anything else) chained to it."""
    maker = Maker()
    proxy = _for_twin(backend)(fun=maker.fun, max_size=1, min_size=1, timeout=0.01)
    holding = threading.Event()
    release = threading.Event()

    def holder() -> None:
        proxy._get_obj()
        holding.set()
        release.wait(DEADLINE)
        proxy._ret_obj()

    thread = threading.Thread(target=holder, name="holder", daemon=True)
    thread.start()
    try:
        assert holding.wait(DEADLINE)
        with pytest.raises(TimeOut) as info:
            _ = proxy.value
        _assert_clean(info.value)
        with pytest.raises(TimeOut) as info:
            proxy._get_obj(0)
        _assert_clean(info.value)
    finally:
        release.set()
        thread.join(DEADLINE)
    pool = proxy._pool
    check_counts(pool, [], maker)
    pool.shutdown()


class ConnectError(Exception):
    """A database that refuses connections."""


@pytest.mark.parametrize("pooled", [True, False])
@pytest.mark.parametrize("own_context", [False, True])
def test_failing_connect_through_proxy_has_no_internal_context(
    backend: ModuleType, pooled: bool, own_context: bool
) -> None:
    """``fun`` failing behind a Proxy: the caller sees the error with at most the
    user's own context (an error ``fun`` itself was handling), nothing of ppp's."""
    made: list[Res] = []

    def fun(n: int) -> Res:
        if n == 0:
            if own_context:
                try:
                    raise KeyError("dns lookup")
                except KeyError:
                    raise ConnectError("connection refused")  # noqa: B904 - context: the user's
            raise ConnectError("connection refused")
        made.append(Res(n))
        return made[-1]

    kwargs: dict[str, Any] = {"max_size": 1, "min_size": 0} if pooled else {"max_size": None}
    proxy = _for_twin(backend)(fun=fun, **kwargs)
    with pytest.raises(ConnectError) as info:
        _ = proxy.value
    _assert_clean(info.value, KeyError)
    assert proxy.value == 1  # the next creation works: nothing was lost
    proxy._ret_obj()
    if pooled:
        pool = proxy._pool
        s = pool.stats()
        assert (s["nusing"], s["npending"], s["nwaiting"]) == (0, 0, 0)
        pool.shutdown()
