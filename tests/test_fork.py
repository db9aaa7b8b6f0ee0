"""Fork safety (issue 10): after ``fork()`` a child never uses, returns, checks or
closes an object its parent created, and the parent never notices the fork.

Every test runs on both twins (the ``Pool`` fixture, ``ppp.proxy._for_twin``).
Every child runs under a timeout with its own faulthandler watchdog and reports
through a pipe (``tests/forkkit.py``); a hang is a failure with a stack dump.
Objects record the pid of the process that created them (``forkkit.Obj``), so
"the child got its own object" is ``obj.pid == os.getpid()`` in the child.

The API under test, beyond the SPEC's: after a fork the child's pool forgets
every inherited object without calling ``closer`` and starts as a new pool with
the same parameters (counts, waiters, slots, creation numbers), its lock usable
even if the fork caught it held; housekeeping and ``min_size`` resume on the
child's first use; the keyword ``after_fork`` hook is called in the child with
each inherited object on that first use, outside the lock, its exceptions
logged; ``stats()`` has ``pid`` (whose objects the pool holds) and ``forks``
(resets in this process's line).  A Proxy drops, in the child, every scope's
object from before the fork (never returned, never closed); a SHARED proxy set
with ``obj`` keeps it.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import logging
import multiprocessing
import os
import random
import sqlite3
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import forkkit
import pytest
from forkkit import Link, Obj

from ppp import PoolException, TimeOut
from ppp._backend import FALSY
from ppp.proxy import _for_twin

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # multiprocessing forks inside the stdlib: Python 3.12+ warns there too
    pytest.mark.filterwarnings(
        "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"
    ),
]

PG_DSN = os.environ.get(
    "PPP_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=5"
)
STORM_FORKS = 100
STORM_BATCH = 10
STORM_CHILD_TIMEOUT = 10.0
BIG_IDLE = 20_000
FIGURES: dict[str, Any] = {}  # the storm figures, printed for the report


@pytest.fixture(autouse=True)
def watched() -> Iterator[None]:
    """A child cannot arm its faulthandler timer while the parent has one armed:
    swap pytest's timer for a watchdog thread (see forkkit)."""
    with forkkit.parent_watchdog(120.0):
        yield


@pytest.fixture
def Proxy(backend: ModuleType) -> Any:
    return _for_twin(backend)


def servers_required() -> bool:
    return os.environ.get("PPP_REQUIRE_SERVERS", "").strip().lower() not in FALSY


