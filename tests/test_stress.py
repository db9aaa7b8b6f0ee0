"""Threaded stress on both twins, with the pool's invariants checked all along.

Up to 64 threads hammer one pool with ``sys.setswitchinterval`` at a
microsecond, so the interpreter switches threads inside every critical
section it can.  ``fun`` fails one time in three and sometimes sleeps, hooks
raise, housekeeping runs for real, threads die holding objects, and pools
are shut down while threads wait and while they hold objects.  Checked:

- no object is ever handed to two holders (a ledger outside the pool);
- while threads run, a monitor reads the pool's state under its own lock and
  checks the size bound, the idle stack and the counts;
- after every round the counts are exact (uses, returns, creations, failures,
  timeouts) and nothing is lost: every object ever made is idle in the pool or
  was closed exactly once;
- nothing hangs: a watchdog turns a thread that does not finish into a stack
  dump of every thread and a failure.

The last tests check that the library itself leaks nothing: a million
``get``/``ret`` pairs on the compiled twin leave the number of live objects,
the allocated blocks and the process memory flat.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from invariants import all_stacks, run_threads

from ppp import PoolException, TimeOut
from ppp._common import HANDOFF_PASSES

IDLE, USING = 0, 1
WATCHDOG = 90.0  # seconds a round may take before it counts as a hang


@pytest.fixture(autouse=True)
def switch_often() -> Iterator[None]:
    """Switch threads every microsecond (the default is 5 ms) to shake out races."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


class FunError(Exception):
    """``fun`` failing on purpose."""


class HookError(Exception):
    """A hook failing on purpose."""


def mix(n: int, salt: int = 0) -> int:
    """A cheap deterministic scramble of a creation number."""
    return ((n + salt) * 2654435761) % 4294967296


class Res:
    """A pooled object that knows who holds it and whether it was closed."""

    __slots__ = ("closed", "holder", "n")

    def __init__(self, n: int) -> None:
        self.n = n
        self.holder: str | None = None
        self.closed = 0

    def __repr__(self) -> str:
        return f"Res({self.n})"


class World:
    """``fun``, the hooks and a ledger of holders, shared by a test's threads.

    Worker threads never assert: they record problems in ``errors``, which the
    main thread checks, so a violation fails the test with its description."""

    def __init__(
        self,
        fail_one_in: int = 3,
        sleep_one_in: int = 5,
        hooks_fail: bool = False,
        kills: bool = False,
    ) -> None:
        self.lock = threading.Lock()
        self.made: dict[int, Res] = {}
        self.fun_failures = 0
        self.closed: list[int] = []
        self.errors: list[str] = []
        self.fail_one_in = fail_one_in
        self.sleep_one_in = sleep_one_in
        self.hooks_fail = hooks_fail
        self.kills = kills  # objects may be closed in their holder's hands (killed)

    def fun(self, n: int) -> Res:
        if self.fail_one_in and mix(n) % self.fail_one_in == 0:
            with self.lock:
                self.fun_failures += 1
            raise FunError(f"creation {n} fails")
        if self.sleep_one_in and mix(n, 7) % self.sleep_one_in == 0:
            time.sleep(0.0005)
        res = Res(n)
        with self.lock:
            if n in self.made:
                self.errors.append(f"creation number {n} used twice")
            self.made[n] = res
        return res

    def closer(self, res: Res) -> None:
        with self.lock:
            if res.closed:
                self.errors.append(f"{res} closed twice")
            if res.holder is not None and not self.kills:
                self.errors.append(f"{res} closed while {res.holder} holds it")
            res.closed += 1
            self.closed.append(res.n)
        if self.hooks_fail and mix(res.n, 3) % 4 == 0:
            raise HookError("closer")

    def hook(self, res: Res) -> None:
        """getter and retter: slow or failing now and then (``ret`` runs the retter
        with the pool unlocked, so a slow one widens the window for races)."""
        draw = mix(res.n, time.perf_counter_ns())
        if self.sleep_one_in and draw % (2 * self.sleep_one_in) == 1:
            time.sleep(0.0001)
        if self.hooks_fail and draw % 5 == 0:
            raise HookError("getter/retter")

    def health(self, res: Res) -> bool:
        if res.holder is not None:
            with self.lock:
                self.errors.append(f"health check on {res} while {res.holder} holds it")
        return mix(res.n, time.perf_counter_ns()) % 6 != 0

    def take(self, res: Res) -> None:
        name = threading.current_thread().name
        with self.lock:
            if res.holder is not None:
                self.errors.append(f"{res} handed to {name} while {res.holder} holds it")
            if res.closed:
                self.errors.append(f"{res} handed to {name} after it was closed")
            res.holder = name

    def give(self, res: Res) -> None:
        with self.lock:
            res.holder = None

    def check(self) -> None:
        assert not self.errors, "\n".join(self.errors[:20])


