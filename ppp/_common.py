"""The cold parts of Pool, shared by both twins: everything that runs outside the lock.

Each twin (``_pool.pyx`` compiled, ``_pool_py.py`` pure) holds every line that
runs with the pool's lock held: the hot path (``get``, ``ret``) and the
``_lk_*`` methods, each of which takes the lock, changes the state and releases
it.  The compiled twin's are C that never calls back into Python; the pure
twin's are written so that an interrupt cannot leave them half done.  This
module holds the rest, written once: parameter checks, creating objects,
waiting, hooks, housekeeping, health checks, shutdown, fork handling, logging
and statistics formatting.  Nothing here runs with the lock held.

State invariants, true whenever the pool's lock is free:

- every object the pool holds has one ``_Slot`` in ``_slots`` (keyed by ``id``),
  in state ``IDLE`` (then also in ``_avail``), ``USING`` or ``BORROWED`` (out for
  a health check);
- ``len(_slots) + _npending <= _max_size`` when ``_max_size > 0``
  (``_npending`` counts creations in flight);
- threads wait in ``_waiters`` (oldest first) only while the pool is full.  An
  object freed while they wait is either handed to the oldest waiter (hand-off)
  or made idle for anyone to take (barging), and the oldest waiter not yet woken
  is woken to compete for it: ``_nwoken`` (the queued tickets woken and not yet
  back) is at least ``min(len(_avail), len(_waiters))``, so no idle object is
  left while every waiter sleeps.  An object is handed off once the oldest
  waiter has waited ``handoff_after`` seconds in normal mode (``_barge_t``: the
  barging clock, which stands still in hand-off mode) or seen ``HANDOFF_PASSES``
  objects made idle since it queued (each a chance for someone else to take one
  first), and from then on until a waiter that was not starving is served or the
  queue drains (hand-off mode, ``_handoff``);
- a slot freed while threads wait is always handed to the oldest waiter, as a
  creation;
- what a caller was granted is recorded in its ``Waiter`` ticket until the
  caller has it, so an interrupt can give it back (``_lk_cancel``).
"""

from __future__ import annotations

import atexit
import datetime
import itertools
import json
import logging
import math
import os
import queue
import sys
import threading
import time
import traceback
import weakref
from _thread import allocate_lock as _allocate_lock
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ._errors import PoolException, TimeOut

log = logging.getLogger("ppp")

IDLE, USING, BORROWED = 0, 1, 2
# what a locked step tells its caller (``_lk_take``, ``_lk_add``, ``_lk_ret``)
GOT, CREATE, SHUT, FULL, QUEUED, GONE = range(6)
WAIT_SAMPLES = 1024  # wait durations kept for the median and 95th percentile
# The fairness bound (see the README's Pool reference): once the oldest waiter has
# waited ``handoff_after`` seconds (a parameter, default HANDOFF_AFTER) while the
# pool was not handing off (normal mode: others could pass it then) or seen
# HANDOFF_PASSES objects made idle since it queued -- each a chance for a thread
# that came later to take an object before it -- freed objects are handed to the
# waiters first come, first served, until one that was not starving is served.
HANDOFF_AFTER = 0.001
HANDOFF_PASSES = 64
# Thread affinity (see the README's Pool reference): a thread hashes to one of
# NBUCKETS buckets; a plain return parks the object in the returning thread's
# bucket (what the bucket held goes on top of the idle stack), and a get takes its
# bucket's parked object first.  Every other locked step first moves the parked
# objects onto the idle stack, bucket 0 first.  One thread's gets and returns are
# therefore last in, first out, as without buckets; the compiled twin parks and
# takes back without the pool's lock, so threads on different buckets share none.
NBUCKETS = 17  # prime: thread ids are aligned addresses, spread by a prime modulus


def bucket_of(ident: int) -> int:
    """The bucket of the thread whose ``threading.get_ident()`` is ``ident`` (the
    compiled twin computes the same in C; the pure twin's hot paths write the
    modulus as a literal, ``% 17``: one operation on a multi-digit int)."""
    return ident % NBUCKETS


# objects whose state stats() copies per hold of the pool's lock (a pool of up to that
# many is copied in one hold, at one instant; see PoolBase.stats)
STATS_CHUNK = 2048
HEALTH_TIMEOUT = 5.0  # default bound on one health check

_pool_ids = itertools.count(1)

FunHook = Callable[[int], Any]
PoolHook = Callable[[Any], Any]


# ---------------------------------------------------------------- parameter checks


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_count(name: str, value: object, minimum: int = 0) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    assert isinstance(value, int)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > sys.maxsize:  # the compiled twin keeps counts in C integers
        raise ValueError(f"{name} must be <= {sys.maxsize}, got {value}")
    return value


def check_delay(name: str, value: object) -> float:
    if not _is_number(value):
        kind = type(value).__name__
        raise TypeError(f"{name} must be a number of seconds, got {kind}: {value!r}")
    assert isinstance(value, (int, float))
    if value != value or value < 0:  # NaN or negative (math.isnan overflows on huge ints)
        raise ValueError(f"{name} must be >= 0 seconds, got {value}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large (an int beyond the range of a float)") from None


def check_timeout(value: object, name: str = "timeout") -> float | None:
    """``None`` (wait forever, or use the default) or a number of seconds >= 0."""
    if value is None:
        return None
    return check_delay(name, value)


def check_clock(clock: Callable[[], Any]) -> None:
    """The pool reads its clock with its lock held: a clock that fails or returns no
    number must be refused here, not deadlock the pool on first use."""
    try:
        now = clock()
    except Exception as exc:
        raise ValueError(f"clock failed when called: {exc!r}") from exc
    if not _is_number(now) or now != now:
        kind = type(now).__name__
        raise TypeError(f"clock must return a number of seconds, got {kind}: {now!r}")


def check_hook(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}: {value!r}")