def wait_until(what: str, check: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll ``check`` until true; fail naming ``what`` after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {limit} s: {what}")
        time.sleep(0.005)


class Made:
    """``fun``, ``closer`` and ``after_fork`` that remember, per process, what they saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made: list[Obj] = []
        self.closed: list[Obj] = []
        self.after: list[Obj] = []

    def fun(self, n: int) -> Obj:
        obj = Obj(n)
        with self.lock:
            self.made.append(obj)
        return obj

    def close(self, obj: Obj) -> None:
        with self.lock:
            self.closed.append(obj)

    def after_fork(self, obj: Obj) -> None:
        with self.lock:
            self.after.append(obj)

    def mine(self) -> list[Obj]:
        """Objects this process created."""
        return [o for o in self.made if o.pid == os.getpid()]


def foreign(objs: list[Any]) -> list[str]:
    """The objects in ``objs`` that another process created."""
    me = os.getpid()
    return [repr(o) for o in objs if o.pid != me]


class LogRecords(logging.Handler):
    """Records of the "ppp" logger at WARNING and above (installed in a child)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        logging.getLogger("ppp").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        return [r.getMessage() for r in self.records]


def stable_counts(stats: dict[str, Any]) -> dict[str, Any]:
    """The counts of a parent's pool that a child must not change."""
    keys = (
        "navail",
        "nusing",
        "nobjs",
        "ncreated",
        "ncreating",
        "nuses",
        "nreturns",
        "nbad_returns",
        "ndestroys",
        "nwaiting",
        "shutdown",
    )
    return {k: stats[k] for k in keys}


class Hammer:
    """Threads that take and give back objects until stopped, checking every round
    that the object is this process's and held by nobody else."""

    def __init__(
        self,
        take: Callable[[], Any],
        give: Callable[[Any], None],
        threads: int,
        hold: float = 0.0,
    ) -> None:
        self.take = take
        self.give = give
        self.hold = hold
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.held: set[int] = set()
        self.errors: list[str] = []
        self.rounds = 0
        self.pid = os.getpid()
        self.threads = [
            threading.Thread(target=self._run, name=f"hammer-{i}", daemon=True)
            for i in range(threads)
        ]

    def _run(self) -> None:
        rounds = 0
        try:
            while not self.stop_event.is_set():
                obj = self.take()
                with self.lock:
                    if id(obj) in self.held:
                        self.errors.append(f"{obj!r} handed out twice")
                    self.held.add(id(obj))
                if obj.pid != self.pid:
                    self.errors.append(f"parent got {obj!r} made by another process")
                if self.hold:
                    time.sleep(random.uniform(0, self.hold))
                with self.lock:
                    self.held.discard(id(obj))
                self.give(obj)
                rounds += 1
        except BaseException as exc:
            self.errors.append(repr(exc))
        with self.lock:
            self.rounds += rounds

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "a parent hammer thread hung"
        assert not self.errors, self.errors[:5]


def fork_many(
    n: int,
    body: Callable[[Link], Any],
    batch: int,
    timeout: float,
    spacing: float = 0.003,
) -> list[forkkit.Outcome]:
    """``n`` children in batches of ``batch`` forked a few ms apart (the parent's
    threads move on in between); stop after the first batch with a failure."""
    outcomes: list[forkkit.Outcome] = []
    while len(outcomes) < n:
        children = []
        for _ in range(min(batch, n - len(outcomes))):
            time.sleep(random.uniform(0, spacing))
            children.append(forkkit.start(body, timeout))
        done = [c.finish() for c in children]
        outcomes += done
        if not all(o.ok for o in done):
            break
    return outcomes


def get_own(pool: Any, timeout: float = 1.0) -> Obj:
    """``pool.get`` in a child: the object must be the child's own."""
    obj: Obj = pool.get(timeout)
    assert obj.pid == os.getpid(), f"child got {obj!r}, made by its parent {os.getppid()}"
    return obj


# ====================================================================== Pool


def test_child_first_get_is_a_new_object(Pool: Any) -> None:
    made = Made()
    pool = Pool(made.fun, max_size=3, min_size=1)
    held = pool.get()
    parent_ids = {id(o) for o in made.made}
    assert pool.stats()["navail"] == 0
    other = pool.get()
    pool.ret(other)  # one idle, one in use at the fork

    def child(link: Link) -> Any:
        obj = get_own(pool)
        assert id(obj) not in parent_ids
        assert obj.n == 0, f"creation numbers restart in the child, got {obj.n}"
        pool.ret(obj)
        again = get_own(pool)  # the child's own object comes back (LIFO)
        assert again is obj
        pool.ret(again)
        return obj.n

    assert forkkit.run(child) == 0
    assert pool.get(0) is other  # the parent's idle object is still there
    pool.ret(other)
    pool.ret(held)
    pool.shutdown()


def test_child_pool_serves_max_size_new_objects(Pool: Any) -> None:
    """The parent holds all max_size objects: the child's slots are all free."""
    made = Made()
    pool = Pool(made.fun, max_size=3, min_size=0, timeout=30.0)
    held = [pool.get() for _ in range(3)]
    assert pool.stats()["nusing"] == 3
    before = stable_counts(pool.stats())

    def child(link: Link) -> Any:
        objs = [get_own(pool) for _ in range(3)]
        assert len({id(o) for o in objs}) == 3
        assert sorted(o.n for o in objs) == [0, 1, 2], "creation numbers restart at 0"
        with pytest.raises(TimeOut):
            pool.get(0)
        stats = pool.stats()
        assert (stats["nobjs"], stats["nusing"], stats["navail"]) == (3, 3, 0), stats
        assert stats["ncreated"] == 3, stats
        assert stats["nwaiting"] == 0
        for o in objs:
            pool.ret(o)
        assert pool.stats()["navail"] == 3
        return [o.n for o in objs]

    forkkit.run(child)
    assert stable_counts(pool.stats()) == before
    for o in held:
        pool.ret(o)
    pool.shutdown()


def test_child_shutdown_closes_nothing_of_the_parent(Pool: Any) -> None:
    made = Made()
    pool = Pool(made.fun, max_size=4, min_size=2, closer=made.close)
    a = pool.get()
    b = pool.get()
    pool.ret(b)  # idle at the fork: b (and maybe more); in use: a
    parent_objs = list(made.made)

    def child(link: Link) -> Any:
        x = get_own(pool)
        y = get_own(pool)
        pool.ret(x)
        pool.ret(y)
        pool.shutdown()
        assert not foreign(made.closed), f"the child closed its parent's {foreign(made.closed)}"
        assert {id(o) for o in made.closed} == {id(o) for o in made.mine()}, (
            "the child's shutdown closes exactly its own idle objects"
        )
        with pytest.raises(PoolException):
            pool.get(0)
        return len(made.closed)

    assert forkkit.run(child) >= 2
    assert made.closed == []
    assert pool.get(0) is b  # the parent's pool carries on
    pool.ret(b)
    pool.ret(a)
    pool.shutdown()
    assert {id(o) for o in made.closed} == {id(o) for o in parent_objs}


def test_after_fork_hook(Pool: Any) -> None:
    """Called in the child, on first use, once per inherited object (idle, in use
    by this thread, in use by another thread), outside the lock; a failure is
    logged and the others are still called.  Never called in the parent."""
    made = Made()
    seen: list[tuple[int, bool]] = []

    def after_fork(obj: Obj) -> None:
        pool.stats()  # the hook may use the pool (the compiled lock is not reentrant)
        # and another thread must be able to take the pool's lock meanwhile
        done = threading.Event()

        def probe() -> None:
            pool.stats()
            done.set()

        t = threading.Thread(target=probe, daemon=True)
        t.start()
        free = done.wait(2.0)
        seen.append((id(obj), free))
        made.after_fork(obj)
        if obj.n == 1:
            raise RuntimeError("after_fork failed on purpose")

    pool = Pool(made.fun, max_size=6, min_size=0, after_fork=after_fork)
    got = threading.Event()
    release = threading.Event()
    theirs: list[Obj] = []

    def holder() -> None:
        theirs.append(pool.get())
        got.set()
        release.wait(60)
        pool.ret(theirs[0])

    t = threading.Thread(target=holder)
    t.start()
    assert got.wait(10)
    mine = pool.get()
    idle = [pool.get(), pool.get()]
    for o in idle:
        pool.ret(o)
    inherited = {id(o) for o in [mine, *idle, *theirs]}
    assert len(inherited) == 4

    def child(link: Link) -> Any:
        logs = LogRecords()
        assert made.after == [], "after_fork runs on the child's first use, not in the fork"
        assert [t.name for t in threading.enumerate()] == [threading.current_thread().name]
        obj = get_own(pool)
        assert {id(o) for o in made.after} == inherited, "after_fork once per inherited object"
        assert len(made.after) == 4, [repr(o) for o in made.after]
        assert all(free for _, free in seen), "after_fork was called with the pool's lock held"
        assert any(r.levelno >= logging.WARNING and r.exc_info for r in logs.records), (
            f"the hook's exception was not logged: {logs.texts()}"
        )
        pool.ret(obj)
        pool.ret(get_own(pool))
        assert len(made.after) == 4, "after_fork is called once, not on every use"
        return len(made.after)

    try:
        assert forkkit.run(child, timeout=30.0) == 4
        assert made.after == [], "after_fork must not run in the parent"
    finally:
        release.set()
        t.join(10)
    pool.ret(mine)
    pool.shutdown()


def test_housekeeping_runs_in_child(Pool: Any) -> None:
    """Expiry and health checks run in the child, on the child's objects only; the
    objects expired there are the child's and are closed there."""
    made = Made()
    checked: list[tuple[int, Obj]] = []

    def health(obj: Obj) -> bool:
        checked.append((os.getpid(), obj))
        return True

    pool = Pool(
        made.fun,
        max_size=0,
        min_size=1,
        max_avail_delay=0.05,
        delay=0.01,
        health=health,
        closer=made.close,
    )
    objs = [pool.get() for _ in range(3)]
    for o in objs:
        pool.ret(o)
    wait_until("the parent's housekeeper runs", lambda: pool.stats()["hk_rounds"] >= 2)
    held = pool.get()  # and one in use by the parent at the fork

    def child(link: Link) -> Any:
        assert threading.active_count() == 1, "the fork handler must not start threads"
        # the parent's closes before the fork (its housekeeper may have expired
        # objects by then on a loaded machine) are in the list the child inherits
        closed_before = len(made.closed)
        mine = [get_own(pool) for _ in range(3)]
        for o in mine:
            pool.ret(o)
        start = pool.stats()["hk_rounds"]
        wait_until("hk_rounds grows in the child", lambda: pool.stats()["hk_rounds"] >= start + 3)
        # three idle objects, min_size 1: two expire after max_avail_delay
        wait_until("idle objects expire in the child", lambda: pool.stats()["nrecycled"] >= 2)
        wait_until("health checks run in the child", lambda: pool.stats()["hc_rounds"] >= 2)
        stats = pool.stats()
        assert stats["nobjs"] >= 1
        assert stats["hk_errors"] == 0 and stats["hc_errors"] == 0
        here = [obj for pid, obj in checked if pid == os.getpid()]
        assert here and not foreign(here), f"health checked {foreign(here)} in the child"
        closed_here = made.closed[closed_before:]
        assert len(closed_here) >= 2 and not foreign(closed_here), closed_here
        return stats["nrecycled"]

    assert forkkit.run(child) >= 2
    pool.ret(held)
    pool.shutdown()


def test_min_size_refilled_in_child(Pool: Any) -> None:
    made = Made()
    pool = Pool(made.fun, max_size=4, min_size=2)
    held = [pool.get(), pool.get()]  # the parent holds its min_size objects

    def child(link: Link) -> Any:
        obj = get_own(pool)
        wait_until("min_size refilled in the child", lambda: pool.stats()["nobjs"] >= 2)
        pool.ret(obj)
        stats = pool.stats()
        assert stats["nobjs"] >= 2 and stats["nusing"] == 0, stats
        drained = [pool.get(0) for _ in range(stats["navail"])]
        assert not foreign(drained), f"the child's pool holds {foreign(drained)}"
        for o in drained:
            pool.ret(o)
        return stats["nobjs"]

    assert forkkit.run(child) >= 2
    for o in held:
        pool.ret(o)
    pool.shutdown()


def test_slots_held_by_parent_threads_are_free_in_child(Pool: Any) -> None:
    """6 threads on 2 objects (holding, waiting, granted): 20 children each get both
    slots at once, no TimeOut (the issue measured 20 of 20 TimeOut)."""
    made = Made()
    pool = Pool(made.fun, max_size=2, min_size=0, timeout=30.0)

    def child(link: Link) -> Any:
        a = get_own(pool)
        b = get_own(pool)
        assert a is not b
        assert pool.stats()["nwaiting"] == 0
        pool.ret(a)
        pool.ret(b)
        return [a.n, b.n]

    with Hammer(pool.get, pool.ret, threads=6, hold=0.002):
        time.sleep(0.05)
        outcomes = fork_many(20, child, batch=10, timeout=10.0)
    forkkit.check_all(outcomes, "slots held by parent threads")
    stats = pool.stats()
    assert stats["nusing"] == 0 and stats["nobjs"] <= 2 and stats["nbad_returns"] == 0, stats
    pool.shutdown()


def test_parent_waiters_stay_in_the_parent(Pool: Any) -> None:
    """Threads waiting in get during the fork: the child does not wait behind
    them, and they are served in the parent afterwards, first come first served."""
    made = Made()
    pool = Pool(made.fun, max_size=2, min_size=0)
    held = [pool.get(), pool.get()]
    served: list[tuple[int, Obj]] = []
    lock = threading.Lock()

    def waiter(i: int) -> None:
        try:
            obj = pool.get(60.0)
        except PoolException:  # shut down by a failed test
            return
        with lock:
            served.append((i, obj))

    def nwaiting_is(n: int) -> Callable[[], bool]:
        return lambda: bool(pool.stats()["nwaiting"] == n)

    threads = []
    for i in range(3):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        wait_until(f"waiter {i} queued", nwaiting_is(i + 1))

    def child(link: Link) -> Any:
        stats = pool.stats()
        assert stats["nwaiting"] == 0, stats
        objs = [get_own(pool), get_own(pool)]
        with pytest.raises(TimeOut):
            pool.get(0.05)
        for o in objs:
            pool.ret(o)
        return True

    try:
        forkkit.run(child)
        assert pool.stats()["nwaiting"] == 3
        pool.ret(held[0])
        wait_until("waiter 0 served", lambda: len(served) == 1)
        pool.ret(held[1])
        wait_until("waiter 1 served", lambda: len(served) == 2)
        assert [i for i, _ in served] == [0, 1]
        pool.ret(served[0][1])
        wait_until("waiter 2 served", lambda: len(served) == 3)
    finally:
        pool.shutdown()  # a failed test: the waiters wake now, not in 60 s
        for t in threads:
            t.join(10)
    assert [i for i, _ in served] == [0, 1, 2]
    assert {id(o) for _, o in served} <= {id(o) for o in held}
    stats = pool.stats()
    assert (stats["nusing"], stats["nobjs"]) == (2, 2), stats


def test_fork_catching_the_lock_held(Pool: Any) -> None:
    """Another thread holds the pool's lock at the fork (taken through the twins'
    own ``_acquire``): the child's first get must not deadlock."""
    made = Made()
    pool = Pool(made.fun, max_size=2, min_size=1)
    taken = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        pool._acquire()
        try:
            taken.set()
            release.wait(60)
        finally:
            pool._release()

    t = threading.Thread(target=hold_lock)
    t.start()
    assert taken.wait(10)
    try:
        child = forkkit.start(lambda link: get_own(pool).n, timeout=10.0)
        out = child.finish()
    finally:
        release.set()
        t.join(10)
    assert out.ok, out.describe()
    obj = pool.get(1.0)  # the parent's pool still works
    assert obj.pid == os.getpid()
    pool.ret(obj)
    pool.shutdown()


def test_fork_while_threads_hammer_the_lock(Pool: Any) -> None:
    """The issue's measurement: 3 threads hammer get/ret, 20 children each get once
    (pure twin then: 16 to 20 of 20 children deadlocked)."""
    made = Made()
    pool = Pool(made.fun, max_size=0, min_size=1)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        with Hammer(pool.get, pool.ret, threads=3):
            time.sleep(0.02)
            outcomes = fork_many(
                20, lambda link: get_own(pool).n, batch=10, timeout=8.0, spacing=0.002
            )
    finally:
        sys.setswitchinterval(old)
    forkkit.check_all(outcomes, "fork while 3 threads hammer get/ret")
    assert pool.stats()["nusing"] == 0
    pool.shutdown()


def test_stats_report_the_fork(Pool: Any) -> None:
    made = Made()
    pool = Pool(made.fun, max_size=2)
    stats = pool.stats()
    assert stats["pid"] == os.getpid() and stats["forks"] == 0, stats
    json.dumps(stats)

    def grandchild(link: Link) -> Any:
        get_own(pool)
        s = pool.stats()
        return [s["pid"], s["forks"], os.getpid()]

    def child(link: Link) -> Any:
        s = pool.stats()
        assert s["pid"] == os.getpid() and s["forks"] == 1, {k: s[k] for k in ("pid", "forks")}
        get_own(pool)
        assert pool.stats()["forks"] == 1, "one fork, counted once"
        # this child's own watchdog would hang the grandchild's (see forkkit)
        faulthandler.cancel_dump_traceback_later()
        pid, forks, real = forkkit.run(grandchild, timeout=10.0)
        assert pid == real and forks == 2, (pid, forks, real)
        assert pool.stats()["pid"] == os.getpid()
        return s["forks"]

    assert forkkit.run(child) == 1
    stats = pool.stats()
    assert stats["pid"] == os.getpid() and stats["forks"] == 0, stats
    pool.shutdown()


def test_parent_untouched(Pool: Any) -> None:
    """Objects held by parent threads during many forks: every count in the parent
    is unchanged by the children, and everything comes back afterwards."""
    made = Made()
    pool = Pool(made.fun, max_size=5, min_size=2, closer=made.close)
    gate = threading.Barrier(4)
    release = threading.Event()
    holding: list[Obj] = []

    def holder() -> None:
        obj = pool.get(10.0)
        holding.append(obj)
        gate.wait(10)
        release.wait(60)
        pool.ret(obj)

    threads = [threading.Thread(target=holder) for _ in range(3)]
    for t in threads:
        t.start()
    gate.wait(10)
    before = stable_counts(pool.stats())
    assert before["nusing"] == 3

    def child(link: Link) -> Any:
        objs = [get_own(pool) for _ in range(5)]
        for o in objs:
            pool.ret(o)
        pool.shutdown()
        return len(objs)

    try:
        for _ in range(5):
            assert forkkit.run(child) == 5
            assert stable_counts(pool.stats()) == before
    finally:
        release.set()
        for t in threads:
            t.join(10)
    stats = pool.stats()
    assert stats["nusing"] == 0 and stats["navail"] == stats["nobjs"] == 3, stats
    assert stats["nbad_returns"] == 0
    assert made.closed == []
    assert not foreign(made.made)
    pool.shutdown()


def test_shut_down_pool_stays_shut_down_in_child(Pool: Any) -> None:
    """A pool shut down before the fork does not come back to life in the child."""
    made = Made()
    pool = Pool(made.fun, max_size=2, min_size=1, max_avail_delay=0.05)
    held = pool.get()
    pool.shutdown()

    def child(link: Link) -> Any:
        with pytest.raises(PoolException):
            pool.get(0)
        time.sleep(0.1)  # a housekeeper or a refill would create objects meanwhile
        assert made.mine() == [], f"the child created {made.mine()}"
        assert pool.stats()["shutdown"] is True
        return True

    assert forkkit.run(child)
    pool.ret(held)


def test_fork_inside_a_lease(Pool: Any) -> None:
    """Forked inside ``with pool.obj() as obj:``: the child leaving the block does
    not put the parent's object into its pool."""
    made = Made()
    pool = Pool(made.fun, max_size=2, min_size=0)
    lease = pool.obj()
    obj = lease.__enter__()

    def child(link: Link) -> Any:
        lease.__exit__(None, None, None)  # what leaving the with block does
        objs = [get_own(pool), get_own(pool)]
        stats = pool.stats()
        assert (stats["nobjs"], stats["nusing"]) == (2, 2), stats
        for o in objs:
            pool.ret(o)
        return True

    try:
        assert forkkit.run(child)
    finally:
        lease.__exit__(None, None, None)
    assert pool.get(0) is obj
    pool.ret(obj)
    pool.shutdown()


EXIT_SCRIPT = """
import importlib, json, os, signal, sys, time

twin, variant = sys.argv[1], sys.argv[2]
Pool = importlib.import_module(twin).Pool
r, w = os.pipe()


def closer(obj):
    os.write(w, (json.dumps([os.getpid(), obj["pid"]]) + "\\n").encode())


pool = Pool(lambda n: {"pid": os.getpid(), "n": n}, max_size=4, min_size=2, closer=closer)
held = pool.get()
pid = os.fork()
if pid == 0:
    import faulthandler

    faulthandler.dump_traceback_later(20, exit=True)  # a hung exit prints its stacks
    os.close(r)
    if variant == "used":
        objs = [pool.get(1.0) for _ in range(3)]
        for obj in objs:
            pool.ret(obj)
    sys.exit(0)  # a normal exit: threads, atexit hooks, finalizers
os.close(w)
deadline = time.monotonic() + 30
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        break
    time.sleep(0.01)
calls = [json.loads(line) for line in os.read(r, 1 << 20).decode().splitlines()]
print(json.dumps({"child": pid, "status": os.waitstatus_to_exitcode(status), "calls": calls}))
pool.ret(held)
pool.shutdown()
"""


@pytest.mark.parametrize("variant", ["unused", "used"])
def test_child_interpreter_exit_closes_nothing_of_the_parent(
    backend: ModuleType, variant: str
) -> None:
    """A child that exits normally (a gunicorn worker does: threads joined, atexit
    hooks, finalizers) closes no object of its parent's, whether it used the pool
    or not; the objects it made itself are closed at its exit."""
    import subprocess

    here = Path(str(backend.__file__)).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{here}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", EXIT_SCRIPT, backend.__name__, variant],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 0, done.stderr
    child = report["child"]
    in_child = [objpid for pid, objpid in report["calls"] if pid == child]
    assert child not in [pid for pid, _ in report["calls"] if pid != child]
    assert all(objpid == child for objpid in in_child), (
        f"the child's exit closed its parent's objects: {report['calls']}"
    )
    if variant == "used":
        assert len(in_child) == 3, f"the child's own idle objects are closed at exit: {report}"


# ---------------------------------------------------------------- storms


def storm_child(pool: Any) -> Callable[[Link], Any]:
    def child(link: Link) -> Any:
        obj = get_own(pool, 1.0)
        pool.ret(obj)
        return obj.n

    return child


@pytest.mark.parametrize("threads", [3, 6])
def test_fork_storm_under_get_ret(Pool: Any, backend: ModuleType, threads: int) -> None:
    """>= 100 forks while threads hammer get/ret on a pool smaller than them."""
    made = Made()
    pool = Pool(made.fun, max_size=threads - 1, min_size=1, timeout=30.0)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        with Hammer(pool.get, pool.ret, threads=threads, hold=0.001) as hammer:
            time.sleep(0.02)
            t0 = time.monotonic()
            outcomes = fork_many(STORM_FORKS, storm_child(pool), STORM_BATCH, STORM_CHILD_TIMEOUT)
            elapsed = time.monotonic() - t0
    finally:
        sys.setswitchinterval(old)
    figures = forkkit.figures(outcomes)
    figures.update(threads=threads, parent_rounds=hammer.rounds, storm_s=round(elapsed, 2))
    FIGURES[f"storm get/ret {backend.__name__} threads={threads}"] = figures
    print(f"\nfork storm ({backend.__name__}, {threads} threads): {figures}")
    forkkit.check_all(outcomes, "fork storm under get/ret")
    assert len(outcomes) >= STORM_FORKS
    stats = pool.stats()
    assert stats["nusing"] == 0 and stats["nbad_returns"] == 0, stats
    assert stats["nobjs"] <= threads - 1
    pool.shutdown()


def test_fork_storm_during_housekeeping_scan(Pool: Any, backend: ModuleType) -> None:
    """>= 100 forks while the housekeeper keeps scanning BIG_IDLE idle objects
    (each round looks at every idle object for expiry, under the lock; the delays
    are long enough that none expires, so the list stays large) and threads
    hammer.  20,000 rather than 50,000: a child's reset touches every inherited
    object (copy-on-write), ~0.3 s per child at 50,000, too slow for 100 forks."""
    made = Made()
    pool = Pool(
        made.fun,
        max_size=0,
        min_size=1,
        max_avail_delay=3600.0,
        max_using_delay=3600.0,
        delay=0.002,
    )
    objs = [pool.get() for _ in range(BIG_IDLE)]
    for o in objs:
        pool.ret(o)
    del objs
    start = pool.stats()["hk_rounds"]
    wait_until("the housekeeper scans", lambda: pool.stats()["hk_rounds"] >= start + 2, 30.0)
    with Hammer(pool.get, pool.ret, threads=3, hold=0.001) as hammer:
        rounds0 = pool.stats()["hk_rounds"]
        t0 = time.monotonic()
        outcomes = fork_many(STORM_FORKS, storm_child(pool), STORM_BATCH, STORM_CHILD_TIMEOUT)
        elapsed = time.monotonic() - t0
    stats = pool.stats()
    figures = forkkit.figures(outcomes)
    figures.update(
        idle=BIG_IDLE,
        hk_rounds_during=stats["hk_rounds"] - rounds0,
        time_per_hk_ms=round(stats["time_per_hk"] * 1000, 2),
        parent_rounds=hammer.rounds,
        storm_s=round(elapsed, 2),
    )
    FIGURES[f"storm hk-scan {backend.__name__}"] = figures
    print(f"\nfork storm during a {BIG_IDLE}-object scan ({backend.__name__}): {figures}")
    forkkit.check_all(outcomes, "fork storm during the housekeeping scan")
    assert len(outcomes) >= STORM_FORKS
    assert stats["nusing"] == 0 and stats["navail"] == stats["nobjs"] >= BIG_IDLE, {
        k: stats[k] for k in ("nusing", "navail", "nobjs")
    }
    assert stats["hk_errors"] == 0
    pool.shutdown()


# ====================================================================== Proxy


@pytest.mark.parametrize(
    ("scope", "max_size"),
    [("THREAD", 4), ("THREAD", None), ("VERSATILE", 4), ("VERSATILE", None)],
)
def test_proxy_main_thread_object_dropped(Proxy: Any, scope: str, max_size: int | None) -> None:
    """The forking thread's object is not the child's: the next use takes a fresh
    one, made in the child; the old one is neither returned nor closed there."""
    made = Made()
    kwargs: dict[str, Any] = {"closer": made.close} if max_size is not None else {}
    db = Proxy(fun=made.fun, scope=Proxy.Scope[scope], max_size=max_size, **kwargs)
    parent_obj = db._get_obj()
    assert db.pid == os.getpid()

    def child(link: Link) -> Any:
        logs = LogRecords()
        assert not db._has_obj(), "the parent's object is still the main thread's"
        assert db.pid == os.getpid(), "forwarding reached the parent's object"
        obj = db._get_obj()
        assert obj.pid == os.getpid() and obj is not parent_obj
        assert db.n == obj.n
        db._ret_obj()
        db._ret_obj()
        again = db._get_obj()
        assert again.pid == os.getpid()
        db._ret_obj()
        pool = db._pool
        if pool is not None:
            stats = pool.stats()
            assert stats["nbad_returns"] == 0, "the dropped object was returned to the child"
            drained = [pool.get(0) for _ in range(stats["navail"])]
            assert not foreign(drained), f"the child's pool holds {foreign(drained)}"
            for o in drained:
                pool.ret(o)
            pool.shutdown()
        assert not foreign(made.closed), f"the child closed {foreign(made.closed)}"
        assert not any("ignoring return" in t for t in logs.texts()), logs.texts()
        return obj.n

    forkkit.run(child)
    assert db._get_obj() is parent_obj
    assert made.closed == []
    db._ret_obj()
    if db._pool is not None:
        db._pool.shutdown()


def test_proxy_shared_object_kept(Proxy: Any) -> None:
    shared = Obj(0)
    db = Proxy(obj=shared)

    def child(link: Link) -> Any:
        assert db._get_obj() is shared
        assert db.pid == os.getppid(), "the shared object is the user's: kept as is"
        assert db._has_obj()
        return True

    assert forkkit.run(child)
    assert db._get_obj() is shared


def test_proxy_objects_of_other_parent_threads_never_come_back(Proxy: Any) -> None:
    """Threads holding proxy objects at the fork do not exist in the child, and
    CPython clears their thread locals there (before any fork handler runs): the
    holders' end-of-thread return must not put the parent's objects in the
    child's pool.  The parent's pool is untouched."""
    made = Made()
    db = Proxy(fun=made.fun, max_size=6, closer=made.close)
    gate = threading.Barrier(5)
    release = threading.Event()
    errors: list[str] = []

    def user() -> None:
        try:
            assert db.pid == os.getpid()
            gate.wait(10)
            release.wait(60)
            db._ret_obj()
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=user) for _ in range(4)]
    for t in threads:
        t.start()
    gate.wait(10)
    db._get_obj()  # and the forking thread holds one too
    pool = db._pool
    before = stable_counts(pool.stats())
    assert before["nusing"] == 5

    def child(link: Link) -> Any:
        logs = LogRecords()
        gc.collect()
        stats = pool.stats()
        assert stats["nbad_returns"] == 0, stats
        assert stats["nusing"] == 0, f"the child's pool counts the parent's holders: {stats}"
        taken: list[Obj] = []
        try:
            while len(taken) < 6:
                taken.append(pool.get(0))
        except TimeOut:
            pass
        assert len(taken) == 6, f"the child's pool has only {len(taken)} of 6 slots"
        assert not foreign(taken), f"the child's pool handed out {foreign(taken)}"
        for o in taken:
            pool.ret(o)
        # threads in the child use the proxy normally
        results: list[str] = []

        def work() -> None:
            for _ in range(20):
                if db.pid != os.getpid():
                    results.append(f"child thread used {db._get_obj()!r}")
                db._ret_obj()

        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        assert not results, results[:3]
        pool.shutdown()
        assert not foreign(made.closed), f"the child closed {foreign(made.closed)}"
        assert not any("ignoring return" in t for t in logs.texts()), logs.texts()
        return len(taken)

    try:
        assert forkkit.run(child) == 6
        assert stable_counts(pool.stats()) == before
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert not errors, errors
    db._ret_obj()
    stats = pool.stats()
    assert stats["nusing"] == 0 and stats["navail"] == 5 and stats["nbad_returns"] == 0, stats
    assert made.closed == []
    pool.shutdown()