class Tally:
    """Per-round totals, added up by the workers under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gets = self.rets = self.timeouts = self.fun_errors = self.shut = 0

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def pool_problems(pool: Any) -> list[str]:
    """The state invariants of ``ppp._common``, read under the pool's own lock."""
    pool._acquire()
    try:
        max_size = pool._max_size
        slots = list(pool._slots.items())
        avail = list(pool._avail)
        states = [s.state for _, s in slots]
        avail_states = [s.state for s in avail]
        nusing, npending, nwaiters = pool._nusing, pool._npending, len(pool._waiters)
        nwoken, woken = pool._nwoken, sum(bool(w.woken) for w in pool._waiters)
        queued = all(w.queued for w in pool._waiters)
    finally:
        pool._release()
    problems = []
    if max_size and len(slots) + npending > max_size:
        problems.append(f"{len(slots)} objects + {npending} pending > max_size {max_size}")
    if npending < 0 or nusing < 0:
        problems.append(f"negative count: npending={npending} nusing={nusing}")
    if len({id(s) for s in avail}) != len(avail):
        problems.append("an idle object is on the idle stack twice")
    if any(state != IDLE for state in avail_states):
        problems.append(f"non-idle object on the idle stack: {avail_states}")
    if states.count(USING) != nusing:
        problems.append(f"nusing={nusing} but {states.count(USING)} objects in use")
    if states.count(IDLE) != len(avail):
        problems.append(f"{states.count(IDLE)} idle objects but {len(avail)} on the stack")
    if any(key != id(s.obj) for key, s in slots):
        problems.append("an object is indexed under another identity")
    if nwoken != woken or not queued:
        problems.append(f"nwoken={nwoken} but {woken} queued tickets woken (all queued: {queued})")
    if nwoken < min(nwaiters, len(avail)):
        problems.append(
            f"{nwaiters} threads wait while {len(avail)} objects are idle, {nwoken} woken for them"
        )
    return problems


