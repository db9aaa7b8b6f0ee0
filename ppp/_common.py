"""The cold parts of Pool, shared by both twins.

Each twin (``_pool.pyx`` compiled, ``_pool_py.py`` pure) supplies the hot path:
the lock (``_acquire``/``_release``), the clock (``_now``), ``get``, ``ret``,
``_checkout`` and the per-object record type ``_Slot``.  Everything else --
checking parameters, creating objects, waiting, housekeeping, health checks,
shutdown and statistics -- is written once here, in :class:`PoolBase`, and works
on the state that both twins lay out under the same attribute names.

State invariants, true whenever the pool's lock is free:

- every object the pool holds has one ``_Slot`` in ``_slots`` (keyed by ``id``),
  in state ``IDLE`` (then also in ``_avail``), ``USING`` or ``BORROWED``;
- ``len(_slots) + _npending <= _max_size`` when ``_max_size > 0``
  (``_npending`` counts creations in flight);
- threads wait in ``_waiters`` only while nothing is idle and the pool is full:
  anything freed goes to the oldest waiter first (first come, first served).
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import math
import os
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ._errors import PoolException, TimeOut

log = logging.getLogger("ppp")

IDLE, USING, BORROWED = 0, 1, 2
WAIT_SAMPLES = 1024  # wait durations kept for the median and 95th percentile

_pool_ids = itertools.count(1)

FunHook = Callable[[int], Any]
PoolHook = Callable[[Any], Any]


class Waiter:
    """A thread blocked in ``get``; granted an object or a creation by another thread."""

    __slots__ = ("create", "error", "lock", "since", "slot")

    def __init__(self, since: float) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.since = since
        self.slot: Any = None  # granted idle object (already checked out for us)
        self.create = -1  # granted creation number
        self.error: BaseException | None = None

    @property
    def granted(self) -> bool:
        return self.slot is not None or self.create >= 0 or self.error is not None


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
    any more can still be collected."""
    forever = delay > threading.TIMEOUT_MAX  # longer than the OS can sleep: inf, 1e10...
    while not stop.wait(None if forever else delay):
        pool = ref()
        if pool is None or pool._shutdown:
            return
        pool._hk_round()
        del pool


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
    generator: it is on the hot path of request handlers)."""

    __slots__ = ("_obj", "_pool", "_timeout")

    def __init__(self, pool: PoolBase, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout

    def __enter__(self) -> Any:
        self._obj = self._pool.get(self._timeout)
        return self._obj

    def __exit__(self, *exc_info: object) -> None:
        self._pool.ret(self._obj)


# ---------------------------------------------------------------------- the base


class PoolBase:
    """Thread-safe pool of expensive objects, created on demand by ``fun(n)``.

    See the README and SPEC for every parameter.  This class holds the code that
    both twins share; the twins add the hot path on top of it.
    """

    # provided by the twin
    _Slot: Any
    _backend: str

    # state laid out by new_state() (typed attributes in the compiled twin)
    _slots: dict[int, Any]
    _avail: list[Any]
    _waiters: deque[Waiter]
    _wait_samples: list[float]
    _deferred: list[Any]
    _wait_max: float
    _shutdown: bool
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

    def _acquire(self) -> None:  # pragma: no cover - overridden by the twins
        raise NotImplementedError

    def _release(self) -> None:  # pragma: no cover - overridden by the twins
        raise NotImplementedError

    def _now(self) -> float:  # pragma: no cover - overridden by the twins
        raise NotImplementedError

    def _checkout(self, slot: Any) -> None:  # pragma: no cover - overridden by the twins
        raise NotImplementedError

    def _init_core(self) -> None:  # pragma: no cover - overridden by the twins
        raise NotImplementedError

    def _register(self, slot: Any) -> None:  # pragma: no cover - overridden by the twins
        """Index a new slot by its object's identity (lock held)."""
        raise NotImplementedError

    def _unregister(self, slot: Any) -> None:  # pragma: no cover - overridden by the twins
        """Drop a slot from the index (lock held)."""
        raise NotImplementedError

    def get(self, timeout: float | None = None) -> Any:  # pragma: no cover - the twins'
        raise NotImplementedError

    def ret(self, obj: Any) -> None:  # pragma: no cover - the twins'
        raise NotImplementedError

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
        self._timed = bool(max_avail_delay or self._max_using_delay_warn or max_lifetime)
        self._delay = derive_delay(
            delay, max_avail_delay, max_using_delay, max_using_delay_kill, max_lifetime, health
        )
        self._hk_time = 0.0
        self._hk_last = 0.0
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None
        if werkzeug_skip():
            log.warning("PPP_WERKZEUG_WORKAROUND: no housekeeper and no initial fill here")
            return
        if self._delay:
            self._housekeeper = threading.Thread(
                target=_housekeeper,
                args=(weakref.ref(self), self._stop, self._delay),
                name=f"ppp-housekeeper-{self._id}",
                daemon=True,
            )
            self._housekeeper.start()
        self._fill()

    # ------------------------------------------------------------ small helpers

    def _trace(self, obj: Any) -> str:
        return _describe(self._tracer, obj)

    def _hook(self, name: str, hook: Callable[[Any], Any], obj: Any) -> None:
        """Run a hook; its failure is logged, never raised."""
        try:
            hook(obj)
        except Exception:
            log.exception("pool %d: %s hook failed on %s", self._id, name, self._trace(obj))

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
        return slot.obj

    def _drop_interrupted(self, slot: Any, state: int, uses: int) -> None:
        """A hook on ``slot``'s object was interrupted by a BaseException (KeyboardInterrupt,
        SystemExit, gevent's Timeout or GreenletExit): the object's state is unknown, so
        it is retired (closer runs) and its slot freed, unless it moved on meanwhile
        (killed, or returned and taken again); the caller then re-raises."""
        self._acquire()
        live = slot.state == state and slot.uses == uses and self._slots.get(id(slot.obj)) is slot
        if live:
            self._forget(slot)
        self._release()
        if live:
            self._close(slot.obj)

    def _close(self, obj: Any) -> None:
        """Run ``closer`` on an object the pool has already forgotten."""
        if self._closer is not None:
            self._hook("closer", self._closer, obj)

    def _close_all(self, objs: list[Any]) -> None:
        for obj in objs:
            self._close(obj)

    # ------------------------------------------- state changes (lock held)

    def _reserve(self) -> int:
        """Take a free slot for a creation; return its creation number."""
        n: int = self._ncreating
        self._ncreating += 1
        self._npending += 1
        return n

    def _has_room(self) -> bool:
        return not self._max_size or len(self._slots) + self._npending < self._max_size

    def _put_idle(self, slot: Any) -> None:
        """An object is free: to the oldest waiter, else on top of the idle stack."""
        if self._waiters:
            waiter = self._waiters.popleft()
            self._checkout(slot)
            self._granted(waiter)
            waiter.slot = slot
            waiter.lock.release()
        else:
            slot.state = IDLE
            self._avail.append(slot)

    def _free_capacity(self) -> None:
        """A slot is free: the oldest waiter may create an object in it."""
        if self._waiters and self._has_room():
            waiter = self._waiters.popleft()
            self._granted(waiter)
            waiter.create = self._reserve()
            waiter.lock.release()

    def _granted(self, waiter: Waiter) -> None:
        samples = self._wait_samples
        wait = self._now() - waiter.since
        if len(samples) >= WAIT_SAMPLES:
            del samples[: WAIT_SAMPLES // 2]
        samples.append(wait)
        if wait > self._wait_max:
            self._wait_max = wait

    def _forget(self, slot: Any) -> None:
        """Drop an object from the pool (its slot is freed); ``closer`` runs later."""
        self._unregister(slot)
        if slot.state == USING:
            self._nusing -= 1
        slot.state = -1
        self._ndestroys += 1
        self._free_capacity()

    def _retire(self, slot: Any) -> None:
        """On return (lock held), once the twin found that the object must go: count
        why (worn out, too old, or the pool is shut down) and forget it."""
        if self._max_use and slot.uses >= self._max_use:
            self._nwornout += 1
        elif self._max_lifetime and self._now() - slot.created >= self._max_lifetime:
            self._nexpired += 1
        self._forget(slot)

    def discard(self, obj: Any) -> None:
        """Retire an object now instead of returning it (a connection found broken):
        ``closer`` runs, its slot goes to the oldest waiter, ``min_size`` is refilled.

        Like ``ret``, it ignores with a warning an object the pool does not hold in use."""
        self._acquire()
        slot = self._slots.get(id(obj))
        if slot is None or slot.state != USING:
            self._release()
            self._bad_return(obj)
            return
        self._ndiscarded += 1
        self._forget(slot)
        self._release()
        self._close(obj)
        self._fill()

    def _drain_deferred(self) -> None:
        """Do the returns a finalizer asked for while its thread held the lock
        (right after that thread releases it)."""
        self._acquire()
        objs = list(self._deferred)
        self._deferred.clear()
        self._release()
        for obj in objs:
            self.ret(obj)

    def _bad_return(self, obj: Any) -> None:
        """``ret`` of an object the pool does not hold as in use: warn, change nothing."""
        self._acquire()
        self._nbad_returns += 1
        self._release()
        log.warning(
            "pool %d: ignoring return of an object it does not hold in use "
            "(returned twice, killed after max_using_delay_kill, or foreign): %s",
            self._id,
            self._trace(obj),
        )

    # ---------------------------------------------------------- creation

    def _create(self, n: int, checkout: bool) -> Any:
        """Create object number ``n`` outside the lock, in a slot already reserved.

        With ``checkout`` the object goes to the caller (from ``get``), else it
        becomes idle (filling).  A failure frees the slot and is raised."""
        try:
            obj = self._fun(n)
        except BaseException:
            self._acquire()
            self._npending -= 1
            self._free_capacity()
            self._release()
            raise
        if self._opener is not None:
            try:
                self._hook("opener", self._opener, obj)
            except BaseException:  # interrupted (KeyboardInterrupt...): free the slot
                self._acquire()
                self._npending -= 1
                self._free_capacity()
                self._release()
                self._close(obj)
                raise
        self._acquire()
        self._npending -= 1
        key = id(obj)
        if key in self._slots:
            self._free_capacity()
            self._release()
            raise PoolException(
                f"fun returned an object the pool already holds (creation {n}): "
                f"{self._trace(obj)}; fun must create a new object on each call"
            )
        slot = self._Slot(obj, n, self._now() if self._timed else 0.0)
        self._register(slot)
        self._ncreated += 1
        if self._shutdown:
            self._forget(slot)
            self._release()
            self._close(obj)
            raise PoolException("pool was shut down while creating an object")
        if checkout:
            self._checkout(slot)
            self._release()
            return self._after_get(slot)
        self._put_idle(slot)
        self._release()
        return obj

    def _fill(self) -> None:
        """Create objects until ``min_size`` exist; failures are logged, not raised."""
        while True:
            self._acquire()
            if (
                self._shutdown
                or self._waiters
                or len(self._slots) + self._npending >= self._min_size
                or not self._has_room()
            ):
                self._release()
                return
            n = self._reserve()
            self._release()
            try:
                self._create(n, checkout=False)
            except Exception:
                log.exception("pool %d: creating object %d to fill min_size failed", self._id, n)
                return

    # ---------------------------------------------------------- waiting

    def _get_slow(self, timeout: float | None) -> Any:
        """``get`` when nothing is idle; called with the lock held, releases it."""
        if self._shutdown:
            self._release()
            raise PoolException(f"pool {self._id} is shut down")
        if self._has_room() and not self._waiters:
            n = self._reserve()
            self._release()
            return self._create(n, checkout=True)
        if timeout is None:
            timeout = self._timeout
        if timeout == 0:
            self._ntimeouts += 1
            self._release()
            raise TimeOut(
                f"timeout after 0 seconds: pool {self._id} is full (max_size={self._max_size})"
            )
        waiter = Waiter(self._now())
        self._waiters.append(waiter)
        self._nwaits += 1
        if len(self._waiters) > self._max_waiting:
            self._max_waiting = len(self._waiters)
        self._release()
        if timeout is not None and timeout > threading.TIMEOUT_MAX:
            timeout = None  # longer than the OS can sleep (inf...): wait until served
        try:
            got = waiter.lock.acquire(True, -1 if timeout is None else timeout)
        except BaseException:
            self._abandon(waiter)
            raise
        if not got:
            self._acquire()
            if not waiter.granted:
                self._waiters.remove(waiter)
                self._ntimeouts += 1
                self._release()
                raise TimeOut(
                    f"timeout after {timeout} seconds waiting for an object: "
                    f"pool {self._id} is full (max_size={self._max_size})"
                )
            self._release()
        if waiter.error is not None:
            raise waiter.error
        if waiter.slot is not None:
            return self._after_get(waiter.slot)
        return self._create(waiter.create, checkout=True)

    def _abandon(self, waiter: Waiter) -> None:
        """A waiter interrupted (KeyboardInterrupt...): give back whatever it was granted."""
        closing = None
        self._acquire()
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        elif waiter.slot is not None:
            slot = waiter.slot
            if self._shutdown:
                self._forget(slot)
                closing = slot.obj
            else:
                self._nusing -= 1
                self._put_idle(slot)
        elif waiter.create >= 0:
            self._npending -= 1
            self._free_capacity()
        self._release()
        if closing is not None:
            self._close(closing)

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
        ``delay`` is how long to wait for the housekeeping thread to end."""
        delay = check_delay("delay", delay)
        self._acquire()
        self._shutdown = True
        waiters = list(self._waiters)
        self._waiters.clear()
        for waiter in waiters:
            waiter.error = PoolException(f"pool {self._id} was shut down while waiting")
            waiter.lock.release()
        idle = list(self._avail)
        self._avail.clear()
        for slot in idle:
            self._forget(slot)
        self._release()
        self._stop.set()
        thread = self._housekeeper
        if delay and thread is not None and thread is not threading.current_thread():
            thread.join(None if delay > threading.TIMEOUT_MAX else delay)
            if thread.is_alive():
                log.warning("pool %d: housekeeper still running after shutdown", self._id)
        self._close_all([slot.obj for slot in idle])

    # ---------------------------------------------------------- housekeeping

    def _hk_round(self) -> None:
        """One housekeeping round: over-held objects, idle expiry, health, refill."""
        start = time.perf_counter()
        failed = False
        try:
            rounds = self._hk_scan()
            if self._health is not None and rounds % self._health_freq == 0:
                self._health_check()
            self._fill()
        except Exception:
            failed = True
            log.exception("pool %d: housekeeping round failed", self._id)
        self._acquire()
        self._hk_errors += failed
        self._hk_time += time.perf_counter() - start
        self._release()

    def _hk_scan(self) -> int:
        """Warn of and kill over-held objects, expire idle ones; return the round number."""
        warn_delay = self._max_using_delay_warn
        kill_delay = self._max_using_delay_kill
        closing: list[Any] = []
        long_held: list[tuple[Any, float, Any, Any, int]] = []
        killed: list[tuple[Any, float, Any, Any, int]] = []
        self._acquire()
        try:
            self._hk_rounds += 1
            now = self._now()
            self._hk_last = now
            if warn_delay and not self._shutdown:
                for slot in list(self._slots.values()):
                    if slot.state != USING:
                        continue
                    held = now - slot.last_get
                    if kill_delay and held >= kill_delay:
                        self._nkilled += 1
                        killed.append((slot.obj, held, slot.holder, slot.stack, slot.uses))
                        self._forget(slot)
                        closing.append(slot.obj)
                    elif held >= warn_delay and not slot.warned:
                        slot.warned = True
                        long_held.append((slot.obj, held, slot.holder, slot.stack, slot.uses))
            if (self._max_lifetime or self._max_avail_delay) and self._avail:
                keep = []
                total = len(self._slots) + self._npending
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
                    closing.append(slot.obj)
                    slot.state = BORROWED  # not IDLE: _forget must not touch _avail
                    self._forget(slot)
                self._avail[:] = keep
            rounds: int = self._hk_rounds
        finally:
            self._release()
        if long_held:
            self._report("held longer than max_using_delay", long_held)
        if killed:
            self._report("killed after max_using_delay_kill", killed)
        self._close_all(closing)
        return rounds

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
        """Check idle objects one at a time; bad ones are closed and replaced later."""
        self._acquire()
        self._hc_rounds += 1
        candidates = list(self._avail)
        self._release()
        for slot in candidates:
            self._acquire()
            if slot.state != IDLE or self._shutdown:
                self._release()
                continue
            self._avail.remove(slot)
            slot.state = BORROWED
            self._nborrows += 1
            self._nhealth += 1
            self._release()
            error = False
            try:
                healthy = bool(self._health(slot.obj))  # type: ignore[misc]
            except Exception:
                log.exception("pool %d: health check raised on %s", self._id, self._trace(slot.obj))
                healthy, error = False, True
            except BaseException:  # interrupted: retire the object rather than lose its slot
                self._drop_interrupted(slot, BORROWED, slot.uses)
                raise
            self._acquire()
            if error:
                self._hc_errors += 1
            if healthy and not self._shutdown:
                self._put_idle(slot)
                self._release()
                continue
            if not healthy:
                self._bad_health += 1
            self._forget(slot)
            self._release()
            if not healthy and not error:
                log.error("pool %d: bad health, closing %s", self._id, self._trace(slot.obj))
            self._close(slot.obj)

    # ---------------------------------------------------------- statistics

    def stats(self) -> dict[str, Any]:
        """A JSON-compatible snapshot: configuration, counts, waits and every object."""
        self._acquire()
        try:
            now = self._now()
            slots = [
                (s.obj, s.state, s.n, s.uses, s.created, s.last_get, s.last_ret, s.holder)
                for s in self._slots.values()
            ]
            ordered = sorted(self._wait_samples)
            nobjs = len(self._slots)
            data: dict[str, Any] = {
                "id": self._id,
                "backend": self._backend,
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
                "now": now,
                "running": (datetime.datetime.now() - self._started).total_seconds(),
                "sem": (
                    {"value": self._max_size - nobjs - self._npending, "init": self._max_size}
                    if self._max_size
                    else None
                ),
                "navail": len(self._avail),
                "nusing": self._nusing,
                "nborrowed": nobjs - len(self._avail) - self._nusing,
                "npending": self._npending,
                "ntodel": 0,
                "nobjs": nobjs,
                "ncreated": self._ncreated,
                "ncreating": self._ncreating,
                "nuses": self._nuses,
                "nkilled": self._nkilled,
                "nrecycled": self._nrecycled,
                "nwornout": self._nwornout,
                "nexpired": self._nexpired,
                "ndiscarded": self._ndiscarded,
                "nborrows": self._nborrows,
                "nreturns": self._nreturns,
                "nbad_returns": self._nbad_returns,
                "ndestroys": self._ndestroys,
                "nhealth": self._nhealth,
                "bad_health": self._bad_health,
                "hk_rounds": self._hk_rounds,
                "hk_errors": self._hk_errors,
                "hc_rounds": self._hc_rounds,
                "hc_errors": self._hc_errors,
                "rel_hk_last": self._hk_last - now if self._hk_last else None,
                "time_per_hk": self._hk_time / max(self._hk_rounds, 1),
                "nwaiting": len(self._waiters),
                "max_waiting": self._max_waiting,
                "nwaits": self._nwaits,
                "ntimeouts": self._ntimeouts,
                "wait_time": {
                    "median": percentile(ordered, 0.5),
                    "p95": percentile(ordered, 0.95),
                    "max": self._wait_max if self._nwaits and ordered else None,
                },
                "shutdown": self._shutdown,
            }
        finally:
            self._release()
        avail: list[dict[str, Any]] = []
        using: list[dict[str, Any]] = []
        for obj, state, n, uses, created, last_get, last_ret, holder in slots:
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


def new_state(pool: Any) -> None:
    """Lay out the counters and containers both twins share (called by ``_init_core``)."""
    pool._slots = {}
    pool._avail = []
    pool._waiters = deque()
    for name in COUNTERS:
        setattr(pool, name, 0)
    pool._wait_max = 0.0
    pool._wait_samples = []
    pool._deferred = []
    pool._shutdown = False


COUNTERS = (
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
)