def test_proxy_holder_freed_in_fork_with_the_pool_lock_held(Proxy: Any) -> None:
    """The deterministic form of the storm below.  A parent thread holds a proxy
    object, another holds the pool's lock (the twins' ``_acquire``) at the fork.
    In the child, CPython frees the dead threads' locals inside ``os.fork()``,
    before any fork handler runs: the holder's end-of-thread return must neither
    block on that lock (the child would hang inside ``fork``) nor give the
    parent's object to the child's pool."""
    made = Made()
    db = Proxy(fun=made.fun, max_size=2)
    pool = db._pool
    got = threading.Event()
    locked = threading.Event()
    release = threading.Event()

    def user() -> None:
        db._get_obj()
        got.set()
        release.wait(60)
        db._ret_obj()

    def locker() -> None:
        pool._acquire()
        try:
            locked.set()
            release.wait(60)
        finally:
            pool._release()

    threads = [threading.Thread(target=user), threading.Thread(target=locker)]
    threads[0].start()
    assert got.wait(10)
    threads[1].start()
    assert locked.wait(10)

    def child(link: Link) -> Any:
        gc.collect()
        objs = [get_own(pool), get_own(pool)]
        assert pool.stats()["nbad_returns"] == 0
        for o in objs:
            pool.ret(o)
        assert db.pid == os.getpid()
        return True

    try:
        out = forkkit.start(child, timeout=10.0).finish()
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert out.ok, out.describe()
    stats = pool.stats()
    assert (stats["nusing"], stats["nbad_returns"]) == (0, 0), stats
    pool.shutdown()