class Monitor:
    """A thread that checks :func:`pool_problems` over and over while a round runs."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.problems: list[str] = []
        self.checks = 0
        self.stop = threading.Event()
        self.checked = threading.Event()  # the first check is done
        self.thread = threading.Thread(target=self.run, name="monitor", daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            found = pool_problems(self.pool)
            self.checks += 1
            self.checked.set()
            if self.checks % 16 == 0:  # stats() and str() while the pool churns
                s = json.loads(str(self.pool))
                if s["nusing"] + s["navail"] + s["nborrowed"] != s["nobjs"]:
                    found.append(f"stats() does not add up: {s}")
            if found:
                self.problems.extend(found)
                return
            time.sleep(0.0002)

    def __enter__(self) -> Monitor:
        # the round starts once the monitor runs: on a loaded machine a short
        # round could otherwise end before the monitor's thread is first scheduled
        self.thread.start()
        assert self.checked.wait(WATCHDOG), "the monitor never ran a check"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(WATCHDOG)
        assert not self.thread.is_alive(), "the monitor hung: the pool's lock is never free"
        assert not self.problems, "\n".join(self.problems)


def check_round(pool: Any, world: World, tally: Tally, max_size: int) -> dict[str, Any]:
    """Exact counts and nothing lost, once every worker of a round has finished."""
    world.check()
    assert not pool_problems(pool)
    s = pool.stats()
    assert s["nusing"] == 0 and s["nwaiting"] == 0 and s["npending"] == 0, s
    assert s["nobjs"] == s["navail"]
    if max_size:
        assert s["nobjs"] <= max_size
    assert s["nuses"] == tally.gets
    assert s["nreturns"] == tally.rets
    assert s["ntimeouts"] == tally.timeouts
    assert s["ncreating"] == s["ncreated"] + world.fun_failures
    assert s["ncreated"] == len(world.made) == s["nobjs"] + s["ndestroys"]
    assert len(world.closed) == s["ndestroys"] == len(set(world.closed))
    idle = {slot.obj.n for slot in pool._avail}
    assert idle.isdisjoint(world.closed)
    assert idle | set(world.closed) == set(world.made), "an object was lost"
    return dict(s)


# ------------------------------------------------------------------ hammering


CASES = [
    # threads, max_size, min_size, max_use, real housekeeping
    pytest.param(8, 1, 0, 0, False, id="8-threads-1-object"),
    pytest.param(32, 4, 2, 5, False, id="32-threads-max_use"),
    pytest.param(64, 8, 1, 0, True, id="64-threads-housekeeping"),
    pytest.param(64, 0, 0, 3, False, id="64-threads-unbounded"),
]


@pytest.mark.parametrize(("nthreads", "max_size", "min_size", "max_use", "hk"), CASES)
def test_hammer(
    Pool: Any, nthreads: int, max_size: int, min_size: int, max_use: int, hk: bool
) -> None:
    """Rounds of threads getting and returning with every kind of timeout, while
    ``fun`` and the hooks fail; counts exact and nothing lost after every round."""
    world = World(hooks_fail=True)
    extra: dict[str, Any] = {}
    if hk:  # the housekeeper runs every 2 ms: health checks and idle expiry race the workers
        extra = {"delay": 0.002, "health": world.health, "max_avail_delay": 0.004}
    pool = Pool(
        world.fun,
        max_size=max_size,
        min_size=min_size,
        max_use=max_use,
        getter=world.hook,
        retter=world.hook,
        closer=world.closer,
        **extra,
    )
    ops = max(20, 2400 // nthreads)
    tally = Tally()  # totals over every round, like the pool's counters

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        gets = rets = timeouts = fun_errors = 0
        for _ in range(ops):
            try:
                res = pool.get(rng.choice((None, None, 0, 0.001, 0.01)))
            except TimeOut:
                timeouts += 1
                continue
            except FunError:
                fun_errors += 1
                continue
            gets += 1
            world.take(res)
            if rng.random() < 0.2:
                time.sleep(0.0001)
            world.give(res)
            pool.ret(res)
            rets += 1
        tally.add(gets=gets, rets=rets, timeouts=timeouts, fun_errors=fun_errors)

    try:
        for rnd in range(4):
            errors: list[str] = []
            with Monitor(pool):
                run_threads([partial(worker, rnd * 1000 + i) for i in range(nthreads)], errors)
            assert not errors, errors[0]
            if hk:
                pool._stop.set()  # let the counts settle: no round may run mid-check
                pool._housekeeper.join(WATCHDOG)
            s = check_round(pool, world, tally, max_size)
            assert s["ncreating"] > 0 and tally.gets > 0
            if hk:
                pool._stop.clear()
                pool._housekeeper = None  # a fresh housekeeper for the next round
                restart_housekeeper(pool)
    finally:
        pool.shutdown()
    world.check()
    assert pool.stats()["nobjs"] == 0
    assert sorted(world.closed) == sorted(world.made), "an object was never closed"


def restart_housekeeper(pool: Any) -> None:
    """Start a housekeeping thread again after a test stopped it to read exact counts."""
    import weakref

    from ppp._common import _housekeeper

    pool._housekeeper = threading.Thread(
        target=_housekeeper, args=(weakref.ref(pool), pool._stop, pool._delay), daemon=True
    )
    pool._housekeeper.start()


# ------------------------------------------------------------ fairness


@pytest.mark.parametrize(
    ("nthreads", "max_size", "handoff_after"),
    [
        pytest.param(16, 1, 1e9, id="16-on-1-count-bound-only"),
        pytest.param(16, 4, 1e9, id="16-on-4-count-bound-only"),
        pytest.param(32, 4, 0.001, id="32-on-4-default-bounds"),
    ],
)
def test_no_waiter_passed_over_more_than_handoff_passes(
    Pool: Any, nthreads: int, max_size: int, handoff_after: float
) -> None:
    """Threads get and return in tight loops, round after round: threads that come
    later may take a freed object before a waiter (barging), but no waiter sees more
    than ``HANDOFF_PASSES`` objects made idle for others before it is served, every
    get is served (no timeout), and no object is held twice.

    With ``handoff_after=1e9`` only the count bounds the passes, whatever the
    machine's speed; ``max_passed`` is the pool's count for each served waiter of the
    objects made idle since it queued (an upper bound of the times it was passed)."""
    world = World(fail_one_in=0, sleep_one_in=0)
    pool = Pool(world.fun, max_size=max_size, min_size=0, handoff_after=handoff_after)
    ops = 400
    tally = Tally()

    def worker() -> None:
        for i in range(ops):
            res = pool.get(timeout=WATCHDOG)
            world.take(res)
            if i % 3 == 0:
                time.sleep(0)  # let others run while holding: they queue
            world.give(res)
            pool.ret(res)
        tally.add(gets=ops, rets=ops)

    try:
        waited = passed = 0
        for _ in range(4):
            errors: list[str] = []
            with Monitor(pool):
                run_threads([worker for _ in range(nthreads)], errors)
            assert not errors, errors[0]
            s = pool.stats()
            assert s["max_passed"] <= HANDOFF_PASSES, s["max_passed"]
            assert (s["nuses"], s["nreturns"], s["ntimeouts"]) == (tally.gets, tally.rets, 0)
            assert (s["nusing"], s["nwaiting"], s["nobjs"]) == (0, 0, max_size)
            waited, passed = s["nwaits"], s["max_passed"]
        assert waited > 0 and passed > 0, "no thread ever waited or was passed: not a test"
    finally:
        pool.shutdown()
    world.check()


# ------------------------------------------------------- threads that die


def test_threads_dying_while_holding(Pool: Any) -> None:
    """Threads that end without returning their object: the kill after
    ``max_using_delay_kill`` frees their slots and every waiter is served."""
    world = World(fail_one_in=0, sleep_one_in=7, kills=True)
    pool = Pool(
        world.fun,
        max_size=4,
        min_size=0,
        max_using_delay_kill=0.03,
        retter=world.hook,  # a kill may land while a return runs its retter
        closer=world.closer,
    )
    dead: list[Res] = []
    tally = Tally()

    def dier() -> None:
        res = pool.get()  # never returned: the thread just ends
        world.take(res)
        dead.append(res)
        tally.add(gets=1)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            res = pool.get()  # no timeout: only the kills can free the dead's slots
            world.take(res)
            if rng.random() < 0.1:
                time.sleep(0.0002)
            world.give(res)
            pool.ret(res)
            tally.add(gets=1, rets=1)

    try:
        for rnd in range(3):
            errors: list[str] = []
            targets = [dier] * 3 + [partial(worker, rnd * 100 + i) for i in range(29)]
            random.Random(rnd).shuffle(targets)
            with Monitor(pool):
                run_threads(targets, errors)
            assert not errors, errors[0]
            wait_for(lambda: pool.stats()["nusing"] == 0, "the dead threads' objects killed")
            # a kill counts in ndestroys under the lock; its closer runs after, in
            # the housekeeper (seen behind by one on a loaded machine)
            wait_for(
                lambda: len(world.closed) == pool.stats()["ndestroys"],
                "the killed objects' closers",
            )
            world.check()
            s = pool.stats()
            # a worker slowed past the kill delay is killed too: its return is then refused
            assert s["nkilled"] == len(dead) + s["nbad_returns"]
            assert s["nreturns"] + s["nbad_returns"] == tally.rets
            assert s["nuses"] == tally.gets
            assert s["ncreated"] == len(world.made) == s["nobjs"] + s["ndestroys"]
            assert len(world.closed) == s["ndestroys"]
            assert all(res.closed == 1 for res in dead)
            idle = {slot.obj.n for slot in pool._avail}
            assert idle | set(world.closed) == set(world.made)
    finally:
        pool.shutdown()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WATCHDOG) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for: {what}\n{all_stacks()}")
        time.sleep(0.002)


# ----------------------------------------------------------------- shutdown


def test_shutdown_while_threads_wait_and_hold(Pool: Any) -> None:
    """Waiters wake with PoolException, holders' returns are closed, nothing leaks."""
    for rnd in range(4):
        shutdown_with_waiters_and_holders(Pool, nwaiters=8 + 8 * rnd)


