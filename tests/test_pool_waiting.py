"""Timeouts, first-come-first-served waiting, and shutdown wake-ups."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ppp import PoolException, TimeOut


def wait_for(predicate: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


def test_timeout_zero_does_not_wait(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=1, timeout=30)
    pool.get()
    start = time.monotonic()
    with pytest.raises(TimeOut, match="timeout after 0"):
        pool.get(timeout=0)
    assert time.monotonic() - start < 5  # a generous bound: it must not wait 30 s
    assert pool.stats()["ntimeouts"] == 1


def test_pool_default_timeout_applies(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=1, timeout=0.05)
    pool.get()
    with pytest.raises(TimeOut, match="timeout after 0.05"):
        pool.get()
    with pytest.raises(TimeOut, match="timeout after 0.01"):
        pool.get(timeout=0.01)  # explicit timeout wins over the pool's
    s = pool.stats()
    assert (s["ntimeouts"], s["nwaiting"], s["nwaits"]) == (2, 0, 2)


def test_timeout_none_waits_until_returned(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=1)
    o = pool.get()
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(pool.get()))
    t.start()
    wait_for(lambda: pool.stats()["nwaiting"] == 1)
    pool.ret(o)
    t.join(10)
    assert got == [o]
    s = pool.stats()
    assert s["nwaiting"] == 0 and s["max_waiting"] == 1 and s["wait_time"]["max"] > 0


def test_waiters_served_first_come_first_served(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=1)
    o = pool.get()
    order: list[int] = []
    lock = threading.Lock()

    def waiter(i: int) -> None:
        obj = pool.get()
        with lock:
            order.append(i)
        pool.ret(obj)

    threads = []
    for i in range(8):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        wait_for(lambda i=i: pool.stats()["nwaiting"] == i + 1)
    pool.ret(o)
    for t in threads:
        t.join(10)
    assert order == list(range(8))


def test_newcomer_never_barges_past_a_waiter(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=1)
    o = pool.get()
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(pool.get()))
    t.start()
    wait_for(lambda: pool.stats()["nwaiting"] == 1)
    pool.ret(o)  # handed straight to the waiter...
    with pytest.raises(TimeOut):
        pool.get(timeout=0)  # ...so a newcomer finds nothing idle
    t.join(10)
    assert got == [o]


def test_freed_slot_goes_to_waiter_as_a_creation(Pool: Any) -> None:
    made: list[int] = []

    def fun(n: int) -> list[int]:
        made.append(n)
        return [n]

    pool = Pool(fun, min_size=0, max_size=1, max_use=1)
    o = pool.get()
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(pool.get()))
    t.start()
    wait_for(lambda: pool.stats()["nwaiting"] == 1)
    pool.ret(o)  # worn out: closed, and its slot lets the waiter create
    t.join(10)
    assert got == [[1]] and made == [0, 1]
    assert pool.stats()["nwornout"] == 1


def test_failed_creation_passes_slot_to_next_waiter(Pool: Any) -> None:
    gate = threading.Event()

    def fun(n: int) -> list[int]:
        if n == 1:
            gate.wait(10)
            raise OSError("creation 1 failed")
        return [n]

    pool = Pool(fun, min_size=0, max_size=1, max_use=1)
    first = pool.get()
    results: dict[str, Any] = {}  # by thread: the two may finish in either order

    def w() -> None:
        name = threading.current_thread().name
        try:
            results[name] = pool.get()
        except OSError as exc:
            results[name] = exc

    t1 = threading.Thread(target=w, name="t1")
    t1.start()
    wait_for(lambda: pool.stats()["nwaiting"] == 1)
    t2 = threading.Thread(target=w, name="t2")
    t2.start()
    wait_for(lambda: pool.stats()["nwaiting"] == 2)
    pool.ret(first)  # retired: t1 creates #1 (blocks), t2 still waits
    wait_for(lambda: pool.stats()["nwaiting"] == 1)
    gate.set()  # #1 fails: the freed slot goes to t2, which creates #2
    t1.join(10)
    t2.join(10)
    assert isinstance(results["t1"], OSError) and results["t2"] == [2], results
    s = pool.stats()
    assert (s["nobjs"], s["npending"], s["nusing"]) == (1, 0, 1)


def test_shutdown_wakes_waiters_with_pool_exception(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=1, closer=counter.close)
    o = pool.get()
    errors: list[BaseException] = []

    def w() -> None:
        try:
            pool.get()
        except PoolException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=w) for _ in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: pool.stats()["nwaiting"] == 3)
    pool.shutdown()
    for t in threads:
        t.join(10)
    assert len(errors) == 3 and all("shut down" in str(e) for e in errors)
    assert not isinstance(errors[0], TimeOut)
    assert counter.closed == []  # the object in use is not closed...
    pool.ret(o)
    assert counter.closed == [o]  # ...until it comes back
    assert pool.stats()["nobjs"] == 0


def test_interrupted_wait_gives_back_its_grant(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=1)
    held = pool.get()
    waiter = pool._Waiter()
    from ppp._common import QUEUED

    assert pool._lk_take(waiter, False, pool._now()) == QUEUED
    pool.ret(held)  # granted to the (fake) waiter, which then "dies"
    assert waiter.slot is not None and pool.stats()["nusing"] == 1
    pool._cancel(waiter)
    s = pool.stats()
    assert (s["nusing"], s["navail"], s["nwaiting"]) == (0, 1, 0)
    assert pool.get(timeout=0) is held


def test_interrupted_wait_after_shutdown_closes_its_grant(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=1, closer=counter.close)
    held = pool.get()
    from ppp._common import QUEUED

    waiter = pool._Waiter()
    assert pool._lk_take(waiter, False, pool._now()) == QUEUED
    pool.ret(held)  # granted to the waiter...
    pool.shutdown()  # ...the pool shuts down before the waiter wakes...
    pool._cancel(waiter)  # ...and the waiter dies: the object is closed, not parked
    s = pool.stats()
    assert counter.closed == [held]
    assert (s["nobjs"], s["nusing"], s["navail"]) == (0, 0, 0)
