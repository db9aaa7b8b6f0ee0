"""Thread affinity: a plain return parks the object in the returning thread's
bucket, and that thread's next get takes it back (see ``ppp._common.NBUCKETS``).

The twins must agree on every choice, so the tests drive real threads, each kept
alive for the whole test (a thread's bucket comes from its id, which the OS
reuses once the thread ends), one step at a time.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from invariants import run_threads

from ppp import TimeOut
from ppp._common import NBUCKETS, bucket_of

DEADLINE = 30.0


class Worker:
    """A thread that runs the calls it is given, one at a time, and stays alive."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self.results: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ident = self.run(threading.get_ident)
        self.bucket = bucket_of(self.ident)

    def _run(self) -> None:
        while (call := self.calls.get()) is not None:
            try:
                self.results.put((True, call()))
            except BaseException as exc:  # handed to the caller
                self.results.put((False, exc))

    def run(self, call: Callable[[], Any]) -> Any:
        self.start(call)
        return self.result()

    def start(self, call: Callable[[], Any]) -> None:
        self.calls.put(call)

    def result(self) -> Any:
        ok, value = self.results.get(timeout=DEADLINE)
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        self.calls.put(None)
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Threads alive for the test, at least two of them in different buckets."""
    started: list[Worker] = []
    try:
        while len(started) < 6 or len({w.bucket for w in started}) < 2:
            started.append(Worker())
            assert len(started) < 200, "no two threads in different buckets"
        yield started
    finally:
        for w in started:
            w.stop()


def apart(workers: list[Worker]) -> tuple[Worker, Worker]:
    first = workers[0]
    return first, next(w for w in workers if w.bucket != first.bucket)


def test_bucket_of_spreads_threads() -> None:
    # thread ids are aligned addresses: a prime modulus still uses every bucket
    base = 0x7F3A_5C00_0000
    for step in (0x1000, 0x10000, 0x801000, 0x100000, 8, 4):
        assert {bucket_of(base + k * step) for k in range(NBUCKETS)} == set(range(NBUCKETS))


def test_compiled_bucket_is_bucket_of_the_ident() -> None:
    """The compiled hot path's bucket (from the thread pointer where that is the
    thread's id) is ``bucket_of(threading.get_ident())`` in every thread."""
    _pool = pytest.importorskip("ppp._pool")
    seen: list[tuple[int, int]] = []

    def probe(barrier: threading.Barrier | None = None) -> None:
        seen.append((_pool._bucket_here(), bucket_of(threading.get_ident())))
        if barrier is not None:  # alive until all 16 probed: 16 different ids
            barrier.wait(DEADLINE)

    probe()
    for _ in range(4):
        barrier = threading.Barrier(16)
        threads = [threading.Thread(target=probe, args=(barrier,)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE)
    assert len(seen) == 65
    assert all(mine == theirs for mine, theirs in seen), seen
    assert len({theirs for _, theirs in seen}) > 1  # (the threads had different buckets)


def test_a_thread_gets_back_the_object_it_returned(Pool: Any, workers: list[Worker]) -> None:
    a, b = apart(workers)
    pool = Pool(lambda n: [n], max_size=2)
    try:
        oa = a.run(pool.get)
        ob = b.run(pool.get)
        a.run(partial(pool.ret, oa))
        b.run(partial(pool.ret, ob))  # last returned: the top without affinity
        assert a.run(pool.get) is oa
        assert b.run(pool.get) is ob
        s = pool.stats()
        assert (s["nobjs"], s["nusing"], s["navail"], s["nuses"], s["nreturns"]) == (2, 2, 0, 4, 2)
    finally:
        pool.shutdown()


def test_one_thread_stays_last_in_first_out(Pool: Any) -> None:
    pool = Pool(lambda n: [n], max_size=4)
    try:
        objs = [pool.get() for _ in range(4)]
        for o in objs:
            pool.ret(o)  # the first is parked, then each one parked pushes the last
        assert [pool.get() for _ in range(4)] == objs[::-1]
        for o in objs:
            pool.ret(o)
        assert pool.stats()["navail"] == 4
        assert [slot.obj for slot in pool._avail] == objs  # (stats() took back the parked)
    finally:
        pool.shutdown()


def test_a_parked_object_is_taken_before_creating_or_waiting(
    Pool: Any, workers: list[Worker]
) -> None:
    a, b = apart(workers)
    made: list[int] = []

    def fun(n: int) -> list[int]:
        made.append(n)
        return [n]

    pool = Pool(fun, max_size=1)
    try:
        o = a.run(pool.get)
        a.run(partial(pool.ret, o))  # parked in a's bucket
        assert b.run(partial(pool.get, timeout=0)) is o  # not full: it was idle
        b.run(partial(pool.ret, o))
        assert a.run(partial(pool.get, timeout=0)) is o
        assert made == [0]
        a.run(partial(pool.ret, o))
    finally:
        pool.shutdown()


def test_parked_objects_are_idle_everywhere(Pool: Any, workers: list[Worker]) -> None:
    """Counted idle by stats(), expired by housekeeping, closed by shutdown()."""
    now = [0.0]
    closed: list[Any] = []
    pool = Pool(
        lambda n: [n],
        max_size=4,
        max_avail_delay=10.0,
        closer=closed.append,
        delay=0,  # no housekeeping thread: rounds run when asked
        clock=lambda: now[0],
    )
    try:
        got = [w.run(pool.get) for w in workers[:3]]
        for w, o in zip(workers[:3], got, strict=True):
            w.run(partial(pool.ret, o))
        s = pool.stats()
        assert (s["nobjs"], s["navail"], s["nusing"], s["nreturns"]) == (3, 3, 0, 3)
        keep = workers[3].run(pool.get)  # one of them
        assert keep in got
        now[0] = 20.0
        pool._hk_round()  # the two still idle expire, parked or not
        s = pool.stats()
        assert (s["nobjs"], s["navail"], s["nusing"], s["nrecycled"]) == (1, 0, 1, 2)
        workers[3].run(partial(pool.ret, keep))
    finally:
        pool.shutdown()
    assert sorted(map(id, closed)) == sorted(map(id, got))


def test_twins_choose_the_same_objects(workers: list[Worker]) -> None:
    """Random gets and returns by several threads, the same steps on both twins:
    the same object every time, the same idle stack at every stats()."""
    from ppp import _pool, _pool_py

    rng = random.Random(1234)
    for rnd in range(40):
        # (min_size=0: a background fill's order is the scheduler's, not the twins')
        pools = [twin.Pool(lambda n: [n], max_size=5, min_size=0) for twin in (_pool, _pool_py)]
        try:
            held: list[dict[int, list[Any]]] = [{}, {}]
            for step in range(60):
                full = sum(map(len, held[0].values())) == 5
                holders = [k for k, v in held[0].items() if v]
                w = rng.choice(holders if full else range(len(workers)))
                mine = held[0].get(w, [])
                if mine and (full or rng.random() < 0.5):
                    k = rng.randrange(len(mine))
                    for t, pool in enumerate(pools):
                        obj = held[t][w].pop(k)
                        workers[w].run(partial(pool.ret, obj))
                else:
                    got = [workers[w].run(pool.get) for pool in pools]
                    assert got[0] == got[1], (rnd, step)  # the objects are [n]: compared by n
                    for t in range(2):
                        held[t].setdefault(w, []).append(got[t])
                if step % 7 == 0:
                    stats = [pool.stats() for pool in pools]  # takes back the parked
                    assert stats[0]["navail"] == stats[1]["navail"], (rnd, step)
                    stacks = [[slot.obj for slot in pool._avail] for pool in pools]
                    assert stacks[0] == stacks[1], (rnd, step)
        finally:
            for pool in pools:
                pool.shutdown()


@pytest.mark.parametrize("nobjs", [1, 3])
def test_no_waiter_sleeps_beside_a_parked_object(Pool: Any, nobjs: int) -> None:
    """Threads outnumber the objects and return them as fast as they can: a return
    that parks while another thread queues must wake it (else that thread sleeps
    until its timeout with an object idle)."""
    nthreads, rounds, pairs = 8, 10, 300
    pool = Pool(lambda n: [n], max_size=nobjs, timeout=20.0)
    errors: list[str] = []
    try:
        for rnd in range(rounds):
            barrier = threading.Barrier(nthreads)

            def worker(barrier: threading.Barrier = barrier) -> None:
                barrier.wait(DEADLINE)
                for _ in range(pairs):
                    o = pool.get()
                    pool.ret(o)

            run_threads([worker] * nthreads, errors, deadline=60)
            assert not errors, f"round {rnd}: {errors[0]}"
            s = pool.stats()
            assert (s["nusing"], s["nwaiting"]) == (0, 0), s
            assert 1 <= s["navail"] == s["nobjs"] <= nobjs, s
            assert s["nreturns"] == s["nuses"] == (rnd + 1) * nthreads * pairs
    finally:
        pool.shutdown()


def test_concurrent_double_returns_of_a_lent_object(Pool: Any, workers: list[Worker]) -> None:
    """The getter returns through its bucket while other threads return the same
    object through the pool's lock (a caller's bug): one return counts, once."""
    pool = Pool(lambda n: [n], max_size=2)
    try:
        for rnd in range(100):
            before = pool.stats()
            getter = workers[rnd % len(workers)]
            obj = getter.run(pool.get)
            barrier = threading.Barrier(4)
            done: list[threading.Thread] = []

            def racer(obj: Any = obj, barrier: threading.Barrier = barrier) -> None:
                barrier.wait(DEADLINE)
                pool.ret(obj)

            for _ in range(3):
                t = threading.Thread(target=racer)
                t.start()
                done.append(t)
            getter.run(racer)
            for t in done:
                t.join(DEADLINE)
            s = pool.stats()
            assert s["nreturns"] - before["nreturns"] == 1, rnd
            assert s["nbad_returns"] - before["nbad_returns"] == 3, rnd
            assert s["nusing"] == 0 and [slot.obj for slot in pool._avail].count(obj) == 1, rnd
    finally:
        pool.shutdown()


@pytest.fixture
def bucket_mates() -> Iterator[list[Worker]]:
    """Three threads alive for the test, all in one bucket (threads are started
    until three share one; the others are stopped)."""
    started: list[Worker] = []
    try:
        by_bucket: dict[int, list[Worker]] = {}
        while True:
            w = Worker()
            started.append(w)
            by_bucket.setdefault(w.bucket, []).append(w)
            if len(by_bucket[w.bucket]) == 3:
                break
            assert len(started) < 500, "no three threads in one bucket"
        yield by_bucket[w.bucket]
    finally:
        for w in started:
            w.stop()


@pytest.mark.parametrize("nobjs", [2, 3, 6])
def test_threads_of_one_bucket_never_share_an_object(
    Pool: Any, bucket_mates: list[Worker], nobjs: int
) -> None:
    """Threads of one bucket hammer the pool: one's return through the pool's lock
    parks an object that another takes back at once without it.  No object is
    ever held by two threads, and after every round each is idle exactly once
    (with the GIL off, the slot was parked before it was marked idle: a mate took
    it, then the late store marked it idle while held, and its return was lost)."""
    rounds, pairs = 20, 2000
    pool = Pool(lambda n: [n, None], max_size=nobjs, timeout=DEADLINE)
    try:
        for rnd in range(rounds):
            before = pool.stats()
            barrier = threading.Barrier(len(bucket_mates))

            def hammer(me: int, barrier: threading.Barrier = barrier) -> list[str]:
                problems = []
                barrier.wait(DEADLINE)
                for i in range(pairs):
                    o = pool.get()
                    if o[1] is not None:
                        problems.append(f"pair {i}: {o[0]} held by {o[1]} and {me}")
                    o[1] = me
                    if i % 3 == me:  # now and then two at once: the bucket's lent changes
                        try:
                            o2 = pool.get(0)  # (waiting here could deadlock the mates)
                        except TimeOut:
                            o2 = None
                        if o2 is not None:
                            if o2[1] is not None:
                                problems.append(f"pair {i}: {o2[0]} held by {o2[1]} and {me}")
                            o2[1] = me
                            o2[1] = None
                            pool.ret(o2)
                    o[1] = None
                    pool.ret(o)
                return problems

            for me, w in enumerate(bucket_mates):
                w.start(partial(hammer, me))
            problems = [p for w in bucket_mates for p in w.result()]
            assert not problems, f"round {rnd}: {problems[:5]}"
            s = pool.stats()
            idle = [slot.obj[0] for slot in pool._avail]
            assert (s["nusing"], s["nwaiting"], s["nbad_returns"]) == (0, 0, 0), (rnd, s)
            assert sorted(idle) == sorted(set(idle)) and len(idle) == s["nobjs"], (rnd, idle, s)
            done = s["nreturns"] - before["nreturns"]
            assert done == s["nuses"] - before["nuses"] >= len(bucket_mates) * pairs, (rnd, s)
    finally:
        pool.shutdown()