def shutdown_with_waiters_and_holders(Pool: Any, nwaiters: int) -> None:
    world = World(fail_one_in=0)
    pool = Pool(world.fun, max_size=3, min_size=1, closer=world.closer)
    release = threading.Event()
    woken: list[str] = []

    def holder() -> None:
        res = pool.get()
        world.take(res)
        release.wait(WATCHDOG)
        world.give(res)
        pool.ret(res)

    def waiter() -> None:
        try:
            pool.get()  # full pool, no timeout: only shutdown wakes it
        except PoolException as exc:
            assert "shut down" in str(exc)
            woken.append(threading.current_thread().name)

    errors: list[str] = []
    holders = threading.Thread(target=run_threads, args=([holder] * 3, errors), daemon=True)
    holders.start()
    wait_for(lambda: pool.stats()["nusing"] == 3, "3 holders")
    waiters = threading.Thread(target=run_threads, args=([waiter] * nwaiters, errors), daemon=True)
    waiters.start()
    wait_for(lambda: pool.stats()["nwaiting"] == nwaiters, f"{nwaiters} waiters")
    with Monitor(pool):
        pool.shutdown()
        waiters.join(WATCHDOG)
        with pytest.raises(PoolException, match="shut down"):
            pool.get(0)
        assert pool.stats()["nusing"] == 3, "shutdown must not close objects in use"
        release.set()
        holders.join(WATCHDOG)
    assert not holders.is_alive() and not waiters.is_alive() and not errors, errors
    assert len(woken) == nwaiters
    world.check()
    s = pool.stats()
    assert s["nobjs"] == 0 and s["nusing"] == 0 and s["nwaiting"] == 0
    assert sorted(world.closed) == sorted(world.made) == [0, 1, 2]


