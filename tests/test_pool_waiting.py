"""Timeouts, first-come-first-served waiting, barging and hand-off, shutdown wake-ups."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ppp import PoolException, TimeOut
from ppp._common import CREATE, GOT, HANDOFF_PASSES, QUEUED


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


@pytest.mark.parametrize("handoff_after", [0.0, 0.001])
def test_waiters_served_first_come_first_served(
    Pool: Any, counter: Any, handoff_after: float
) -> None:
    """With nobody barging, waiters are served in order whether each object is
    handed to the oldest (``handoff_after=0``: always) or made idle for it."""
    pool = Pool(counter, min_size=0, max_size=1, handoff_after=handoff_after)
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


def test_newcomer_never_barges_past_a_waiter_with_handoff_after_0(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=1, handoff_after=0)
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
    pool = Pool(counter, min_size=0, max_size=1, handoff_after=0)
    held = pool.get()
    waiter = pool._Waiter()

    assert pool._lk_take(waiter, False, pool._now()) == QUEUED
    pool.ret(held)  # granted to the (fake) waiter, which then "dies"
    assert waiter.slot is not None and pool.stats()["nusing"] == 1
    pool._cancel(waiter)
    s = pool.stats()
    assert (s["nusing"], s["navail"], s["nwaiting"]) == (0, 1, 0)
    assert pool.get(timeout=0) is held


def test_interrupted_wait_after_shutdown_closes_its_grant(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=1, closer=counter.close, handoff_after=0)
    held = pool.get()

    waiter = pool._Waiter()
    assert pool._lk_take(waiter, False, pool._now()) == QUEUED
    pool.ret(held)  # granted to the waiter...
    pool.shutdown()  # ...the pool shuts down before the waiter wakes...
    pool._cancel(waiter)  # ...and the waiter dies: the object is closed, not parked
    s = pool.stats()
    assert counter.closed == [held]
    assert (s["nobjs"], s["nusing"], s["navail"]) == (0, 0, 0)


# ------------------------------------------------- barging and hand-off (tickets)
#
# A queued ``Waiter`` ticket driven by hand is a waiting thread frozen at will: its
# lock released means "woken"; ``_lk_retry`` is what that thread does once it runs.


def _queue(pool: Any, clock: Any) -> Any:
    ticket = pool._Waiter()
    assert pool._lk_take(ticket, False, clock()) == QUEUED
    return ticket


def _released(ticket: Any) -> bool:
    """Whether the ticket's lock was released (then it is taken again, as the woken
    thread's ``acquire`` would)."""
    return bool(ticket.lock.acquire(False))


def test_a_return_wakes_the_oldest_waiter_and_a_newcomer_may_barge(
    Pool: Any, counter: Any, clock: Any
) -> None:
    pool = Pool(counter, min_size=0, max_size=1, clock=clock)
    held = pool.get()
    first, second = _queue(pool, clock), _queue(pool, clock)
    pool.ret(held)  # nobody starves: made idle, the oldest waiter woken to compete
    assert _released(first) and not _released(second)
    assert (first.slot, second.slot, pool.stats()["navail"]) == (None, None, 1)
    assert pool.get(timeout=0) is held  # a newcomer barges
    assert pool._lk_retry(first, clock()) == QUEUED  # the woken waiter lost: it waits again
    assert list(pool._waiters) == [first, second]  # in its place
    pool.ret(held)
    assert _released(first) and not _released(second)
    assert pool._lk_retry(first, clock()) == GOT and first.slot is not None
    assert first.slot.obj is held
    s = pool.stats()
    assert (s["nhandoffs"], s["max_passed"], s["nwaiting"]) == (0, 2, 1)
    pool._cancel(first)  # gives the object back: idle, and the next waiter woken
    assert _released(second)
    pool._cancel(second)
    assert pool.stats()["navail"] == 1


def test_a_waiter_waiting_handoff_after_is_handed_the_next_return(
    Pool: Any, counter: Any, clock: Any
) -> None:
    pool = Pool(counter, min_size=0, max_size=1, clock=clock, handoff_after=0.5)
    held = pool.get()
    first, second = _queue(pool, clock), _queue(pool, clock)
    pool.ret(held)
    assert _released(first)
    assert pool.get(timeout=0) is held  # barged
    clock.advance(0.5)
    assert pool._lk_retry(first, clock()) == QUEUED  # starving: the pool switches to hand-off
    pool.ret(held)  # handed straight to the oldest waiter: no newcomer can take it
    assert first.slot is not None and first.slot.obj is held and _released(first)
    with pytest.raises(TimeOut):
        pool.get(timeout=0)
    s = pool.stats()
    assert (s["nhandoffs"], s["nwaiting"], s["longest_wait"]) == (1, 1, 0.5)
    pool._lk_pickup(first.slot, clock())
    pool.ret(held)  # still hand-off mode: the second waiter starved as long
    assert second.slot is not None and _released(second)
    pool._lk_pickup(second.slot, clock())
    pool.ret(held)  # the queue drained: idle again
    assert pool.stats()["navail"] == 1 and pool.stats()["nhandoffs"] == 1


