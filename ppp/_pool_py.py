"""The pure-Python Pool twin: every line that runs with the pool's lock held.

``ppp/_pool.pyx`` is its compiled twin; both must behave identically.  The code
that runs outside the lock (waiting, creating, hooks, logging, formatting) is
shared in ``ppp._common``: it calls the ``_lk_*`` methods here, each of which
takes the lock once, changes the state and releases it.

Interrupt safety (the compiled twin gets it by running no Python code under its
lock; here it is built by hand):

- every locked region is a ``with self._lock:`` block: entering it runs no
  bytecode between the acquire and the protected body, so an interrupt cannot
  leave the lock held; no ``try:`` inside one (CPython 3.11 leaves the ``try``
  line's own instruction outside every handler).  The hot paths (``get``,
  ``ret``, ``_lease_take``) call ``lock.acquire()`` and ``lock.release()``
  instead (a ``with`` on an RLock costs about twice as much on 3.11: it binds
  ``__enter__`` and ``__exit__`` and calls them through tuples): the acquire is
  the first statement of a ``try`` whose handler releases the lock if this
  thread holds it (``_unlock_if_held``), so an interrupt anywhere from the
  acquire's return to the release leaves the lock free; their locked regions
  change nothing but one commit line, so there is nothing to repair;
- an interrupt inside a ``_lk_*`` region makes ``_repair`` rebuild what derives
  from the slots' states (the idle stack, the in-use count, grants owed to
  waiters) before the lock is released and the interrupt re-raised;
- what must never be seen half-done -- an object checked out to a caller or a
  waiter, a ticket queued or granted -- is one *commit line*: subscripts,
  attribute stores and arithmetic, with at most one call, last.  CPython runs
  signal handlers and delivers asynchronous exceptions only at calls and
  backward jumps, and a tracer sees a line as one step, so an interrupt lands
  before the commit line or after it, never inside.  A profiler sees each call
  of a C function, so appends are written ``items += (item,)`` (an operator, not
  a call), and where a call cannot be avoided (``remove``) the flag that
  ``_repair`` reads is set first;
- a tracer or profiler can also raise just before a ``with`` block releases the
  lock (the exit's line event, the C call of ``__exit__``): every such block is
  in a ``try`` whose handler releases the lock if this thread still holds it
  (``_unlock_if_held``), the block's body having finished.  Results go into the
  caller's ``Waiter`` ticket within that line, so the caller's ``except
  BaseException`` can always give back what it was granted (``_lk_cancel``).
  Those long lines are deliberate (ruff E702 is off for them).
"""

from __future__ import annotations

import os
import threading
import time
from _thread import get_ident as _get_ident
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from ._common import (
    BORROWED,
    CREATE,
    FULL,
    GONE,
    GOT,
    HANDOFF_PASSES,
    IDLE,
    NBUCKETS,
    QUEUED,
    SHUT,
    USING,
    WAIT_SAMPLES,
    PoolBase,
    _OpenLease,
    _unstick_after_fork,
    check_timeout,
)

__all__ = ["Pool"]

_monotonic = time.monotonic
if NBUCKETS != 17:  # the hot paths write ``% 17`` (one operation, no global read)
    raise ImportError("ppp._pool_py: its hot paths' bucket count differs from NBUCKETS")
_T = TypeVar("_T")
# ``last_get`` of an object granted to a waiter that has not run yet: never over-held
# (housekeeping must not kill what its holder has not received); see ``_lk_pickup``
_NOT_PICKED_UP = float("inf")

# How many times this process has forked: bumped in the child, and nothing else is
# done there; each pool notices on its next use and starts again (``_lk_reset``).
_fork_gen = 0
_reset_lock = threading.Lock()  # serialises those resets in a child


def _after_fork_in_child() -> None:
    global _fork_gen
    _fork_gen += 1
    _reset_lock._at_fork_reinit()  # type: ignore[attr-defined]  # the fork may have caught it held


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Slot:
    """What the pool knows of one object it holds."""

    __slots__ = (
        "created",
        "holder",
        "last_get",
        "last_ret",
        "n",
        "obj",
        "pos",
        "seq",
        "stack",
        "state",
        "uses",
        "warned",
    )

    def __init__(self, obj: Any, n: int, now: float) -> None:
        self.obj = obj
        self.n = n
        self.seq = 0  # its rank in the pool's ``_reg`` (set when registered)
        self.pos = 0  # its index there: a hint, checked before use (see _forget)
        self.uses = 0
        self.state = IDLE
        self.created = now
        self.last_get = now
        self.last_ret = now
        self.holder: str | None = None
        self.stack: list[tuple[Any, int]] | None = None
        self.warned = False


# ``_reg`` keeps every object the pool has registered in registration order, so that
# ``stats()`` can copy it a chunk per lock hold with a cursor: a slot, or for a
# forgotten one its ``seq`` (an int), until ``_compact_reg`` drops those.
_REG_SLACK = 64  # forgotten entries always tolerated before a compaction


def _seq_of(entry: Any) -> int:
    return entry if type(entry) is int else entry.seq


