"""Hostile hooks and the kill/return race (issue 11), on both twins.

- A ``BaseException`` (a custom one, ``KeyboardInterrupt``, ``SystemExit``) from
  ``health`` or ``closer`` does not stop housekeeping: expiry, retirement and the
  ``min_size`` refill go on, round after round.
- ``shutdown()`` closes every idle object even when ``closer`` raises or is
  interrupted; the interrupt is raised again once all are closed.
- A ``health`` call that hangs counts as failed after ``health_timeout``: its
  object leaves the pool, housekeeping goes on and ``max_using_delay_kill`` keeps
  firing.
- A health round over 100,000 idle objects checks each exactly once.
- The kill/return race behind ``Res(7) handed to w20 after it was closed``: an
  object granted to a waiting thread is killed by housekeeping before that thread
  runs, and ``get`` then hands out the closed object (or, if the waiter is
  interrupted, puts it back on the idle stack).  Reproduced deterministically.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from invariants import Maker, Res, call_with_deadline, check_counts, check_pool, wait_for

from ppp import PoolException


class Boom(BaseException):
    """Not an Exception: what gevent's Timeout or a framework's abort look like."""


FOREVER = 1e10  # a housekeeping delay past threading.TIMEOUT_MAX: no round by itself
DEADLINE = 10.0  # seconds for an asynchronous effect of 0.02-0.5 s housekeeping


def shutdown(pool: Any) -> None:
    """``pool.shutdown(delay=5)`` from another thread with a deadline: a shutdown
    that hangs fails the test instead of hanging the session."""
    call_with_deadline(lambda: pool.shutdown(delay=5.0), "shutdown()", 30.0)


def _stats(pool: Any) -> dict[str, Any]:
    return pool.stats()  # type: ignore[no-any-return]


def _ns(items: list[dict[str, Any]]) -> set[int]:
    return {item["n"] for item in items}


# ---------------------------------------------------------- housekeeping lives on


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt, SystemExit])
def test_health_raising_base_exception_keeps_housekeeping(
    Pool: Any, exc: type[BaseException]
) -> None:
    """``health`` raising a BaseException: each checked object is retired, the pool
    refills ``min_size``, and rounds go on (health is called again and again)."""
    maker = Maker()
    checked: list[int] = []

    def health(obj: Res) -> bool:
        checked.append(obj.n)
        raise exc(f"health of {obj}")

    pool = Pool(maker.fun, max_size=6, min_size=2, delay=0.02, health=health, closer=maker.closer)
    try:
        wait_for(
            lambda: len(set(checked)) >= 8 and len(maker.closed()) >= 6,
            "health checks on fresh objects round after round (housekeeping alive)",
            timeout=DEADLINE,
        )
        rounds = _stats(pool)["hk_rounds"]
        wait_for(lambda: _stats(pool)["hk_rounds"] >= rounds + 5, "5 more rounds", DEADLINE)
        wait_for(lambda: _stats(pool)["nobjs"] >= 1, "min_size refilled", DEADLINE)
    finally:
        shutdown(pool)
    check_counts(pool, [], maker)


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt, SystemExit])
def test_closer_raising_base_exception_keeps_housekeeping(
    Pool: Any, exc: type[BaseException]
) -> None:
    """``closer`` raising a BaseException on expiry: every expired object is still
    closed, ``min_size`` is kept, and later expiries happen too."""
    maker = Maker()

    def closer(obj: Res) -> None:
        maker.closer(obj)
        raise exc(f"closer of {obj}")

    pool = Pool(maker.fun, max_size=8, min_size=2, max_avail_delay=0.05, delay=0.02, closer=closer)
    try:
        objs = [pool.get() for _ in range(5)]
        for obj in objs:
            pool.ret(obj)
        wait_for(
            lambda: len(maker.closed()) >= 3,
            "the 3 surplus idle objects expired and closed",
            DEADLINE,
        )
        wait_for(lambda: _stats(pool)["nobjs"] == 2, "min_size kept", DEADLINE)
        # a second wave: housekeeping must still be alive to expire it
        objs = [pool.get() for _ in range(5)]
        for obj in objs:
            pool.ret(obj)
        wait_for(lambda: len(maker.closed()) >= 6, "the second wave expired too", DEADLINE)
        wait_for(
            lambda: _stats(pool)["nobjs"] == 2, "min_size kept after the second wave", DEADLINE
        )
        s = _stats(pool)
        assert s["nobjs"] == s["navail"] == 2
    finally:
        try:
            shutdown(pool)
        except BaseException as caught:  # the closer raises at shutdown too
            assert isinstance(caught, exc)
    check_counts(pool, [], maker)


# --------------------------------------------------------------------- shutdown


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt, Boom])
def test_shutdown_closes_every_idle_object_when_closer_fails(
    Pool: Any, exc: type[BaseException]
) -> None:
    """The first ``closer`` call raises: the other idle objects are closed all the
    same; an interrupt is raised again after all are closed, an error is logged."""
    maker = Maker()
    calls: list[int] = []

    def closer(obj: Res) -> None:
        maker.closer(obj)
        calls.append(obj.n)
        if len(calls) == 1:
            raise exc("closer fails")

    pool = Pool(maker.fun, max_size=6, min_size=5, closer=closer)
    held = pool.get()
    assert _stats(pool)["navail"] == 4
    if issubclass(exc, Exception):
        shutdown(pool)
    else:
        with pytest.raises(exc):
            shutdown(pool)
    idle = [res for res in maker.snapshot().values() if res is not held]
    assert [res for res in idle if not res.closed] == [], "idle objects left unclosed"
    assert not held.closed, "an object in use was closed at shutdown"
    pool.ret(held)  # returned after shutdown: closed
    assert held.closed == 1
    check_counts(pool, [], maker)
    with pytest.raises(PoolException):
        pool.get(0)


# ------------------------------------------------------------- hung health check


def test_hanging_health_check_counts_as_failed(Pool: Any) -> None:
    """A ``health`` call that never answers: after ``health_timeout`` its object is
    retired, housekeeping goes on (other objects are checked, an over-held object
    is still killed), and the hung call's thread is not waited for."""
    maker = Maker()
    release = threading.Event()
    hung: list[Res] = []
    checked_after: list[int] = []

    def health(obj: Res) -> bool:
        if not hung:
            hung.append(obj)
            release.wait(60)
        else:
            checked_after.append(obj.n)
        return True

    pool = Pool(
        maker.fun,
        max_size=6,
        min_size=3,
        delay=0.05,
        health=health,
        health_timeout=0.2,
        max_using_delay_kill=0.5,
        closer=maker.closer,
    )
    try:
        held = pool.get()
        wait_for(lambda: hung, "a health check hanging", DEADLINE)
        rounds = _stats(pool)["hk_rounds"]
        victim = hung[0]

        def retired() -> bool:
            s = _stats(pool)
            return victim.n not in _ns(s["avail"]) | _ns(s["using"])

        wait_for(retired, "the object of the hung health check retired", DEADLINE)
        wait_for(
            lambda: held.closed, "the over-held object killed despite the hung check", DEADLINE
        )
        wait_for(lambda: _stats(pool)["hk_rounds"] >= rounds + 5, "housekeeping going on", DEADLINE)
        wait_for(lambda: len(set(checked_after)) >= 2, "other objects health-checked", DEADLINE)
        assert _stats(pool)["nkilled"] >= 1
    finally:
        release.set()
        shutdown(pool)
    wait_for(lambda: victim.closed, "the hung object closed once its check returned", DEADLINE)
    assert victim.closed == 1