def test_only_time_in_normal_mode_counts_towards_handoff_after(
    Pool: Any, counter: Any, clock: Any
) -> None:
    """A waiter starves after ``handoff_after`` seconds in which a newcomer could
    have passed it (normal mode), not after as long in the queue: in hand-off mode
    nobody passes it, and counting that time made every waiter queued behind a
    hand-off starve in turn, so that the pool stayed in hand-off mode (two thread
    switches per pair) for as long as threads waited."""
    pool = Pool(counter, min_size=0, max_size=1, clock=clock, handoff_after=0.5)
    held = pool.get()
    first = _queue(pool, clock)
    clock.advance(0.125)  # (steps exact in binary: the clock starts at 1000.0)
    second = _queue(pool, clock)
    clock.advance(0.375)  # first: 0.5 s in normal mode, second: 0.375 s
    pool.ret(held)  # first starves: handed to it, and hand-off mode from now on
    assert first.slot is not None and _released(first)
    assert pool.stats()["nhandoffs"] == 1
    clock.advance(1.0)  # in hand-off mode: nobody passes the second waiter
    third = _queue(pool, clock)  # queued in hand-off mode
    clock.advance(1.0)
    pool._lk_pickup(first.slot, clock())
    pool.ret(held)  # still hand-off mode: to the second waiter, 0.375 s passed, not 2.375
    assert second.slot is not None and _released(second)
    pool._lk_pickup(second.slot, clock())
    pool.ret(held)  # it did not starve: back to normal mode, the third woken to compete
    assert third.slot is None and _released(third)
    assert pool.get(timeout=0) is held  # a newcomer may barge again
    s = pool.stats()
    assert (s["nhandoffs"], s["nwaiting"], s["longest_wait"]) == (1, 1, 2.375)
    clock.advance(0.375)
    assert pool._lk_retry(third, clock()) == QUEUED  # lost, 0.375 s passed: not starving
    pool.ret(held)
    assert third.slot is None and _released(third)
    assert pool.get(timeout=0) is held
    clock.advance(0.125)
    assert pool._lk_retry(third, clock()) == QUEUED  # 0.5 s in normal mode: it starves
    pool.ret(held)  # handed to it, though a newcomer came
    assert third.slot is not None and _released(third)
    with pytest.raises(TimeOut):
        pool.get(timeout=0)
    assert pool.stats()["nhandoffs"] == 2


def test_a_waiter_passed_over_handoff_passes_times_is_handed_the_next_return(
    Pool: Any, counter: Any, clock: Any
) -> None:
    """No time passes: the count alone bounds how often a waiter is passed over."""
    pool = Pool(counter, min_size=0, max_size=1, clock=clock)
    held = pool.get()
    first = _queue(pool, clock)
    for _ in range(HANDOFF_PASSES):
        pool.ret(held)  # made idle: a chance for a newcomer...
        assert pool.get(timeout=0) is held  # ...taken
    assert first.slot is None and _released(first)
    pool.ret(held)  # HANDOFF_PASSES chances given away: this one is handed to it
    assert first.slot is not None and first.slot.obj is held
    s = pool.stats()
    assert (s["max_passed"], s["nhandoffs"]) == (HANDOFF_PASSES, 1)
    assert pool._lk_retry(first, clock()) == GOT


def test_a_freed_slot_goes_to_the_oldest_waiter_even_if_woken(
    Pool: Any, counter: Any, clock: Any
) -> None:
    """A creation is always handed to the oldest waiter; if that one was woken to
    compete for an idle object, the next waiter is woken in its stead."""
    pool = Pool(counter, min_size=0, max_size=2, clock=clock)
    a, b = pool.get(), pool.get()
    first, second = _queue(pool, clock), _queue(pool, clock)
    pool.ret(a)
    assert _released(first) and not _released(second)
    pool.discard(b)  # a slot is free: a creation for the oldest waiter
    assert first.create >= 0 and not first.queued
    assert _released(second)  # woken for the idle object in its stead
    assert pool._lk_retry(first, clock()) == CREATE
    assert pool._lk_retry(second, clock()) == GOT and second.slot.obj is a
    pool._cancel(first)
    pool._cancel(second)
    s = pool.stats()
    assert (s["nwaiting"], s["npending"], s["navail"]) == (0, 0, 1)


def test_a_woken_waiter_that_times_out_passes_the_wake_up_on(
    Pool: Any, counter: Any, clock: Any
) -> None:
    pool = Pool(counter, min_size=0, max_size=1, clock=clock)
    held = pool.get()
    first, second = _queue(pool, clock), _queue(pool, clock)
    pool.ret(held)
    assert _released(first)
    assert not pool._lk_timeout(first)  # its wait ran out before it could try
    assert _released(second)  # the idle object is not left with every waiter asleep
    assert pool._lk_retry(second, clock()) == GOT
    assert pool.stats()["ntimeouts"] == 1
    pool._cancel(second)


def test_shutdown_fails_woken_waiters_too(Pool: Any, counter: Any, clock: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=1, clock=clock)
    held = pool.get()
    first, second = _queue(pool, clock), _queue(pool, clock)
    pool.ret(held)
    assert _released(first)
    pool.shutdown()
    assert first.error and second.error and _released(second)
    from ppp._common import SHUT

    assert pool._lk_retry(first, clock()) == SHUT


def test_a_woken_thread_that_loses_waits_again_and_is_served(Pool: Any, counter: Any) -> None:
    """Real threads: a waiter keeps losing to a thread that gets and returns in a
    loop, and is still served (hand-off after ``HANDOFF_PASSES`` chances at most)."""
    pool = Pool(counter, min_size=0, max_size=1, handoff_after=1e9)
    held = pool.get()
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(pool.get(timeout=30)))
    t.start()
    wait_for(lambda: pool.stats()["nwaiting"] == 1)
    pool.ret(held)
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        try:
            pool.ret(pool.get(timeout=0))
        except TimeOut:
            time.sleep(0.001)
    t.join(10)
    assert got == [held]
    assert pool.stats()["max_passed"] <= HANDOFF_PASSES
    pool.ret(held)
