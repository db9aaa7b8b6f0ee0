"""Differential testing: both Pool twins and a small reference model, step by step.

A hypothesis state machine draws a pool configuration and a random program of
``get`` (with and without timeouts), ``ret`` (held, double, stale and foreign
objects), ``obj()`` blocks, waiting threads (``Waiter`` tickets queued, woken,
run and timed out one step at a time: barging, hand-off and the fair mode),
failing ``fun``, raising and interrupted hooks (a BaseException, as
KeyboardInterrupt or gevent's Timeout), health flips, fake-clock advances,
housekeeping rounds (which kill over-held objects) and ``shutdown``.  Every step
runs on the compiled twin, the pure twin and :class:`Model`, a plain
single-threaded restatement of SPEC section 2; after every step the returned
object, the exception, the hook calls, the log and ``stats()`` must agree.  The
model is deliberately naive (no locks; a waiting thread is a record in a list),
so a disagreement points at the pool.

Interrupt steps arm a one-shot ``Interrupt`` on the k-th call of ``fun``, a hook or
the clock (a user ``clock=``, which the compiled twin too calls through Python) for
one ``get``, ``obj()`` block, ``ret``, waiting thread's run, housekeeping round or
``shutdown``.  Both twins must read the clock equally often, so the interrupt lands
at the same point in each.  The model predicts the hook and ``fun`` cases; after an
interrupted clock the twins must agree and keep what the pool guarantees wherever an
interrupt lands, then the model takes the pure twin's state.  After every interrupt
step ``check_pool`` (tests/invariants.py) runs on both twins, mirrored on the model
(only its counts when fun or a hook is still set to fail, or threads wait).
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from invariants import check_counts, check_pool

from ppp import PoolException, PPPException, TimeOut
from ppp._backend import extensions_disabled
from ppp._common import GOT as GOT_CODE
from ppp._common import HANDOFF_PASSES, QUEUED, format_stack

IDLE, USING, BORROWED = 0, 1, 2
HOOKS = ("opener", "getter", "retter", "closer", "health", "stats", "tracer")
START = 1000.0  # fake clock origin (not 0: the pool reports hk_last == 0 as "never")

# stats() keys that legitimately differ between two pools run side by side
VOLATILE = {"id", "backend", "started", "running", "time_per_hk"}
# stats() keys the model predicts
MODELLED = (
    "navail nusing nborrowed npending nobjs ncreated ncreating nuses nkilled nrecycled "
    "nwornout nexpired nborrows nreturns nbad_returns ndestroys nhealth bad_health hk_rounds "
    "hk_errors hc_rounds hc_errors nwaiting max_waiting nwaits ntimeouts shutdown "
    "rel_hk_last sem avail using nhandoffs max_passed longest_wait _waiting"
).split()


def twin_modules() -> list[ModuleType]:
    """Both twins side by side (the pure one alone under PPP_NO_EXTENSIONS).

    A differential test needs the two modules at once, so it imports them by
    name; like the ``backend`` fixture it fails, never skips, on a broken build."""
    names = ["ppp._pool_py"] if extensions_disabled() else ["ppp._pool", "ppp._pool_py"]
    try:
        return [importlib.import_module(name) for name in names]
    except ImportError as exc:  # pragma: no cover - a broken build
        pytest.fail(f"the compiled twin did not import: {exc}", pytrace=False)


class FunError(Exception):
    """What ``fun`` raises when the program arms a failure."""


class HookError(Exception):
    """What a hook raises when the program makes it raise."""


class Interrupt(BaseException):
    """What a hook raises when the program interrupts it, as KeyboardInterrupt or
    gevent's Timeout would: the pool must retire the object, not lose its slot."""


INTERRUPTIBLE = ("opener", "getter", "retter", "health")
# where a one-shot interrupt can be armed for the next step: fun, a hook, or the clock
ONE_SHOT = ("fun", "opener", "getter", "retter", "closer", "health", "clock")
# the one-shot sources each step can reach (fun and opener through creation or refill)
REACHED_BY = {
    "get": ("fun", "opener", "getter", "clock"),
    "use": ("fun", "opener", "getter", "retter", "closer", "clock"),
    "ret": ("fun", "opener", "retter", "closer", "clock"),
    "hk_round": ("fun", "opener", "closer", "health", "clock"),
    "shutdown": ("closer", "clock"),
    # a waiting thread's run, by what it was granted (see ready_waiters): a creation
    # (after a shutdown it closes what it made), an object, or a try at an idle one
    "wait create": ("fun", "opener", "closer", "clock"),
    "wait obj": ("getter", "clock"),
    "wait woken": ("getter", "clock"),
}


class Obj:
    """A pooled object that equals every Obj of the same number and is unhashable,
    so only tracking by identity can tell a foreign look-alike from the real one."""

    __slots__ = ("n",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Obj) and other.n == self.n

    def __str__(self) -> str:
        return f"obj-{self.n}"


class FakeClock:
    """The injectable clock: time moves only when the program says so."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class TwinClock:
    """One twin's view of the shared FakeClock: counts its calls and raises the
    interrupt armed on "clock" (the model reads the FakeClock itself: it cannot say
    when the pool reads its clock)."""

    def __init__(self, clock: FakeClock, env: Env) -> None:
        self.clock = clock
        self.env = env

    def __call__(self) -> float:
        self.env.clock_calls += 1
        self.env.tick("clock")
        return self.clock.now


@dataclass
class Env:
    """The behaviour of one system's ``fun`` and hooks, and the record of their calls."""

    fail: int = 0  # the next ``fail`` calls of fun raise
    dup_of: int | None = None  # the next call of fun returns this object again, if pooled
    raising: set[str] = field(default_factory=set)  # hooks that raise
    interrupting: set[str] = field(default_factory=set)  # hooks that raise Interrupt
    unhealthy: set[int] = field(default_factory=set)  # objects whose health check fails
    events: list[tuple[str, int]] = field(default_factory=list)
    # one-shot interrupts of the current step: source -> calls left until it raises
    armed: dict[str, int] = field(default_factory=dict)
    clock_calls: int = 0  # a twin's clock calls (the model's are not counted)

    def tick(self, source: str) -> None:
        """One call of ``source``: raise Interrupt on the armed call."""
        left = self.armed.get(source)
        if left is None:
            return
        if left > 1:
            self.armed[source] = left - 1
            return
        del self.armed[source]
        raise Interrupt(f"{source} (one-shot)")

    def fun_call(self, n: int) -> None:
        self.events.append(("fun", n))
        self.tick("fun")
        if self.fail:
            self.fail -= 1
            raise FunError(f"fun failed creating {n}")

    def hook_call(self, name: str, n: int) -> None:
        self.events.append((name, n))
        self.tick(name)
        if name in self.interrupting:
            raise Interrupt(name)
        if name in self.raising:
            raise HookError(name)

    def trace(self, n: int) -> str:
        if "tracer" in self.raising:
            raise HookError("tracer")
        return f"T{n}"

    def stats(self, n: int) -> dict[str, int]:
        if "stats" in self.raising:
            raise HookError("stats")
        return {"n": n}