class Waiter:
    """A ticket for one slow ``get`` or one creation: what the pool grants it is
    written here under the lock, so an interrupt can always give it back.

    ``lock`` (blocking tickets only) is held until the ticket is granted while
    queued; ``slot`` is an object checked out for it, ``create`` a reserved
    creation number, ``obj`` an object created in that reservation and not yet
    registered, ``error`` says the pool shut down while it waited.  ``woken``
    (queued tickets only): its lock was released to let it compete for an idle
    object, and it has not tried yet; ``since``, ``passed0`` (the pool's
    ``_nfreed`` then) and ``barge0`` (the pool's barging time then, see
    ``Pool._barging_time``) are taken when it first queued."""

    __slots__ = (
        "barge0", "create", "error", "lock", "obj", "passed0", "queued", "since", "slot", "woken"
    )  # fmt: skip

    def __init__(self, blocking: bool = True) -> None:
        self.lock: Any = None
        if blocking:
            self.lock = threading.Lock()
            self.lock.acquire()
        self.since = 0.0
        self.slot: Any = None
        self.create = -1
        self.obj: Any = None
        self.error = False
        self.queued = False
        self.woken = False
        self.passed0 = 0
        self.barge0 = 0.0


def _repairing(pool: Pool, method: Callable[..., _T], args: tuple[Any, ...]) -> _T:
    try:
        if any(pool._parked):  # every locked step sees the parked objects on the stack
            pool._quiesce()
        return method(pool, *args)
    except BaseException:
        pool._repair()
        raise


def _unlock_if_held(lock: Any) -> None:
    """After an exception left a ``with lock:`` block: release the lock if that
    exception came from the release itself (or, on the hot paths, from anywhere
    between ``lock.acquire()`` and ``lock.release()``).  A tracer (the exit's line event of a
    multi-line block) or a profiler (the C call of ``__exit__``) can raise just
    before the release; the block's body had finished, so the state is whole.
    Never reached with the lock legitimately held: it is never taken twice."""
    if lock._is_owned():
        lock.release()