def test_fork_inside_a_proxy_lease(Proxy: Any) -> None:
    """Forked inside the README's ``with db._obj() as conn:``: in the child, leaving
    the block returns nothing to the child's pool, and the next use is fresh."""
    made = Made()
    db = Proxy(fun=made.fun, max_size=2, closer=made.close)
    lease = db._obj()
    obj = lease.__enter__()

    def child(link: Link) -> Any:
        logs = LogRecords()
        lease.__exit__(None, None, None)  # what leaving the with block does
        stats = db._pool.stats()
        assert stats["nbad_returns"] == 0 and stats["navail"] <= 1, stats
        assert db.pid == os.getpid()
        db._ret_obj()
        assert not foreign([db._pool.get(0) for _ in range(db._pool.stats()["navail"])])
        assert made.closed == []
        assert not any("ignoring return" in t for t in logs.texts()), logs.texts()
        return True

    try:
        assert forkkit.run(child)
    finally:
        lease.__exit__(None, None, None)
    assert db._get_obj() is obj
    db._ret_obj()
    db._pool.shutdown()


def test_proxy_fork_storm_with_thread_churn(Proxy: Any, backend: ModuleType) -> None:
    """Threads come and go holding proxy objects (ending without ``_ret_obj``, so
    their holders return the objects when their locals are cleared) while the
    parent forks: no child deadlocks (CPython clears the dead threads' locals in
    the child, possibly with the pool's lock caught held) and every child's
    object is its own."""
    made = Made()
    db = Proxy(fun=made.fun, max_size=3, timeout=30.0)
    stop = threading.Event()
    errors: list[str] = []

    def churn() -> None:
        while not stop.is_set():

            def short_life() -> None:
                try:
                    if db.pid != os.getpid():
                        errors.append("parent thread got a foreign object")
                    time.sleep(random.uniform(0, 0.001))
                except BaseException as exc:
                    errors.append(repr(exc))

            t = threading.Thread(target=short_life)
            t.start()
            t.join(30)

    def child(link: Link) -> Any:
        assert db.pid == os.getpid()
        obj = db._get_obj()
        db._ret_obj()
        return obj.n

    spinners = [threading.Thread(target=churn) for _ in range(3)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    for t in spinners:
        t.start()
    try:
        time.sleep(0.02)
        outcomes = fork_many(30, child, batch=10, timeout=10.0)
    finally:
        stop.set()
        for t in spinners:
            t.join(30)
        sys.setswitchinterval(old)
    FIGURES[f"proxy churn storm {backend.__name__}"] = forkkit.figures(outcomes)
    forkkit.check_all(outcomes, "fork during proxy thread churn")
    assert not errors, errors[:3]
    wait_until("every object back", lambda: db._pool.stats()["nusing"] == 0)
    db._pool.shutdown()


# ====================================================================== real uses


class StampedConnection(sqlite3.Connection):
    """A SQLite connection that knows which process opened it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pid = os.getpid()


def test_readme_startup_pattern(Proxy: Any, tmp_path: Path) -> None:
    """The README's ``init_app``: a Proxy set with fun and pool, ``with db._obj() as
    conn:`` for start-up work before the fork, a request in progress in the
    forking thread; the child then serves requests from threads as usual."""
    path = str(tmp_path / "app.db")
    db = Proxy(
        max_size=4,
        timeout=5.0,
        retter=lambda conn: conn.rollback(),
        closer=lambda conn: conn.close(),
    )

    def init_app() -> None:
        db.set(
            fun=lambda n: sqlite3.connect(path, check_same_thread=False, factory=StampedConnection)
        )
        with db._obj() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS hits (name TEXT, pid INTEGER)")
            conn.commit()

    init_app()
    db.execute("INSERT INTO hits VALUES ('parent', ?)", (os.getpid(),))
    db.commit()  # the forking thread is mid-request: it still holds its connection
    parent_conn = db._get_obj()

    def child(link: Link) -> Any:
        errors: list[str] = []

        def request(i: int) -> None:
            try:
                if db.pid != os.getpid():
                    errors.append(f"request {i} got the parent's connection")
                db.execute("INSERT INTO hits VALUES (?, ?)", (f"child-{i}", os.getpid()))
                db.commit()
            except BaseException as exc:
                errors.append(repr(exc))
            finally:
                db._ret_obj()

        for rnd in range(5):
            ts = [threading.Thread(target=request, args=(rnd * 4 + i,)) for i in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(10)
        assert not errors, errors[:3]
        assert db.pid == os.getpid()
        count = db.execute("SELECT count(*) FROM hits WHERE pid = ?", (os.getpid(),)).fetchone()
        db._ret_obj()
        db._pool.shutdown()
        return count[0]

    assert forkkit.run(child) == 20
    assert db._get_obj() is parent_conn
    rows = db.execute("SELECT count(*) FROM hits").fetchone()[0]
    assert rows == 21
    db._ret_obj()
    db._pool.shutdown()


_MP: dict[str, Any] = {}


def _mp_init(barrier: Any) -> None:
    _MP["barrier"] = barrier
    faulthandler.dump_traceback_later(30, exit=True, file=2)


def _mp_task(i: int) -> list[int]:
    pool = _MP["pool"]
    _MP["barrier"].wait(30)  # four tasks at once: four distinct workers
    obj = pool.get(2.0)
    try:
        return [os.getpid(), obj.pid, obj.n]
    finally:
        pool.ret(obj)


def test_multiprocessing_fork_workers(Pool: Any) -> None:
    made = Made()
    pool = Pool(made.fun, max_size=2, min_size=1)
    held = pool.get()  # one in use, one idle at the forks
    pool.ret(pool.get())
    _MP["pool"] = pool
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    try:
        with ctx.Pool(4, initializer=_mp_init, initargs=(barrier,)) as workers:
            results = workers.map_async(_mp_task, range(4), chunksize=1).get(60)
            workers.close()
            workers.join()
    finally:
        _MP.clear()
    pids = {worker for worker, _, _ in results}
    assert len(pids) == 4 and os.getpid() not in pids
    wrong = [r for r in results if r[1] != r[0]]
    assert not wrong, f"workers got objects made elsewhere: {wrong} (parent {os.getpid()})"
    pool.ret(held)
    stats = pool.stats()
    assert stats["nusing"] == 0 and stats["nobjs"] == 2, stats
    pool.shutdown()


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def pg() -> Any:
    psycopg = pytest.importorskip("psycopg")
    try:
        with psycopg.connect(PG_DSN) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL unreachable at {PG_DSN!r}: {exc}".strip()
        if servers_required():
            pytest.fail(f"{message} (PPP_REQUIRE_SERVERS is set)", pytrace=False)
        pytest.skip(message)
    return psycopg


class PgPool:
    """A pool of psycopg connections tagged with a unique ``application_name``, and
    an admin connection that lists the tag's sessions on the server."""

    def __init__(self, Pool: Any, psycopg: Any, **kwargs: Any) -> None:
        self.psycopg = psycopg
        self.tag = f"ppp_fork_{uuid.uuid4().hex[:12]}"
        self.dsn = f"{PG_DSN} application_name={self.tag}"
        self.made: list[tuple[int, Any]] = []  # (creating pid, connection)
        self.closed: list[Any] = []
        self.pool = Pool(self.connect, closer=self.close, **kwargs)
        self.admin = psycopg.connect(PG_DSN, autocommit=True)

    def connect(self, n: int) -> Any:
        conn = self.psycopg.connect(self.dsn, autocommit=True)
        self.made.append((os.getpid(), conn))
        return conn

    def close(self, conn: Any) -> None:
        self.closed.append(conn)
        conn.close()

    @staticmethod
    def backend(conn: Any) -> int:
        return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])

    def sessions(self) -> set[int]:
        rows = self.admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (self.tag,)
        ).fetchall()
        return {int(r[0]) for r in rows}

    def made_here(self, conn: Any) -> bool:
        return any(c is conn and pid == os.getpid() for pid, c in self.made)

    def cleanup(self) -> None:
        """Shut the pool down, close what a failed test left open, and check the
        server holds no session of this test."""
        try:
            self.pool.shutdown()
            for pid, conn in self.made:
                if pid == os.getpid() and not conn.closed:
                    conn.close()
            wait_until("no session of the test left", lambda: not self.sessions())
        finally:
            self.admin.close()


