# cython: language_level=3, freethreading_compatible=True
"""The compiled Pool twin: the hot path (get, ret) in C over the shared cold parts.

``ppp/_pool_py.py`` is its pure-Python twin; both must behave identically.  The
bookkeeping of ``get`` and ``ret`` runs on typed attributes under a C-level
mutex (PyMutex on 3.13+, an atomic benaphore before; both release the GIL
while they block); waiting, creation, housekeeping and statistics are the shared Python
code of ``ppp._common``.
"""

cimport cython
from cpython.long cimport PyLong_FromVoidPtr
from cpython.object cimport PyObject
from cpython.time cimport monotonic

cdef extern from *:
    """
    /* The pool's mutex.  3.13+: PyMutex (it detaches the thread state, so the
       GIL or the free-threaded GC is never held while blocked).  Older: a
       "benaphore": one atomic add when uncontended, and a PyThread lock, taken
       with the GIL released, for the rare contended case (only the holder can
       post, so a binary lock is enough). */
    #include "pythread.h"
    #if defined(_MSC_VER)
    #include <intrin.h>
    #define PPP_FETCH_ADD(p, v) _InterlockedExchangeAdd((volatile long *)(p), (long)(v))
    #define PPP_STORE(p, v) (*(volatile unsigned long *)(p) = (v))
    #define PPP_LOAD(p) (*(volatile unsigned long *)(p))
    #else
    #define PPP_FETCH_ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_ACQ_REL)
    #define PPP_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
    #define PPP_LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
    #endif
    /* ``owner`` is the holder's thread id (0 when free): ret() called by a
       finalizer while its own thread holds the lock is deferred, not deadlocked. */
    #if PY_VERSION_HEX >= 0x030d0000
    typedef struct { PyMutex m; unsigned long owner; } ppp_lock_t;
    static int ppp_lock_init(ppp_lock_t *l) { l->m = (PyMutex){0}; l->owner = 0; return 0; }
    static void ppp_lock_free(ppp_lock_t *l) { (void)l; }
    static CYTHON_INLINE void ppp_lock_acquire(ppp_lock_t *l) {
        PyMutex_Lock(&l->m);
        PPP_STORE(&l->owner, PyThread_get_thread_ident());
    }
    static CYTHON_INLINE void ppp_lock_release(ppp_lock_t *l) {
        PPP_STORE(&l->owner, 0UL);
        PyMutex_Unlock(&l->m);
    }
    #else
    typedef struct { long count; unsigned long owner; PyThread_type_lock sem; } ppp_lock_t;
    static int ppp_lock_init(ppp_lock_t *l) {
        l->count = 0;
        l->owner = 0;
        l->sem = PyThread_allocate_lock();
        if (!l->sem) return -1;
        PyThread_acquire_lock(l->sem, WAIT_LOCK);
        return 0;
    }
    static void ppp_lock_free(ppp_lock_t *l) {
        if (l->sem) { PyThread_release_lock(l->sem); PyThread_free_lock(l->sem); l->sem = NULL; }
    }
    static CYTHON_INLINE void ppp_lock_acquire(ppp_lock_t *l) {
        if (PPP_FETCH_ADD(&l->count, 1) != 0) {
            Py_BEGIN_ALLOW_THREADS
            PyThread_acquire_lock(l->sem, WAIT_LOCK);
            Py_END_ALLOW_THREADS
        }
        PPP_STORE(&l->owner, PyThread_get_thread_ident());
    }
    static CYTHON_INLINE void ppp_lock_release(ppp_lock_t *l) {
        PPP_STORE(&l->owner, 0UL);
        if (PPP_FETCH_ADD(&l->count, -1) > 1) PyThread_release_lock(l->sem);
    }
    #endif
    static CYTHON_INLINE int ppp_lock_held_here(ppp_lock_t *l) {
        return PPP_LOAD(&l->owner) == PyThread_get_thread_ident();
    }
    """
    ctypedef struct ppp_lock_t:
        pass
    int ppp_lock_init(ppp_lock_t *l)
    void ppp_lock_free(ppp_lock_t *l)
    void ppp_lock_acquire(ppp_lock_t *l)
    void ppp_lock_release(ppp_lock_t *l)
    int ppp_lock_held_here(ppp_lock_t *l)

