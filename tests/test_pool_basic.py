"""Core get/ret behaviour of SPEC §2 on both twins."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

import ppp
from ppp import PoolException


def test_get_ret_reuses_the_object(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0)
    a = pool.get()
    pool.ret(a)
    assert pool.get() is a
    assert counter.made == [0]


def test_min_size_filled_at_construction(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=3, max_size=5)
    assert counter.made == [0, 1, 2]
    s = pool.stats()
    assert (s["nobjs"], s["navail"], s["nusing"], s["ncreated"]) == (3, 3, 0, 3)


def test_lifo_reuse_keeps_surplus_idle(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0)
    objs = [pool.get() for _ in range(3)]
    for o in objs:
        pool.ret(o)
    # the most recently returned comes out first
    assert pool.get() is objs[2]
    assert pool.get() is objs[1]
    assert pool.get() is objs[0]


def test_creation_numbers_are_sequential(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0)
    got = [pool.get() for _ in range(5)]
    assert [o["n"] for o in got] == [0, 1, 2, 3, 4]


def test_unlimited_pool_never_waits(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, max_size=0, min_size=0, timeout=0)
    got = [pool.get() for _ in range(50)]
    assert len({id(o) for o in got}) == 50
    assert pool.stats()["nobjs"] == 50
    pool = Pool(counter, max_size=None, min_size=0)
    assert pool.stats()["max_size"] == 0


def test_unhashable_and_equal_objects_tracked_by_identity(Pool: Any) -> None:
    pool = Pool(lambda n: [], min_size=0, max_size=3)  # equal, unhashable lists
    a, b, c = pool.get(), pool.get(), pool.get()
    assert a == b == c and a is not b
    pool.ret(b)
    pool.ret(a)
    assert pool.stats()["navail"] == 2 and pool.stats()["nusing"] == 1
    assert pool.get() is a  # LIFO by identity, not equality
    pool.ret(c)
    pool.ret(a)
    assert pool.stats()["navail"] == 3


def test_ret_takes_obj_by_position_or_keyword(Pool: Any) -> None:
    """``ret(self, /, obj)`` on both twins (the compiled one has its own C entry
    point, which takes the object without a reference of its own); a wrong call
    is a TypeError that changes nothing."""
    pool = Pool(lambda n: [n], max_size=2)
    try:
        a, b = pool.get(), pool.get()
        pool.ret(a)
        pool.ret(obj=b)
        s = pool.stats()
        assert (s["nreturns"], s["nusing"], s["nbad_returns"]) == (2, 0, 0)
        held = pool.get()
        bad: Callable[[], Any]
        for bad in (
            lambda: pool.ret(),
            lambda: pool.ret(held, held),
            lambda: pool.ret(objs=held),
            lambda: pool.ret(held, obj=held),
            lambda: type(pool).ret(pool),
        ):
            with pytest.raises(TypeError):
                bad()
        s = pool.stats()
        assert (s["nreturns"], s["nusing"], s["nbad_returns"]) == (2, 1, 0)
        type(pool).ret(pool, held)  # unbound, as a plain function
        assert pool.stats()["nusing"] == 0
    finally:
        pool.shutdown()


def test_double_return_ignored_with_warning(Pool: Any, counter: Any, pool_log: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=2)
    a = pool.get()
    pool.ret(a)
    before = pool.stats()
    pool.ret(a)
    after = pool.stats()
    assert "does not hold in use" in pool_log.text
    for key in ("nobjs", "navail", "nusing", "nreturns", "nuses"):
        assert before[key] == after[key], key
    assert after["nbad_returns"] == 1


def test_foreign_object_return_ignored(Pool: Any, counter: Any, pool_log: Any) -> None:
    pool = Pool(counter, min_size=1)
    pool.ret({"n": 0})  # equal to the pooled object, but not it
    pool.ret(object())
    s = pool.stats()
    assert (s["navail"], s["nusing"], s["nreturns"], s["nbad_returns"]) == (1, 0, 0, 2)
    assert pool_log.text.count("ignoring return") == 2


def test_obj_context_manager_returns_on_exception(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=1)
    with pytest.raises(ZeroDivisionError), pool.obj() as o:
        assert pool.stats()["nusing"] == 1
        1 / 0  # noqa: B018
    assert pool.stats()["nusing"] == 0
    with pool.obj(timeout=0) as again:
        assert again is o


def test_leases_are_independent_and_only_pool_obj_makes_them(Pool: Any, counter: Any) -> None:
    """Nested leases each return their own object (the compiled twin recycles
    lease objects through a free list); a lease made by hand is refused."""
    pool = Pool(counter, min_size=0, max_size=3)
    for _ in range(50):
        with pool.obj() as a, pool.obj() as b:
            with pool.obj(timeout=0) as c:
                assert len({id(a), id(b), id(c)}) == 3
                assert pool.stats()["nusing"] == 3
            assert pool.stats()["nusing"] == 2
        assert pool.stats()["nusing"] == 0
    leases = [pool.obj() for _ in range(20)]  # made, never entered: nothing taken
    del leases
    assert (pool.stats()["nusing"], pool.stats()["navail"]) == (0, 3)
    with pytest.raises(TypeError), type(pool.obj())():
        pass  # pragma: no cover
    assert pool.stats()["nusing"] == 0


def test_with_pool_shuts_down(Pool: Any, counter: Any) -> None:
    with Pool(counter, min_size=2, closer=counter.close) as pool:
        assert pool.stats()["nobjs"] == 2
    assert pool.stats()["shutdown"] is True
    assert len(counter.closed) == 2
    with pytest.raises(PoolException, match="shut down"):
        pool.get()


def test_fun_error_reaches_caller_and_frees_slot(Pool: Any) -> None:
    calls: list[int] = []

    def fun(n: int) -> object:
        calls.append(n)
        if n == 0:
            raise ConnectionError("server down")
        return object()

    pool = Pool(fun, min_size=0, max_size=1, timeout=0)
    with pytest.raises(ConnectionError, match="server down"):
        pool.get()
    s = pool.stats()
    assert (s["nobjs"], s["npending"], s["ncreated"], s["ncreating"]) == (0, 0, 0, 1)
    o = pool.get()  # the slot was freed: no TimeOut
    assert calls == [0, 1] and o is not None


def test_min_size_fill_failure_is_logged_not_raised(Pool: Any, pool_log: Any) -> None:
    def fun(n: int) -> object:
        raise OSError("refused")

    pool = Pool(fun, min_size=2, max_size=4)
    assert "to fill min_size failed" in pool_log.text
    assert pool.stats()["nobjs"] == 0
    with pytest.raises(OSError):
        pool.get()


def test_fun_returning_a_pooled_object_is_refused(Pool: Any) -> None:
    shared = object()
    pool = Pool(lambda n: shared, min_size=0, max_size=2)
    assert pool.get() is shared
    with pytest.raises(PoolException, match="already holds"):
        pool.get()
    s = pool.stats()
    assert (s["nobjs"], s["npending"], s["nusing"]) == (1, 0, 1)


def test_stats_keys_and_json(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=1, max_size=4)
    o = pool.get()
    stats = pool.stats()
    ppp_keys = (
        "id started min_size max_size max_use timeout delay navail nusing nobjs ncreated "
        "ncreating nuses nkilled nrecycled nwornout nborrows nreturns ndestroys nhealth "
        "bad_health hk_rounds hk_errors hc_rounds hc_errors avail using shutdown"
    ).split()
    ppp_added = "nwaiting max_waiting ntimeouts wait_time longest_wait max_passed nhandoffs"
    for key in ppp_keys + ppp_added.split() + ["handoff_after"]:
        assert key in stats, key
    assert set(stats["wait_time"]) == {"median", "p95", "max"}
    assert (stats["longest_wait"], stats["max_passed"], stats["nhandoffs"]) == (None, 0, 0)
    assert stats["handoff_after"] == 0.001
    assert stats["using"][0]["trace"] == str(o)
    text = json.loads(str(pool))
    for volatile in ("now", "running"):
        del text[volatile], stats[volatile]
    assert text == stats
    pool.ret(o)


def test_stats_hook_and_tracer(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=1, stats=lambda o: {"n2": o["n"] * 2})
    assert pool.stats()["avail"][0]["stats"] == {"n2": 0}
    pool = Pool(counter, min_size=1, tracer=lambda o: f"conn#{o['n']}")
    assert pool.stats()["avail"][0]["trace"] == "conn#0"

    def bad(o: Any) -> str:
        raise RuntimeError("nope")

    pool = Pool(counter, min_size=1, tracer=bad, stats=None)
    assert "tracer error" in pool.stats()["avail"][0]["trace"]


def test_log_level_and_logger_name(Pool: Any, counter: Any, caplog: Any) -> None:
    logger = logging.getLogger("ppp")
    old = logger.level
    try:
        Pool(counter, min_size=0, log_level=logging.ERROR)
        assert logger.level == logging.ERROR
        Pool(counter, min_size=0, log_level="WARNING")
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(old)


def test_public_pool_is_the_active_twin(backend: Any) -> None:
    assert ppp.Pool.__module__ in ("ppp._pool", "ppp._pool_py")
    assert backend.Pool._backend in ("cython", "python")


def test_ret_from_another_thread(Pool: Any, counter: Any) -> None:
    pool = Pool(counter, min_size=0, max_size=1)
    o = pool.get()
    t = threading.Thread(target=pool.ret, args=(o,))
    t.start()
    t.join()
    assert pool.get(timeout=0) is o


def test_ret_while_this_thread_holds_the_lock_is_deferred(Pool: Any, counter: Any) -> None:
    """A finalizer (``__del__``, a weakref callback) may call ``ret`` while its thread
    is inside the pool: the return waits for the lock's release instead of deadlocking."""
    pool = Pool(counter, min_size=0)
    o = pool.get()
    pool._acquire()
    pool.ret(o)  # as a finalizer run by the GC inside the pool would
    assert pool._nusing == 1 and pool._deferred == [o]
    pool._release()  # the deferred return happens here
    s = pool.stats()
    assert (s["nusing"], s["navail"], s["nreturns"]) == (0, 1, 1)
    assert pool._deferred == []


def test_discard_retires_a_broken_object(Pool: Any, counter: Any, pool_log: Any) -> None:
    pool = Pool(counter, min_size=1, max_size=1, closer=counter.close)
    broken = pool.get()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.get(timeout=10)))
    waiter.start()
    while pool.stats()["nwaiting"] != 1:
        pass
    pool.discard(broken)  # closed; its slot goes to the waiter, which creates #1
    waiter.join(10)
    assert counter.closed == [broken] and got == [{"n": 1}]
    s = pool.stats()
    assert (s["ndiscarded"], s["nobjs"], s["nusing"], s["ndestroys"]) == (1, 1, 1, 1)
    pool.discard(broken)  # not held any more: a warning, no change
    pool.discard(object())
    assert pool.stats()["nbad_returns"] == 2 and pool.stats()["ndiscarded"] == 1
    pool.ret(got[0])
    assert pool.stats()["navail"] == 1