@pytest.fixture
def pgpool(Pool: Any, pg: Any) -> Iterator[Callable[..., PgPool]]:
    made: list[PgPool] = []

    def make(**kwargs: Any) -> PgPool:
        made.append(PgPool(Pool, pg, **kwargs))
        return made[-1]

    yield make
    for p in made:
        p.cleanup()


def test_postgresql_child_has_its_own_backends(pgpool: Callable[..., PgPool]) -> None:
    """The child's connections are other server sessions than its parent's; the
    parent's sessions work after the child shuts its pool down and after it exits;
    the child's pool serves max_size new connections and closes only those."""
    pg = pgpool(max_size=3, min_size=1)
    pool, backend = pg.pool, pg.backend
    a = pool.get()
    b = pool.get()
    pool.ret(b)  # in use at the fork: a; idle: b
    parent_backends = {backend(a), backend(b)}
    assert len(parent_backends) == 2

    def child(link: Link) -> Any:
        first = pool.get(5.0)
        assert backend(first) not in parent_backends, "the child talks to its parent's session"
        conns = [first, pool.get(5.0), pool.get(5.0)]
        assert all(pg.made_here(c) for c in conns)
        backends = [backend(c) for c in conns]
        assert len(set(backends)) == 3 and not set(backends) & parent_backends, backends
        with pytest.raises(TimeOut):
            pool.get(0)
        for c in conns:
            pool.ret(c)
        pool.shutdown()
        assert {id(c) for c in pg.closed} == {id(c) for c in conns}, (
            "the child's shutdown closes exactly its own connections"
        )
        link.send(backends)
        assert link.recv() == "exit"
        return backends

    kid = forkkit.start(child, timeout=30.0)
    try:
        child_backends = set(kid.recv())
        # the child has shut its pool down: the parent's sessions are alive
        assert backend(a) in parent_backends
        again = pool.get(1.0)
        assert again is b and backend(again) in parent_backends
        pool.ret(again)
        wait_until("the child's sessions end", lambda: not pg.sessions() & child_backends)
        kid.send("exit")
    finally:
        out = kid.finish()
    assert out.ok, out.describe()
    assert backend(a) in parent_backends and backend(b) in parent_backends
    wait_until("only the parent's sessions remain", lambda: pg.sessions() == parent_backends)
    assert pg.closed == []
    pool.ret(a)