cdef extern from *:
    """
    /* An open-addressing index from an object's address to its _Slot, so that
       ret() finds the slot without building an int key.  Entries are borrowed:
       the _slots dict owns the slots, and both change together under the lock. */
    typedef struct { void *key; PyObject *slot; } ppp_entry;
    typedef struct { ppp_entry *e; size_t mask; size_t fill; size_t live; } ppp_table;
    #define PPP_TOMB ((void *)1)

    static CYTHON_INLINE size_t ppp_hash(void *p) {
        size_t x = (size_t)p;
        x ^= x >> 17;
        x *= (size_t)0x9E3779B97F4A7C15ULL;
        return x ^ (x >> 29);
    }
    static int ppp_table_init(ppp_table *t) {
        t->e = (ppp_entry *)PyMem_Calloc(16, sizeof(ppp_entry));
        if (!t->e) return -1;
        t->mask = 15; t->fill = 0; t->live = 0;
        return 0;
    }
    static void ppp_table_free(ppp_table *t) {
        PyMem_Free(t->e); t->e = NULL;
    }
    static CYTHON_INLINE PyObject *ppp_table_get(ppp_table *t, void *key) {
        size_t i = ppp_hash(key) & t->mask;
        for (;;) {
            ppp_entry *en = &t->e[i];
            if (en->key == key) return en->slot;
            if (en->key == NULL) return NULL;
            i = (i + 1) & t->mask;
        }
    }
    static int ppp_table_resize(ppp_table *t) {
        size_t cap = 16, i, j;
        ppp_entry *old = t->e, *e;
        size_t oldcap = t->mask + 1;
        while (cap < (t->live + 1) * 4) cap <<= 1;
        e = (ppp_entry *)PyMem_Calloc(cap, sizeof(ppp_entry));
        if (!e) return -1;
        for (i = 0; i < oldcap; i++) {
            if (old[i].key == NULL || old[i].key == PPP_TOMB) continue;
            j = ppp_hash(old[i].key) & (cap - 1);
            while (e[j].key != NULL) j = (j + 1) & (cap - 1);
            e[j] = old[i];
        }
        PyMem_Free(old);
        t->e = e; t->mask = cap - 1; t->fill = t->live;
        return 0;
    }
    static int ppp_table_set(ppp_table *t, void *key, PyObject *slot) {
        size_t i;
        ppp_entry *tomb = NULL;
        if ((t->fill + 1) * 3 >= (t->mask + 1) * 2 && ppp_table_resize(t) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        i = ppp_hash(key) & t->mask;
        for (;;) {
            ppp_entry *en = &t->e[i];
            if (en->key == key) { en->slot = slot; return 0; }
            if (en->key == PPP_TOMB) { if (!tomb) tomb = en; }
            else if (en->key == NULL) {
                if (tomb) en = tomb; else t->fill++;
                en->key = key; en->slot = slot; t->live++;
                return 0;
            }
            i = (i + 1) & t->mask;
        }
    }
    static void ppp_table_del(ppp_table *t, void *key) {
        size_t i = ppp_hash(key) & t->mask;
        for (;;) {
            ppp_entry *en = &t->e[i];
            if (en->key == key) { en->key = PPP_TOMB; en->slot = NULL; t->live--; return; }
            if (en->key == NULL) return;
            i = (i + 1) & t->mask;
        }
    }
    """
    ctypedef struct ppp_table:
        pass
    int ppp_table_init(ppp_table *t)
    void ppp_table_free(ppp_table *t)
    PyObject *ppp_table_get(ppp_table *t, void *key)
    int ppp_table_set(ppp_table *t, void *key, PyObject *slot) except -1
    void ppp_table_del(ppp_table *t, void *key)


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

    cdef ppp_lock_t _lock
    cdef ppp_table _index
    cdef public dict _slots
    cdef public list _deferred
    cdef public list _avail
    cdef public object _waiters
    cdef public Py_ssize_t _nusing, _nuses, _nreturns, _max_use
    cdef public double _max_lifetime
    cdef public bint _shutdown, _timed, _leak_trace
    cdef public object _clock, _getter, _retter

    def __cinit__(self, *args, **kwargs):
        if ppp_lock_init(&self._lock) < 0:
            raise MemoryError("cannot allocate the pool lock")
        if ppp_table_init(&self._index) < 0:
            raise MemoryError("cannot allocate the pool index")

    def __dealloc__(self):
        ppp_table_free(&self._index)
        ppp_lock_free(&self._lock)

    def _register(self, _Slot slot):
        """Index a new slot by its object's identity (lock held)."""
        ppp_table_set(&self._index, <void*>slot.obj, <PyObject*>slot)
        self._slots[PyLong_FromVoidPtr(<void*>slot.obj)] = slot

    def _unregister(self, _Slot slot):
        """Drop a slot from the index (lock held)."""
        del self._slots[PyLong_FromVoidPtr(<void*>slot.obj)]
        ppp_table_del(&self._index, <void*>slot.obj)

    def _acquire(self):
        ppp_lock_acquire(&self._lock)

    def _release(self):
        self._unlock()

    cdef inline int _unlock(self) except -1:
        """Release the lock, then do the returns deferred while it was held."""
        ppp_lock_release(&self._lock)
        if self._deferred:
            self._drain_deferred()
        return 0

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
        return self._get_c(timeout)

    def ret(self, obj):
        """Give back an object obtained from ``get``.

        A second return, or the return of an object the pool does not hold in
        use, is ignored with a warning."""
        self._ret_c(obj)

    def obj(self, timeout=None):
        """Get an object for a ``with`` block; it is returned on exit, exceptions included."""
        return _Lease(self, timeout)

    cdef object _get_c(self, timeout):
        cdef _Slot slot
        if timeout is not None:
            timeout = check_timeout(timeout)
        ppp_lock_acquire(&self._lock)
        if self._avail and not self._shutdown:
            slot = <_Slot>self._avail.pop()
            self._checkout_c(slot)
            self._unlock()
            if self._getter is None and not self._leak_trace:
                return slot.obj
            return self._after_get(slot)
        return self._get_slow(timeout)

    cdef object _ret_c(self, obj):
        cdef _Slot slot
        cdef Py_ssize_t uses
        cdef PyObject *found
        if ppp_lock_held_here(&self._lock):
            # a finalizer run (by the GC) while this thread is inside the pool:
            # give the object back once the lock is released
            self._deferred.append(obj)
            return None
        ppp_lock_acquire(&self._lock)
        found = ppp_table_get(&self._index, <void*>obj)
        if found is NULL or (<_Slot>found).state != S_USING:
            self._unlock()
            self._bad_return(obj)
            return
        slot = <_Slot>found
        if self._retter is not None:
            uses = slot.uses
            self._unlock()
            try:
                self._hook("retter", self._retter, obj)
            except BaseException:  # interrupted mid-reset: retire the object, re-raise
                self._drop_interrupted(slot, S_USING, uses)
                raise
            ppp_lock_acquire(&self._lock)
            found = ppp_table_get(&self._index, <void*>obj)
            if slot.state != S_USING or slot.uses != uses or found is not <PyObject*>slot:
                self._unlock()
                self._bad_return(obj)
                return
        self._nreturns += 1
        if (
            (self._max_use and slot.uses >= self._max_use)
            or (self._max_lifetime and self._now_c() - slot.created >= self._max_lifetime)
            or self._shutdown
        ):
            self._retire(slot)
            self._unlock()
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
        self._unlock()


@cython.final
@cython.auto_pickle(False)
cdef class _Lease:
    """``with pool.obj() as o``: ``get`` on entry, ``ret`` on exit, in C."""

    cdef _Core _pool
    cdef object _timeout, _obj

    def __init__(self, _Core pool, timeout):
        self._pool = pool
        self._timeout = timeout

    def __enter__(self):
        self._obj = self._pool._get_c(self._timeout)
        return self._obj

    def __exit__(self, *exc_info):
        self._pool._ret_c(self._obj)


class Pool(_Core, PoolBase):
    """Thread-safe pool of objects created on demand by ``fun(n)`` (compiled twin).

    ``get(timeout=None)`` hands out an object (idle ones last-in first-out,
    waiters first come first served) and ``ret(obj)`` gives it back.  See the
    README for every parameter."""

    _Slot = _Slot
    _backend = "cython"

    def _init_core(self):
        new_state(self)
