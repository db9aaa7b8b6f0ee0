# cython: language_level=3, freethreading_compatible=True
"""The compiled Pool twin: the hot path (get, ret) in C over the shared cold parts.

``ppp/_pool_py.py`` is its pure-Python twin; both must behave identically.  The
bookkeeping of ``get`` and ``ret`` runs on typed attributes under a C-level
mutex (``cython.pymutex``: PyMutex on 3.13+, which releases the GIL while it
blocks); waiting, creation, housekeeping and statistics are the shared Python
code of ``ppp._common``.
"""

cimport cython
from cpython.long cimport PyLong_FromVoidPtr
from cpython.time cimport monotonic

from ._common import PoolBase, check_timeout, new_state

__all__ = ["Pool"]

cdef enum:
    S_IDLE = 0
    S_USING = 1


@cython.auto_pickle(False)
cdef class _Slot:
    """What the pool knows of one object it holds."""

    cdef public object obj, holder, stack
    cdef public Py_ssize_t n, uses
    cdef public int state
    cdef public double created, last_get, last_ret
    cdef public bint warned

    def __init__(self, obj, Py_ssize_t n, double now):
        self.obj = obj
        self.n = n
        self.uses = 0
        self.state = S_IDLE
        self.created = now
        self.last_get = now
        self.last_ret = now
        self.holder = None
        self.stack = None
        self.warned = False


cdef class _Core:
    """Typed state and the hot path; ``Pool`` adds the shared cold parts."""

    cdef cython.pymutex _lock
    cdef public dict _slots
    cdef public list _avail
    cdef public object _waiters
    cdef public Py_ssize_t _nusing, _nuses, _nreturns, _max_use
    cdef public double _max_lifetime
    cdef public bint _shutdown, _timed, _leak_trace
    cdef public object _clock, _getter, _retter

    def _acquire(self):
        self._lock.acquire()

    def _release(self):
        self._lock.release()

    cdef inline double _now_c(self) except? -1.0:
        if self._clock is None:
            return monotonic()
        return self._clock()

    def _now(self):
        return self._now_c()

    cdef inline int _checkout_c(self, _Slot slot) except -1:
        slot.state = S_USING
        slot.uses += 1
        self._nuses += 1
        self._nusing += 1
        if self._timed:
            slot.last_get = self._now_c()
            slot.warned = False
        return 0

    def _checkout(self, _Slot slot):
        """Mark ``slot`` in use by the caller (lock held)."""
        self._checkout_c(slot)

    def get(self, timeout=None):
        """Get an object: the last one returned if any is idle, else a new one, else wait.

        ``timeout`` (seconds) defaults to the pool's; ``0`` does not wait.  Raises
        ``TimeOut`` on timeout, ``PoolException`` after shutdown, and whatever
        ``fun`` raises when creating."""
        cdef _Slot slot
        if timeout is not None:
            timeout = check_timeout(timeout)
        self._lock.acquire()
        if self._avail and not self._shutdown:
            slot = <_Slot>self._avail.pop()
            self._checkout_c(slot)
            self._lock.release()
            if self._getter is None and not self._leak_trace:
                return slot.obj
            return self._after_get(slot)
        return self._get_slow(timeout)

    def ret(self, obj):
        """Give back an object obtained from ``get``.

        A second return, or the return of an object the pool does not hold in
        use, is ignored with a warning."""
        cdef _Slot slot
        cdef Py_ssize_t uses
        key = PyLong_FromVoidPtr(<void*>obj)
        self._lock.acquire()
        found = self._slots.get(key)
        if found is None or (<_Slot>found).state != S_USING or (<_Slot>found).obj is not obj:
            self._lock.release()
            self._bad_return(obj)
            return
        slot = <_Slot>found
        if self._retter is not None:
            uses = slot.uses
            self._lock.release()
            self._hook("retter", self._retter, obj)
            self._lock.acquire()
            if slot.state != S_USING or slot.uses != uses or self._slots.get(key) is not slot:
                self._lock.release()
                self._bad_return(obj)
                return
        self._nreturns += 1
        if (self._max_use or self._max_lifetime or self._shutdown) and self._retire(slot):
            self._lock.release()
            self._close(obj)
            self._fill()
            return
        self._nusing -= 1
        if self._timed:
            slot.last_ret = self._now_c()
        if self._leak_trace:
            slot.holder = None
            slot.stack = None
        if self._waiters:
            self._put_idle(slot)
        else:
            slot.state = S_IDLE
            self._avail.append(slot)
        self._lock.release()


class Pool(_Core, PoolBase):
    """Thread-safe pool of objects created on demand by ``fun(n)`` (compiled twin).

    ``get(timeout=None)`` hands out an object (idle ones last-in first-out,
    waiters first come first served) and ``ret(obj)`` gives it back.  See the
    README for every parameter."""

    _Slot = _Slot
    _backend = "cython"

    def _init_core(self):
        new_state(self)