def test_postgresql_after_fork_gets_each_inherited_connection(
    pgpool: Callable[..., PgPool],
) -> None:
    after: list[Any] = []
    pg = pgpool(max_size=3, min_size=1, after_fork=after.append)
    pool = pg.pool
    a = pool.get()
    b = pool.get()
    pool.ret(b)
    inherited = {id(a), id(b)}

    def child(link: Link) -> Any:
        conn = pool.get(5.0)
        assert pg.made_here(conn)
        assert {id(c) for c in after} == inherited and len(after) == 2, after
        pool.ret(conn)
        pool.shutdown()
        assert not any(id(c) in inherited for c in pg.closed), "closer ran on an inherited one"
        return len(after)

    assert forkkit.run(child, timeout=30.0) == 2
    assert after == []
    assert pg.backend(a) > 0 and pg.backend(b) > 0  # both still work
    pool.ret(a)


# ------------------------------------------------- object locks (free-threaded)


@pytest.mark.skipif(
    not sysconfig.get_config_var("Py_GIL_DISABLED"),
    reason="per-object locks exist on the free-threaded build only",
)
def test_child_reset_releases_object_locks_left_held(Pool: Any) -> None:
    """Free-threaded CPython hands a contended object lock (a critical section's) to
    a waiting thread still locked; a fork before that thread runs leaves it locked
    in the child.  Here the pool's own object locks are held across the fork (as if
    so handed): the child's first get and ret do not hang, and give a new object."""
    import ctypes

    lock, unlock = ctypes.pythonapi.PyMutex_Lock, ctypes.pythonapi.PyMutex_Unlock
    lock.argtypes = unlock.argtypes = [ctypes.c_void_p]
    pool = Pool(fun=Obj, max_size=2)
    obj = pool.get()
    pool.ret(obj)
    held = [pool, getattr(pool, "__dict__", None), pool._slots, pool._avail, pool._reg]
    addresses = [id(o) + 10 for o in held if o is not None]  # offsetof(PyObject, ob_mutex)
    for address in addresses:
        lock(address)

    def child(link: Link) -> Any:
        mine = pool.get()
        pool.ret(mine)
        return [mine.pid == os.getpid(), mine.n]

    try:
        result = forkkit.run(child, timeout=10.0)
    finally:
        for address in addresses:
            unlock(address)
    assert result == [True, 0]
    pool.ret(pool.get())  # the parent's pool still works
    check = pool.get()
    assert check is obj
    pool.ret(check)