def test_closer_interrupted_in_a_health_round_keeps_the_round(
    Pool: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A closer interrupted while the health round retires an unhealthy object is
    logged and the round goes on: every idle object is still checked (before, the
    health runner thread died and the round's other checks were skipped)."""
    maker = Maker()
    checked: list[int] = []
    interrupted: list[int] = []
    errors: list[str] = []

    def health(obj: Res) -> bool:
        checked.append(obj.n)
        return obj.n != 0

    def closer(obj: Res) -> None:
        if not interrupted:
            interrupted.append(obj.n)
            raise KeyboardInterrupt("closer")
        maker.closer(obj)

    previous = threading.excepthook
    threading.excepthook = lambda args: errors.append(repr(args.exc_value))
    pool = Pool(maker.fun, max_size=0, min_size=0, health=health, delay=FOREVER, closer=closer)
    try:
        for rnd in range(5):
            checked.clear()
            objs = [pool.get() for _ in range(4)]
            for obj in objs:
                pool.ret(obj)
            expected = {obj.n for obj in objs}
            del objs
            with caplog.at_level(logging.ERROR, logger="ppp"):
                pool._hk_round()
            assert set(checked) == expected, f"round {rnd}: checked {checked}, idle {expected}"
            if rnd == 0:
                assert interrupted == [0]
                assert "closer interrupted in a health round" in caplog.text
            s = _stats(pool)
            assert s["navail"] == len(expected) - (rnd == 0), s
            assert not errors, errors
    finally:
        threading.excepthook = previous
        pool.shutdown()


# ----------------------------------------------------------- big health round


def test_health_round_over_100000_idle_objects(Pool: Any) -> None:
    """One health round over 100,000 idle objects checks each exactly once, retires
    the unhealthy ones (1 in 100: few error logs) and keeps the others idle (speed
    is measured in bench/)."""
    maker = Maker()
    checks: dict[int, int] = {}

    def health(obj: Res) -> bool:
        checks[obj.n] = checks.get(obj.n, 0) + 1
        return obj.n % 100 != 7

    n = 100_000
    pool = Pool(
        maker.fun, max_size=0, min_size=0, health=health, delay=FOREVER, closer=maker.closer
    )
    try:
        objs = [pool.get() for _ in range(n)]
        for obj in objs:
            pool.ret(obj)
        del objs
        pool._hk_round()
        assert len(checks) == n and set(checks.values()) == {1}, "each object checked once"
        bad = {i for i in range(n) if i % 100 == 7}
        s = _stats(pool)
        assert s["nobjs"] == s["navail"] == n - len(bad)
        assert s["bad_health"] == len(bad)
        assert all(bool(res.closed) == (res.n in bad) for res in maker.snapshot().values())
        assert _ns(s["avail"]) == set(range(n)) - bad
        check_pool(pool, [], maker)
    finally:
        pool.shutdown()


# ------------------------------------------------------------ kill/return race


def _gil_held_section() -> Callable[[], Any]:
    """No forced thread switch any more (a huge switch interval): a thread runs
    until it blocks, so a thread woken while the main thread runs Python code
    waits for the main thread to block.  Set before the waiter starts, so that
    the waiter runs until it blocks in ``get``.  The "ppp" logger is silenced
    meanwhile (no I/O that would release the GIL).  Returns the restorer."""
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        pytest.skip("needs the GIL to hold a woken thread back deterministically")
    old = sys.getswitchinterval()
    logger = logging.getLogger("ppp")
    disabled = logger.disabled
    logger.disabled = True
    sys.setswitchinterval(1000.0)

    def restore() -> None:
        sys.setswitchinterval(old)
        logger.disabled = disabled

    return restore


def _kill_pool(Pool: Any, maker: Maker, clock: Any, **kwargs: Any) -> Any:
    return Pool(
        maker.fun,
        max_size=1,
        min_size=1,
        max_using_delay_kill=10.0,
        delay=FOREVER,
        clock=clock,
        closer=maker.closer,
        **kwargs,
    )


def _waiter(pool: Any, got: list[Any], errors: list[BaseException]) -> threading.Thread:
    def body() -> None:
        try:
            got.append(pool.get(30.0))
        except BaseException as exc:  # checked by the test
            errors.append(exc)

    thread = threading.Thread(target=body, name="waiter", daemon=True)
    thread.start()
    wait_for(lambda: _stats(pool)["nwaiting"] == 1, "the waiter queued", DEADLINE)
    return thread


def test_kill_of_an_object_granted_to_a_waiter_not_yet_running(Pool: Any, clock: Any) -> None:
    """The stress failure, made deterministic.  A ``ret`` hands the object to the
    oldest waiter (checked out for it, ``last_get`` = now) and wakes it; before the
    waiter runs, a housekeeping round finds the object held past
    ``max_using_delay_kill``, forgets and closes it; the waiter then returns the
    closed object from ``get``.  The waiter must never get a killed object."""
    maker = Maker()
    pool = _kill_pool(Pool, maker, clock)
    first = pool.get()
    got: list[Any] = []
    errors: list[BaseException] = []
    restore = _gil_held_section()
    try:
        thread = _waiter(pool, got, errors)  # runs until it blocks in get
        pool.ret(first)  # granted to the waiter, which cannot run yet
        clock.advance(60.0)  # a loaded machine: the waiter stays off the CPU too long
        pool._hk_round()  # the kill
        waiter_ran = bool(got or errors)
    finally:
        restore()
    thread.join(10)
    assert not waiter_ran, "the waiter ran before the kill: the race was not set up"
    assert not errors, f"the waiter failed: {errors[0]!r}"
    obj = got[0]
    assert not obj.closed, f"get() handed out {obj}, killed and closed by housekeeping"
    pool.ret(obj)
    s = _stats(pool)
    assert s["nbad_returns"] == 0, "the object get() handed out was no longer the pool's"
    check_pool(pool, [], maker)
    pool.shutdown()


def test_waiter_interrupted_after_its_granted_object_was_killed(Pool: Any, clock: Any) -> None:
    """Same race, and the waiter is interrupted when it wakes
    (``PyThreadState_SetAsyncExc``): giving back what it was granted must not put
    the killed, closed object back on the idle stack (nor count it twice)."""
    maker = Maker()
    pool = _kill_pool(Pool, maker, clock)
    first = pool.get()
    got: list[Any] = []
    errors: list[BaseException] = []
    set_async = ctypes.pythonapi.PyThreadState_SetAsyncExc
    set_async.argtypes = (ctypes.c_ulong, ctypes.py_object)
    set_async.restype = ctypes.c_int
    restore = _gil_held_section()
    try:
        thread = _waiter(pool, got, errors)  # runs until it blocks in get
        pool.ret(first)
        clock.advance(60.0)
        pool._hk_round()
        assert thread.ident is not None
        set_async(thread.ident, KeyboardInterrupt)  # delivered as soon as it runs
        waiter_ran = bool(got or errors)
    finally:
        restore()
    thread.join(10)
    assert not waiter_ran, "the waiter ran before the kill: the race was not set up"
    held = [obj for obj in got if not getattr(obj, "closed", False)]
    assert not [obj for obj in got if obj.closed], f"get() handed out a closed object: {got}"
    check_pool(pool, held, maker)
    for obj in held:
        pool.ret(obj)
    pool.shutdown()


def test_kill_during_getter_never_hands_out_the_killed_object(Pool: Any, clock: Any) -> None:
    """A ``getter`` still running when housekeeping kills its object: ``get`` must
    not return the object it has just seen closed."""
    maker = Maker()
    entered = threading.Event()
    proceed = threading.Event()
    armed = [True]

    def getter(obj: Res) -> None:
        if armed[0]:
            armed[0] = False
            entered.set()
            proceed.wait(10)

    pool = _kill_pool(Pool, maker, clock, getter=getter)
    got: list[Any] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            got.append(pool.get(10.0))
        except BaseException as exc:  # checked by the test
            errors.append(exc)

    thread = threading.Thread(target=body, name="getter", daemon=True)
    thread.start()
    assert entered.wait(10)
    clock.advance(60.0)
    pool._hk_round()  # kills the object the getter is working on
    proceed.set()
    thread.join(10)
    assert not errors, f"get failed: {errors[0]!r}"
    assert not got[0].closed, f"get() returned {got[0]}, killed while its getter ran"
    pool.ret(got[0])
    check_pool(pool, [], maker)
    pool.shutdown()


def test_kill_during_retter_ignores_the_return(Pool: Any, clock: Any) -> None:
    """The race the stress test's comment names: a ``retter`` still running when the
    object is killed.  The return is ignored with a warning, the object is closed
    once and never comes back; a waiter gets a fresh object in the freed slot."""
    maker = Maker()
    entered = threading.Event()
    proceed = threading.Event()

    def retter(obj: Res) -> None:
        entered.set()
        proceed.wait(10)

    pool = _kill_pool(Pool, maker, clock, retter=retter)
    first = pool.get()
    got: list[Any] = []
    errors: list[BaseException] = []
    waiter = _waiter(pool, got, errors)

    def give_back() -> None:
        pool.ret(first)

    returner = threading.Thread(target=give_back, name="returner", daemon=True)
    returner.start()
    assert entered.wait(10)
    clock.advance(60.0)
    pool._hk_round()  # kills ``first`` while its retter runs; the waiter may create
    proceed.set()
    returner.join(10)
    waiter.join(10)
    assert not errors, f"the waiter failed: {errors[0]!r}"
    assert first.closed == 1
    assert got and got[0] is not first and not got[0].closed
    s = _stats(pool)
    assert s["nkilled"] == 1 and s["nbad_returns"] == 1
    pool.ret(got[0])
    check_pool(pool, [], maker)
    pool.shutdown()