@dataclass(frozen=True)
class Config:
    max_size: int
    min_size: int
    timeout: float | None
    max_use: int
    max_lifetime: float
    max_avail_delay: float
    max_using_delay: float
    max_using_delay_kill: float
    health_freq: int
    hooks: frozenset[str]
    leak_trace: bool
    initial_failures: int
    handoff_after: float

    def kwargs(self) -> dict[str, Any]:
        return {
            "max_size": self.max_size,
            "min_size": self.min_size,
            "timeout": self.timeout,
            "max_use": self.max_use,
            "max_lifetime": self.max_lifetime,
            "max_avail_delay": self.max_avail_delay,
            "max_using_delay": self.max_using_delay,
            "max_using_delay_kill": self.max_using_delay_kill,
            "health_freq": self.health_freq,
            "leak_trace": self.leak_trace,
            "handoff_after": self.handoff_after,
        }


@st.composite
def configs(draw: st.DrawFn, waiting: bool = False) -> Config:
    """A pool configuration; ``waiting``: a pool of 1 or 2, where threads queue often."""
    max_size = draw(st.sampled_from([1, 1, 2] if waiting else [0, 1, 2, 3, 4]))
    return Config(
        max_size=max_size,
        min_size=draw(st.integers(0, max_size or 3)),
        timeout=draw(st.sampled_from([None, 0, 0.001])),
        max_use=draw(st.sampled_from([0, 0, 1, 2, 3])),
        max_lifetime=draw(st.sampled_from([0.0, 0.0, 10.0, 25.0])),
        max_avail_delay=draw(st.sampled_from([0.0, 0.0, 8.0, 20.0])),
        max_using_delay=draw(st.sampled_from([0.0, 5.0])),
        max_using_delay_kill=draw(st.sampled_from([0.0, 0.0, 15.0, 30.0])),
        health_freq=draw(st.integers(1, 3)),
        hooks=frozenset(draw(st.sets(st.sampled_from(HOOKS)))),
        leak_trace=draw(st.booleans()),
        initial_failures=draw(st.integers(0, 2)),
        handoff_after=draw(st.sampled_from([0.0, 0.5, 3.0, 1e9])),
    )


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a call did: ``("ok", value)`` or ``("raise", type name, message)``;
    pool ids are blanked out of messages so two pools can be compared."""
    try:
        return ("ok", call())
    except (PPPException, FunError, Interrupt) as exc:
        return ("raise", type(exc).__name__, re.sub(r"pool \d+", "pool N", str(exc)))


class ListHandler(logging.Handler):
    """Collects the "ppp" logger's records so the twins' logs can be compared."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[tuple[str, str, str | None]]:
        out = []
        for r in self.records:
            exc = r.exc_info[0].__name__ if r.exc_info and r.exc_info[0] else None
            out.append((r.levelname, re.sub(r"pool \d+", "pool N", r.getMessage()), exc))
        self.records.clear()
        return out


# ------------------------------------------------------------------- the systems


class Waiting:
    """A pool as ``check_counts`` sees it while threads wait: its ``stats()`` with
    ``nwaiting`` and ``npending`` checked against the model's, then 0 (that check
    asks a pool at rest: nobody queued, no creation reserved)."""

    def __init__(self, pool: Any, nwaiting: int, npending: int) -> None:
        self.pool = pool
        self.nwaiting = nwaiting
        self.npending = npending

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.pool.stats()
        assert data["nwaiting"] == self.nwaiting, f"nwaiting {data['nwaiting']}"
        assert data["npending"] == self.npending, f"npending {data['npending']}"
        return {**data, "nwaiting": 0, "npending": 0}


class TwinSystem:
    """One real pool (compiled or pure) with instrumented ``fun`` and hooks."""

    def __init__(self, module: ModuleType, cfg: Config, clock: FakeClock, env: Env) -> None:
        self.name = module.__name__
        self.env = env
        self.objs: dict[int, Obj] = {}  # every object ever made: ids are never reused
        self.foreign: list[object] = []
        hooks: dict[str, Any] = {}
        for name in ("opener", "getter", "retter", "closer"):
            if name in cfg.hooks:
                hooks[name] = self._hook(name)
        if "health" in cfg.hooks:
            hooks["health"] = self._health
        if "tracer" in cfg.hooks:
            hooks["tracer"] = lambda obj: env.trace(obj.n)
        if "stats" in cfg.hooks:
            hooks["stats"] = lambda obj: env.stats(obj.n)
        self.clock = TwinClock(clock, env)
        self.pool = module.Pool(self._fun, delay=1e9, clock=self.clock, **cfg.kwargs(), **hooks)
        self.tickets: dict[int, Any] = {}  # waiting threads, frozen: see enqueue

    def _fun(self, n: int) -> Obj:
        self.env.fun_call(n)
        dup, self.env.dup_of = self.env.dup_of, None
        if dup is not None and id(self.objs[dup]) in self.pool._slots:
            return self.objs[dup]  # a buggy fun: the pool must refuse it
        obj = self.objs[n] = Obj(n)
        return obj

    def _hook(self, name: str) -> Callable[[Obj], None]:
        def hook(obj: Obj) -> None:
            self.env.hook_call(name, obj.n)

        return hook

    def _health(self, obj: Obj) -> bool:
        self.env.hook_call("health", obj.n)
        return obj.n not in self.env.unhealthy

    def get(self, timeout: float | None) -> int:
        obj = self.pool.get(timeout)
        assert isinstance(obj, Obj) and self.objs[obj.n] is obj
        return obj.n

    def ret(self, n: int) -> None:
        self.pool.ret(self.objs[n])

    def ret_foreign(self, kind: str, n: int) -> None:
        obj: object = {"lookalike": Obj(n), "list": [n], "none": None}[kind]
        self.foreign.append(obj)
        self.pool.ret(obj)

    def use(self, timeout: float | None, fail: bool) -> int:
        with self.pool.obj(timeout) as obj:
            if fail:
                raise FunError("raised inside the with block")
            n: int = obj.n
        return n

    def hk_round(self) -> None:
        self.pool._hk_round()

    def shutdown(self) -> None:
        self.pool.shutdown()

    # a waiting thread, one step at a time: its ticket queued as a get that found
    # the pool full queues it; "running" it is what that thread does once its lock
    # is released (``_wait``, ``_get_slow`` and ``get``'s clean-up, in order)

    def enqueue(self, wid: int) -> None:
        ticket = self.pool._Waiter()
        assert self.pool._lk_take(ticket, False, self.pool._now()) == QUEUED
        self.tickets[wid] = ticket

    def run_waiter(self, wid: int, acquire: bool = True) -> int | str:
        pool, ticket = self.pool, self.tickets[wid]
        if acquire and not ticket.lock.acquire(False):
            return "asleep"
        try:
            code = pool._woken(ticket)
            if code == QUEUED:
                return "waits again"
            del self.tickets[wid]
            if code == GOT_CODE:
                pool._lk_pickup(ticket.slot, pool._now())
                obj = pool._after_get(ticket.slot)
            else:
                obj = pool._create(ticket, checkout=True)
        except BaseException:
            self.tickets.pop(wid, None)
            pool._cancel(ticket)
            raise
        assert isinstance(obj, Obj) and self.objs[obj.n] is obj
        return obj.n

    def time_out(self, wid: int) -> int | str:
        if not self.pool._lk_timeout(self.tickets[wid]):
            del self.tickets[wid]
            raise TimeOut("timeout after a while waiting for an object (a waiter)")
        return self.run_waiter(wid, acquire=False)  # granted meanwhile: it goes on

    def cancel(self, wid: int) -> None:
        self.pool._cancel(self.tickets.pop(wid))

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.pool.stats()
        pool = self.pool
        data["_waiting"] = (
            bool(pool._handoff),
            pool._nwoken,
            pool._barge_t,
            [(w.since, w.passed0, w.barge0, bool(w.woken)) for w in pool._waiters],
        )
        return {k: v for k, v in data.items() if k not in VOLATILE}

    def check_state(self) -> None:
        """White-box invariants, read under the pool's own lock."""
        pool = self.pool
        pool._acquire()
        try:
            slots = list(pool._slots.values())
            avail = list(pool._avail)
            waiters = list(pool._waiters)
            assert all(w.queued for w in waiters)
            assert pool._nwoken == sum(bool(w.woken) for w in waiters)
            assert pool._nwoken >= min(len(waiters), len(avail)), "an idle object, nobody woken"
            assert len({id(s) for s in avail}) == len(avail), "an idle object listed twice"
            assert all(s.state == IDLE for s in avail)
            assert {id(s) for s in avail} <= {id(s) for s in slots}
            assert sum(s.state == USING for s in slots) == pool._nusing
            assert sum(s.state == IDLE for s in slots) == len(avail)
            assert all(pool._slots[id(s.obj)] is s for s in slots)
            if pool._max_size:
                assert len(slots) <= pool._max_size
        finally:
            pool._release()