def derive_delay(
    delay: float,
    max_avail_delay: float,
    max_using_delay: float,
    max_using_delay_kill: float,
    max_lifetime: float,
    health: object,
) -> float:
    """The housekeeping period: ``delay`` if set, else half the smallest delay in use,
    60 s when only ``health`` needs rounds, 0 (no thread) when nothing does."""
    if delay:
        return delay
    delays = [
        d for d in (max_avail_delay, max_using_delay, max_using_delay_kill, max_lifetime) if d
    ]
    if delays:
        return min(delays) / 2.0
    return 60.0 if health is not None else 0.0


def werkzeug_skip() -> bool:
    """Under ``flask --debug`` the reloader's parent process needs no pool at all."""
    return "PPP_WERKZEUG_WORKAROUND" in os.environ and os.environ.get("WERKZEUG_RUN_MAIN") != "true"


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ordered list (None when it is empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _housekeeper(ref: weakref.ReferenceType[PoolBase], stop: threading.Event, delay: float) -> None:
    """Thread body: a round every ``delay`` seconds while the pool is alive and open.

    It holds the pool only through a weak reference, so a pool that nobody uses
    any more can still be collected.  Nothing a hook raises stops it: a round that
    fails (even with a BaseException) is logged and counted, and the next one runs."""
    forever = delay > threading.TIMEOUT_MAX  # longer than the OS can sleep: inf, 1e10...
    while not stop.wait(None if forever else delay):
        pool = ref()
        if pool is None or pool._shutdown or pool._stale():
            return
        try:
            pool._hk_round()
        except BaseException:  # a closer interrupted (re-raised after closing the rest)
            try:
                log.exception("pool %d: housekeeping round interrupted", pool._id)
            except BaseException:  # pragma: no cover - logging itself interrupted
                pass
        del pool


try:  # imported here, not in a forked child, where it cost 20 ms on first use
    import ctypes as _ctypes
except ImportError:  # pragma: no cover - a Python without ctypes: the global must do
    _ctypes = None  # type: ignore[assignment]

_NOTHING: Any = object()

# Objects a forked child inherited: kept alive for ever, because their finalizers
# would act on what the parent still uses (libpq's sends "terminate" on the
# parent's socket).  They are counted once per fork, never released.
_inherited: list[Any] = []


def _keep_forever(objs: list[Any]) -> None:
    """Keep ``objs`` alive until the process ends, interpreter teardown included."""
    _inherited.extend(objs)
    if len(_inherited) == len(objs) and _ctypes is not None:
        # first time: one extra reference, never dropped, pins the list past the
        # module teardown at exit
        _ctypes.pythonapi.Py_IncRef(_ctypes.py_object(_inherited))


# Free-threaded CPython: every object has a lock of its own (``ob_mutex``), taken by
# the interpreter's critical sections (``dict.get``, a ``__slots__`` attribute
# store, a list's append...).  When such a lock is released while a thread has
# waited on it over 1 ms, CPython hands it to that thread, still locked; a fork
# before that thread runs leaves it locked in the child, where no thread will ever
# release it (seen on 3.13.15t: a child's first use of a pool hung in its reset,
# storing an attribute of the pool or iterating its dict).  A pool's reset in the
# child first releases such locks on the pool's own objects: in the child only
# the forking thread exists, and it is inside none of their critical sections.
_OB_MUTEX_OFFSET = 10  # offsetof(PyObject, ob_mutex): after ob_tid (8 bytes) and 2 of padding


def _find_mutex_unlock() -> Callable[[int], None] | None:
    """``PyMutex_Unlock`` for an object's ``ob_mutex`` address, checked once on a
    new object (lock, see the lock bit, unlock); None on a GIL build, or if the
    layout is not the one expected."""
    if not getattr(sys, "_is_gil_enabled", None) or _ctypes is None:
        return None
    import sysconfig

    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        return None
    try:
        lock, unlock = _ctypes.pythonapi.PyMutex_Lock, _ctypes.pythonapi.PyMutex_Unlock
        lock.argtypes = unlock.argtypes = [_ctypes.c_void_p]
        lock.restype = unlock.restype = None
        probe = object()
        bits = _ctypes.c_uint8.from_address(id(probe) + _OB_MUTEX_OFFSET)
        if bits.value != 0:
            return None
        lock(id(probe) + _OB_MUTEX_OFFSET)
        held = bits.value & 1
        unlock(id(probe) + _OB_MUTEX_OFFSET)
        return unlock if held and bits.value == 0 else None
    except (AttributeError, OSError):  # pragma: no cover - not exported
        return None


_mutex_unlock = _find_mutex_unlock()


def _unstick_after_fork(*objs: Any) -> None:
    """In a forked child: release the object locks that the fork left held (see
    above) on ``objs``; nothing on a GIL build."""
    if _mutex_unlock is None or _ctypes is None:
        return
    for obj in objs:
        if obj is not None:
            address = id(obj) + _OB_MUTEX_OFFSET
            if _ctypes.c_uint8.from_address(address).value & 1:
                _mutex_unlock(address)


# Every pool alive, for closing idle objects at interpreter exit.
_live: weakref.WeakSet[PoolBase] = weakref.WeakSet()


EXIT_CLOSE_BOUND = 5.0  # seconds interpreter exit may wait for closers


def _close_all_idle(pools: list[PoolBase]) -> None:
    for pool in pools:
        try:
            pool._close_idle()
        except BaseException:  # never break the exit
            pass


@atexit.register
def _close_at_exit() -> None:
    """Close every live pool's idle objects at exit, in a thread of its own so that a
    closer (or a lock) that hangs cannot hold the exit up longer than the bound
    (where the interpreter allows a thread then: not on CPython 3.12)."""
    pools = list(_live)
    if not pools:
        return
    closer = threading.Thread(
        target=_close_all_idle, args=(pools,), name="ppp-exit-close", daemon=True
    )
    try:
        closer.start()
    except RuntimeError:
        # CPython 3.12 refuses new threads once finalization has begun, atexit
        # callbacks included: close here, without the bound
        _close_all_idle(pools)
        return
    closer.join(EXIT_CLOSE_BOUND)


class _HealthRound:
    """The health checks of one round, run by a thread of their own so that a check
    that hangs can be given up: the housekeeper waits ``health_timeout`` for each
    answer, then retires the object and goes on with a new runner."""

    def __init__(self, pool: PoolBase, todo: deque[Any]) -> None:
        self.pool = pool
        self.todo = todo
        self.ticks: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self.current: tuple[Any, int] | None = None
        self.abandoned = False

    def run(self) -> None:
        pool = self.pool
        health: Any = pool._health
        try:
            while not self.abandoned:
                try:
                    slot = self.todo.popleft()
                except IndexError:
                    return
                uses = pool._lk_borrow(slot)
                if uses < 0:
                    self.ticks.put(True)
                    continue
                self.current = (slot, uses)
                error = False
                try:
                    healthy = bool(health(slot.obj))
                except BaseException:  # interrupted or failed: the check failed
                    log.exception(
                        "pool %d: health check raised on %s", pool._id, pool._trace(slot.obj)
                    )
                    healthy, error = False, True
                if self.abandoned:
                    return  # given up on: the housekeeper retired the object
                self.current = None
                retired = pool._lk_health_done(slot, uses, healthy, error, pool._now_safe())
                if retired and not error:
                    log.error("pool %d: bad health, closing %s", pool._id, pool._trace(slot.obj))
                try:
                    pool._close_pending()
                except BaseException:  # a closer interrupted: logged, the round goes on
                    log.exception("pool %d: closer interrupted in a health round", pool._id)
                self.ticks.put(True)
        finally:
            self.ticks.put(False)


def _describe(tracer: Callable[[Any], str], obj: Any) -> str:
    try:
        return str(tracer(obj))
    except Exception as exc:  # a broken tracer must not break the pool
        return f"<tracer error: {exc!r}>"


_PPP_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_stack() -> list[tuple[Any, int]]:
    """The calling thread's stack as ``(code, line)`` pairs, outermost first, ending at
    the line that called into ppp (leak traces; formatted only when reported).

    ppp's own frames are cut off the end: the compiled twin
    adds no frames, so both twins record the same stack.  Walking frames costs a
    few microseconds where ``traceback.extract_stack`` cost a hundred."""
    frame: Any = sys._getframe(1)
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == _PPP_DIR:
        frame = frame.f_back
    frames = []
    while frame is not None:
        frames.append((frame.f_code, frame.f_lineno))
        frame = frame.f_back
    frames.reverse()
    return frames


def format_stack(frames: list[tuple[Any, int]] | None) -> list[str]:
    """A recorded stack as ``traceback.format_list`` lines (source looked up now)."""
    return traceback.format_list(
        [
            traceback.FrameSummary(code.co_filename, line, code.co_name)
            for code, line in frames or ()
        ]
    )


class _Lease:
    """``with pool.obj() as o``: ``get`` on entry, ``ret`` on exit (a class, not a
    generator: it is on the hot path of request handlers).  The pure twin's; the
    compiled twin has its own, in C.

    Interrupt safety: the object is granted into a ticket of the lease's own, so an
    interrupt even as ``__enter__`` returns gives it back; ``__exit__`` retires it if
    ``ret`` was interrupted before it took effect; and if an interrupt lands as
    ``__exit__`` is entered (before any of its lines), the lease's finalizer, run
    as the interrupt unwinds the ``with`` statement, returns the object.  Only a
    lease inside its ``with`` block has that finalizer (its class is ``_OpenLease``
    from ``__enter__`` to ``__exit__``): a finalizer on every lease would be a
    point where Python swallows a KeyboardInterrupt ("Exception ignored in")."""

    __slots__ = ("_obj", "_pool", "_slot", "_timeout", "_uses")
    _obj: Any
    _uses: int

    def __init__(self, pool: PoolBase, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._slot: Any = None  # set while the with block holds the object

    def __enter__(self) -> Any:
        pool = self._pool
        timeout = self._timeout if self._timeout is None else check_timeout(self._timeout)
        if pool._stale():
            pool._forked()
        ticket = None
        try:
            # as the pure twin's get: an idle object, checked out into this lease
            if pool._lease_take(self, pool._now() if pool._timed else 0.0):
                if pool._deferred:
                    pool._drain_deferred()
                if pool._getter is None and not pool._leak_trace:
                    return self._obj
                obj = pool._after_get(self._slot)
                if obj is not self._obj:  # killed while its getter ran: another get's object
                    self._slot = _NO_SLOT; self._obj = obj  # noqa: E702 # fmt: skip
                return obj
            ticket = pool._Waiter(False)
            obj = pool._get_slow(timeout, ticket); slot = ticket.slot if ticket.slot is not None and ticket.slot.obj is obj else _NO_SLOT; self._uses = slot.uses; self._obj = obj; self._slot = slot; self.__class__ = _OpenLease; return obj  # noqa: E501,E702 # fmt: skip
        except BaseException:
            slot = self._slot
            self.__class__ = _Lease; self._slot = None  # noqa: E702 # fmt: skip
            if ticket is not None:
                pool._cancel(ticket)
            elif slot is not None:  # taken, then interrupted as it came back here
                pool._lk_unget(slot, self._uses, pool._now_safe())
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.__class__ = _Lease; slot = self._slot; self._slot = None  # noqa: E702 # fmt: skip
        try:
            self._pool.ret(self._obj)
        except BaseException:  # interrupted: retired unless ret took effect
            pool = self._pool
            if slot is not None and slot is not _NO_SLOT and pool._lk_alive(slot, self._uses):
                pool._drop_interrupted(slot, USING, self._uses)
            raise


class _OpenLease(_Lease):
    """A lease inside its ``with`` block (see ``_Lease``)."""

    __slots__ = ()

    def __del__(self) -> None:
        slot = self._slot
        if slot is not None:  # __exit__ never ran: interrupted as it was entered
            self._slot = None
            if slot is _NO_SLOT or self._pool._lk_alive(slot, self._uses):
                self._pool.ret(self._obj)


class _NoSlot:
    """The slot of a lease whose object came from a nested ``get`` (its first was
    killed while its getter ran): unknown, so ``__exit__`` just returns it."""

    __slots__ = ()
    uses = -1


_NO_SLOT: Any = _NoSlot()


# ---------------------------------------------------------------------- the base


class PoolBase:
    """Thread-safe pool of expensive objects, created on demand by ``fun(n)``.

    See the README and SPEC for every parameter.  This class holds the code that
    both twins share, none of which runs with the lock held; the twins add the hot
    path and the locked steps (``_lk_*``).
    """

    # provided by the twin
    _Slot: Any
    _Waiter: Any
    _backend: str

    _STATS_CHUNK = STATS_CHUNK  # tests make it small, to copy a pool in many chunks

    # the counters both twins keep (typed attributes in the compiled twin)
    _COUNTERS = (
        "_nusing",
        "_npending",
        "_ncreating",
        "_ncreated",
        "_nuses",
        "_nreturns",
        "_nbad_returns",
        "_nborrows",
        "_nkilled",
        "_nrecycled",
        "_nwornout",
        "_nexpired",
        "_ndiscarded",
        "_ndestroys",
        "_nhealth",
        "_bad_health",
        "_hk_rounds",
        "_hk_errors",
        "_hc_rounds",
        "_hc_errors",
        "_ntimeouts",
        "_nwaits",
        "_max_waiting",
        "_nhealth_timeouts",
        "_nhandoffs",
        "_max_passed",
    )

    _nusing: int
    _npending: int
    _ncreating: int
    _ncreated: int
    _nuses: int
    _nreturns: int
    _nbad_returns: int
    _nborrows: int
    _nkilled: int
    _nrecycled: int
    _nwornout: int
    _nexpired: int
    _ndiscarded: int
    _ndestroys: int
    _nhealth: int
    _bad_health: int
    _hk_rounds: int
    _hk_errors: int
    _hc_rounds: int
    _hc_errors: int
    _ntimeouts: int
    _nwaits: int
    _max_waiting: int
    _nhealth_timeouts: int
    _nhandoffs: int
    _max_passed: int
    _handoff_after: float
    _hk_time: float
    _hk_last: float
    _shutdown: bool
    _slots: dict[int, Any]
    _avail: list[Any]
    _waiters: deque[Any]
    _deferred: list[Any]
    _closing: deque[Any]
    _pid: int
    _forks: int

    if TYPE_CHECKING:  # the twins' locked steps (see ppp/_pool_py.py for their docs)

        def _init_core(self) -> None: ...
        def _now(self) -> float: ...
        def _stale(self) -> bool: ...
        def get(self, timeout: float | None = None) -> Any: ...
        def ret(self, obj: Any) -> None: ...
        def _acquire(self) -> None: ...
        def _release(self) -> None: ...
        def _lk_take(self, ticket: Any, nowait: bool, now: float) -> int: ...
        def _lk_timeout(self, ticket: Any) -> bool: ...
        def _lk_retry(self, ticket: Any, now: float) -> int: ...
        def _lk_alive(self, slot: Any, uses: int) -> bool: ...
        def _lk_pickup(self, slot: Any, now: float) -> None: ...
        def _lk_cancel(self, ticket: Any, now: float) -> None: ...
        def _lk_put_closing(self, obj: Any) -> None: ...
        def _lk_add(self, ticket: Any, checkout: bool, now: float) -> int: ...
        def _lk_reserve_fill(self, ticket: Any) -> bool: ...
        def _lk_forget_if(self, slot: Any, state: int, uses: int, now: float) -> bool: ...
        def _lk_discard(self, obj: Any, now: float) -> bool: ...
        def _lk_bad_return(self) -> None: ...
        def _lk_take_deferred(self) -> list[Any]: ...
        def _lk_unget(self, slot: Any, uses: int, now: float) -> None: ...
        def _lease_take(self, lease: Any, now: float) -> bool: ...  # pure twin only
        def _lk_take_closing(self, box: list[Any]) -> None: ...
        def _lk_shutdown(self) -> None: ...
        def _lk_drop_idle(self) -> None: ...
        def _lk_scan(self, now: float) -> tuple[int, list[Any], list[Any]]: ...
        def _lk_hk_done(self, failed: bool, elapsed: float) -> None: ...
        def _lk_health_candidates(self) -> list[Any]: ...
        def _lk_borrow(self, slot: Any) -> int: ...
        def _lk_health_done(
            self, slot: Any, uses: int, healthy: bool, error: bool, now: float
        ) -> bool: ...
        def _lk_stats(self, limit: int) -> tuple[Any, ...]: ...
        def _lk_stats_more(
            self, cursor: int, horizon: int, limit: int
        ) -> tuple[list[Any], int]: ...
        def _lk_reset(self) -> list[Any] | None: ...
        def _lk_hung(self, slot: Any, uses: int, now: float) -> bool: ...

    def __init__(
        self,
        fun: FunHook,
        max_size: int | None = 0,
        min_size: int = 1,
        timeout: float | None = None,
        max_use: int = 0,
        max_avail_delay: float = 0.0,
        max_using_delay: float = 0.0,
        max_using_delay_kill: float = 0.0,
        health_freq: int = 1,
        delay: float = 0.0,
        opener: PoolHook | None = None,
        getter: PoolHook | None = None,
        retter: PoolHook | None = None,
        closer: PoolHook | None = None,
        health: Callable[[Any], Any] | None = None,
        stats: Callable[[Any], Any] | None = None,
        tracer: Callable[[Any], str] | None = None,
        log_level: int | str | None = None,
        max_lifetime: float = 0.0,
        *,
        leak_trace: bool = False,
        clock: Callable[[], float] | None = None,
        health_timeout: float | None = HEALTH_TIMEOUT,
        after_fork: PoolHook | None = None,
        handoff_after: float = HANDOFF_AFTER,
    ) -> None:
        if not callable(fun):
            raise TypeError(f"fun must be callable, got {type(fun).__name__}: {fun!r}")
        for name, hook in (
            ("opener", opener),
            ("getter", getter),
            ("retter", retter),
            ("closer", closer),
            ("health", health),
            ("stats", stats),
            ("tracer", tracer),
            ("clock", clock),
            ("after_fork", after_fork),
        ):
            check_hook(name, hook)
        if clock is not None:
            check_clock(clock)
        max_size = check_count("max_size", 0 if max_size is None else max_size)
        min_size = check_count("min_size", min_size)
        if max_size and min_size > max_size:
            raise ValueError(f"min_size ({min_size}) must not exceed max_size ({max_size})")
        max_use = check_count("max_use", max_use)
        health_freq = check_count("health_freq", health_freq, minimum=1)
        timeout = check_timeout(timeout)
        max_avail_delay = check_delay("max_avail_delay", max_avail_delay)
        max_using_delay = check_delay("max_using_delay", max_using_delay)
        max_using_delay_kill = check_delay("max_using_delay_kill", max_using_delay_kill)
        max_lifetime = check_delay("max_lifetime", max_lifetime)
        delay = check_delay("delay", delay)
        health_timeout = check_timeout(health_timeout, "health_timeout")
        if health_timeout == 0:
            raise ValueError("health_timeout must be > 0 seconds (None: no bound), got 0")
        handoff_after = check_delay("handoff_after", handoff_after)
        if not isinstance(leak_trace, bool):
            kind = type(leak_trace).__name__
            raise TypeError(f"leak_trace must be a bool, got {kind}: {leak_trace!r}")
        if log_level is not None:
            if not isinstance(log_level, (int, str)) or isinstance(log_level, bool):
                raise TypeError(f"log_level must be a logging level, got {log_level!r}")
            try:
                log.setLevel(log_level)
            except ValueError as exc:  # "Unknown level: 'LOUD'" does not say which parameter
                raise ValueError(f"log_level: {exc}") from None
        if max_using_delay and max_using_delay_kill and max_using_delay > max_using_delay_kill:
            log.warning(
                "max_using_delay (%s) > max_using_delay_kill (%s): objects are killed before "
                "any warning",
                max_using_delay,
                max_using_delay_kill,
            )

        self._init_core()
        self._id = next(_pool_ids)
        self._started = datetime.datetime.now()
        self._fun = fun
        self._max_size = max_size
        self._min_size = min_size
        self._timeout = timeout
        self._max_use = max_use
        self._max_avail_delay = max_avail_delay
        self._max_using_delay_kill = max_using_delay_kill
        self._max_using_delay_warn = max_using_delay or max_using_delay_kill
        self._max_lifetime = max_lifetime
        self._health_freq = health_freq
        self._opener = opener
        self._getter = getter
        self._retter = retter
        self._closer = closer
        self._health = health
        self._stats_hook = stats
        self._tracer = tracer or str
        self._leak_trace = leak_trace
        self._clock = clock
        self._health_timeout = health_timeout
        self._after_fork = after_fork
        self._handoff_after = handoff_after
        self._timed = bool(max_avail_delay or self._max_using_delay_warn or max_lifetime)
        # the pure twin's hot path skips what only these options need
        self._plain = not (self._timed or leak_trace or max_use)
        self._plain = self._plain and getter is None and retter is None
        self._delay = derive_delay(
            delay, max_avail_delay, max_using_delay, max_using_delay_kill, max_lifetime, health
        )
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None
        _live.add(self)
        if werkzeug_skip():
            log.warning("PPP_WERKZEUG_WORKAROUND: no housekeeper and no initial fill here")
            return
        self._start_housekeeper()
        self._fill()

    def _start_housekeeper(self) -> None:
        if self._delay:
            self._housekeeper = threading.Thread(
                target=_housekeeper,
                args=(weakref.ref(self), self._stop, self._delay),
                name=f"ppp-housekeeper-{self._id}",
                daemon=True,
            )
            self._housekeeper.start()

    # ------------------------------------------------------------ small helpers

    def _trace(self, obj: Any) -> str:
        return _describe(self._tracer, obj)

    def _hook(self, name: str, hook: Callable[[Any], Any], obj: Any) -> None:
        """Run a hook; its failure is logged, never raised (a BaseException is)."""
        try:
            hook(obj)
        except Exception:
            log.exception("pool %d: %s hook failed on %s", self._id, name, self._trace(obj))

    def _now_safe(self) -> float:
        """The clock, in a path that must not fail (an interrupt's clean-up).  A
        user's clock that raised is asked once more (an interrupt is one event)
        before ``time.monotonic()`` is taken, a different time base: times
        mixed across it (a wait, an age) are then meaningless."""
        for _ in range(2):
            try:
                return self._now()
            except BaseException:
                pass
        return time.monotonic()

    def _after_get(self, slot: Any) -> Any:
        """Outside the lock, once ``slot`` is checked out: leak trace and getter."""
        if self._leak_trace:
            slot.holder = threading.current_thread().name
            slot.stack = _caller_stack()
        if self._getter is not None:
            uses = slot.uses
            try:
                self._hook("getter", self._getter, slot.obj)
            except BaseException:  # interrupted: the caller never gets the object
                self._drop_interrupted(slot, USING, uses)
                raise
            if not self._lk_alive(slot, uses):  # killed while the getter ran: another
                return self.get()
        return slot.obj

    def _drop_interrupted(self, slot: Any, state: int, uses: int) -> None:
        """A hook on ``slot``'s object was interrupted by a BaseException (KeyboardInterrupt,
        SystemExit, gevent's Timeout or GreenletExit): the object's state is unknown, so
        it is retired (closer runs) and its slot freed, unless it moved on meanwhile
        (killed, or returned and taken again); the caller then re-raises."""
        if self._lk_forget_if(slot, state, uses, self._now_safe()):
            self._close_pending()

    def _ret_interrupted(self, obj: Any) -> None:
        """``ret`` was interrupted before it did anything: the object, whose state is
        unknown, is retired as by ``discard`` (quietly when the pool does not hold it)."""
        if self._lk_discard(obj, self._now_safe()):
            self._close_pending()

    def _close_pending(self) -> None:
        """Run ``closer`` on what the pool forgot: the locked steps queue it in
        ``_closing``, and it is taken one object at a time.  An interrupt before a
        closer starts puts its object back in the queue; an interrupted closer is
        not run again; the first interrupt is re-raised once the queue is empty."""
        interrupt: BaseException | None = None
        while self._closing:
            box: list[Any] = []  # filled under the lock: an interrupt cannot lose it
            started = False
            try:
                self._lk_take_closing(box)
                closer = self._closer
                if box and closer is not None:  # one line below: one step for a tracer
                    started = True; closer(box[0])  # noqa: E702 # fmt: skip
            except Exception:
                if started:
                    log.exception(
                        "pool %d: closer hook failed on %s", self._id, self._trace(box[0])
                    )
                elif box:
                    self._lk_put_closing(box[0])
            except BaseException as exc:
                if box and not started:
                    self._lk_put_closing(box[0])
                if interrupt is None:
                    interrupt = exc
        if interrupt is not None:
            try:
                raise interrupt
            finally:
                interrupt = None

    def _after_ret(self, obj: Any, code: int) -> None:
        """What ``ret`` does outside the lock once its locked step has run."""
        if code == GONE:
            self._close_pending()
            self._fill()
        elif code == SHUT:
            self._warn_bad_return(obj)
        elif self._deferred:
            self._drain_deferred()

    def discard(self, obj: Any) -> None:
        """Retire an object now instead of returning it (a connection found broken):
        ``closer`` runs, its slot goes to the oldest waiter, ``min_size`` is refilled.

        Like ``ret``, it ignores with a warning an object the pool does not hold in use."""
        if self._stale():
            self._forked()
        if not self._lk_discard(obj, self._now()):
            self._warn_bad_return(obj)
            return
        self._close_pending()
        self._fill()

    def _drain_deferred(self) -> None:
        """Do the returns a finalizer asked for while its thread held the lock
        (right after that thread releases it)."""
        for obj in self._lk_take_deferred():
            self.ret(obj)

    def _warn_bad_return(self, obj: Any) -> None:
        """``ret`` of an object the pool does not hold as in use (counted already)."""
        log.warning(
            "pool %d: ignoring return of an object it does not hold in use "
            "(returned twice, killed after max_using_delay_kill, or foreign): %s",
            self._id,
            self._trace(obj),
        )

    # ---------------------------------------------------------- creation

    def _create(self, ticket: Any, checkout: bool) -> Any:
        """Create object number ``ticket.create`` outside the lock, in a slot already
        reserved; with ``checkout`` it goes to the caller, else it becomes idle.  On
        any exception the caller hands the ticket to ``_cancel``, which frees the
        slot and closes an object made but not pooled."""
        n = ticket.create
        made: list[Any] = []
        try:
            # fun is called by C (map) and its result stored by C (extend): an
            # interrupt cannot land between fun's return and the store, so the
            # object is never lost; the ticket gets it on the same line (a tracer's
            # step) or in the finally (a signal after extend): _cancel closes it
            made.extend(map(self._fun, (n,))); ticket.obj = made[0]  # noqa: E702 # fmt: skip
        finally:
            if made:
                ticket.obj = made[0]
        obj = made[0]
        if obj is None:
            raise PoolException(
                f"fun returned None (creation {n}): it must return the object to pool"
            )
        if self._opener is not None:
            self._hook("opener", self._opener, obj)
        code = self._lk_add(ticket, checkout, self._now())
        if code == GOT:
            return self._after_get(ticket.slot)
        if code == FULL:
            raise PoolException(
                f"fun returned an object the pool already holds (creation {n}): "
                f"{self._trace(obj)}; fun must create a new object on each call"
            )
        if code == GONE:
            self._close_pending()
            raise PoolException("pool was shut down while creating an object")
        return obj

    def _cancel(self, ticket: Any) -> None:
        """Give back what ``ticket`` holds (an interrupt or an error reached its
        caller).  Retried when interrupted itself; then the leftovers are closed and
        such an interrupt is raised (the caller's exception is its context)."""
        interrupt: BaseException | None = None
        for attempt in range(100):
            try:
                now = self._now() if attempt == 0 else self._now_safe()
                self._lk_cancel(ticket, now)
                break
            except BaseException as exc:
                if interrupt is None:
                    interrupt = exc
        try:
            self._close_pending()
        finally:
            if interrupt is not None:
                try:
                    raise interrupt
                finally:
                    interrupt = None

    def _fill(self) -> None:
        """Create objects until ``min_size`` exist; failures are logged, not raised."""
        while True:
            ticket = self._Waiter(False)
            n = -1
            try:
                if not self._lk_reserve_fill(ticket):
                    return
                n = ticket.create
                self._create(ticket, checkout=False)
            except Exception:
                self._cancel(ticket)
                log.exception("pool %d: creating object %d to fill min_size failed", self._id, n)
                return
            except BaseException:
                self._cancel(ticket)
                raise

    # ---------------------------------------------------------- waiting

    def _get_slow(self, timeout: float | None, ticket: Any) -> Any:
        """``get`` when no idle object was at hand (the lock is not held).  What the
        pool grants goes into ``ticket``, which the twin's ``get`` created: on any
        exception, even one raised as this returns, it hands the ticket to
        ``_cancel``."""
        if timeout is None:
            timeout = self._timeout
        nowait = timeout == 0
        if not nowait:
            lock = _allocate_lock()
            lock.acquire()
            ticket.lock = lock
        code = self._lk_take(ticket, nowait, self._now())
        if code == QUEUED:
            code = self._wait(ticket, timeout)
            if code == GOT:
                self._lk_pickup(ticket.slot, self._now())
        if code == GOT:
            return self._after_get(ticket.slot)
        if code == CREATE:
            return self._create(ticket, checkout=True)
        if code == SHUT:
            raise PoolException(f"pool {self._id} is shut down")
        raise TimeOut(
            f"timeout after 0 seconds: pool {self._id} is full (max_size={self._max_size})"
        )

    def _wait(self, ticket: Any, timeout: float | None) -> int:
        """Block until the ticket is granted an object (GOT) or a creation (CREATE).

        A waiter woken to compete for an idle object (the pool is not in hand-off
        mode) tries to take it (``_lk_retry``); when a thread that came later took
        it first, the waiter waits again in its place in the queue."""
        if timeout is not None and timeout > threading.TIMEOUT_MAX:
            timeout = None  # longer than the OS can sleep (inf...): wait until served
        deadline = None if timeout is None else time.monotonic() + timeout
        lock = ticket.lock
        while True:
            if deadline is None:
                got = lock.acquire()
            else:
                got = lock.acquire(True, max(0.0, deadline - time.monotonic()))
            if not got and not self._lk_timeout(ticket):  # not granted meanwhile either
                raise TimeOut(
                    f"timeout after {timeout} seconds waiting for an object: "
                    f"pool {self._id} is full (max_size={self._max_size})"
                )
            code = self._woken(ticket)
            if code != QUEUED:
                return code

    def _woken(self, ticket: Any) -> int:
        """A queued ticket's lock was released: what it was granted (GOT, CREATE),
        else its try at an idle object (GOT, or QUEUED: wait again).  Raises
        ``PoolException`` when the pool shut down."""
        if ticket.error:
            raise PoolException(f"pool {self._id} was shut down while waiting")
        if ticket.slot is not None:
            return GOT
        if ticket.create >= 0:
            return CREATE
        code = self._lk_retry(ticket, self._now())
        if code == SHUT:
            raise PoolException(f"pool {self._id} was shut down while waiting")
        return code

    # ---------------------------------------------------------- public API

    def obj(self, timeout: float | None = None) -> AbstractContextManager[Any]:
        """Get an object for a ``with`` block; it is returned on exit, exceptions included."""
        return _Lease(self, timeout)

    def __enter__(self) -> PoolBase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def shutdown(self, delay: float = 0.0) -> None:
        """Stop housekeeping, close idle objects, wake waiters with PoolException.

        Objects in use are closed when they come back; ``get`` raises from now on.
        ``delay`` is how long to wait for the housekeeping thread to end.  Every idle
        object is closed even when a closer raises or is interrupted (the interrupt
        is re-raised after)."""
        delay = check_delay("delay", delay)
        if self._stale():
            self._forked()
        self._lk_shutdown()
        self._stop.set()
        thread = self._housekeeper
        try:
            if delay and thread is not None and thread is not threading.current_thread():
                thread.join(None if delay > threading.TIMEOUT_MAX else delay)
                if thread.is_alive():
                    log.warning("pool %d: housekeeper still running after shutdown", self._id)
        finally:
            self._close_pending()

    def __delete__(self) -> None:
        """ProxyPatternPool's name for closing the pool's objects: the same as
        ``shutdown()`` (idle objects are closed now, those in use when returned)."""
        self.shutdown()

    def _close_idle(self) -> None:
        """At interpreter exit or collection: close the idle objects (never one in
        use).  In a forked child that never used the pool, the objects are the
        parent's: they are kept, not closed."""
        if self._stale():
            inherited = self._lk_reset()
            if inherited:
                _keep_forever(inherited)
            return
        self._lk_drop_idle()
        if not sys.is_finalizing():
            # Not during interpreter teardown (``__del__`` at module cleanup): the
            # housekeeper, a daemon thread, is frozen for good by then, possibly
            # inside ``stop.wait`` holding the Event's own lock, and ``set`` would
            # wait for that lock for ever (seen on free-threaded 3.13t).  A frozen
            # thread needs no stop signal.
            self._stop.set()
        self._close_pending()

    def __del__(self) -> None:
        try:
            if getattr(self, "_stop", None) is not None and not self._shutdown:
                self._close_idle()
        except BaseException:  # a finalizer must not raise
            pass

    def __copy__(self) -> Any:
        raise TypeError(f"a Pool cannot be copied: it owns its objects (pool {self._id})")

    def __deepcopy__(self, memo: Any) -> Any:
        raise TypeError(f"a Pool cannot be copied: it owns its objects (pool {self._id})")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"a Pool cannot be pickled or copied: it owns its objects and threads (pool {self._id})"
        )

    # ---------------------------------------------------------- fork

    def _forked(self) -> None:
        """First use in a forked child: start again, forget the parent's objects
        (never closed: their closer would end the parent's sessions), call
        ``after_fork`` on each, restart housekeeping and refill ``min_size``."""
        inherited = self._lk_reset()
        if inherited is None:
            return
        _keep_forever(inherited)
        self._stop = threading.Event()
        self._housekeeper = None
        if self._after_fork is not None:
            for obj in inherited:
                self._hook("after_fork", self._after_fork, obj)
        if werkzeug_skip():
            return
        self._start_housekeeper()
        self._fill()

    # ---------------------------------------------------------- housekeeping

    def _hk_round(self) -> None:
        """One housekeeping round: over-held objects, idle expiry, health, refill."""
        if self._stale():
            self._forked()
        start = time.perf_counter()
        failed = False
        try:
            rounds, long_held, killed = self._lk_scan(self._now())
            if long_held:
                self._report("held longer than max_using_delay", long_held)
            if killed:
                self._report("killed after max_using_delay_kill", killed)
            self._close_pending()
            if self._health is not None and rounds % self._health_freq == 0:
                self._health_check()
            self._fill()
        except Exception:
            failed = True
            log.exception("pool %d: housekeeping round failed", self._id)
        finally:
            self._lk_hk_done(failed, time.perf_counter() - start)

    def _report(self, what: str, items: list[tuple[Any, float, Any, Any, int]]) -> None:
        lines = [f"pool {self._id}: {len(items)} object(s) {what}:"]
        for obj, held, holder, stack, uses in items:
            who = f" by thread {holder!r}" if holder is not None else ""
            lines.append(f"  {self._trace(obj)} held {held:.3f} s{who} (use {uses})")
            if stack:
                lines.append("  got at:")
                lines.extend(
                    "    " + line.rstrip("\n").replace("\n", "\n    ")
                    for line in format_stack(stack)
                )
        log.warning("\n".join(lines))

    def _health_check(self) -> None:
        """Check idle objects one at a time, in a runner thread; a check that does not
        answer within ``health_timeout`` counts as failed (the object is retired and
        the hung call left behind), and the rest go on in a new runner."""
        todo = deque(self._lk_health_candidates())
        while todo:
            job = _HealthRound(self, todo)
            runner = threading.Thread(target=job.run, name=f"ppp-health-{self._id}", daemon=True)
            runner.start()
            while True:
                try:
                    more = job.ticks.get(timeout=self._health_timeout)
                except queue.Empty:
                    job.abandoned = True
                    current = job.current
                    if current is not None:
                        slot, uses = current
                        if self._lk_hung(slot, uses, self._now_safe()):
                            log.error(
                                "pool %d: health check of %s did not answer within %s s: retired",
                                self._id,
                                self._trace(slot.obj),
                                self._health_timeout,
                            )
                            self._close_pending()
                    break
                if not more:
                    return

    # ---------------------------------------------------------- statistics

    def stats(self) -> dict[str, Any]:
        """A JSON-compatible snapshot: configuration, counts, waits and every object.

        The counts are copied in one hold of the lock, at one instant; the objects
        (``avail``, ``using``) a chunk of ``STATS_CHUNK`` per hold, in the order they
        were registered, each in the state it had when its chunk was copied: every
        object registered at that instant and still held when its chunk is copied
        is listed once, one registered later is not.  The lock is never held longer
        than a chunk's copy; formatting runs without it."""
        if self._stale():
            self._forked()
        now = self._now()
        limit = self._STATS_CHUNK
        (
            rows,
            cursor,
            horizon,
            samples,
            counts,
            nobjs,
            navail,
            nwaiting,
            wait_max,
            shutdown,
            hk_time,
            hk_last,
        ) = self._lk_stats(limit)
        c = dict(zip(self._COUNTERS, counts, strict=True))
        ordered = sorted(samples)
        data: dict[str, Any] = {
            "id": self._id,
            "backend": self._backend,
            "pid": self._pid,
            "forks": self._forks,
            "started": self._started.isoformat(),
            "min_size": self._min_size,
            "max_size": self._max_size,
            "max_use": self._max_use,
            "timeout": self._timeout,
            "delay": self._delay,
            "max_avail_delay": self._max_avail_delay,
            "max_using_delay_kill": self._max_using_delay_kill,
            "max_using_delay_warn": self._max_using_delay_warn,
            "max_lifetime": self._max_lifetime,
            "health_freq": self._health_freq,
            "health_timeout": self._health_timeout,
            "handoff_after": self._handoff_after,
            "now": now,
            "running": (datetime.datetime.now() - self._started).total_seconds(),
            "sem": (
                {"value": self._max_size - nobjs - c["_npending"], "init": self._max_size}
                if self._max_size
                else None
            ),
            "navail": navail,
            "nusing": c["_nusing"],
            "nborrowed": nobjs - navail - c["_nusing"],
            "npending": c["_npending"],
            "ntodel": 0,
            "nobjs": nobjs,
            "ncreated": c["_ncreated"],
            "ncreating": c["_ncreating"],
            "nuses": c["_nuses"],
            "nkilled": c["_nkilled"],
            "nrecycled": c["_nrecycled"],
            "nwornout": c["_nwornout"],
            "nexpired": c["_nexpired"],
            "ndiscarded": c["_ndiscarded"],
            "nborrows": c["_nborrows"],
            "nreturns": c["_nreturns"],
            "nbad_returns": c["_nbad_returns"],
            "ndestroys": c["_ndestroys"],
            "nhealth": c["_nhealth"],
            "bad_health": c["_bad_health"],
            "nhealth_timeouts": c["_nhealth_timeouts"],
            "hk_rounds": c["_hk_rounds"],
            "hk_errors": c["_hk_errors"],
            "hc_rounds": c["_hc_rounds"],
            "hc_errors": c["_hc_errors"],
            "rel_hk_last": hk_last - now if hk_last else None,
            "time_per_hk": hk_time / max(c["_hk_rounds"], 1),
            "nwaiting": nwaiting,
            "max_waiting": c["_max_waiting"],
            "nwaits": c["_nwaits"],
            "ntimeouts": c["_ntimeouts"],
            "nhandoffs": c["_nhandoffs"],
            "max_passed": c["_max_passed"],
            "longest_wait": wait_max if c["_nwaits"] and ordered else None,
            "wait_time": {
                "median": percentile(ordered, 0.5),
                "p95": percentile(ordered, 0.95),
                "max": wait_max if c["_nwaits"] and ordered else None,
            },
            "shutdown": shutdown,
        }
        avail: list[dict[str, Any]] = []
        using: list[dict[str, Any]] = []
        while True:
            for obj, state, n, uses, created, last_get, last_ret, holder in rows:
                item: dict[str, Any] = {"n": n, "uses": uses}
                if self._stats_hook is not None:
                    try:
                        item["stats"] = self._stats_hook(obj)
                    except Exception as exc:
                        item["stats"] = f"<stats error: {exc!r}>"
                else:
                    item["trace"] = self._trace(obj)
                if self._timed:
                    item.update(age=now - created, last_get=last_get - now, last_ret=last_ret - now)
                if holder is not None:
                    item["holder"] = holder
                (avail if state == IDLE else using).append(item)
            if cursor < 0:
                break
            rows, cursor = self._lk_stats_more(cursor, horizon, limit)
        data["avail"] = avail
        data["using"] = using
        return data

    def __str__(self) -> str:
        return json.dumps(self.stats())

    def __repr__(self) -> str:
        return (
            f"<{type(self).__module__}.Pool id={self._id} max_size={self._max_size} "
            f"nobjs={len(self._slots)} nusing={self._nusing} shutdown={self._shutdown}>"
        )