def test_shutdown_amid_churn(Pool: Any) -> None:
    """Shutdown lands at a random moment among 32 threads getting, returning,
    creating (failing one time in three) and refilling: afterwards every object
    ever made is closed exactly once and nothing is left in the pool."""
    for rnd in range(6):
        shutdown_amid_churn(Pool, rnd)


def shutdown_amid_churn(Pool: Any, rnd: int) -> None:
    world = World(hooks_fail=True)
    pool = Pool(
        world.fun,
        max_size=5,
        min_size=2,
        max_use=3,
        closer=world.closer,
        getter=world.hook,
        retter=world.hook,
        health=world.health,
        delay=0.001,
    )
    tally = Tally()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while True:
            try:
                res = pool.get(rng.choice((None, 0.001)))
            except (TimeOut, FunError):
                continue
            except PoolException:
                tally.add(shut=1)
                return
            world.take(res)
            if rng.random() < 0.3:
                time.sleep(0.0001)
            world.give(res)
            pool.ret(res)

    errors: list[str] = []
    runner = threading.Thread(
        target=run_threads,
        args=([partial(worker, rnd * 100 + i) for i in range(32)], errors),
        daemon=True,
    )
    with Monitor(pool):
        runner.start()
        time.sleep(random.Random(rnd).uniform(0.005, 0.05))
        second = threading.Thread(target=pool.shutdown)  # two shutdowns at once
        second.start()
        pool.shutdown(delay=WATCHDOG)
        second.join(WATCHDOG)
        runner.join(WATCHDOG)
    assert not runner.is_alive() and not errors, errors
    assert tally.shut == 32
    world.check()
    s = pool.stats()
    assert s["nobjs"] == 0 and s["nusing"] == 0 and s["npending"] == 0, s
    assert s["ncreated"] == len(world.made) == s["ndestroys"]
    assert sorted(world.closed) == sorted(world.made), "an object was never closed"


