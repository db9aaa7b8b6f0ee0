"""The pure-Python Pool twin: the hot path (get, ret) over the shared cold parts.

``ppp/_pool.pyx`` is its compiled twin; both must behave identically.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ._common import IDLE, USING, PoolBase, check_timeout, new_state

__all__ = ["Pool"]

_monotonic = time.monotonic


class _Slot:
    """What the pool knows of one object it holds."""

    __slots__ = (
        "created",
        "holder",
        "last_get",
        "last_ret",
        "n",
        "obj",
        "stack",
        "state",
        "uses",
        "warned",
    )

    def __init__(self, obj: Any, n: int, now: float) -> None:
        self.obj = obj
        self.n = n
        self.uses = 0
        self.state = IDLE
        self.created = now
        self.last_get = now
        self.last_ret = now
        self.holder: str | None = None
        self.stack: list[tuple[Any, int]] | None = None
        self.warned = False


class Pool(PoolBase):
    """Thread-safe pool of objects created on demand by ``fun(n)`` (pure-Python twin).

    ``get(timeout=None)`` hands out an object (idle ones last-in first-out,
    waiters first come first served) and ``ret(obj)`` gives it back.  See the
    README for every parameter."""

    _Slot = _Slot
    _backend = "python"

    def _init_core(self) -> None:
        # an RLock only to ask whether this thread holds it (_is_owned); it is
        # never acquired twice: ret() from a finalizer inside the pool is deferred
        lock = threading.RLock()
        self._acquire = lock.acquire  # type: ignore[method-assign,assignment]
        self._unlock = lock.release
        self._held_here = lock._is_owned  # type: ignore[attr-defined]
        new_state(self)

    def _release(self) -> None:
        """Release the lock, then do the returns deferred while it was held."""
        self._unlock()
        if self._deferred:
            self._drain_deferred()

    def _register(self, slot: Any) -> None:
        self._slots[id(slot.obj)] = slot

    def _unregister(self, slot: Any) -> None:
        del self._slots[id(slot.obj)]

    def _now(self) -> float:
        clock = self._clock
        return _monotonic() if clock is None else float(clock())  # float, as in the C twin

    def _checkout(self, slot: Any) -> None:
        """Mark ``slot`` in use by the caller (lock held)."""
        slot.state = USING
        slot.uses += 1
        self._nuses += 1
        self._nusing += 1
        if self._timed:
            slot.last_get = self._now()
            slot.warned = False

    def get(self, timeout: float | None = None) -> Any:
        """Get an object: the last one returned if any is idle, else a new one, else wait.

        ``timeout`` (seconds) defaults to the pool's; ``0`` does not wait.  Raises
        ``TimeOut`` on timeout, ``PoolException`` after shutdown, and whatever
        ``fun`` raises when creating."""
        if timeout is not None:
            timeout = check_timeout(timeout)
        self._acquire()
        avail = self._avail
        if avail and not self._shutdown:
            slot = avail.pop()
            slot.state = USING  # _checkout, inlined on the hot path
            slot.uses += 1
            self._nuses += 1
            self._nusing += 1
            if self._timed:
                slot.last_get = self._now()
                slot.warned = False
            self._unlock()
            if self._deferred:
                self._drain_deferred()
            if self._getter is None and not self._leak_trace:
                return slot.obj
            return self._after_get(slot)
        return self._get_slow(timeout)

    def ret(self, obj: Any) -> None:
        """Give back an object obtained from ``get``.

        A second return, or the return of an object the pool does not hold in
        use, is ignored with a warning."""
        if self._held_here():
            # a finalizer run (by the GC) while this thread is inside the pool:
            # give the object back once the lock is released
            self._deferred.append(obj)
            return
        self._acquire()
        slot: Any = self._slots.get(id(obj))
        if slot is None or slot.state != USING:
            self._release()
            self._bad_return(obj)
            return
        if self._retter is not None:
            uses = slot.uses
            self._release()
            try:
                self._hook("retter", self._retter, obj)
            except BaseException:  # interrupted mid-reset: retire the object, re-raise
                self._drop_interrupted(slot, USING, uses)
                raise
            self._acquire()
            if slot.state != USING or slot.uses != uses or self._slots.get(id(obj)) is not slot:
                self._release()
                self._bad_return(obj)
                return
        self._nreturns += 1
        if (
            (self._max_use and slot.uses >= self._max_use)
            or (self._max_lifetime and self._now() - slot.created >= self._max_lifetime)
            or self._shutdown
        ):
            self._retire(slot)
            self._release()
            self._close(obj)
            self._fill()
            return
        self._nusing -= 1
        if self._timed:
            slot.last_ret = self._now()
        if self._leak_trace:
            slot.holder = slot.stack = None
        if self._waiters:
            self._put_idle(slot)
        else:
            slot.state = IDLE
            self._avail.append(slot)
        self._unlock()
        if self._deferred:
            self._drain_deferred()
