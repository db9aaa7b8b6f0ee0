"""How long ``stats()`` over 1,000,000 objects stalls another thread's get+ret.

A pool holds ``NOBJS`` idle objects.  One round: a thread does get+ret pairs in a
tight loop, timing each pair, while the benchmark's thread calls ``stats()``
once; the round's figure is its longest pair (the *stall*), and pytest-benchmark
times the ``stats()`` call.  The reference ("floor") is the interpreter alone: a
``queue.SimpleQueue`` get+put loop beside a thread that builds as many dicts as
``stats()`` does, touching no pool.  ``extra_info`` records, per case, the median
over rounds of the round's stall (``stall``: the target's figure, so that one
preemption of this shared machine's process does not decide it), the longest
stall of all rounds (``stall_max``) and the median pair; for ppp also the
longest time ``stats()`` spent in one call of a locked step (``hold``, median over
rounds, and ``hold_max``): the pool's own share of a stall, as the stats thread
sees it (it includes the times that thread was preempted while holding the lock).

Two things would hide the pool's share and are set aside for the round:

- the GIL: a thread that wants it waits up to the switch interval (5 ms by
  default) whoever holds it, pool or not; the round runs with ``SWITCH_S``;
- the cyclic GC: a full collection over a heap of millions of objects (the pool's
  and the dicts ``stats()`` builds) stops every thread for 0.1 s or more, pool or
  not; it is disabled during the round (and run after it).
"""

from __future__ import annotations

import array
import gc
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from benchkit import Conn, Maker, scaled, tag

NOBJS = 1_000_000
ROUNDS = 5  # stats() calls over NOBJS objects, about 2 s each
SWITCH_S = 0.001  # the GIL's switch interval during a round
GROUP = "pool-stats-stall"


@pytest.fixture
def quiet_interpreter() -> Iterator[None]:
    """The round's interpreter settings (see the module docstring), restored after."""
    interval = sys.getswitchinterval()
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    sys.setswitchinterval(SWITCH_S)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        if enabled:
            gc.enable()
        gc.collect()


class Stalls:
    """A thread doing get+ret pairs until stopped, recording each pair's duration."""

    def __init__(self, get: Callable[[], Any], ret: Callable[[Any], Any]) -> None:
        self.pairs = array.array("d")
        self._get, self._ret = get, ret
        self._stop = False
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        get, ret, clock, pairs = self._get, self._ret, time.perf_counter, self.pairs
        self._started.set()
        while not self._stop:
            start = clock()
            ret(get())
            pairs.append(clock() - start)

    def __enter__(self) -> Stalls:
        self._thread.start()
        self._started.wait()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop = True
        self._thread.join(60.0)
        assert not self._thread.is_alive(), "the get+ret thread did not stop"


def _measure(
    benchmark: Any,
    impl: str,
    label: str,
    busy: Callable[[], Any],
    check: Callable[[Any], None],
    get: Callable[[], Any],
    ret: Callable[[Any], Any],
    ref: bool = False,
    holds: array.array[float] | None = None,
) -> None:
    """Time ``busy()`` once per round beside a :class:`Stalls` thread; record the stalls.

    What ``busy`` returned is checked by ``check`` and dropped between rounds, with
    the thread stopped and untimed (freeing a million dicts holds the GIL too).
    ``holds``, when given, is filled by the locked steps' timer (:func:`_time_holds`)."""
    rounds = scaled(benchmark, ROUNDS, 1)
    tag(benchmark, GROUP, impl, label, 1, ref=ref)
    stalls: list[float] = []
    pairs: list[float] = []
    longest_holds: list[float] = []
    current: list[Any] = []  # the running round's Stalls, then its result

    def finish() -> None:
        if current:
            s = current[0]
            s.__exit__()
            stalls.append(max(s.pairs))
            pairs.append(statistics.median(s.pairs))
            if holds:
                longest_holds.append(max(holds))
                del holds[:]
            result = current[1:]  # empty when busy() raised: that error propagates
            del current[:]
            if result:
                check(result[0])

    def setup() -> None:
        finish()
        current.append(Stalls(get, ret).__enter__())

    def one_round() -> None:
        current.append(busy())

    try:
        benchmark.pedantic(one_round, setup=setup, rounds=rounds, warmup_rounds=0)
    finally:
        finish()
    stall, longest, pair = statistics.median(stalls), max(stalls), statistics.median(pairs)
    benchmark.extra_info.update(stall=stall, stall_max=longest, pair=pair)
    benchmark.extra_info["note"] = (
        f"longest get+ret stall {stall * 1e3:.2f} ms (median of {rounds} rounds; "
        f"max {longest * 1e3:.2f} ms); median get+ret {pair * 1e6:.2f} µs"
    )
    if longest_holds:
        hold, hold_max = statistics.median(longest_holds), max(longest_holds)
        benchmark.extra_info.update(hold=hold, hold_max=hold_max)
        benchmark.extra_info["note"] += (
            f"; longest lock hold by stats() {hold * 1e3:.2f} ms (max {hold_max * 1e3:.2f} ms)"
        )


def _time_holds(pool: Any) -> array.array[float]:
    """Time every call ``stats()`` makes to a locked step of ``pool`` (an instance
    attribute in front of the twin's method); returns where the times go."""
    times = array.array("d")
    for name in ("_lk_stats", "_lk_stats_more"):  # the second one: chunked stats() only
        method = getattr(pool, name, None)
        if method is None:
            continue

        def timed(*args: Any, _method: Any = method) -> Any:
            start = time.perf_counter()
            try:
                return _method(*args)
            finally:
                times.append(time.perf_counter() - start)

        setattr(pool, name, timed)
    return times


def _fill(pool: Any, n: int) -> None:
    """Leave ``n`` idle objects in ``pool``."""
    objs = [pool.get() for _ in range(n)]
    for obj in objs:
        pool.ret(obj)


def test_stats_stall_ppp(benchmark: Any, backend: ModuleType, quiet_interpreter: None) -> None:
    n = scaled(benchmark, NOBJS, 5000)
    pool = backend.Pool(Maker(), max_size=0, min_size=0)
    twin = backend.Pool._backend
    label = "ppp compiled" if twin == "cython" else "ppp pure"

    def check(s: dict[str, Any]) -> None:
        assert s["nobjs"] == n and s["nusing"] + s["navail"] == n, s["nobjs"]
        assert len(s["avail"]) + len(s["using"]) == n
        assert len({item["n"] for item in s["avail"] + s["using"]}) == n

    try:
        _fill(pool, n)
        holds = _time_holds(pool)
        _measure(
            benchmark, f"ppp-{twin}", label, pool.stats, check, pool.get, pool.ret, holds=holds
        )
    finally:
        pool.shutdown()


def test_stats_stall_floor(benchmark: Any, quiet_interpreter: None) -> None:
    n = scaled(benchmark, NOBJS, 5000)
    q: queue.SimpleQueue[Conn] = queue.SimpleQueue()
    q.put(Conn())

    def format_dicts() -> list[dict[str, Any]]:  # the shape of stats()'s work on its rows
        out = []
        for i in range(n):
            item: dict[str, Any] = {"n": i, "uses": i}
            item["trace"] = repr(i)
            out.append(item)
        return out

    def check(out: list[dict[str, Any]]) -> None:
        assert len(out) == n

    label = f"floor: SimpleQueue get+put beside {n:,} dicts built, no pool"
    _measure(benchmark, "floor", label, format_dicts, check, q.get, q.put, ref=True)