@dataclass(eq=False)  # waiters are told apart by identity, as tickets are
class MWaiter:
    """A waiting thread: queued (``grant`` None), or granted ("obj", n), ("create", n),
    ("error",) and not run yet."""

    since: float
    passed0: int
    barge0: float
    woken: bool = False
    grant: tuple[Any, ...] | None = None


@dataclass
class MSlot:
    n: int
    created: float
    state: int = IDLE
    uses: int = 0
    last_get: float = 0.0
    last_ret: float = 0.0
    warned: bool = False
    holder: str | None = None


class Model:
    """SPEC section 2 for a single thread, written as plainly as possible."""

    def __init__(self, cfg: Config, clock: FakeClock, env: Env) -> None:
        self.cfg = cfg
        self.clock = clock
        self.env = env
        self.hooks = cfg.hooks
        self.warn_delay = cfg.max_using_delay or cfg.max_using_delay_kill
        self.timed = bool(cfg.max_avail_delay or self.warn_delay or cfg.max_lifetime)
        self.slots: dict[int, MSlot] = {}  # in creation order, like the pool's dict
        self.avail: list[int] = []  # idle stack, top last
        self.is_shutdown = False
        self.c = dict.fromkeys(
            "ncreating ncreated nuses nusing nreturns nbad_returns nkilled nrecycled nwornout "
            "nexpired nborrows ndestroys nhealth bad_health hk_rounds hc_rounds hc_errors "
            "nwaits ntimeouts max_waiting".split(),
            0,
        )
        self.c.update(nhandoffs=0, max_passed=0, nrecorded=0)
        self.npending = 0
        self.wait_max = 0.0
        self.waiters: list[MWaiter] = []  # queued, oldest first
        self.mw: dict[int, MWaiter] = {}  # every waiter not yet run, by id
        self.handoff = False  # objects go to the oldest waiter, first come first served
        # normal mode: the time spent in hand-off mode; hand-off mode: the time spent
        # in normal mode (frozen)
        self.barge_t = 0.0
        self.nwoken = 0
        self.nfreed = 0  # objects made idle while threads waited
        self.hk_last = 0.0
        self.fill()

    # helpers
    def hook(self, name: str, n: int) -> None:
        if name in self.hooks:
            try:
                self.env.hook_call(name, n)
            except HookError:
                pass  # logged by the pool

    def close(self, ns: list[int]) -> None:
        """``closer`` on forgotten objects, oldest first: an interrupted closer is not
        run again, the others still run, then the first interrupt is raised."""
        interrupt: Interrupt | None = None
        for n in ns:
            try:
                self.hook("closer", n)
            except Interrupt as exc:
                interrupt = interrupt or exc
        if interrupt is not None:
            raise interrupt

    def has_room(self) -> bool:
        return not self.cfg.max_size or len(self.slots) + self.npending < self.cfg.max_size

    def unpend(self) -> None:
        """A reserved creation made nothing: its slot goes to the oldest waiter."""
        self.npending -= 1
        self.free_capacity()

    def create(self, checkout: bool, n: int | None = None) -> int:
        if n is None:  # else reserved for a waiter
            n = self.c["ncreating"]
            self.c["ncreating"] += 1
            self.npending += 1
        try:
            self.env.fun_call(n)
        except (FunError, Interrupt):  # an interrupted fun made nothing either
            self.unpend()
            raise
        dup, self.env.dup_of = self.env.dup_of, None
        if dup is not None and dup in self.slots:
            self.hook("opener", dup)
            self.unpend()
            raise PoolException("fun returned an object the pool already holds")
        try:
            self.hook("opener", n)
        except Interrupt:  # the object is not pooled: closed, its slot free
            self.unpend()
            self.close([n])
            raise
        if self.is_shutdown:  # a waiter's creation, run after the shutdown
            self.c["ncreated"] += 1
            self.c["ndestroys"] += 1
            self.unpend()
            self.hook("closer", n)
            raise PoolException("pool was shut down while creating an object")
        self.npending -= 1
        self.slots[n] = slot = MSlot(n, self.clock() if self.timed else 0.0)
        slot.last_get = slot.last_ret = slot.created
        self.c["ncreated"] += 1
        if checkout:
            self.checkout(slot)
            self.after_get(slot)
            return n
        self.avail.append(n)
        return n

    def checkout(self, slot: MSlot) -> None:
        slot.state = USING
        slot.uses += 1
        self.c["nuses"] += 1
        self.c["nusing"] += 1
        if self.timed:
            slot.last_get = self.clock()
            slot.warned = False

    def after_get(self, slot: MSlot) -> None:
        if self.cfg.leak_trace:
            slot.holder = "MainThread"
        try:
            self.hook("getter", slot.n)
        except Interrupt:  # the caller never gets it: retired
            self.forget(slot)
            self.close([slot.n])
            raise

    def forget(self, slot: MSlot) -> None:
        del self.slots[slot.n]
        if slot.state == USING:
            self.c["nusing"] -= 1
        slot.state = -1
        self.c["ndestroys"] += 1
        self.free_capacity()

    # waiting: barging, waking, hand-off
    def barging_time(self) -> float:
        """The time spent in normal mode, when a later thread may pass a waiter."""
        return self.barge_t if self.handoff else self.clock() - self.barge_t

    def set_handoff(self, on: bool) -> None:
        if on != self.handoff:
            self.barge_t = self.clock() - self.barge_t
            self.c["nhandoffs"] += on
            self.handoff = on

    def starving(self, w: MWaiter) -> bool:
        return (
            self.barging_time() - w.barge0 >= self.cfg.handoff_after
            or self.nfreed - w.passed0 >= HANDOFF_PASSES
        )

    def served(self, w: MWaiter) -> None:
        self.c["nrecorded"] += 1
        self.wait_max = max(self.wait_max, self.clock() - w.since)
        self.c["max_passed"] = max(self.c["max_passed"], self.nfreed - w.passed0)
        self.set_handoff(bool(self.waiters) and self.starving(w))

    def unqueue(self, w: MWaiter) -> None:
        self.waiters.remove(w)
        self.nwoken -= w.woken
        w.woken = False

    def rewake(self) -> None:
        while self.nwoken < min(len(self.waiters), len(self.avail)):
            w = next(w for w in self.waiters if not w.woken)
            w.woken = True
            self.nwoken += 1

    def idle(self, slot: MSlot) -> None:
        """``slot`` is free (not counted in use): to the oldest waiter, or idle."""
        if self.waiters:
            w = self.waiters[0]
            if self.handoff or self.starving(w):
                self.set_handoff(True)
                self.unqueue(w)
                slot.state = USING
                slot.uses += 1
                self.c["nuses"] += 1
                self.c["nusing"] += 1
                slot.last_get = float("inf")  # not picked up yet
                slot.warned = False
                w.grant = ("obj", slot.n)
                self.served(w)
                self.rewake()
                return
            self.nfreed += 1
            slot.state = IDLE
            self.avail.append(slot.n)
            self.rewake()
            return
        slot.state = IDLE
        self.avail.append(slot.n)

    def free_capacity(self) -> None:
        if self.waiters and self.has_room():
            w = self.waiters[0]
            self.unqueue(w)
            w.grant = ("create", self.c["ncreating"])
            self.c["ncreating"] += 1
            self.npending += 1
            self.served(w)
            self.rewake()

    def will_queue(self) -> bool:
        return not self.is_shutdown and not self.avail and bool(self.waiters or not self.has_room())

    def enqueue(self, wid: int) -> None:
        if not self.waiters:
            self.set_handoff(False)
        self.mw[wid] = w = MWaiter(self.clock(), self.nfreed, self.barging_time())
        self.waiters.append(w)
        self.c["nwaits"] += 1
        self.c["max_waiting"] = max(self.c["max_waiting"], len(self.waiters))

    def run_waiter(self, wid: int, acquire: bool = True) -> int | str:
        w = self.mw[wid]
        if acquire and w.grant is None and not w.woken:
            return "asleep"
        if w.grant is None:  # woken to compete for an idle object
            self.nwoken -= 1
            w.woken = False
            if not self.avail:
                if not self.handoff and self.starving(w):
                    self.set_handoff(True)
                return "waits again"
            del self.mw[wid]
            slot = self.slots[self.avail.pop()]
            self.checkout(slot)
            slot.warned = False
            if not self.timed:
                slot.last_get = 0.0
            self.waiters.remove(w)
            self.served(w)
            self.after_get(slot)
            return slot.n
        del self.mw[wid]
        if w.grant[0] == "error":
            raise PoolException("pool N was shut down while waiting")
        if w.grant[0] == "create":
            return self.create(True, w.grant[1])
        slot = self.slots[w.grant[1]]
        if slot.state == USING and slot.last_get == float("inf"):
            slot.last_get = self.clock()
        self.after_get(slot)
        return slot.n

    def time_out(self, wid: int) -> int | str:
        w = self.mw[wid]
        if w.grant is None:
            del self.mw[wid]
            self.unqueue(w)
            self.c["ntimeouts"] += 1
            self.rewake()
            raise TimeOut("timeout after a while")
        return self.run_waiter(wid, acquire=False)

    def cancel(self, wid: int) -> None:
        w = self.mw.pop(wid)
        if w.grant is None:
            self.unqueue(w)
            self.rewake()
        elif w.grant[0] == "obj":
            slot = self.slots.get(w.grant[1])
            if slot is not None and slot.state == USING:
                if self.is_shutdown:
                    self.forget(slot)
                    self.hook("closer", slot.n)
                else:
                    self.c["nusing"] -= 1
                    self.idle(slot)
        elif w.grant[0] == "create":
            self.unpend()

    def granted(self) -> set[int]:
        return {w.grant[1] for w in self.mw.values() if w.grant and w.grant[0] == "obj"}

    def fill(self) -> None:
        while (
            not self.is_shutdown
            and not self.waiters
            and len(self.slots) + self.npending < self.cfg.min_size
            and self.has_room()
        ):
            try:
                self.create(checkout=False)
            except (FunError, PoolException):
                return

    # the API
    def would_block(self, timeout: float | None) -> bool:
        if self.is_shutdown or self.avail or (self.has_room() and not self.waiters):
            return False
        return (self.cfg.timeout if timeout is None else timeout) is None

    def get(self, timeout: float | None) -> int:
        if self.avail and not self.is_shutdown:
            n = self.avail.pop()  # barging: waiters or not
            self.checkout(self.slots[n])
            self.after_get(self.slots[n])
            return n
        if self.is_shutdown:
            raise PoolException("pool N is shut down")
        if self.has_room() and not self.waiters:
            return self.create(checkout=True)
        wait = self.cfg.timeout if timeout is None else timeout
        assert wait is not None, "the program never blocks forever"
        if wait:
            if not self.waiters:
                self.set_handoff(False)
            self.c["nwaits"] += 1
            self.c["max_waiting"] = max(self.c["max_waiting"], len(self.waiters) + 1)
        self.c["ntimeouts"] += 1
        raise TimeOut(f"timeout after {wait} seconds")

    def ret(self, n: int | None) -> None:
        slot = self.slots.get(n) if n is not None else None
        if slot is None or slot.state != USING:
            self.c["nbad_returns"] += 1
            return
        try:
            self.hook("retter", slot.n)
        except Interrupt:  # its state is unknown: retired, not counted as returned
            self.forget(slot)
            self.close([slot.n])
            raise
        self.c["nreturns"] += 1
        now = self.clock()
        if self.cfg.max_use and slot.uses >= self.cfg.max_use:
            self.c["nwornout"] += 1
        elif self.cfg.max_lifetime and now - slot.created >= self.cfg.max_lifetime:
            self.c["nexpired"] += 1
        elif not self.is_shutdown:
            self.c["nusing"] -= 1
            if self.timed:
                slot.last_ret = now
            slot.holder = None
            self.idle(slot)
            return
        self.forget(slot)
        self.close([slot.n])  # an interrupted closer: raised, no refill
        self.fill()

    def use(self, timeout: float | None, fail: bool) -> int:
        n = self.get(timeout)
        self.ret(n)
        if fail:
            raise FunError("raised inside the with block")
        return n

    def hk_round(self) -> None:
        cfg = self.cfg
        now = self.clock()
        self.c["hk_rounds"] += 1
        self.hk_last = now
        closing: list[int] = []
        if self.warn_delay and not self.is_shutdown:
            for slot in list(self.slots.values()):
                if slot.state != USING:
                    continue
                held = now - slot.last_get
                if cfg.max_using_delay_kill and held >= cfg.max_using_delay_kill:
                    self.c["nkilled"] += 1
                    self.forget(slot)
                    closing.append(slot.n)
                elif held >= self.warn_delay:
                    slot.warned = True
        if cfg.max_lifetime or cfg.max_avail_delay:
            keep = []
            gone = []
            total = len(self.slots) + self.npending
            for n in self.avail:  # oldest idle first
                slot = self.slots[n]
                if cfg.max_lifetime and now - slot.created >= cfg.max_lifetime:
                    self.c["nexpired"] += 1
                elif (
                    cfg.max_avail_delay
                    and total > cfg.min_size
                    and now - slot.last_ret >= cfg.max_avail_delay
                ):
                    self.c["nrecycled"] += 1
                else:
                    keep.append(n)
                    continue
                total -= 1
                gone.append(slot)
            # off the idle stack first, then forgotten (as the twins do): the waiters
            # that forget() wakes are counted against the objects that stay idle
            self.avail = keep
            for slot in gone:
                closing.append(slot.n)
                self.forget(slot)
        self.close(closing)  # an interrupted closer ends the round here (raised)
        if "health" in self.hooks and self.c["hk_rounds"] % cfg.health_freq == 0:
            self.health_check()
        self.fill()

    def health_check(self) -> None:
        self.c["hc_rounds"] += 1
        for n in list(self.avail):
            if self.is_shutdown:
                continue
            slot = self.slots[n]
            self.avail.remove(n)
            slot.state = BORROWED
            self.c["nborrows"] += 1
            self.c["nhealth"] += 1
            # housekeeping survives any exception from health, BaseException included:
            # the check failed
            try:
                self.env.hook_call("health", n)
                healthy = n not in self.env.unhealthy
            except (HookError, Interrupt):
                self.c["hc_errors"] += 1
                healthy = False
            if healthy:
                self.idle(slot)
                continue
            self.c["bad_health"] += 1
            self.forget(slot)
            try:
                self.close([n])
            except Interrupt:  # an interrupted closer: logged, the round goes on
                pass

    def shutdown(self) -> None:
        self.is_shutdown = True
        for w in self.waiters:
            w.grant = ("error",)
        self.waiters = []
        self.nwoken = 0
        idle, self.avail = self.avail, []
        for n in idle:
            self.forget(self.slots[n])
        self.close(idle)

    def stats(self) -> dict[str, Any]:
        cfg, c, now = self.cfg, self.c, self.clock()
        avail: list[dict[str, Any]] = []
        using: list[dict[str, Any]] = []
        for slot in self.slots.values():
            item: dict[str, Any] = {"n": slot.n, "uses": slot.uses}
            if "stats" in self.hooks:
                try:
                    item["stats"] = self.env.stats(slot.n)
                except HookError as exc:
                    item["stats"] = f"<stats error: {exc!r}>"
            elif "tracer" in self.hooks:
                try:
                    item["trace"] = self.env.trace(slot.n)
                except HookError as exc:
                    item["trace"] = f"<tracer error: {exc!r}>"
            else:
                item["trace"] = f"obj-{slot.n}"
            if self.timed:
                item.update(
                    age=now - slot.created,
                    last_get=slot.last_get - now,
                    last_ret=slot.last_ret - now,
                )
            if slot.holder is not None:
                item["holder"] = slot.holder
            (avail if slot.state == IDLE else using).append(item)
        nobjs = len(self.slots)
        return {
            "navail": len(self.avail),
            "nusing": c["nusing"],
            "nborrowed": nobjs - len(self.avail) - c["nusing"],
            "npending": self.npending,
            "nobjs": nobjs,
            **{k: c[k] for k in c if k not in ("nusing", "nrecorded")},
            "hk_errors": 0,
            "nwaiting": len(self.waiters),
            "longest_wait": self.wait_max if c["nwaits"] and c["nrecorded"] else None,
            "_waiting": (
                self.handoff,
                self.nwoken,
                self.barge_t,
                [(w.since, w.passed0, w.barge0, w.woken) for w in self.waiters],
            ),
            "shutdown": self.is_shutdown,
            "rel_hk_last": self.hk_last - now if self.hk_last else None,
            "sem": (
                {"value": cfg.max_size - nobjs - self.npending, "init": cfg.max_size}
                if cfg.max_size
                else None
            ),
            "avail": avail,
            "using": using,
        }