# -------------------------------------------------------------------- leaks


def rss_kib() -> int:
    """Resident memory of this process (Linux), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")  # pragma: no cover


def footprint() -> tuple[int, int, int]:
    """Live GC-tracked objects, allocated memory blocks and RSS, after a full collection."""
    gc.collect()
    return len(gc.get_objects()), sys.getallocatedblocks(), rss_kib()


def assert_flat(before: tuple[int, int, int], after: tuple[int, int, int], what: str) -> None:
    objects, blocks, rss = (a - b for a, b in zip(after, before, strict=True))
    # one leaked object per call would show as hundreds of thousands here
    assert objects <= 20, f"{what}: {objects} more live objects"
    assert blocks <= 200, f"{what}: {blocks} more allocated blocks"
    assert rss <= 2048, f"{what}: RSS grew by {rss} KiB"


def pairs_for(Pool: Any) -> int:
    """A million pairs on the compiled twin; fewer on the (slower) pure one."""
    return 1_000_000 if Pool._backend == "cython" else 200_000


def test_no_leak_get_ret(Pool: Any) -> None:
    pool = Pool(lambda n: Res(n), max_size=4, min_size=1, delay=1e9)
    get, ret = pool.get, pool.ret
    try:
        for _ in range(20_000):  # warm up: caches, free lists
            ret(get())
        before = footprint()
        for _ in range(pairs_for(Pool)):
            ret(get())
        assert_flat(before, footprint(), "get/ret pairs")
        assert pool.stats()["nobjs"] == 1
    finally:
        pool.shutdown()


def test_no_leak_with_hooks_and_timers(Pool: Any) -> None:
    """The pair with every per-use feature on: hooks, timed slots, leak traces."""
    pool = Pool(
        lambda n: Res(n),
        max_size=4,
        getter=lambda r: None,
        retter=lambda r: None,
        max_lifetime=1e6,
        max_using_delay=1e6,
        leak_trace=True,  # records a stack on every get: slow, so fewer pairs
        delay=1e9,
    )
    try:
        for _ in range(2_000):
            pool.ret(pool.get())
        before = footprint()
        for _ in range(20_000):
            pool.ret(pool.get())
        assert_flat(before, footprint(), "pairs with hooks")
    finally:
        pool.shutdown()


def test_no_leak_on_error_paths(Pool: Any) -> None:
    """Timeouts and failing creations leave nothing behind either."""
    pool = Pool(lambda n: Res(n), max_size=1, min_size=0, delay=1e9)
    failing = Pool(lambda n: 1 / 0, max_size=1, min_size=0, delay=1e9)
    held = pool.get()
    try:

        def errors(count: int) -> None:
            for _ in range(count):
                try:
                    pool.get(0)
                except TimeOut:
                    pass
                try:
                    failing.get()
                except ZeroDivisionError:
                    pass

        errors(2_000)
        before = footprint()
        errors(pairs_for(Pool) // 20)
        assert_flat(before, footprint(), "timeouts and failed creations")
        assert failing.stats()["nobjs"] == 0
    finally:
        pool.ret(held)
        pool.shutdown()
        failing.shutdown()


# ----------------------------------------------------------- Proxy threads


def test_proxy_threads_come_and_go(backend: Any) -> None:
    """Rounds of 64 short-lived threads on a pooled Proxy: some give their object
    back, some use ``with proxy._obj()``, most just end holding it (the thread's
    end returns it).  No object in two threads, none lost, the bound holds."""
    from ppp.proxy import _for_twin

    world = World(fail_one_in=0, sleep_one_in=9)
    proxy = _for_twin(backend)(fun=world.fun, max_size=8, closer=world.closer)
    pool = proxy._pool
    tally = Tally()

    def life(seed: int) -> None:
        rng = random.Random(seed)
        style = rng.randrange(4)
        if style == 0:
            with proxy._obj() as res:
                world.take(res)
                world.give(res)
            tally.add(gets=1, rets=1)
            return
        res = proxy._get_obj()
        world.take(res)
        if proxy._get_obj() is not res:  # the same thread keeps the same object
            world.errors.append("a thread's object changed under it")
        if rng.random() < 0.3:
            time.sleep(0.0001)
        world.give(res)  # from here on the pool may hand it to another thread
        if style == 1:
            proxy._ret_obj()
            tally.add(gets=1, rets=1)
        else:
            tally.add(gets=1, rets=1)  # returned when this thread ends

    try:
        for rnd in range(20):
            errors: list[str] = []
            with Monitor(pool):
                run_threads([partial(life, rnd * 1000 + i) for i in range(64)], errors)
            assert not errors, errors[0]
            wait_for(lambda: pool.stats()["nusing"] == 0, "ended threads' objects returned")
            world.check()
            s = pool.stats()
            assert s["nobjs"] <= 8 and s["nobjs"] == s["navail"]
            assert s["nuses"] == tally.gets and s["nreturns"] == tally.rets
            assert s["nbad_returns"] == 0
            assert s["ncreated"] == len(world.made) <= 8
    finally:
        pool.shutdown()
    assert sorted(world.closed) == sorted(world.made)


# ------------------------------------------------------ interrupted hooks


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt, SystemExit or gevent's Timeout and GreenletExit."""