def _locked(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run ``method`` with the pool's lock held; an interrupt inside it is repaired
    before the lock is released, then re-raised.  The ``with`` is one line: a
    tracer sees no line event between the body and the release.  Returns that a
    finalizer asked for meanwhile are done once the lock is free."""

    def _with_lock(self: Pool, *args: Any) -> _T:
        lock = self._lock
        try:
            with lock: result = _repairing(self, method, args)  # noqa: E701
        except BaseException:
            _unlock_if_held(lock)
            raise
        if self._deferred:  # a finalizer's ret while the lock was held (the GC ran)
            self._drain_deferred()
        return result

    _with_lock.__name__ = method.__name__
    _with_lock.__doc__ = method.__doc__
    return _with_lock


class Pool(PoolBase):
    """Thread-safe pool of objects created on demand by ``fun(n)`` (pure-Python twin).

    ``get(timeout=None)`` hands out an object (idle ones last-in first-out,
    waiters first come first served, with bounded barging) and ``ret(obj)`` gives
    it back.  See the README for every parameter."""

    # what the hot paths read, as slots: cheaper to read than the instance dict, and
    # much cheaper on a free-threaded build (no specialised attribute reads in 3.13t)
    __slots__ = (
        "_avail",
        "_deferred",
        "_gen",
        "_hot",
        "_lock",
        "_nbad_returns",
        "_nended",
        "_nreturns",
        "_nuses",
        "_parked",
        "_plain",
        "_shutdown",
        "_slots",
        "_waiters",
    )
    _Slot = _Slot
    _Waiter = Waiter
    _backend = "python"

    def _init_core(self) -> None:
        # an RLock only to ask whether this thread holds it (_is_owned); it is
        # never acquired twice: ret() from a finalizer inside the pool is deferred
        self._lock = threading.RLock()
        self._new_state()
        self._gen = _fork_gen
        self._pid = os.getpid()
        self._forks = 0
        # ``_plain`` (set by PoolBase once the options are known): no time kept, no
        # getter or retter, no max_use, no leak trace.  ``_hot`` is then ``_gen`` once
        # a call has seen it, so that one test tells the hot paths that the pool is
        # plain and has not forked since (else -1)
        self._plain = False
        self._hot = -1

    def _new_state(self) -> None:
        self._slots: dict[int, Any] = {}
        self._reg: list[Any] = []  # the slots in registration order (see _seq_of)
        self._reg_dead = 0  # forgotten entries in _reg
        self._avail: list[Any] = []
        # per bucket (see ppp._common.NBUCKETS): the object parked there, or None
        self._parked: list[Any] = [None] * NBUCKETS
        self._waiters: deque[Any] = deque()
        self._deferred: list[Any] = []
        self._closing: deque[Any] = deque()  # FIFO: a shutdown queues every idle object
        self._wait_samples: list[float] = []
        self._wait_max = 0.0
        self._handoff = False  # hand-off mode: freed objects go to the oldest waiter
        # the barging clock (see _barging_time): in normal mode, the time the pool
        # spent in hand-off mode (now - it: the time spent in normal mode); in
        # hand-off mode, the time spent in normal mode, frozen.  A switch of mode at
        # ``now`` is ``_barge_t = now - _barge_t`` (_set_handoff)
        self._barge_t = 0.0
        self._nwoken = 0  # queued tickets woken to compete, not yet back
        self._nfreed = 0  # objects made idle while threads waited (see HANDOFF_PASSES)
        self._hk_time = 0.0
        self._hk_last = 0.0
        self._shutdown = False
        for name in self._COUNTERS:
            if name != "_nusing":  # derived: see below
                setattr(self, name, 0)
        self._nended = 0  # uses ended without a counted return (taken back, retired)

    @property
    def _nusing(self) -> int:  # type: ignore[override]
        """Objects in use, derived so that a checkout and a return each update one
        counter less: every use counted in ``_nuses`` is in use, returned (counted in
        ``_nreturns``) or ended otherwise (``_nended``)."""
        return self._nuses - self._nreturns - self._nended

    # ------------------------------------------------------------ the lock

    def _acquire(self) -> None:
        """Take the pool's lock (tests: they read the state under it), parked
        objects taken back first, as every locked step does."""
        self._lock.acquire()
        if any(self._parked):
            self._quiesce()

    def _quiesce(self) -> None:
        """Every bucket's parked object onto the idle stack, bucket 0 first (lock
        held).  Each move is one commit line; an interrupt between two leaves the
        rest parked (``_repair`` takes them back)."""
        parked = self._parked
        moved = 0
        for b in range(NBUCKETS):
            slot = parked[b]
            if slot is not None:
                parked[b] = None; self._avail += (slot,); moved += 1  # noqa: E702
        if moved and self._waiters:  # (never here: a return does not park while threads wait)
            self._nfreed += moved
            self._rewake()

    def _release(self) -> None:
        """Release the lock taken by ``_acquire``, then do the deferred returns."""
        self._lock.release()
        if self._deferred:
            self._drain_deferred()

    def _now(self) -> float:
        clock = self._clock
        return _monotonic() if clock is None else float(clock())  # float, as in the C twin

    def _stale(self) -> bool:
        """Whether this process forked since the pool last ran in it."""
        return self._gen != _fork_gen

    # ------------------------------------------------------------ hot path

    def get(self, /, timeout: float | None = None) -> Any:
        """Get an object: an idle one if any, else a new one, else wait.

        Among idle objects, the one this thread returned last comes first, then
        the most recently returned (thread affinity: see the README's Pool
        reference).

        ``timeout`` (seconds) defaults to the pool's; ``0`` does not wait.  Raises
        ``TimeOut`` on timeout, ``PoolException`` after shutdown, and whatever
        ``fun`` raises when creating."""
        if timeout is not None:
            timeout = check_timeout(timeout)
        if self._hot == _fork_gen:  # a plain pool, not forked: less to do
            lock = self._lock
            mine = ticket = None
            try:
                b = _get_ident() % 17  # this thread's bucket: _common.bucket_of (NBUCKETS)
                lock.acquire()
                parked = self._parked
                slot = parked[b]
                if slot is not None:  # this thread's bucket parked it (never after shutdown)
                    parked[b] = None; slot.state = USING; slot.uses += 1; self._nuses += 1; mine = slot  # noqa: E501,E702
                else:
                    avail = self._avail
                    if avail and not self._shutdown:
                        slot = avail[-1]
                        del avail[-1]; slot.state = USING; slot.uses += 1; self._nuses += 1; mine = slot  # noqa: E501,E702
                lock.release()
                if mine is not None:
                    if self._deferred:
                        self._drain_deferred()
                    return mine.obj
                ticket = Waiter(False)
                return self._get_slow(timeout, ticket)
            except BaseException:
                _unlock_if_held(lock)  # raised with the lock held: before or after the commit
                if mine is not None:
                    self._lk_unget(mine, mine.uses, self._now_safe())
                elif ticket is not None:
                    self._cancel(ticket)
                raise
        if self._gen != _fork_gen:
            self._forked()
        if self._plain:
            self._hot = self._gen  # the next call takes the plain path
        now = self._now() if self._timed else 0.0
        lock = self._lock
        mine = ticket = None
        try:
            b = _get_ident() % 17  # this thread's bucket: _common.bucket_of (NBUCKETS)
            lock.acquire()
            parked = self._parked
            slot = parked[b]
            if slot is not None:
                parked[b] = None; slot.state = USING; slot.uses += 1; self._nuses += 1; slot.last_get = now; slot.warned = False; mine = slot  # noqa: E501,E702
            else:
                avail = self._avail
                if avail and not self._shutdown:
                    slot = avail[-1]
                    del avail[-1]; slot.state = USING; slot.uses += 1; self._nuses += 1; slot.last_get = now; slot.warned = False; mine = slot  # noqa: E501,E702
            lock.release()
            if mine is None:
                ticket = Waiter(False)
                return self._get_slow(timeout, ticket)
            if self._deferred:
                self._drain_deferred()
            if self._getter is None and not self._leak_trace:
                return mine.obj
            return self._after_get(mine)
        except BaseException:
            _unlock_if_held(lock)  # raised with the lock held: before or after the commit line
            if mine is not None:
                self._lk_unget(mine, mine.uses, self._now_safe())
            elif ticket is not None:
                self._cancel(ticket)
            raise

    def _lease_take(self, lease: Any, now: float) -> bool:
        """``obj()``'s hot path: the last idle object, checked out into ``lease``
        (its class becomes ``_OpenLease`` in the same commit line); False if none."""
        lock = self._lock
        try:
            b = _get_ident() % 17  # this thread's bucket: _common.bucket_of (NBUCKETS)
            lock.acquire()
            parked = self._parked
            slot = parked[b]
            if slot is not None:
                parked[b] = None; slot.state = USING; slot.uses += 1; self._nuses += 1; slot.last_get = now; slot.warned = False; lease._obj = slot.obj; lease._uses = slot.uses; lease._slot = slot; lease.__class__ = _OpenLease  # noqa: E501,E702
            else:
                avail = self._avail
                if avail and not self._shutdown:
                    slot = avail[-1]
                    del avail[-1]; slot.state = USING; slot.uses += 1; self._nuses += 1; slot.last_get = now; slot.warned = False; lease._obj = slot.obj; lease._uses = slot.uses; lease._slot = slot; lease.__class__ = _OpenLease  # noqa: E501,E702
            lock.release()
        except BaseException:
            _unlock_if_held(lock)  # raised with the lock held: before or after the commit line
            raise
        return lease._slot is not None

    def ret(self, /, obj: Any) -> None:
        """Give back an object obtained from ``get``.

        A second return, or the return of an object the pool does not hold in
        use, is ignored with a warning."""
        lock = self._lock
        if lock._is_owned():  # type: ignore[attr-defined]
            # a finalizer run (by the GC) while this thread is inside the pool:
            # give the object back once the lock is released
            self._deferred.append(obj)
            return
        if self._hot != _fork_gen:
            if self._gen != _fork_gen:
                self._forked()
            if self._plain:
                self._hot = self._gen  # the next call takes the plain path
            self._ret_full(obj)
            return
        # a plain pool, not forked: no retter, no time kept, no max_use, no leak trace
        slots = self._slots
        key = id(obj)
        slot: Any
        uses = -1
        try:
            b = _get_ident() % 17  # this thread's bucket: _common.bucket_of (NBUCKETS)
            lock.acquire()
            # (not slots.get: on 3.13t it took the dict's lock, 10x slower, when the
            # pool was made by another thread)
            slot = slots[key] if key in slots else None; uses = slot.uses if slot is not None and slot.state == USING else -1  # noqa: E501,E702,SIM401  (no call: one step)
            if uses < 0:
                self._nbad_returns += 1
            elif not (self._waiters or self._shutdown):
                # parked in this thread's bucket; what it held goes on top of the stack
                parked = self._parked; old = parked[b]; parked[b] = slot; self._avail += () if old is None else (old,); self._nreturns += 1; slot.state = IDLE; uses = -2  # noqa: E501,E702  (-2: back, nothing to undo)
            lock.release()
            if uses == -2:
                if self._deferred:
                    self._drain_deferred()
                return
            if uses < 0:
                self._warn_bad_return(obj)
                return
            code = self._lk_ret(slot, uses, self._now())
            uses = -1  # done: nothing to undo
        except BaseException:
            _unlock_if_held(lock)  # raised with the lock held: before or after the commit line
            if uses >= 0:  # interrupted before the object was back: retired
                self._drop_interrupted(slot, USING, uses)
            raise
        self._after_ret(obj, code)

    def _ret_full(self, obj: Any) -> None:
        """``ret`` in a pool that is not plain: it runs the retter, records the time
        of the return, retires worn-out and expired objects, clears the leak trace."""
        lock = self._lock
        retter = self._retter
        try:
            now = self._now() if self._timed else 0.0
        except BaseException:  # a clock interrupted: the object is retired
            self._ret_interrupted(obj)
            raise
        slots = self._slots
        key = id(obj)
        slot: Any
        uses = -1
        done = False
        try:
            b = _get_ident() % 17  # this thread's bucket: _common.bucket_of (NBUCKETS)
            lock.acquire()
            slot = slots[key] if key in slots else None; uses = slot.uses if slot is not None and slot.state == USING else -1  # noqa: E501,E702,SIM401  (no call: one step)
            if uses < 0:
                self._nbad_returns += 1
            elif retter is None and not (
                self._waiters
                or self._shutdown
                or (self._max_use and uses >= self._max_use)
                or (self._max_lifetime and now - slot.created >= self._max_lifetime)
            ):
                self._nreturns += 1; slot.last_ret = now; slot.holder = None; slot.stack = None; parked = self._parked; old = parked[b]; parked[b] = slot; self._avail += () if old is None else (old,); slot.state = IDLE; uses = -1; done = True  # noqa: E501,E702
            lock.release()
            if done:
                if self._deferred:
                    self._drain_deferred()
                return
            if uses < 0:
                self._warn_bad_return(obj)
                return
            if retter is not None:
                self._hook("retter", retter, obj)
            code = self._lk_ret(slot, uses, self._now())
            uses = -1  # done: nothing to undo
        except BaseException:
            _unlock_if_held(lock)  # raised with the lock held: before or after the commit line
            # interrupted before the object was back: its state is unknown (the
            # retter may have run part-way), so it is retired; then re-raised
            if uses >= 0:
                self._drop_interrupted(slot, USING, uses)
            raise
        self._after_ret(obj, code)

    # --------------------------------------------- state changes (lock held)

    def _idle(self, slot: Any, now: float | None, using: int, returned: int) -> None:
        """``slot`` is free: handed to the oldest waiter (checked out for it, woken)
        when the pool is in hand-off mode or that waiter is starving, else on top of
        the idle stack, and the oldest waiter not yet woken is woken to compete for
        it.  ``using`` is 1 when it counts in ``_nusing`` now, ``returned`` 1 when
        this is a return (counted); ``now`` None (a repair) hands off, records no
        wait and leaves the mode alone."""
        waiters = self._waiters
        if waiters:
            waiter = waiters[0]
            if now is None or self._handoff or self._starving(waiter, now):
                if now is not None:  # it starves: hand-off mode
                    self._set_handoff(True, now)
                del waiters[0]; waiter.queued = False; self._nwoken -= waiter.woken; self._nreturns += returned; self._nended += using - returned; slot.state = USING; slot.uses += 1; self._nuses += 1; slot.last_get = _NOT_PICKED_UP; slot.warned = False; waiter.slot = slot; waiter.woken or waiter.lock.release()  # noqa: E501,E702
                if now is not None:
                    self._served(waiter, now)
                self._rewake()  # the waiter may have been the one woken for an idle object
                return
            self._nfreed += 1; self._nreturns += returned; self._nended += using - returned; slot.state = IDLE; self._avail += (slot,)  # noqa: E501,E702
            self._rewake()
        else:
            self._nreturns += returned; self._nended += using - returned; slot.state = IDLE; self._avail += (slot,)  # noqa: E501,E702

    def _barging_time(self, now: float) -> float:
        """The time the pool spent in normal mode, when a thread that came later may
        take an object before a waiter, up to ``now`` (the time of its life, less
        its spells of hand-off mode)."""
        return self._barge_t if self._handoff else now - self._barge_t

    def _set_handoff(self, on: bool, now: float) -> None:
        """Enter (``on``, counted) or leave hand-off mode at ``now``: the barging
        clock switches on the line that flips the mode."""
        if on != self._handoff:
            self._barge_t = now - self._barge_t; self._nhandoffs += on; self._handoff = on  # noqa: E702

    def _starving(self, waiter: Any, now: float) -> bool:
        """Whether ``waiter`` waited long enough in normal mode (its turn cannot come
        later in hand-off mode), or saw objects made idle often enough, that freed
        objects must be handed to the waiters in turn."""
        return bool(
            self._barging_time(now) - waiter.barge0 >= self._handoff_after
            or self._nfreed - waiter.passed0 >= HANDOFF_PASSES
        )

    def _served(self, waiter: Any, now: float) -> None:
        """``waiter`` was handed what it waited for: record its wait, and enter or
        leave hand-off mode (on while the waiters served starve and others wait)."""
        self._record_wait(now - waiter.since, self._nfreed - waiter.passed0)
        self._set_handoff(bool(self._waiters) and self._starving(waiter, now), now)

    def _rewake(self) -> None:
        """Wake queued waiters, oldest first, until every idle object has one woken
        to compete for it (or every waiter is woken)."""
        waiters = self._waiters
        while self._nwoken < len(waiters) and self._nwoken < len(self._avail):
            for waiter in waiters:
                if not waiter.woken:
                    waiter.woken = True; self._nwoken += 1; waiter.lock.release()  # noqa: E702
                    break

    def _record_wait(self, wait: float, passed: int) -> None:
        samples = self._wait_samples
        if len(samples) >= WAIT_SAMPLES:
            del samples[: WAIT_SAMPLES // 2]
        samples.append(wait)
        if wait > self._wait_max:
            self._wait_max = wait
        if passed > self._max_passed:
            self._max_passed = passed

    def _forget(self, slot: Any, now: float | None) -> None:
        """Drop an object that is not on the idle stack (its slot is freed); its
        closer runs later, outside the lock (``_closing``)."""
        key = id(slot.obj)
        reg = self._reg
        i = slot.pos
        if i >= len(reg) or reg[i] is not slot:  # a compaction was interrupted
            i = bisect_left(reg, slot.seq, key=_seq_of)
        del self._slots[key]; self._reg[i] = slot.seq; self._reg_dead += 1; self._nended += slot.state == USING; slot.state = -1; self._ndestroys += 1; self._closing += (slot.obj,)  # noqa: E501,E702
        if self._reg_dead > _REG_SLACK and self._reg_dead > len(self._slots):
            self._compact_reg()
        self._free_capacity(now)

    def _compact_reg(self) -> None:
        """Drop the forgotten entries of ``_reg`` (when they outnumber the live ones,
        so its cost is amortised over the forgets); the order stays."""
        reg = [entry for entry in self._reg if type(entry) is not int]
        for pos, slot in enumerate(reg):
            slot.pos = pos
        self._reg = reg; self._reg_dead = 0  # noqa: E702

    def _forget_idle(self) -> None:
        """Drop every idle object, oldest first (an interrupt leaves the rest idle:
        ``_repair`` puts back on the stack what is still registered)."""
        idle = self._avail[:]
        del self._avail[:]
        for slot in idle:
            self._forget(slot, None)

    def _has_room(self) -> bool:
        return not self._max_size or len(self._slots) + self._npending < self._max_size

    def _free_capacity(self, now: float | None) -> None:
        """A slot is free: the oldest waiter may create an object in it."""
        waiters = self._waiters
        if waiters and self._has_room():
            waiter = waiters[0]
            del waiters[0]; waiter.queued = False; self._nwoken -= waiter.woken; waiter.create = self._ncreating; self._ncreating += 1; self._npending += 1; waiter.woken or waiter.lock.release()  # noqa: E501,E702
            if now is not None:
                self._served(waiter, now)
            self._rewake()  # the waiter may have been the one woken for an idle object

    def _repair(self) -> None:
        """After an interrupt inside a locked region: rebuild the idle stack and the
        in-use count from the slots' states, and give waiters what is free."""
        slots = self._slots
        self._parked = [None] * NBUCKETS  # the parked objects are idle: rebuilt below
        seen: set[int] = set()
        idle = []
        for slot in [*self._avail, *slots.values()]:
            if slot.state == IDLE and slots.get(id(slot.obj)) is slot and id(slot) not in seen:
                seen.add(id(slot))
                idle.append(slot)
        self._avail[:] = idle
        nusing = sum(1 for slot in slots.values() if slot.state == USING)
        self._nended += self._nusing - nusing  # (_nreturns stays)
        queued = [waiter for waiter in self._waiters if waiter.queued]
        self._waiters.clear()
        self._waiters.extend(queued)
        for waiter in queued:  # woken, its lock not released (interrupted at the call)?
            if waiter.woken and waiter.lock.locked():
                waiter.woken = False  # woken again below if need be: never lost
        self._nwoken = sum(1 for waiter in queued if waiter.woken)
        while self._waiters and self._avail:
            slot = self._avail.pop()
            slot.state = BORROWED
            self._idle(slot, None, 0, 0)
        while self._waiters and self._has_room():
            self._free_capacity(None)

    # ------------------------------------------------------------ return

    @_locked
    def _lk_ret(self, slot: Any, uses: int, now: float) -> int:
        """Second half of ``ret``: back to the oldest waiter or the idle stack (GOT),
        retired (GONE: the caller closes it), or gone meanwhile (SHUT: a bad return)."""
        registered = self._slots.get(id(slot.obj))
        if slot.state != USING or slot.uses != uses or id(registered) != id(slot):
            self._nbad_returns += 1
            return SHUT
        if self._max_use and uses >= self._max_use:
            self._nwornout += 1
        elif self._max_lifetime and now - slot.created >= self._max_lifetime:
            self._nexpired += 1
        elif not self._shutdown:
            if self._timed:
                slot.last_ret = now
            slot.holder = None
            slot.stack = None
            self._idle(slot, now, 1, 1)
            return GOT
        self._nreturns += 1; self._nended -= 1  # noqa: E702  (_forget counts it in _nended)
        self._forget(slot, now)
        return GONE

    # ------------------------------------------------------------ slow get

    @_locked
    def _lk_take(self, ticket: Any, nowait: bool, now: float) -> int:
        """The slow ``get``: an idle object (GOT), a creation (CREATE), shut down
        (SHUT), full and not waiting (FULL), or the ticket queued (QUEUED)."""
        if self._shutdown:
            return SHUT
        avail = self._avail
        if avail:
            slot = avail[-1]
            t = now if self._timed else 0.0
            del avail[-1]; slot.state = USING; slot.uses += 1; self._nuses += 1; slot.last_get = t; slot.warned = False; ticket.slot = slot  # noqa: E501,E702
            return GOT
        if not self._waiters and self._has_room():
            ticket.create = self._ncreating; self._ncreating += 1; self._npending += 1  # noqa: E702
            return CREATE
        if nowait:
            self._ntimeouts += 1
            return FULL
        if not self._waiters:  # the queue drained: back to normal mode
            self._set_handoff(False, now)
        barge0 = self._barging_time(now)  # (the commit line below calls nothing)
        ticket.since = now; ticket.passed0 = self._nfreed; ticket.barge0 = barge0; ticket.queued = True; self._waiters += (ticket,)  # noqa: E501,E702
        self._nwaits += 1
        self._max_waiting = max(self._max_waiting, len(self._waiters))
        return QUEUED

    @_locked
    def _lk_retry(self, ticket: Any, now: float) -> int:
        """A waiter woken to compete for an idle object is back: it takes one if any
        is left (GOT), else waits again in its place (QUEUED; starving, it switches
        the pool to hand-off mode).  GOT, CREATE or SHUT too when it was granted an
        object or a creation, or failed by shutdown, meanwhile."""
        if not ticket.queued:
            return SHUT if ticket.error else GOT if ticket.slot is not None else CREATE
        self._nwoken -= ticket.woken; ticket.woken = False  # noqa: E702  (its lock is held again)
        avail = self._avail
        if avail:
            slot = avail[-1]
            t = now if self._timed else 0.0
            del avail[-1]; slot.state = USING; slot.uses += 1; self._nuses += 1; slot.last_get = t; slot.warned = False; ticket.queued = False; ticket.slot = slot  # noqa: E501,E702
            self._waiters.remove(ticket)
            self._served(ticket, now)
            return GOT
        if not self._handoff and self._starving(ticket, now):
            self._set_handoff(True, now)
        return QUEUED

    @_locked
    def _lk_alive(self, slot: Any, uses: int) -> bool:
        """Whether ``slot`` is still in use at ``uses`` (not killed meanwhile)."""
        return bool(slot.state == USING and slot.uses == uses and self._slots.get(id(slot.obj)) is slot)  # noqa: E501

    @_locked
    def _lk_pickup(self, slot: Any, now: float) -> None:
        """A woken waiter has its object: its time in use starts now."""
        if slot.state == USING and slot.last_get == _NOT_PICKED_UP:
            slot.last_get = now

    @_locked
    def _lk_timeout(self, ticket: Any) -> bool:
        """A wait timed out: unqueue the ticket and count it, unless it was granted
        meanwhile (then True: use the grant)."""
        if not ticket.queued:
            return True
        ticket.queued = False; self._nwoken -= ticket.woken; ticket.woken = False; self._waiters.remove(ticket)  # noqa: E501,E702  (unflagged first: _repair drops it)
        self._ntimeouts += 1
        self._rewake()  # it may have been the one woken for an idle object
        return False

    @_locked
    def _lk_cancel(self, ticket: Any, now: float) -> None:
        """Give back whatever the ticket holds that its caller never got (an interrupt,
        an error): unqueue it; put a granted object back (retired if the getter ran
        the pool is shut down); free a reserved creation.  Returns an object
        created but never registered (the caller closes it), else None.  Idempotent."""
        if ticket.queued:
            ticket.queued = False; self._nwoken -= ticket.woken; ticket.woken = False; self._waiters.remove(ticket)  # noqa: E501,E702  (unflagged first: _repair drops it)
            self._rewake()  # it may have been the one woken for an idle object
            return None
        slot = ticket.slot
        if slot is not None:
            ticket.slot = None
            if slot.state == USING and self._slots.get(id(slot.obj)) is slot:
                if self._shutdown:
                    self._forget(slot, now)
                else:
                    self._idle(slot, now, 1, 0)
            return None
        if ticket.create >= 0:
            obj = ticket.obj
            if obj is not None:  # made, never pooled: closed like a forgotten one
                ticket.obj = None; self._closing += (obj,)  # noqa: E702
            ticket.create = -1; self._npending -= 1  # noqa: E702
            self._free_capacity(now)
        return None

    @_locked
    def _lk_unget(self, slot: Any, uses: int, now: float) -> None:
        """The hot path was interrupted after taking ``slot``: give it back unused."""
        if slot.state == USING and slot.uses == uses and self._slots.get(id(slot.obj)) is slot:
            self._idle(slot, now, 1, 0)

    @_locked
    def _lk_add(self, ticket: Any, checkout: bool, now: float) -> int:
        """Register ``ticket.obj``, created in the slot the ticket reserved: checked
        out to the ticket (GOT) or made idle (QUEUED); GONE when the pool shut down
        meanwhile, FULL when ``fun`` returned an object the pool already holds (the
        caller closes it in both cases)."""
        obj = ticket.obj
        key = id(obj)
        t = now if self._timed else 0.0
        slot = _Slot(obj, ticket.create, t)
        pos = len(self._reg)  # where it goes in _reg
        if key in self._slots:
            ticket.create = -1; self._npending -= 1  # noqa: E702
            self._free_capacity(now)
            return FULL
        if self._shutdown:
            ticket.create = -1; ticket.obj = None; self._npending -= 1; self._ncreated += 1; self._ndestroys += 1; self._closing += (obj,)  # noqa: E501,E702
            self._free_capacity(now)
            return GONE
        if checkout:
            slot.state = USING; slot.uses = 1; self._nuses += 1; self._slots[key] = slot; self._npending -= 1; self._ncreated += 1; slot.seq = self._ncreated; slot.pos = pos; self._reg += (slot,); ticket.create = -1; ticket.obj = None; ticket.slot = slot  # noqa: E501,E702
            return GOT
        slot.state = IDLE; self._slots[key] = slot; self._npending -= 1; self._ncreated += 1; slot.seq = self._ncreated; slot.pos = pos; self._reg += (slot,); ticket.create = -1; ticket.obj = None  # noqa: E501,E702
        self._idle(slot, now, 0, 0)
        return QUEUED

    @_locked
    def _lk_reserve_fill(self, ticket: Any) -> bool:
        """Reserve a creation to fill ``min_size`` (False when none is needed)."""
        if (
            self._shutdown
            or self._waiters
            or len(self._slots) + self._npending >= self._min_size
            or not self._has_room()
        ):
            return False
        ticket.create = self._ncreating; self._ncreating += 1; self._npending += 1  # noqa: E702
        return True

    # ------------------------------------------------------------ retirements

    @_locked
    def _lk_forget_if(self, slot: Any, state: int, uses: int, now: float) -> bool:
        """Forget ``slot`` if it is still in ``state`` at use ``uses`` (its hook was
        interrupted); True when it was forgotten."""
        live = slot.state == state and slot.uses == uses and self._slots.get(id(slot.obj)) is slot
        if live:
            self._forget(slot, now)
        return live

    @_locked
    def _lk_hung(self, slot: Any, uses: int, now: float) -> bool:
        """A health check did not answer in time: retire its object (True) unless it
        moved on meanwhile."""
        if slot.state != BORROWED or slot.uses != uses or self._slots.get(id(slot.obj)) is not slot:
            return False
        self._nhealth_timeouts += 1
        self._bad_health += 1
        self._forget(slot, now)
        return True

    @_locked
    def _lk_discard(self, obj: Any, now: float) -> bool:
        slot = self._slots.get(id(obj))
        if slot is None or slot.state != USING:
            self._nbad_returns += 1
            return False
        self._ndiscarded += 1
        self._forget(slot, now)
        return True

    @_locked
    def _lk_put_closing(self, obj: Any) -> None:
        """Queue ``obj`` for its closer again (its closer never started), last."""
        self._closing += (obj,)

    @_locked
    def _lk_bad_return(self) -> None:
        self._nbad_returns += 1

    @_locked
    def _lk_take_deferred(self) -> list[Any]:
        """Empty ``_deferred`` (returns asked for by finalizers) and return what it held."""
        items: list[Any] = self._deferred
        taken = items[:]
        del items[: len(taken)]
        return taken

    @_locked
    def _lk_take_closing(self, box: list[Any]) -> None:
        """Move the oldest object queued for its closer into ``box``."""
        closing = self._closing
        if closing:
            obj = closing[0]
            del closing[0]; box += (obj,)  # noqa: E702

    @_locked
    def _lk_shutdown(self) -> None:
        """Shut down: fail every waiter (PoolException), forget every idle object."""
        self._shutdown = True
        waiters = self._waiters
        while waiters:
            waiter = waiters[0]
            del waiters[0]; waiter.queued = False; self._nwoken -= waiter.woken; waiter.error = True; waiter.woken or waiter.lock.release()  # noqa: E501,E702
        self._forget_idle()

    @_locked
    def _lk_drop_idle(self) -> None:
        """At exit or collection: forget the idle objects, never one in use."""
        self._forget_idle()

    # ------------------------------------------------------------ housekeeping

    @_locked
    def _lk_scan(self, now: float) -> tuple[int, list[Any], list[Any]]:
        """One scan: kill over-held objects, note long-held ones, expire idle ones.
        Returns (round number, long-held, killed); what goes is in ``_closing``."""
        warn_delay = self._max_using_delay_warn
        kill_delay = self._max_using_delay_kill
        long_held: list[Any] = []
        killed: list[Any] = []
        self._hk_rounds += 1
        self._hk_last = now
        if warn_delay and not self._shutdown and self._nusing:
            for slot in list(self._slots.values()):
                if slot.state != USING:
                    continue
                held = now - slot.last_get
                if kill_delay and held >= kill_delay:
                    killed.append((slot.obj, held, slot.holder, slot.stack, slot.uses))
                    self._nkilled += 1
                    self._forget(slot, now)
                elif held >= warn_delay and not slot.warned:
                    slot.warned = True
                    long_held.append((slot.obj, held, slot.holder, slot.stack, slot.uses))
        if (self._max_lifetime or self._max_avail_delay) and self._avail:
            total = len(self._slots) + self._npending
            keep = []
            gone = []
            for slot in self._avail:  # oldest idle first
                if self._max_lifetime and now - slot.created >= self._max_lifetime:
                    self._nexpired += 1
                elif (
                    self._max_avail_delay
                    and total > self._min_size
                    and now - slot.last_ret >= self._max_avail_delay
                ):
                    self._nrecycled += 1
                else:
                    keep.append(slot)
                    continue
                total -= 1
                gone.append(slot)
            if gone:
                self._avail[:] = keep
                for slot in gone:  # IDLE off the stack: _repair would put it back
                    self._forget(slot, now)
        return self._hk_rounds, long_held, killed

    @_locked
    def _lk_hk_done(self, failed: bool, elapsed: float) -> None:
        self._hk_errors += failed
        self._hk_time += elapsed

    @_locked
    def _lk_health_candidates(self) -> list[Any]:
        self._hc_rounds += 1
        return self._avail[:]

    @_locked
    def _lk_borrow(self, slot: Any) -> int:
        """Take an idle object out of service for its health check; returns its use
        count, or -1 when it is no longer idle."""
        if slot.state != IDLE or self._shutdown:
            return -1
        self._avail.remove(slot); slot.state = BORROWED  # noqa: E702  (unstacked first: _repair restacks it)
        self._nborrows += 1
        self._nhealth += 1
        return slot.uses  # type: ignore[no-any-return]

    @_locked
    def _lk_health_done(self, slot: Any, uses: int, healthy: bool, error: bool, now: float) -> bool:
        """Back to service after its health check, or retired (True: log it)."""
        self._hc_errors += error
        if slot.state != BORROWED or slot.uses != uses or self._slots.get(id(slot.obj)) is not slot:
            return False  # retired meanwhile (a hung check, shutdown)
        if healthy and not self._shutdown:
            self._idle(slot, now, 0, 0)
            return False
        self._bad_health += not healthy
        self._forget(slot, now)
        return not healthy

    # ------------------------------------------------------------ statistics

    @_locked
    def _lk_stats(self, limit: int) -> tuple[Any, ...]:
        """What ``stats()`` formats: the counts as they are now, and the rows of the
        first objects (at most ``limit`` entries of ``_reg`` read), with the cursor
        and the horizon for ``_lk_stats_more``."""
        horizon = self._ncreated  # objects registered from now on are not listed
        rows, cursor = self._stats_rows(0, horizon, limit)
        return (
            rows,
            cursor,
            horizon,
            self._wait_samples[:],
            [getattr(self, name) for name in self._COUNTERS],
            len(self._slots),
            len(self._avail),
            len(self._waiters),
            self._wait_max,
            self._shutdown,
            self._hk_time,
            self._hk_last,
        )

    @_locked
    def _lk_stats_more(self, cursor: int, horizon: int, limit: int) -> tuple[list[Any], int]:
        """The next chunk of ``stats()``'s rows, from where ``cursor`` stopped."""
        return self._stats_rows(cursor, horizon, limit)

    def _stats_rows(self, cursor: int, horizon: int, limit: int) -> tuple[list[Any], int]:
        """The rows of the objects registered after ``cursor`` and up to ``horizon``
        (``seq`` numbers), reading at most ``limit`` entries of ``_reg``; returns them
        and the cursor to go on from, -1 when there is nothing more."""
        reg = self._reg
        i = bisect_left(reg, cursor + 1, key=_seq_of)
        end = min(len(reg), i + max(limit, 1))
        rows: list[Any] = []
        for k in range(i, end):
            s = reg[k]
            if type(s) is int:
                if s > horizon:
                    return rows, -1
                continue
            if s.seq > horizon:
                return rows, -1
            rows.append((s.obj, s.state, s.n, s.uses, s.created, s.last_get, s.last_ret, s.holder))  # noqa: E501
        return rows, (_seq_of(reg[end - 1]) if end < len(reg) else -1)

    # ------------------------------------------------------------ fork

    def _lk_reset(self) -> list[Any] | None:
        """In a forked child, on first use: start again as a new pool with the same
        parameters.  Returns the inherited objects (forgotten, never closed), or None
        when another thread did it already."""
        with _reset_lock:
            if self._gen == _fork_gen:
                return None
            _unstick_after_fork(self, getattr(self, "__dict__", None), self._slots, self._avail, self._parked, self._deferred, self._closing, self._reg, self._waiters)  # noqa: E501
            inherited = [slot.obj for slot in self._slots.values()]
            inherited.extend(self._deferred)
            inherited.extend(self._closing)
            shutdown = self._shutdown
            self._lock = threading.RLock()
            self._new_state()
            self._shutdown = shutdown
            self._forks += 1
            self._pid = os.getpid()
            self._gen = _fork_gen
            return inherited