# --------------------------------------------------------------- the machine


class PoolMachine(RuleBasedStateMachine):
    """One random program, run on every twin and on the model in lock step."""

    modules: list[ModuleType] = []

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.twins: list[TwinSystem] = []
        self.held: list[int] = []  # objects the program holds, by creation number
        self.live: list[int] = []  # waiting threads not run to the end, by id
        self.next_wid = 0
        self.arming: tuple[str, int] | None = None  # a one-shot interrupt for the next step
        self.fired = False  # whether the last step's one-shot interrupt was reached
        self.last: tuple[Any, ...] = ()  # the last step's outcome on the twins
        self.returned: int | None = None  # the object the last ``ret`` step gave back
        self.logs = ListHandler()
        self.logger = logging.getLogger("ppp")
        self.logger.addHandler(self.logs)

    @initialize(cfg=configs())
    def start(self, cfg: Config) -> None:
        self.cfg = cfg
        logs = []
        for module in self.modules:
            env = Env(fail=cfg.initial_failures)
            self.twins.append(TwinSystem(module, cfg, self.clock, env))
            logs.append(self.logs.take())
        assert all(log == logs[0] for log in logs), f"construction logs differ: {logs}"
        self.model = Model(cfg, self.clock, Env(fail=cfg.initial_failures))

    def systems(self) -> Iterator[Any]:
        yield from self.twins
        yield self.model

    def run(self, step: Callable[[Any], Any]) -> tuple[Any, ...]:
        """Run one step on every system; the twins must agree exactly (result, log,
        clock calls), the model on the result type and value.

        With a one-shot interrupt armed, the same call of the same source raises
        ``Interrupt`` in every system.  The model cannot say when a twin reads its
        clock: after an interrupted clock the twins must agree with each other and
        keep the pool's invariants, and the model takes the pure twin's state."""
        armed, self.arming = self.arming, None
        for s in self.systems():
            s.env.armed.clear()
            if armed is not None and (armed[0] != "clock" or s is not self.model):
                s.env.armed[armed[0]] = armed[1]
        results = []
        logs = []
        clock_calls = []
        for twin in self.twins:
            self.logs.records.clear()
            before = twin.env.clock_calls
            results.append(outcome(partial(step, twin)))
            logs.append(self.logs.take())
            clock_calls.append(twin.env.clock_calls - before)
        first = results[0]
        for twin, result, log, calls in zip(
            self.twins[1:], results[1:], logs[1:], clock_calls[1:], strict=True
        ):
            name = self.twins[0].name
            assert result == first, f"{twin.name} returned {result}, {name} {first}"
            assert log == logs[0], f"{twin.name} logged {log}, {name} {logs[0]}"
            assert calls == clock_calls[0], (
                f"{twin.name} read the clock {calls} times, {name} {clock_calls[0]}"
            )
        clock_fired = (
            armed is not None and armed[0] == "clock" and "clock" not in self.twins[0].env.armed
        )
        if clock_fired:
            self.resync()
        else:
            expected = outcome(lambda: step(self.model))
            assert first[:2] == expected[:2], f"the twins gave {first}, the model {expected}"
        if first[0] == "raise" and first[1] == "TimeOut":
            assert "timeout after" in first[2]
        fired = [s.env.armed == {} for s in self.systems()]
        for s in self.systems():
            s.env.armed.clear()
        self.fired = armed is not None and all(fired)
        self.last = first
        return first

    def resync(self) -> None:
        """The model takes the pure twin's state (white-box, under the pool's lock),
        its waiting threads and what they were granted included."""
        twin, model = self.twins[-1], self.model
        pool = twin.pool
        pool._acquire()
        try:
            slots = list(pool._slots.values())
            avail = [slot.obj.n for slot in pool._avail]
            hk_last, is_shutdown = pool._hk_last, pool._shutdown
            model.npending, model.handoff = pool._npending, bool(pool._handoff)
            model.barge_t = pool._barge_t
            model.nwoken, model.nfreed = pool._nwoken, pool._nfreed
            model.wait_max, nrecorded = pool._wait_max, len(pool._wait_samples)
            waiters = {id(ticket): wid for wid, ticket in twin.tickets.items()}
            model.mw = {wid: self.mwaiter(ticket) for wid, ticket in twin.tickets.items()}
            model.waiters = [model.mw[waiters[id(ticket)]] for ticket in pool._waiters]
        finally:
            pool._release()
        model.slots = {
            slot.obj.n: MSlot(
                slot.obj.n,
                slot.created,
                slot.state,
                slot.uses,
                slot.last_get,
                slot.last_ret,
                slot.warned,
                slot.holder,
            )
            for slot in slots
        }
        model.avail = avail
        model.hk_last, model.is_shutdown = hk_last, is_shutdown
        data = twin.pool.stats()
        for key in model.c:
            model.c[key] = nrecorded if key == "nrecorded" else data[key]
        model.env.events = list(twin.env.events)
        model.env.fail, model.env.dup_of = twin.env.fail, twin.env.dup_of

    @staticmethod
    def mwaiter(ticket: Any) -> MWaiter:
        """A twin's ticket as the model's waiter."""
        grant: tuple[Any, ...] | None = None
        if ticket.error:
            grant = ("error",)
        elif ticket.slot is not None:
            grant = ("obj", ticket.slot.obj.n)
        elif ticket.create >= 0:
            grant = ("create", ticket.create)
        return MWaiter(ticket.since, ticket.passed0, ticket.barge0, bool(ticket.woken), grant)

    def in_use(self) -> list[int]:
        """The objects the program holds less those killed, as the model says."""
        slots = self.model.slots
        return [n for n in self.held if n in slots and slots[n].state == USING]

    def check_after_interrupt(self, op: str, before: set[int], result: tuple[Any, ...]) -> None:
        """After an interrupt: what the pool guarantees whatever the point it landed
        (the model cannot place a clock call), then every invariant of ``check_pool``.

        An interrupted ``get`` or waiting thread hands out nothing; an interrupted
        ``ret`` retires its object (closed once, by closer); an interrupted
        ``shutdown`` still closes every idle object."""
        data = self.twins[0].stats()
        idle = {item["n"] for item in data["avail"]}
        using = {item["n"] for item in data["using"]}
        closes = [n for name, n in self.twins[0].env.events if name == "closer"]
        if result[:2] == ("raise", "Interrupt"):
            if op in ("get", "use") or op.startswith("wait"):
                # (an obj() block's object may go back to a waiter)
                left = using - before - self.model.granted()
                assert not left, f"an interrupted {op} left {left} in use"
            if op == "ret":
                n = self.returned
                assert n is not None
                assert n not in idle | using, f"interrupted ret: object {n} still pooled"
                if "closer" in self.cfg.hooks:
                    assert closes.count(n) == 1, f"interrupted ret: object {n} not closed once"
            if op == "shutdown":
                assert not idle and data["shutdown"], "interrupted shutdown left idle objects"
        assert len(closes) == len(set(closes)), f"an object closed twice: {closes}"
        env, model = self.model.env, self.model
        benign = not (env.fail or env.interrupting or env.dup_of is not None)
        # threads wait (frozen tickets): a get would queue behind them, so counts only
        benign = benign and not model.mw
        granted = sorted(model.granted())
        for twin in self.twins:
            held = [twin.objs[n] for n in self.in_use() + granted]
            if benign:  # counts, lock, then every slot taken at once (fun does not fail)
                check_pool(twin.pool, held, get_timeout=2.0)
            else:
                check_counts(Waiting(twin.pool, len(model.waiters), model.npending), held)
        event(f"after an interrupted {op}: {'check_pool' if benign else 'check_counts'}")
        if benign:
            self.mirror_check_pool()
        self.logs.records.clear()

    def mirror_check_pool(self) -> None:
        """What ``check_pool`` did to each twin (a get(0)/ret probe, then every free
        slot taken at once and given back in order), done to the model."""
        model = self.model
        nheld = len(self.in_use())
        want = self.cfg.max_size - nheld if self.cfg.max_size else max(len(model.avail), 3)
        try:
            n = model.get(0)
        except (TimeOut, PoolException):
            pass
        else:
            model.ret(n)
        if model.is_shutdown:
            return
        got = [model.get(2.0) for _ in range(want)]
        for n in got:
            model.ret(n)

    # --- getting and returning

    @rule(timeout=st.sampled_from([None, None, 0, 0.001]))
    def get(self, timeout: float | None) -> None:
        if self.model.would_block(timeout):
            timeout = 0.001  # a single thread would wait forever: wait a little instead
        result = self.run(lambda s: s.get(timeout))
        if result[0] == "ok":
            assert result[1] not in self.held, f"object {result[1]} handed out twice"
            self.held.append(result[1])

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def ret(self, data: st.DataObject) -> None:
        n = self.returned = data.draw(st.sampled_from(self.held))
        self.held.remove(n)
        self.run(lambda s: s.ret(n))

    @precondition(lambda self: self.model.c["ncreated"])
    @rule(data=st.data())
    def ret_not_held(self, data: st.DataObject) -> None:
        """A double return, or the return of a killed, retired or idle object."""
        made = sorted(self.twins[0].objs)
        mine = set(self.held) | self.model.granted()  # a waiter's is as good as held
        n = data.draw(st.sampled_from([m for m in made if m not in mine] or made))
        if n in mine:
            return
        self.run(lambda s: s.ret(n))

    @rule(kind=st.sampled_from(["lookalike", "list", "none"]), n=st.integers(0, 5))
    def ret_foreign(self, kind: str, n: int) -> None:
        self.run(lambda s: s.ret_foreign(kind, n) if isinstance(s, TwinSystem) else s.ret(None))

    @rule(timeout=st.sampled_from([0, 0.001]), fail=st.booleans())
    def use(self, timeout: float, fail: bool) -> None:
        self.run(lambda s: s.use(timeout, fail))

    # --- waiting threads, one step at a time

    @precondition(lambda self: self.model.will_queue())
    @rule()
    def enqueue(self) -> None:
        """A thread's get finds the pool full and waits (its ticket is queued)."""
        wid = self.next_wid
        self.next_wid += 1
        self.run(lambda s: s.enqueue(wid))
        self.live.append(wid)

    def _waiter_step(self, step: Callable[[Any], Any]) -> None:
        result = self.run(step)
        if result[0] == "ok" and isinstance(result[1], str):
            return  # still waiting
        self.live.remove(self._wid)
        if result[0] == "ok":
            assert result[1] not in self.held, f"object {result[1]} handed out twice"
            self.held.append(result[1])

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def run_waiter(self, data: st.DataObject) -> None:
        """A waiting thread runs: if its lock was released it takes what it was
        granted, or competes for an idle object (and may wait again)."""
        self._wid = wid = data.draw(st.sampled_from(self.live))
        self._waiter_step(lambda s: s.run_waiter(wid))

    @precondition(lambda self: self.held and self.model.will_queue())
    @rule(data=st.data(), barge=st.booleans(), dt=st.sampled_from([0.0, 0.5, 3.0]))
    def wait_through_a_return(self, data: st.DataObject, barge: bool, dt: float) -> None:
        """The common story in one rule: a thread queues, time passes, an object comes
        back (handed to the oldest waiter or made idle with one woken), a newcomer
        may take it first, then the oldest waiting thread runs."""
        self.enqueue()
        self.clock.now += dt
        n = data.draw(st.sampled_from(self.held))
        self.held.remove(n)
        self.run(lambda s: s.ret(n))
        if barge:
            self.get(0)
        self._wid = wid = self.live[0]
        self._waiter_step(lambda s: s.run_waiter(wid))

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def time_out_waiter(self, data: st.DataObject) -> None:
        self._wid = wid = data.draw(st.sampled_from(self.live))
        self._waiter_step(lambda s: s.time_out(wid))

    # --- faults

    @rule(count=st.integers(1, 2))
    def arm_fun_failure(self, count: int) -> None:
        for s in self.systems():
            s.env.fail += count

    @precondition(lambda self: self.model.slots and "opener" not in self.model.env.interrupting)
    @rule(data=st.data())
    def arm_duplicate(self, data: st.DataObject) -> None:
        """The next creation returns an object the pool already holds."""
        n = data.draw(st.sampled_from(sorted(self.model.slots)))
        for s in self.systems():
            s.env.dup_of = n

    @rule(hook=st.sampled_from(INTERRUPTIBLE))
    def toggle_interrupt(self, hook: str) -> None:
        """A hook now raises (or stops raising) a BaseException, like KeyboardInterrupt."""
        if hook == "opener" and self.model.env.dup_of is not None:
            return  # a refused duplicate is closed by an interrupted opener: not modelled
        for s in self.systems():
            s.env.interrupting ^= {hook}

    @rule(hook=st.sampled_from(HOOKS))
    def toggle_raising(self, hook: str) -> None:
        for s in self.systems():
            s.env.raising ^= {hook}

    @precondition(lambda self: self.model.c["ncreated"])
    @rule(data=st.data())
    def flip_health(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(0, self.model.c["ncreating"] - 1))
        for s in self.systems():
            s.env.unhealthy ^= {n}

    @precondition(lambda self: self.twins and not self.model.is_shutdown)
    @rule(data=st.data(), k=st.sampled_from([1, 1, 2, 3]))
    def interrupted(self, data: st.DataObject, k: int) -> None:
        """A get, obj() block, housekeeping round or (rarely) shutdown whose k-th call
        of fun, a hook or the clock raises Interrupt, at the same point in every system."""
        op = data.draw(st.sampled_from(["get", "use", "use", "hk_round", "hk_round"]))
        if data.draw(st.integers(0, 11)) == 5:  # rarely: little happens after a shutdown
            op = "shutdown"
        self.interrupt(data, k, op)

    @precondition(lambda self: self.held)
    @rule(data=st.data(), k=st.sampled_from([1, 1, 2, 3]))
    def interrupted_ret(self, data: st.DataObject, k: int) -> None:
        """A return whose k-th call of fun, a hook or the clock raises Interrupt."""
        self.interrupt(data, k, "ret")

    def ready_waiters(self) -> list[int]:
        """Waiting threads that would do something if run: granted, or woken."""
        return [w for w in self.live if self.waiter_kind(w) != "error"]

    def waiter_kind(self, wid: int) -> str:
        w = self.model.mw[wid]
        return str(w.grant[0]) if w.grant else "woken" if w.woken else "error"

    @precondition(lambda self: self.ready_waiters())
    @rule(data=st.data(), k=st.sampled_from([1, 1, 2]))
    def interrupted_waiter(self, data: st.DataObject, k: int) -> None:
        """A waiting thread's run whose k-th call of fun, a hook or the clock raises
        Interrupt: what it was granted goes back (``_cancel``)."""
        self._wid = wid = data.draw(st.sampled_from(self.ready_waiters()))
        self.interrupt(data, k, f"wait {self.waiter_kind(wid)}")

    @precondition(lambda self: self.held and self.model.will_queue())
    @rule(data=st.data(), k=st.sampled_from([1, 1, 2]))
    def interrupted_waiter_after_a_return(self, data: st.DataObject, k: int) -> None:
        """A thread queues, an object comes back (handed to it, made idle with it
        woken, or retired: a creation granted), then its run is interrupted."""
        self.enqueue()
        n = data.draw(st.sampled_from(self.held))
        self.held.remove(n)
        self.run(lambda s: s.ret(n))
        ready = self.ready_waiters()
        if ready:
            self.interrupted_waiter(data, k)

    def clock_then_monotonic(self, op: str) -> bool:
        """Known, reported: where a clock read must not fail (``_now_safe``, as in a
        health round, and ``_cancel``'s retry) an interrupted user clock is replaced
        by ``time.monotonic()``, another time base: a waiter served then records
        ``longest_wait`` (and is judged starving, hand-off) from two clocks, read by
        the twins at different real instants.  No clock interrupt while another
        thread waits."""
        waiters = self.model.waiters
        if op.startswith("wait"):
            waiters = [w for w in waiters if w is not self.model.mw[self._wid]]
        return bool(waiters)

    def interrupt(self, data: st.DataObject, k: int, op: str) -> None:
        sources = [
            name
            for name in REACHED_BY[op]
            if name in self.cfg.hooks or name in ("fun", "clock")
            # an interrupt between fun returning a duplicate and the pool refusing it
            # closes that object, which the pool holds (see toggle_interrupt)
            if self.model.env.dup_of is None or name not in ("opener", "clock")
        ]
        if self.clock_then_monotonic(op):
            sources = [name for name in sources if name != "clock"]
        if not sources:  # a shutdown with a duplicate armed and no closer
            return
        source = data.draw(st.sampled_from(sources))
        if source in ("getter", "retter") or (source in ("fun", "opener") and op != "hk_round"):
            k = 1  # called once per step (fun and opener: but in a refill)
        self.arming = (source, k)
        self.fired = False
        before = {item["n"] for item in self.twins[0].stats()["using"]}
        if op.startswith("wait"):
            wid = self._wid
            grant = self.model.mw[wid].grant
            if grant is not None and grant[0] == "obj":
                before.discard(grant[1])  # the waiter's: it must not stay in use
            self._waiter_step(lambda s: s.run_waiter(wid))
        elif op == "ret":
            self.ret(data)
        elif op == "use":
            self.use(data.draw(st.sampled_from([0, 0.001])), data.draw(st.booleans()))
        elif op == "hk_round":
            self.hk_round()
        elif op == "shutdown":
            self.shutdown(0)
        else:
            self.get(data.draw(st.sampled_from([None, 0, 0.001])))
        self.arming = None
        event(f"one-shot {source} (call {k}) in {op}: {'fired' if self.fired else 'not reached'}")
        if self.fired:
            self.check_after_interrupt(op, before, self.last)

    # --- time, housekeeping, shutdown

    @rule(dt=st.sampled_from([0.5, 3.0, 7.0, 12.0, 31.0]))
    def advance(self, dt: float) -> None:
        self.clock.now += dt

    @rule()
    def hk_round(self) -> None:
        self.run(lambda s: s.hk_round())

    @rule(go=st.integers(0, 3))
    def shutdown(self, go: int) -> None:
        if go == 0:  # rarely: little happens after a shutdown
            self.run(lambda s: s.shutdown())

    # --- after every step

    @invariant()
    def agree(self) -> None:
        if not self.twins:
            return
        stats = [twin.stats() for twin in self.twins]
        for twin, data in zip(self.twins[1:], stats[1:], strict=True):
            assert data == stats[0], f"stats differ: {twin.name} vs {self.twins[0].name}"
        expected = self.model.stats()
        got = {k: stats[0][k] for k in MODELLED}
        assert got == expected, "the twins' stats differ from the model's"
        for twin in self.twins:
            twin.check_state()
            assert twin.env.events == self.model.env.events, f"{twin.name} hook calls differ"
        using = sorted(i["n"] for i in expected["using"])
        assert set(using) <= set(self.held) | self.model.granted(), "in use, nobody holds it"

    def teardown(self) -> None:
        """Shut down, give everything back: every object made is closed exactly once."""
        if not self.twins:
            self.logger.removeHandler(self.logs)
            return
        for s in self.systems():
            s.env.raising.clear()
            s.env.interrupting.clear()
            s.env.armed.clear()
            s.shutdown()
            for n in self.held:
                s.ret(n)
            for wid in self.live:
                s.cancel(wid)
        self.logger.removeHandler(self.logs)
        for twin in self.twins:
            assert twin.pool.stats()["nobjs"] == 0
            if "closer" in self.cfg.hooks:
                closed = sorted(n for name, n in twin.env.events if name == "closer")
                assert closed == sorted(twin.objs), f"{twin.name}: objects closed != made"