@pytest.mark.parametrize("hook", ["opener", "getter", "retter", "health"])
def test_interrupted_hook_frees_the_slot(Pool: Any, hook: str) -> None:
    """A BaseException out of a hook used to leave its slot taken for good (a pool
    of one was then empty forever); now the object, whose state is unknown, is
    retired (closer runs), its slot is free, and the interruption goes on -- except
    from ``health``, which runs in housekeeping's own thread: there it is logged,
    the check counts as failed and housekeeping goes on."""
    closed: list[Any] = []
    armed = [True]

    def interrupting(obj: Any) -> bool:
        if armed[0]:
            armed[0] = False
            raise Interrupt(hook)
        return True

    pool = Pool(
        lambda n: [n], max_size=1, min_size=0, delay=1e9, closer=closed.append,
        **{hook: interrupting},
    )  # fmt: skip
    try:
        if hook == "health":
            pool.ret(pool.get())
            pool._hk_round()
            assert pool.stats()["hc_errors"] == 1
        else:
            with pytest.raises(Interrupt):
                if hook in ("opener", "getter"):
                    pool.get()
                else:
                    pool.ret(pool.get())
        assert closed == [[0]]
        s = pool.stats()
        assert (s["nobjs"], s["nusing"], s["npending"], s["nborrowed"]) == (0, 0, 0, 0), s
        assert not pool_problems(pool)
        obj = pool.get(0)  # the slot is free again
        assert obj == [1]
        pool.ret(obj)
    finally:
        pool.shutdown()


def test_interrupted_retter_serves_the_waiter(Pool: Any) -> None:
    """The slot freed by an interrupted return goes to the thread waiting for it."""
    armed = [True]

    def retter(obj: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise Interrupt("retter")

    pool = Pool(lambda n: [n], max_size=1, min_size=0, retter=retter)
    try:
        held = pool.get()
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(pool.get(WATCHDOG)))
        waiter.start()
        wait_for(lambda: pool.stats()["nwaiting"] == 1, "a waiter")
        with pytest.raises(Interrupt):
            pool.ret(held)
        waiter.join(WATCHDOG)
        assert got == [[1]]  # a new object in the freed slot
        pool.ret(got[0])
    finally:
        pool.shutdown()


