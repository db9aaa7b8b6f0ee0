"""Retirement and housekeeping on a fake clock: max_use, max_lifetime, idle expiry,
health checks, long-hold warnings, kills, the derived delay and the thread."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref
from typing import Any

import pytest

NO_THREAD = 1e9  # a delay so long that the housekeeper never runs a round by itself


def test_max_use_retires_on_return(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, max_use=2, closer=counter.close)
    a = pool.get()
    pool.ret(a)
    assert pool.get() is a
    pool.ret(a)  # second use: worn out
    assert counter.closed == [a]
    s = pool.stats()
    assert (s["nwornout"], s["nobjs"], s["ndestroys"]) == (1, 0, 1)
    assert pool.get() is not a


def test_retirement_refills_min_size(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=2, max_use=1)
    a = pool.get()
    pool.ret(a)
    assert pool.stats()["nobjs"] == 2 and counter.made == [0, 1, 2]


def test_max_lifetime_on_return_and_when_idle(Pool: Any, counter: Any, clock: Any) -> None:
    pool = Pool(
        counter, min_size=0, max_lifetime=10, delay=NO_THREAD, clock=clock, closer=counter.close
    )
    a, b = pool.get(), pool.get()
    clock.advance(5)
    pool.ret(a)  # 5 s old: kept
    assert counter.closed == []
    clock.advance(5)
    pool.ret(b)  # 10 s old: retired on return
    assert counter.closed == [b]
    pool._hk_round()  # a is idle and 10 s old: retired by housekeeping
    assert counter.closed == [b, a]
    assert pool.stats()["nexpired"] == 2 and pool.stats()["nobjs"] == 0


def test_max_lifetime_replaces_below_min_size(Pool: Any, counter: Any, clock: Any) -> None:
    pool = Pool(counter, min_size=2, max_lifetime=10, delay=NO_THREAD, clock=clock)
    clock.advance(11)
    pool._hk_round()
    assert pool.stats()["nobjs"] == 2 and counter.made == [0, 1, 2, 3]


def test_idle_expiry_stops_at_min_size(Pool: Any, counter: Any, clock: Any) -> None:
    pool = Pool(
        counter, min_size=2, max_avail_delay=30, delay=NO_THREAD, clock=clock,
        closer=counter.close,
    )  # fmt: skip
    objs = [pool.get() for _ in range(5)]
    for i, o in enumerate(objs):
        pool.ret(o)
        clock.advance(1 if i < 4 else 0)
    clock.advance(26)  # objs[0] idle 30 s, objs[1] 29 s, ...
    pool._hk_round()
    assert counter.closed == [objs[0]]
    clock.advance(10)  # all idle long enough: expire the oldest down to min_size
    pool._hk_round()
    assert counter.closed == [objs[0], objs[1], objs[2]]
    s = pool.stats()
    assert (s["nobjs"], s["nrecycled"]) == (2, 3)
    assert [pool.get(), pool.get()] == [objs[4], objs[3]]


def test_health_check_replaces_bad_objects(Pool: Any, counter: Any) -> None:
    bad: set[int] = set()

    def health(o: Any) -> bool:
        if o["n"] == 99:
            raise RuntimeError("ping failed")
        return o["n"] not in bad

    pool = Pool(counter, min_size=3, health=health, delay=NO_THREAD, closer=counter.close)
    held = pool.get()
    bad.update({0, 1, 2})
    pool._hk_round()
    # the idle ones (0, 1) are checked, closed and replaced (3, 4); the held one (2,
    # LIFO) is never checked while in use
    assert held == {"n": 2}
    assert counter.closed == [{"n": 0}, {"n": 1}]
    assert counter.made == [0, 1, 2, 3, 4]
    s = pool.stats()
    assert s["nhealth"] == 2 and s["bad_health"] == 2 and s["hc_rounds"] == 1
    assert s["nobjs"] == 3 and s["navail"] == 2
    pool.ret(held)


def test_health_exception_counts_as_bad(Pool: Any, pool_log: Any) -> None:
    pool = Pool(lambda n: {"n": 99}, min_size=1, health=lambda o: 1 / 0, delay=NO_THREAD)
    pool._hk_round()
    s = pool.stats()
    assert (s["hc_errors"], s["bad_health"]) == (1, 1)
    assert "health check raised" in pool_log.text
    assert s["nobjs"] == 1  # refilled to min_size


def test_health_freq(Pool: Any, counter: Any) -> None:
    checks: list[Any] = []

    def health(o: Any) -> bool:
        checks.append(o)
        return True

    pool = Pool(counter, min_size=1, health=health, health_freq=3, delay=NO_THREAD)
    for _ in range(7):
        pool._hk_round()
    assert len(checks) == 2  # rounds 3 and 6


def test_long_hold_warning_once_per_holding(
    Pool: Any, counter: Any, clock: Any, pool_log: Any
) -> None:
    pool = Pool(counter, min_size=0, max_using_delay=5, delay=NO_THREAD, clock=clock)
    o = pool.get()
    clock.advance(6)
    pool._hk_round()
    pool._hk_round()
    assert pool_log.text.count("held longer than max_using_delay") == 1
    pool.ret(o)
    assert pool.stats()["nkilled"] == 0


def test_leak_trace_names_thread_and_stack(
    Pool: Any, counter: Any, clock: Any, pool_log: Any
) -> None:
    pool = Pool(
        counter, min_size=0, max_using_delay=5, delay=NO_THREAD, clock=clock, leak_trace=True
    )

    def forgetful_handler() -> None:
        pool.get()

    t = threading.Thread(target=forgetful_handler, name="request-42")
    t.start()
    t.join()
    clock.advance(6)
    pool._hk_round()
    assert "by thread 'request-42'" in pool_log.text
    assert "forgetful_handler" in pool_log.text
    assert pool.stats()["using"][0]["holder"] == "request-42"


def test_kill_over_held_object(Pool: Any, counter: Any, clock: Any, pool_log: Any) -> None:
    pool = Pool(
        counter, min_size=0, max_size=1, max_using_delay_kill=10, delay=NO_THREAD, clock=clock,
        closer=counter.close,
    )  # fmt: skip
    o = pool.get()
    clock.advance(11)
    pool._hk_round()
    assert counter.closed == [o]
    s = pool.stats()
    assert (s["nkilled"], s["nobjs"], s["nusing"]) == (1, 0, 0)
    assert "killed after max_using_delay_kill" in pool_log.text
    fresh = pool.get(timeout=0)  # the slot was freed
    pool.ret(o)  # the late return is ignored with a warning
    assert pool.stats()["nbad_returns"] == 1 and pool.stats()["nusing"] == 1
    pool.ret(fresh)


def test_kill_frees_slot_for_a_waiter(Pool: Any, counter: Any, clock: Any) -> None:
    pool = Pool(
        counter, min_size=0, max_size=1, max_using_delay_kill=10, delay=NO_THREAD, clock=clock
    )
    pool.get()
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(pool.get()))
    t.start()
    deadline = time.monotonic() + 10
    while pool.stats()["nwaiting"] != 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    clock.advance(11)
    pool._hk_round()
    t.join(10)
    assert got and got[0]["n"] == 1


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, 0.0),
        ({"health": bool}, 60.0),
        ({"max_avail_delay": 30}, 15.0),
        ({"max_avail_delay": 30, "max_using_delay": 8}, 4.0),
        ({"max_using_delay_kill": 20, "max_lifetime": 100}, 10.0),
        ({"max_avail_delay": 30, "delay": 7}, 7.0),
    ],
)
def test_derived_delay(Pool: Any, counter: Any, kwargs: Any, expected: float) -> None:
    pool = Pool(counter, min_size=0, **kwargs)
    assert pool.stats()["delay"] == expected
    assert (pool._housekeeper is not None) == bool(expected)
    pool.shutdown()


def test_housekeeper_thread_runs_and_stops(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=1, health=lambda o: True, delay=0.01)
    deadline = time.monotonic() + 10
    while pool.stats()["hk_rounds"] < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert pool.stats()["hc_rounds"] >= 3
    thread = pool._housekeeper
    pool.shutdown(delay=5)
    assert not thread.is_alive()


def test_housekeeper_does_not_keep_pool_alive(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, delay=0.01, max_avail_delay=1)
    thread = pool._housekeeper
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None
    thread.join(5)
    assert not thread.is_alive()


def test_werkzeug_workaround(Pool: Any, counter: Any, monkeypatch: Any, pool_log: Any) -> None:
    monkeypatch.setenv("PPP_WERKZEUG_WORKAROUND", "1")
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    pool = Pool(counter, min_size=2, health=bool)
    assert pool._housekeeper is None and counter.made == []
    monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")
    pool = Pool(counter, min_size=2, health=bool)
    assert pool._housekeeper is not None and counter.made == [0, 1]
    pool.shutdown()


def test_shutdown_closes_idle_never_in_use(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=3, closer=counter.close)
    held = pool.get()
    pool.shutdown()
    assert held not in counter.closed and len(counter.closed) == 2
    pool.ret(held)
    assert counter.closed[-1] is held
    pool.shutdown()  # twice is harmless
    assert pool.stats()["ndestroys"] == 3


def test_hook_errors_logged_and_leak_nothing(Pool: Any, counter: Any, pool_log: Any) -> None:
    def boom(o: Any) -> None:
        raise RuntimeError(f"hook failed on {o['n']}")

    pool = Pool(
        counter, min_size=0, max_size=2, max_use=2, opener=boom, getter=boom, retter=boom,
        closer=boom,
    )  # fmt: skip
    for _ in range(5):
        a, b = pool.get(timeout=0), pool.get(timeout=0)
        pool.ret(a)
        pool.ret(b)
        s = pool.stats()
        assert s["nusing"] == 0 and s["npending"] == 0 and s["nobjs"] <= 2
    for hook in ("opener", "getter", "retter", "closer"):
        assert f"{hook} hook failed" in pool_log.text
    assert pool_log.records[0].levelno == logging.ERROR


def test_timed_fields_only_when_timed(Pool: Any, counter: Any, clock: Any) -> None:
    pool = Pool(counter, min_size=1)
    assert "last_get" not in pool.stats()["avail"][0]
    pool = Pool(counter, min_size=1, max_avail_delay=60, delay=NO_THREAD, clock=clock)
    clock.advance(3)
    assert pool.stats()["avail"][0]["age"] == 3