class WaitingMachine(PoolMachine):
    """The same program on pools of 1 or 2 objects: threads wait, are woken, barged
    past, handed objects and creations, time out and are failed by shutdown."""

    @initialize(cfg=configs(waiting=True))
    def start(self, cfg: Config) -> None:
        super().start(cfg)

    # rules that do not touch waiting, left out here (plain methods are no rules)
    def ret_foreign(self, kind: str, n: int) -> None:
        raise NotImplementedError

    def arm_duplicate(self, data: st.DataObject) -> None:
        raise NotImplementedError

    def toggle_raising(self, hook: str) -> None:
        raise NotImplementedError


@pytest.mark.parametrize(("machine", "examples"), [(PoolMachine, 150), (WaitingMachine, 300)])
def test_twins_and_model_agree(machine: type[PoolMachine], examples: int) -> None:
    PoolMachine.modules = twin_modules()
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# ------------------------------------------------- regressions it found


def _get_here(pool: Any) -> Any:
    return pool.get()  # LEAK-TRACE-LINE


def test_leak_trace_stack_ends_at_the_caller(Pool: Any) -> None:
    """The recorded stack ends at the caller's line of ``get``, on the idle (hot) path,
    the creation path and under ``obj()``; it used to cut a fixed three frames, which
    dropped the caller on the hot path and kept pool frames on the pure twin."""
    pool = Pool(Obj, min_size=1, leak_trace=True, delay=1e9)
    try:
        idle = _get_here(pool)  # the object made by the initial fill: hot path
        made = _get_here(pool)  # nothing idle: creation path
        for obj in (idle, made):
            stack = format_stack(pool._slots[id(obj)].stack)
            assert "LEAK-TRACE-LINE" in stack[-1], stack[-1]
            assert "test_leak_trace_stack_ends_at_the_caller" in stack[-2]
            assert not any("ppp/_" in frame.splitlines()[0] for frame in stack)
        with pool.obj() as obj:  # OBJ-LINE
            stack = format_stack(pool._slots[id(obj)].stack)
            assert "OBJ-LINE" in stack[-1], stack[-1]
        pool.ret(idle)
        pool.ret(made)
    finally:
        pool.shutdown()


@pytest.mark.cython  # compares the compiled twin with the pure one
def test_obj_reads_the_clock_as_often_as_get() -> None:
    """Both twins read a user clock equally often in an obj() block (a clock that
    raises on its k-th call must interrupt both at the same point); found by the
    differential machine: max_using_delay=5.0, leak_trace=True, ``use(timeout=0)``."""
    cfg = Config(0, 0, None, 0, 0.0, 0.0, 5.0, 0.0, 1, frozenset(), True, 0, 1e9)
    counts = []
    for module in twin_modules():
        twin = TwinSystem(module, cfg, FakeClock(), Env())
        before = twin.env.clock_calls
        try:
            twin.use(0, False)
            counts.append(twin.env.clock_calls - before)
        finally:
            twin.shutdown()
    assert len(counts) == 2 and len(set(counts)) == 1, f"clock calls per obj() block: {counts}"