def test_gevent_timeout_in_a_slow_retter(Pool: Any) -> None:
    """The case that matters in practice: a gevent.Timeout (a BaseException) fires
    while ``retter`` rolls back over the network."""
    gevent = pytest.importorskip("gevent")
    closed: list[Any] = []
    pool = Pool(lambda n: [n], max_size=1, retter=lambda obj: gevent.sleep(5),
                closer=closed.append)  # fmt: skip
    try:
        obj = pool.get()
        with pytest.raises(gevent.Timeout), gevent.Timeout(0.01):
            pool.ret(obj)
        assert closed == [obj]
        assert pool.stats()["nobjs"] == 0
        assert pool.get(0) == [1]
    finally:
        pool.shutdown()


# ------------------------------------------------------- racing returns


def test_concurrent_double_returns(Pool: Any) -> None:
    """Sixteen threads return the same object at once (a caller's bug, and the
    retter opens a window with the pool unlocked): exactly one return counts,
    the others are ignored, and the object is idle once."""
    world = World(fail_one_in=0, sleep_one_in=2)
    pool = Pool(world.fun, max_size=2, min_size=0, retter=world.hook, delay=1e9)
    try:
        for rnd in range(30):
            before = pool.stats()
            obj = pool.get()
            barrier = threading.Barrier(16)

            def racer(obj: Any = obj, barrier: threading.Barrier = barrier) -> None:
                barrier.wait(WATCHDOG)
                pool.ret(obj)

            errors: list[str] = []
            run_threads([racer] * 16, errors)
            assert not errors, errors[0]
            assert not pool_problems(pool)
            s = pool.stats()
            assert s["nreturns"] - before["nreturns"] == 1, rnd
            assert s["nbad_returns"] - before["nbad_returns"] == 15
            assert s["nusing"] == 0 and [slot.obj for slot in pool._avail].count(obj) == 1
    finally:
        pool.shutdown()


# ------------------------------------------- returns from the garbage collector

GC_RETURN = """
import gc, importlib, random, sys, time
from ppp import TimeOut
from ppp.proxy import _Holder
pool = importlib.import_module(sys.argv[1]).Pool(lambda n: [n], max_size=1, min_size=0)
rng = random.Random(14)
deadline = time.monotonic() + 20
obj = pool.get()
gc.disable()
gc.set_threshold(1, 0)  # (x, 0): no scaling by the live objects on the free-threaded build
for rnd in range(30):
    holder = _Holder(pool, obj)
    cycle = [holder]
    cycle.append(cycle)  # the holder (a thread's or task's pooled object) is only in a cycle
    del holder, cycle, obj
    gc.enable()
    # With the GIL, the next container allocation collects: inside the first get, with
    # the pool locked.  Free-threaded, a thread's allocations count in batches of 512,
    # so the collection comes inside some later get, at a point that the garbage kept
    # between the attempts moves from round to round.
    keep = []
    timeout = 0.5 if rnd == 0 else 0.0
    while True:
        try:
            obj = pool.get(timeout)
            break
        except TimeOut:
            timeout = 0.0
        if time.monotonic() > deadline:
            print("lost", rnd, pool.stats())
            sys.exit(1)
        keep.extend([[] for _ in range(rng.randrange(1, 16))])
    gc.disable()
    del keep
    s = pool.stats()
    if (s["nobjs"], s["nusing"], s["ncreated"]) != (1, 1, 1):
        print("counts", rnd, s)
        sys.exit(1)
print("done")
"""


def test_proxy_holder_collected_inside_the_pool_does_not_deadlock(backend: Any) -> None:
    """A pooled object whose Proxy holder is freed by the cyclic GC while its own
    thread is inside the pool must come back, not deadlock that thread: the pool
    defers a ``ret`` made while its thread holds the lock until it releases it
    (in the first round on a GIL build, the deferred return reaches the very
    ``get`` that triggered the GC).  Thirty rounds, so that on a free-threaded
    build, whose GC runs at batched points, collections land all over ``get``."""
    import subprocess

    try:
        out = subprocess.run(
            [sys.executable, "-c", GC_RETURN, backend.__name__],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("deadlock: the thread waits on the pool lock it holds")
    assert out.stdout.split() == ["done"], out.stdout + out.stderr
