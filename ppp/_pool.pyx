# cython: language_level=3, freethreading_compatible=True
"""The compiled Pool twin: every line that runs with the pool's lock held, in C.

``ppp/_pool_py.py`` is its pure-Python twin; both must behave identically.  The
hot path (``get``, ``ret``) and the locked steps (``_lk_*``) run on typed
attributes under a C-level mutex (PyMutex on the free-threaded build; a benaphore
counted with plain stores under the GIL on the GIL build; both let other threads
run while they block), and nothing they do under it calls back
into Python: no Python-level method, no hook, no clock (the time is read before
the lock is taken).  So no signal handler, asynchronous exception or tracer can
run inside a locked region: an interrupt lands before or after it, never in it.
The code that runs outside the lock (waiting, creating, hooks, housekeeping,
statistics) is the shared ``ppp._common``.
"""

cimport cython
from cpython.long cimport PyLong_FromVoidPtr
from cpython.mem cimport PyMem_Free
from cpython.object cimport PyObject
from cpython.time cimport monotonic

cdef extern from *:
    """
    /* The pool's mutex.  Free-threaded build: PyMutex (it detaches the thread
       state while blocked).  GIL build: a "benaphore": a count taken with plain
       loads and stores (every acquire and release runs holding the GIL, whose
       hand-over orders memory, so no atomic instruction is needed), and a
       PyThread lock, waited on with the GIL released, for the contended case
       (only the holder posts it, so a binary lock is enough). */
    #include "pythread.h"
    #if defined(Py_GIL_DISABLED) && defined(_MSC_VER)
    #define PPP_STORE(p, v) (*(volatile unsigned long *)(p) = (v))
    #define PPP_LOAD(p) (*(volatile unsigned long *)(p))
    #elif defined(Py_GIL_DISABLED)
    #define PPP_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
    #define PPP_LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
    #else
    #define PPP_STORE(p, v) (*(p) = (v))
    #define PPP_LOAD(p) (*(p))
    #endif
    /* ``owner`` is the holder's thread id (0 when free): ret() called by a
       finalizer while its own thread holds the lock is deferred, not deadlocked.
       Free-threaded build: the thread pointer (_Py_ThreadId, what CPython keys
       object ownership on: one register read, where PyThread_get_thread_ident
       is a call; unique among live threads, and only compared for equality). */
    #ifdef Py_GIL_DISABLED
    #define PPP_SELF() ((unsigned long)_Py_ThreadId())
    #else
    #define PPP_SELF() PyThread_get_thread_ident()
    #endif
    #ifdef Py_GIL_DISABLED
    typedef struct { PyMutex m; unsigned long owner; } ppp_lock_t;
    static int ppp_lock_init(ppp_lock_t *l) { l->m = (PyMutex){0}; l->owner = 0; return 0; }
    static void ppp_lock_free(ppp_lock_t *l) { (void)l; }
    static CYTHON_INLINE void ppp_lock_acquire(ppp_lock_t *l) {
        PyMutex_Lock(&l->m);
        PPP_STORE(&l->owner, PPP_SELF());
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
        if (l->count++ != 0) {
            Py_BEGIN_ALLOW_THREADS
            PyThread_acquire_lock(l->sem, WAIT_LOCK);
            Py_END_ALLOW_THREADS
        }
        l->owner = PPP_SELF();
    }
    static CYTHON_INLINE void ppp_lock_release(ppp_lock_t *l) {
        l->owner = 0UL;
        if (l->count-- > 1) PyThread_release_lock(l->sem);
    }
    #endif
    static CYTHON_INLINE int ppp_lock_held_here(ppp_lock_t *l) {
        unsigned long owner = PPP_LOAD(&l->owner);
        return owner != 0 && owner == PPP_SELF();
    }
    /* The idle stack's pop (the list is not empty).  list.pop() gives memory
       back when the list falls below half its capacity: with one object idle,
       every get shrank the list to nothing and the next ret grew it again (two
       reallocs per get+ret).  This pop keeps the capacity (bounded by the most
       objects ever idle at once): the top item's reference passes to the
       caller and the size drops by one, as list.pop() does before it resizes.
       Every change to the list is made under the pool's lock, so the list's
       own critical section (free-threaded build) is not needed against other
       writers; Py_SET_SIZE stores atomically there for lock-free readers. */
    static CYTHON_INLINE PyObject *ppp_list_pop(PyObject *list) {
        Py_ssize_t n = PyList_GET_SIZE(list);
        PyObject *item = PyList_GET_ITEM(list, n - 1);
        Py_SET_SIZE(list, n - 1);
        return item;
    }
    /* The idle stack's push: in place while the list has room (as list.append
       does, storing the item before the size for lock-free readers), else
       PyList_Append, which grows it. */
    static CYTHON_INLINE int ppp_list_push(PyObject *list, PyObject *item) {
        PyListObject *l = (PyListObject *)list;
        Py_ssize_t n = PyList_GET_SIZE(list);
        if (l->allocated > n) {
            Py_INCREF(item);
    #ifdef Py_GIL_DISABLED
            _Py_atomic_store_ptr_release(&l->ob_item[n], item);
    #else
            l->ob_item[n] = item;
    #endif
            Py_SET_SIZE(list, n + 1);
            return 0;
        }
        return PyList_Append(list, item);
    }
    """
    ctypedef struct ppp_lock_t:
        pass
    int ppp_lock_init(ppp_lock_t *l)
    void ppp_lock_free(ppp_lock_t *l)
    void ppp_lock_acquire(ppp_lock_t *l)
    void ppp_lock_release(ppp_lock_t *l)
    int ppp_lock_held_here(ppp_lock_t *l)
    # the list by address: Cython would otherwise take and drop a reference to
    # it around each call (on the free-threaded build an atomic write to an
    # object every thread shares)
    int ppp_list_push(PyObject *lst, object item) except -1
    int ppp_list_push_raw "ppp_list_push"(PyObject *lst, PyObject *item) noexcept
    Py_ssize_t Py_SIZE(PyObject *o)

cdef extern from *:
    """
    /* ``Pool.ret``: a method descriptor whose C function takes the object as the
       caller passed it (borrowed).  Cython's own wrapper takes a new reference
       to each argument and drops it on the way out: on the free-threaded build,
       for an object another thread made, two atomic writes to its shared
       reference count and a call to release it, on every return.  The
       signature is the pure twin's: ret(self, /, obj). */
    typedef PyObject *(*ppp_ret_fn)(PyObject *self, PyObject *obj);
    static ppp_ret_fn ppp_ret_impl = NULL;
    static PyObject *ppp_ret_call(PyObject *self, PyObject *const *args,
                                  Py_ssize_t nargs, PyObject *kwnames) {
        Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
        if (nargs == 1 && nkw == 0)
            return ppp_ret_impl(self, args[0]);
        if (nargs == 0 && nkw == 1) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, 0);
            if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, "obj") == 0)
                return ppp_ret_impl(self, args[0]);
            PyErr_Format(PyExc_TypeError,
                         "ret() got an unexpected keyword argument '%S'", name);
            return NULL;
        }
        if (nargs + nkw == 0)
            PyErr_SetString(PyExc_TypeError,
                            "ret() missing 1 required argument: 'obj'");
        else
            PyErr_Format(PyExc_TypeError,
                         "ret() takes 1 argument (%zd given)", nargs + nkw);
        return NULL;
    }
    static PyMethodDef ppp_ret_def = {
        "ret", (PyCFunction)(void (*)(void))ppp_ret_call, METH_FASTCALL | METH_KEYWORDS,
        "ret($self, /, obj)\\n--\\n\\n"
        "Give back an object obtained from ``get``.\\n\\n"
        "A second return, or the return of an object the pool does not hold in\\n"
        "use, is ignored with a warning."
    };
    static PyObject *ppp_ret_descriptor(PyObject *type, ppp_ret_fn impl) {
        ppp_ret_impl = impl;
        return PyDescr_NewMethod((PyTypeObject *)type, &ppp_ret_def);
    }
    """
    ctypedef object (*ppp_ret_fn)(object, object)
    object ppp_ret_descriptor(object type, ppp_ret_fn impl)


cdef extern from *:
    """
    /* Thread affinity: each thread hashes to one of PPP_NB buckets.  A plain
       return with no waiter parks the object in the returning thread's bucket,
       and that thread's next plain get takes it back, under the bucket's own
       lock, not the pool's: threads on different buckets share no lock and no
       written cache line (each bucket has 128 bytes to itself).  PPP_NB is prime: thread ids are
       aligned addresses, a prime modulus spreads them.  ``lent`` is the
       slot a plain get last gave a thread of the bucket: it lets ret() find the
       slot without the pool's index.  Both pointers are borrowed: a parked or
       lent slot is always registered (every locked step that can forget a slot
       first takes every parked one back and clears every lent one, each under
       its bucket's lock: _Core._quiesce).  A slot is parked or lent in its final
       state: another thread of the bucket may take it the moment the bucket is
       unlocked, with no other lock.  ``nuses`` and ``nreturns`` count the
       bucket's plain gets and returns until _quiesce adds them to the pool's.
       GIL build: nothing in a bucket's critical section releases the GIL, so
       the bucket lock is the GIL itself. */
    #define PPP_NB 17
    typedef struct {
    #ifdef Py_GIL_DISABLED
        PyMutex m;
    #endif
        PyObject *parked;
        PyObject *lent;
        Py_ssize_t nuses, nreturns;
    } ppp_bucket_t;
    typedef union { ppp_bucket_t b; char pad[128]; } ppp_bucket_pad;
    static ppp_bucket_pad *ppp_buckets_alloc(void **raw) {
        char *p = (char *)PyMem_Calloc(1, PPP_NB * sizeof(ppp_bucket_pad) + 127);
        *raw = p;
        if (!p) return NULL;
        return (ppp_bucket_pad *)(((uintptr_t)p + 127) & ~(uintptr_t)127);
    }
    static void ppp_buckets_clear(ppp_bucket_pad *a) {
        memset(a, 0, PPP_NB * sizeof(ppp_bucket_pad));
    }
    /* The same function of the thread's id as ppp._common.bucket_of.  Free-threaded
       build: where the thread pointer (_Py_ThreadId, a register read) is the id
       threading.get_ident() returns (x86-64 with glibc or musl: both are the
       thread's control block), it is read instead of calling
       PyThread_get_thread_ident; checked once at import (ppp_ident_init), as the
       twins must choose the same bucket. */
    #ifdef Py_GIL_DISABLED
    static int ppp_tid_is_ident = 0;
    static void ppp_ident_init(void) {
        ppp_tid_is_ident = (_Py_ThreadId() == (uintptr_t)PyThread_get_thread_ident());
    }
    static CYTHON_INLINE Py_ssize_t ppp_bucket_index(void) {
        unsigned long id = ppp_tid_is_ident ? (unsigned long)_Py_ThreadId()
                                            : PyThread_get_thread_ident();
        return (Py_ssize_t)(id % PPP_NB);
    }
    #else
    static void ppp_ident_init(void) {}
    static CYTHON_INLINE Py_ssize_t ppp_bucket_index(void) {
        return (Py_ssize_t)(PyThread_get_thread_ident() % PPP_NB);
    }
    #endif
    static CYTHON_INLINE ppp_bucket_t *ppp_bucket_at(ppp_bucket_pad *a, Py_ssize_t i) {
        return &a[i].b;
    }
    #ifdef Py_GIL_DISABLED
    #define ppp_bucket_lock(bk) PyMutex_Lock(&(bk)->m)
    #define ppp_bucket_unlock(bk) PyMutex_Unlock(&(bk)->m)
    #else
    #define ppp_bucket_lock(bk) ((void)(bk))
    #define ppp_bucket_unlock(bk) ((void)(bk))
    #endif
    """
    enum: PPP_NB
    ctypedef struct ppp_bucket_t:
        PyObject *parked
        PyObject *lent
        Py_ssize_t nuses, nreturns
    ctypedef struct ppp_bucket_pad:
        pass
    ppp_bucket_pad *ppp_buckets_alloc(void **raw) noexcept
    void ppp_buckets_clear(ppp_bucket_pad *a) noexcept
    Py_ssize_t ppp_bucket_index() noexcept
    void ppp_ident_init() noexcept
    ppp_bucket_t *ppp_bucket_at(ppp_bucket_pad *a, Py_ssize_t i) noexcept
    void ppp_bucket_lock(ppp_bucket_t *bk) noexcept
    void ppp_bucket_unlock(ppp_bucket_t *bk) noexcept

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


import os
import threading
from _thread import allocate_lock
from collections import deque

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
    _unstick_after_fork,
    check_timeout,
)

__all__ = ["Pool"]

cdef enum:
    S_GONE = -1
    S_IDLE = 0
    S_USING = 1
    S_BORROWED = 2
    C_GOT = 0
    C_CREATE = 1
    C_SHUT = 2
    C_FULL = 3
    C_QUEUED = 4
    C_GONE = 5
    C_WAIT_SAMPLES = 1024
    C_HANDOFF_PASSES = 64
    C_REG_SLACK = 64  # forgotten entries of _reg always tolerated before a compaction

# the C copies of the shared constants (ppp._common) must be the same values
if (S_IDLE, S_USING, S_BORROWED, C_GOT, C_CREATE, C_SHUT, C_FULL, C_QUEUED, C_GONE,
        C_WAIT_SAMPLES, C_HANDOFF_PASSES, PPP_NB) != (
        IDLE, USING, BORROWED, GOT, CREATE, SHUT, FULL, QUEUED, GONE,
        WAIT_SAMPLES, HANDOFF_PASSES, NBUCKETS):
    raise ImportError("ppp._pool: its C constants differ from ppp._common's")

# ``last_get`` of an object granted to a waiter that has not run yet: never over-held
# (housekeeping must not kill what its holder has not received); see ``_lk_pickup``
cdef double _NOT_PICKED_UP = float("inf")

# How many times this process has forked: bumped in the child, and nothing else is
# done there; each pool notices on its next use and starts again (``_lk_reset``).
cdef unsigned long _fork_gen = 0
_reset_lock = threading.Lock()  # serialises those resets in a child


def _after_fork_in_child():
    global _fork_gen
    _fork_gen += 1
    _reset_lock._at_fork_reinit()  # the fork may have caught it held


os.register_at_fork(after_in_child=_after_fork_in_child)
ppp_ident_init()


def _bucket_here():
    """The bucket of the calling thread, as the compiled hot path computes it (tests:
    it must be ``ppp._common.bucket_of(threading.get_ident())``)."""
    return ppp_bucket_index()


@cython.auto_pickle(False)
cdef class _Slot:
    """What the pool knows of one object it holds."""

    cdef public object obj, holder, stack
    cdef public Py_ssize_t n, uses, seq, pos
    cdef public int state
    cdef public double created, last_get, last_ret
    cdef public bint warned
    # the bucket whose ``lent`` or ``parked`` may point here (-1: none).  Written
    # only under the pool's lock (the plain get and ret move a slot between its
    # bucket's ``parked`` and ``lent``, never to another bucket), so a locked step
    # reads it exactly; it may be stale (the bucket has let go): the bucket decides
    cdef Py_ssize_t bucket

    def __init__(self, obj, Py_ssize_t n, double now):
        self.obj = obj
        self.n = n
        self.seq = 0  # its rank in the pool's ``_reg`` (set when registered)
        self.pos = 0  # its index there: a hint, checked before use (see _unregister)
        self.uses = 0
        self.state = S_IDLE
        self.created = now
        self.last_get = now
        self.last_ret = now
        self.holder = None
        self.stack = None
        self.warned = False
        self.bucket = -1


cdef extern from *:
    # the idle stack's pop (above), typed: the list's reference passes to the
    # caller as a _Slot (no checked cast, no extra reference taken and dropped)
    _Slot _pop_slot "ppp_list_pop"(PyObject *lst)


cdef inline void _check_out(_Slot slot, double last_get) noexcept:
    """An idle slot's own fields as it is handed out (the caller counts the use)."""
    slot.state = S_USING
    slot.uses += 1
    slot.last_get = last_get
    slot.warned = False


cdef inline Py_ssize_t _seq_of(object entry) except? -1:
    """The ``seq`` of an entry of ``_reg``: a slot's, or a forgotten one's (an int)."""
    if isinstance(entry, _Slot):
        return (<_Slot>entry).seq
    return <Py_ssize_t>entry


@cython.final
@cython.auto_pickle(False)
cdef class Waiter:
    """A ticket for one slow ``get`` or one creation: what the pool grants it is
    written here under the lock, so an interrupt can always give it back (see the
    pure twin's ``Waiter``)."""

    cdef public object lock, slot, obj
    cdef public double since, barge0
    cdef public Py_ssize_t create, passed0
    cdef public bint error, queued, woken

    def __init__(self, bint blocking=True):
        if blocking:
            self.lock = allocate_lock()
            self.lock.acquire()
        self.since = 0.0
        self.create = -1
        self.error = False
        self.queued = False
        self.woken = False
        self.passed0 = 0
        self.barge0 = 0.0


cdef class _Core:
    """Typed state, the hot path and the locked steps; ``Pool`` adds the shared
    cold parts."""

    cdef ppp_lock_t _lock
    cdef ppp_table _index
    cdef public dict _slots
    cdef public list _avail, _deferred, _wait_samples, _reg
    cdef public object _waiters, _closing  # deques
    # in use, gets, returns: the pool's counts; the buckets' plain gets and returns
    # are added by _quiesce (the _nusing, _nuses, _nreturns properties add them)
    cdef Py_ssize_t _c_nusing, _c_nuses, _c_nreturns
    cdef public Py_ssize_t _npending, _ncreating, _ncreated
    cdef ppp_bucket_pad *_bk  # PPP_NB buckets (see ppp_bucket_t)
    cdef void *_bk_raw  # their allocation
    cdef public Py_ssize_t _nbad_returns, _nborrows, _nkilled, _nrecycled, _nwornout
    cdef public Py_ssize_t _nexpired, _ndiscarded, _ndestroys, _nhealth, _bad_health
    cdef public Py_ssize_t _hk_rounds, _hk_errors, _hc_rounds, _hc_errors, _ntimeouts
    cdef public Py_ssize_t _nwaits, _max_waiting, _nhealth_timeouts, _nhandoffs, _max_passed
    cdef public Py_ssize_t _nwoken, _nfreed, _reg_dead
    cdef public bint _handoff
    cdef public double _handoff_after, _barge_t  # _barge_t: the barging clock (pure twin)
    cdef public Py_ssize_t _max_size, _min_size, _max_use, _forks, _pid
    cdef public double _max_lifetime, _max_avail_delay, _max_using_delay_warn
    cdef public double _max_using_delay_kill, _wait_max, _hk_time, _hk_last
    cdef public bint _shutdown, _timed, _leak_trace
    cdef public object _clock, _getter, _retter
    cdef unsigned long _gen

    def __cinit__(self, *args, **kwargs):
        if ppp_lock_init(&self._lock) < 0:
            raise MemoryError("cannot allocate the pool lock")
        if ppp_table_init(&self._index) < 0:
            raise MemoryError("cannot allocate the pool index")
        self._bk = ppp_buckets_alloc(&self._bk_raw)
        if self._bk == NULL:
            raise MemoryError("cannot allocate the pool's thread buckets")

    def __dealloc__(self):
        PyMem_Free(self._bk_raw)
        ppp_table_free(&self._index)
        ppp_lock_free(&self._lock)

    def _init_core(self):
        self._new_state()
        self._gen = _fork_gen
        self._pid = os.getpid()
        self._forks = 0

    cdef _new_state(self):
        ppp_buckets_clear(self._bk)  # (in a forked child: their locks too)
        self._slots = {}
        self._reg = []  # the slots in registration order (see _reg_find)
        self._reg_dead = 0  # forgotten entries in _reg
        self._avail = []
        self._waiters = deque()
        self._deferred = []
        self._closing = deque()  # FIFO: a shutdown queues every idle object
        self._wait_samples = []
        self._wait_max = 0.0
        self._hk_time = 0.0
        self._hk_last = 0.0
        self._shutdown = False
        self._c_nusing = self._npending = self._ncreating = self._ncreated = 0
        self._c_nuses = self._c_nreturns = self._nbad_returns = self._nborrows = 0
        self._nkilled = self._nrecycled = self._nwornout = self._nexpired = 0
        self._ndiscarded = self._ndestroys = self._nhealth = self._bad_health = 0
        self._hk_rounds = self._hk_errors = self._hc_rounds = self._hc_errors = 0
        self._ntimeouts = self._nwaits = self._max_waiting = self._nhealth_timeouts = 0
        self._nhandoffs = self._max_passed = 0
        self._handoff = False  # hand-off mode: freed objects go to the oldest waiter
        self._barge_t = 0.0  # the barging clock (see the pure twin)
        self._nwoken = 0  # queued tickets woken to compete, not yet back
        self._nfreed = 0  # objects made idle while threads waited (see HANDOFF_PASSES)

    # ------------------------------------------------------------ the lock

    def _acquire(self):
        """Take the pool's lock (tests: they read the state under it), parked
        objects taken back first, as every locked step does."""
        self._lkq()

    def _release(self):
        """Release the lock taken by ``_acquire``, then do the deferred returns."""
        ppp_lock_release(&self._lock)
        if self._deferred:
            self._drain_deferred()

    cdef inline void _lk(self) noexcept:
        ppp_lock_acquire(&self._lock)

    cdef inline void _unlk(self) noexcept:
        ppp_lock_release(&self._lock)

    cdef int _lkq(self) except -1:
        """Take the lock for a locked step: every parked object back onto the idle
        stack first (see _quiesce); on failure the lock is released again."""
        ppp_lock_acquire(&self._lock)
        try:
            self._quiesce()
        except BaseException:
            ppp_lock_release(&self._lock)
            raise
        return 0

    cdef int _quiesce(self) except -1:
        """Every bucket, in order (lock held): its parked object goes on top of the
        idle stack, its lent hint is forgotten and its counts go to the pool's.  So
        a locked step sees every idle object on the stack, no return can park an
        object until the lock is released (no bucket has a lent slot, and a plain
        get that finds its bucket empty waits for this lock), and a slot can be
        forgotten with no bucket pointing at it.  Each bucket is locked, also when
        it looks empty: a return parking in it at this moment then either finished
        first (its object is taken here) or sees what this step changed (a waiter
        queued, the pool shut down: it does not park).  Objects taken back while
        threads wait (only when a return raced with a waiter's queueing) wake
        waiters to compete for them, as a return does."""
        cdef Py_ssize_t i, moved = 0
        cdef ppp_bucket_t *bk
        cdef PyObject *p
        cdef int err
        for i in range(PPP_NB):
            bk = ppp_bucket_at(self._bk, i)
            ppp_bucket_lock(bk)
            p = bk.parked
            err = 0
            if p != NULL:
                err = ppp_list_push_raw(<PyObject *>self._avail, p)  # allocation only
                if err == 0:
                    bk.parked = NULL
                    (<_Slot>p).bucket = -1
                    moved += 1
            if bk.lent != NULL:
                (<_Slot>bk.lent).bucket = -1
                bk.lent = NULL
            self._c_nuses += bk.nuses
            self._c_nreturns += bk.nreturns
            self._c_nusing += bk.nuses - bk.nreturns
            bk.nuses = 0
            bk.nreturns = 0
            ppp_bucket_unlock(bk)
            if err:
                raise MemoryError("cannot grow the idle stack")
        if moved and Py_SIZE(<PyObject *>self._waiters):
            self._nfreed += moved
            self._rewake()
        return 0

    cdef bint _unlend(self, _Slot slot) noexcept:
        """Let go of ``slot`` in the bucket that may hold it (pool lock held), before
        a return through the pool's lock reads its state: no plain get or ret can
        touch it after this (two threads returning it at once: one counts, as under
        one lock).  False when the slot is parked there: it is idle (its state may
        change as soon as the bucket is unlocked: decided here)."""
        cdef ppp_bucket_t *bk
        if slot.bucket < 0:
            return True
        bk = ppp_bucket_at(self._bk, slot.bucket)
        ppp_bucket_lock(bk)
        if bk.parked == <PyObject *>slot:
            ppp_bucket_unlock(bk)
            return False
        if bk.lent == <PyObject *>slot:
            bk.lent = NULL
        slot.bucket = -1
        ppp_bucket_unlock(bk)
        return True

    cdef void _bucket_counts(self, Py_ssize_t *uses, Py_ssize_t *returns) noexcept:
        """The buckets' plain gets and returns not yet in the pool's counts (read
        without their locks: exact when no get or ret runs)."""
        cdef Py_ssize_t i
        cdef ppp_bucket_t *bk
        uses[0] = returns[0] = 0
        for i in range(PPP_NB):
            bk = ppp_bucket_at(self._bk, i)
            uses[0] += bk.nuses
            returns[0] += bk.nreturns

    @property
    def _nusing(self):
        cdef Py_ssize_t uses, returns
        self._bucket_counts(&uses, &returns)
        return self._c_nusing + uses - returns

    @property
    def _nuses(self):
        cdef Py_ssize_t uses, returns
        self._bucket_counts(&uses, &returns)
        return self._c_nuses + uses

    @property
    def _nreturns(self):
        cdef Py_ssize_t uses, returns
        self._bucket_counts(&uses, &returns)
        return self._c_nreturns + returns

    cdef inline double _now_c(self) except? -1.0:
        if self._clock is None:
            return monotonic()
        return self._clock()

    def _now(self):
        return self._now_c()

    def _stale(self):
        """Whether this process forked since the pool last ran in it."""
        return self._gen != _fork_gen

    # ------------------------------------------------------------ hot path

    # get: a plain method descriptor (the call as cheap as SimpleQueue's), its
    # signature embedded for inspect.signature; ret: Pool.ret (see ppp_ret_call)
    @cython.binding(False)
    @cython.embedsignature(True)
    @cython.embedsignature.format("clinic")
    def get(self, timeout=None):
        """Get an object: an idle one if any, else a new one, else wait.

        Among idle objects, the one this thread returned last comes first, then
        the most recently returned (thread affinity: see the README's Pool
        reference).

        ``timeout`` (seconds) defaults to the pool's; ``0`` does not wait.  Raises
        ``TimeOut`` on timeout, ``PoolException`` after shutdown, and whatever
        ``fun`` raises when creating."""
        return self._get_c(timeout)

    def obj(self, timeout=None):
        """Get an object for a ``with`` block; it is returned on exit, exceptions included."""
        # made through tp_new alone (from the free list), without __init__'s
        # argument parsing
        cdef _Lease lease = _Lease.__new__(_Lease)
        lease._pool = self
        lease._timeout = timeout
        return lease

    cdef object _get_c(self, timeout):
        cdef _Slot slot = None
        cdef object result
        cdef Waiter ticket
        cdef Py_ssize_t uses
        cdef double now = 0.0
        cdef ppp_bucket_t *bk
        cdef Py_ssize_t bi
        cdef PyObject *p
        if timeout is not None:
            timeout = check_timeout(timeout)
        if self._gen != _fork_gen:
            self._forked()
        if self._timed:
            now = self._now_c()
        bi = ppp_bucket_index()
        bk = ppp_bucket_at(self._bk, bi)
        ppp_bucket_lock(bk)
        p = bk.parked
        if p != NULL:
            # the object this thread's bucket parked: taken back without the pool's
            # lock (parked objects exist only in a pool not shut down); the slot is
            # read through the borrowed pointer, no reference taken (an atomic
            # write when another thread made it) unless a hook needs it
            bk.parked = NULL
            bk.lent = p
            bk.nuses += 1
            _check_out(<_Slot>p, now)
            if self._getter is None and not self._leak_trace:
                result = (<_Slot>p).obj  # (the reference taken before the unlock)
                ppp_bucket_unlock(bk)
                if self._deferred:
                    self._drain_deferred()
                return result
            slot = <_Slot>p
            ppp_bucket_unlock(bk)
        else:
            ppp_bucket_unlock(bk)
            self._lk()
            if self._avail and not self._shutdown:
                slot = self._take_idle(now)
                ppp_bucket_lock(bk)
                bk.lent = <PyObject *>slot
                slot.bucket = bi
                ppp_bucket_unlock(bk)
            self._unlk()
        if slot is None:
            ticket = Waiter(False)
            try:
                return self._get_slow(timeout, ticket)
            except BaseException:  # give back whatever was granted, then re-raise
                self._cancel(ticket)
                raise
        if self._deferred:
            self._drain_deferred()
        if self._getter is None and not self._leak_trace:
            return slot.obj
        uses = slot.uses
        try:
            return self._after_get(slot)
        except BaseException:  # not handed out: back to the pool, then re-raised
            self._lk_unget(slot, uses, self._now_safe())
            raise

    cdef object _ret_c(self, obj):
        cdef _Slot slot
        cdef PyObject *found
        cdef PyObject *p
        cdef ppp_bucket_t *bk
        cdef Py_ssize_t uses, bi
        cdef double now = 0.0
        cdef object holder, stack
        if ppp_lock_held_here(&self._lock):
            # a finalizer run (by the GC) while this thread is inside the pool:
            # give the object back once the lock is released
            self._deferred.append(obj)
            return None
        if self._gen != _fork_gen:
            self._forked()
        if self._timed:
            try:
                now = self._now_c()
            except BaseException:  # a clock interrupted: the object is retired
                self._ret_interrupted(obj)
                raise
        bi = ppp_bucket_index()
        bk = ppp_bucket_at(self._bk, bi)
        ppp_bucket_lock(bk)
        p = bk.lent
        if (
            p != NULL
            and bk.parked == NULL
            and (<_Slot>p).obj is obj
            and (<_Slot>p).state == S_USING
            and (<_Slot>p).holder is None  # (else the locked path clears them)
            and (<_Slot>p).stack is None
            and self._returns_idle(<_Slot>p, now)
        ):
            # the object this thread's bucket lent, and the bucket is free: parked
            # there without the pool's lock (the same outcome as the locked path's)
            bk.parked = p
            bk.lent = NULL
            bk.nreturns += 1
            (<_Slot>p).last_ret = now
            (<_Slot>p).state = S_IDLE
            ppp_bucket_unlock(bk)
            if self._deferred:
                self._drain_deferred()
            return None
        ppp_bucket_unlock(bk)
        self._lk()
        found = ppp_table_get(&self._index, <void*>obj)
        if (
            found is NULL
            or not self._unlend(<_Slot>found)
            or (<_Slot>found).state != S_USING
        ):
            self._nbad_returns += 1
            self._unlk()
            self._warn_bad_return(obj)
            return None
        slot = <_Slot>found
        if self._returns_idle(slot, now):
            # parked in this thread's bucket; what it held goes on top of the idle
            # stack (pushed first: a failure to grow the stack changes nothing).
            # The slot is idle before it is parked: from then on another thread of
            # the bucket may take it, without the pool's lock (its holder and leak
            # stack are dropped once the locks are released: no finalizer runs here)
            holder = slot.holder
            stack = slot.stack
            ppp_bucket_lock(bk)
            p = bk.parked
            if p != NULL and ppp_list_push_raw(<PyObject *>self._avail, p) < 0:
                ppp_bucket_unlock(bk)
                self._unlk()
                raise MemoryError("cannot grow the idle stack")
            if p != NULL:
                (<_Slot>p).bucket = -1
            slot.holder = None
            slot.stack = None
            slot.last_ret = now
            slot.state = S_IDLE
            slot.bucket = bi
            bk.parked = <PyObject *>slot
            ppp_bucket_unlock(bk)
            self._c_nreturns += 1
            self._c_nusing -= 1
            self._unlk()
            holder = stack = None
            if self._deferred:
                self._drain_deferred()
            return None
        uses = slot.uses
        self._unlk()
        try:
            if self._retter is not None:
                self._hook("retter", self._retter, obj)
            code = self._lk_ret(slot, uses, self._now_c())
        except BaseException:
            # interrupted before the object was back: its state is unknown (the
            # retter may have run part-way), so it is retired; then re-raised
            self._drop_interrupted(slot, S_USING, uses)
            raise
        self._after_ret(obj, code)

    cdef inline bint _returns_idle(self, _Slot slot, double now) noexcept:
        """Whether returning ``slot`` (in use) just makes it idle: no retter, no
        waiter, not shut down, not worn out, not expired.  In a bucket's critical
        section (the parking return), a waiter queued or a shutdown made before the
        last _quiesce of the bucket is seen: that bucket's lock orders them."""
        return (
            self._retter is None
            and not self._shutdown
            and Py_SIZE(<PyObject *>self._waiters) == 0  # a deque (_new_state)
            and not (self._max_use and slot.uses >= self._max_use)
            and not (self._max_lifetime and now - slot.created >= self._max_lifetime)
        )

    # --------------------------------------------- state changes (lock held)

    cdef int _idle(self, _Slot slot, double now, bint timed_wait, int using,
                   int returned) except -1:
        """``slot`` is free: handed to the oldest waiter when the pool is in hand-off
        mode or that waiter is starving, else on top of the idle stack with a waiter
        woken to compete for it (see the pure twin)."""
        cdef Waiter waiter
        self._c_nreturns += returned
        self._c_nusing -= using
        if Py_SIZE(<PyObject *>self._waiters):
            waiter = <Waiter>self._waiters[0]
            if not timed_wait or self._handoff or self._starving(waiter, now):
                if timed_wait:  # it starves: hand-off mode
                    self._set_handoff(True, now)
                self._waiters.popleft()
                waiter.queued = False
                self._nwoken -= waiter.woken
                slot.state = S_USING
                slot.uses += 1
                self._c_nuses += 1
                self._c_nusing += 1
                slot.last_get = _NOT_PICKED_UP  # see _lk_pickup
                slot.warned = False
                waiter.slot = slot
                if not waiter.woken:
                    waiter.lock.release()
                if timed_wait:
                    self._served(waiter, now)
                self._rewake()  # the waiter may have been the one woken for an idle object
                return 0
            self._nfreed += 1
            slot.state = S_IDLE
            ppp_list_push(<PyObject *>self._avail, slot)
            self._rewake()
        else:
            slot.state = S_IDLE
            ppp_list_push(<PyObject *>self._avail, slot)
        return 0

    cdef inline _Slot _take_idle(self, double last_get):
        """The top idle object, checked out (lock held; ``_avail`` not empty)."""
        cdef _Slot slot = _pop_slot(<PyObject *>self._avail)
        _check_out(slot, last_get)
        self._c_nuses += 1
        self._c_nusing += 1
        return slot

    cdef inline double _barging_time(self, double now) noexcept:
        """The time spent in normal mode up to ``now`` (see the pure twin)."""
        return self._barge_t if self._handoff else now - self._barge_t

    cdef inline void _set_handoff(self, bint on, double now) noexcept:
        """Enter (``on``) or leave hand-off mode at ``now`` (see the pure twin)."""
        if on != self._handoff:
            self._barge_t = now - self._barge_t
            self._nhandoffs += on
            self._handoff = on

    cdef inline bint _starving(self, Waiter waiter, double now):
        return (
            self._barging_time(now) - waiter.barge0 >= self._handoff_after
            or self._nfreed - waiter.passed0 >= C_HANDOFF_PASSES
        )

    cdef int _served(self, Waiter waiter, double now) except -1:
        """``waiter`` was handed what it waited for: record its wait, and enter or
        leave hand-off mode (see the pure twin)."""
        self._record_wait(now - waiter.since, self._nfreed - waiter.passed0)
        self._set_handoff(bool(self._waiters) and self._starving(waiter, now), now)
        return 0

    cdef int _rewake(self) except -1:
        """Wake queued waiters, oldest first, until every idle object has one woken
        to compete for it (or every waiter is woken)."""
        cdef Waiter waiter
        cdef Py_ssize_t n = len(self._waiters)
        while self._nwoken < n and self._nwoken < len(self._avail):
            for waiter in self._waiters:
                if not waiter.woken:
                    waiter.woken = True
                    self._nwoken += 1
                    waiter.lock.release()
                    break
        return 0

    cdef int _record_wait(self, double wait, Py_ssize_t passed) except -1:
        cdef list samples = self._wait_samples
        if len(samples) >= C_WAIT_SAMPLES:
            del samples[: C_WAIT_SAMPLES // 2]
        samples.append(wait)
        if wait > self._wait_max:
            self._wait_max = wait
        if passed > self._max_passed:
            self._max_passed = passed
        return 0

    cdef int _unregister(self, _Slot slot) except -1:
        cdef Py_ssize_t i = slot.pos
        if i >= len(self._reg) or self._reg[i] is not slot:
            i = self._reg_find(slot.seq)
        del self._slots[PyLong_FromVoidPtr(<void*>slot.obj)]
        ppp_table_del(&self._index, <void*>slot.obj)
        self._reg[i] = slot.seq
        self._reg_dead += 1
        if self._reg_dead > C_REG_SLACK and self._reg_dead > len(self._slots):
            self._compact_reg()
        return 0

    # ``_reg`` keeps every object the pool has registered in registration order, so
    # that ``stats()`` can copy it a chunk per lock hold with a cursor: a slot, or for
    # a forgotten one its ``seq`` (an int), until ``_compact_reg`` drops those.

    cdef Py_ssize_t _reg_find(self, Py_ssize_t seq) except -1:
        """Index of the first entry of ``_reg`` whose seq is at least ``seq``."""
        cdef list reg = self._reg
        cdef Py_ssize_t lo = 0, hi = len(reg), mid
        while lo < hi:
            mid = (lo + hi) // 2
            if _seq_of(reg[mid]) < seq:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef int _compact_reg(self) except -1:
        """Drop the forgotten entries of ``_reg`` (when they outnumber the live ones,
        so its cost is amortised over the forgets); the order stays."""
        cdef list reg = []
        cdef object entry
        for entry in self._reg:
            if isinstance(entry, _Slot):
                (<_Slot>entry).pos = len(reg)
                reg.append(entry)
        self._reg = reg
        self._reg_dead = 0
        return 0

    cdef int _forget(self, _Slot slot, double now, bint timed_wait) except -1:
        """Drop an object that is not on the idle stack (its slot is freed); its
        closer runs later, outside the lock (``_closing``)."""
        self._unregister(slot)
        if slot.state == S_USING:
            self._c_nusing -= 1
        slot.state = S_GONE
        self._ndestroys += 1
        self._closing.append(slot.obj)
        self._free_capacity(now, timed_wait)
        return 0

    cdef inline bint _has_room(self):
        return not self._max_size or len(self._slots) + self._npending < self._max_size

    cdef int _free_capacity(self, double now, bint timed_wait) except -1:
        """A slot is free: the oldest waiter may create an object in it."""
        cdef Waiter waiter
        if self._waiters and self._has_room():
            waiter = <Waiter>self._waiters.popleft()
            waiter.queued = False
            self._nwoken -= waiter.woken
            waiter.create = self._ncreating
            self._ncreating += 1
            self._npending += 1
            if not waiter.woken:
                waiter.lock.release()
            if timed_wait:
                self._served(waiter, now)
            self._rewake()  # the waiter may have been the one woken for an idle object
        return 0

    cdef inline bint _live(self, _Slot slot, int state, Py_ssize_t uses):
        return (
            slot.state == state
            and slot.uses == uses
            and ppp_table_get(&self._index, <void*>slot.obj) is <PyObject*>slot
        )

    # ------------------------------------------------------------ return

    def _lk_ret(self, _Slot slot, Py_ssize_t uses, double now):
        """Second half of ``ret``: back to the oldest waiter or the idle stack (GOT),
        retired (GONE), or gone meanwhile (SHUT: a bad return)."""
        self._lkq()
        try:
            if not self._live(slot, S_USING, uses):
                self._nbad_returns += 1
                return C_SHUT
            if self._max_use and uses >= self._max_use:
                self._nwornout += 1
            elif self._max_lifetime and now - slot.created >= self._max_lifetime:
                self._nexpired += 1
            elif not self._shutdown:
                if self._timed:
                    slot.last_ret = now
                slot.holder = None
                slot.stack = None
                self._idle(slot, now, True, 1, 1)
                return C_GOT
            self._c_nreturns += 1
            self._forget(slot, now, True)
            return C_GONE
        finally:
            self._unlk()

    # ------------------------------------------------------------ slow get

    def _lk_take(self, Waiter ticket, bint nowait, double now):
        """The slow ``get``: GOT, CREATE, SHUT, FULL or QUEUED (see the pure twin)."""
        self._lkq()
        try:
            if self._shutdown:
                return C_SHUT
            if self._avail:
                ticket.slot = self._take_idle(now if self._timed else 0.0)
                return C_GOT
            if not self._waiters and self._has_room():
                ticket.create = self._ncreating
                self._ncreating += 1
                self._npending += 1
                return C_CREATE
            if nowait:
                self._ntimeouts += 1
                return C_FULL
            if not self._waiters:  # the queue drained: back to normal mode
                self._set_handoff(False, now)
            ticket.since = now
            ticket.passed0 = self._nfreed
            ticket.barge0 = self._barging_time(now)
            ticket.queued = True
            self._waiters.append(ticket)
            self._nwaits += 1
            if len(self._waiters) > self._max_waiting:
                self._max_waiting = len(self._waiters)
            # a return racing with this queueing, in a bucket already quiesced,
            # may have parked an object: take it back now that the waiter is
            # visible (it is woken for it; the pure twin never races here)
            self._quiesce()
            return C_QUEUED
        finally:
            self._unlk()

    def _lk_retry(self, Waiter ticket, double now):
        """A waiter woken to compete for an idle object is back: GOT (it took one),
        QUEUED (waits again in its place), or GOT, CREATE, SHUT when granted or
        failed meanwhile (see the pure twin)."""
        self._lkq()
        try:
            if not ticket.queued:
                if ticket.error:
                    return C_SHUT
                return C_GOT if ticket.slot is not None else C_CREATE
            self._nwoken -= ticket.woken
            ticket.woken = False  # its lock is held again
            if self._avail:
                ticket.slot = self._take_idle(now if self._timed else 0.0)
                ticket.queued = False
                self._waiters.remove(ticket)
                self._served(ticket, now)
                return C_GOT
            if not self._handoff and self._starving(ticket, now):
                self._set_handoff(True, now)
            return C_QUEUED
        finally:
            self._unlk()

    def _lk_alive(self, _Slot slot, Py_ssize_t uses):
        """Whether ``slot`` is still in use at ``uses`` (not killed meanwhile)."""
        cdef bint alive
        self._lkq()
        alive = self._live(slot, S_USING, uses)
        self._unlk()
        return alive

    def _lk_pickup(self, _Slot slot, double now):
        """A woken waiter has its object: its time in use starts now."""
        self._lkq()
        if slot.state == S_USING and slot.last_get == _NOT_PICKED_UP:
            slot.last_get = now
        self._unlk()

    def _lk_timeout(self, Waiter ticket):
        """A wait timed out: unqueue the ticket and count it, unless it was granted
        meanwhile (then True: use the grant)."""
        self._lkq()
        try:
            if not ticket.queued:
                return True
            self._waiters.remove(ticket)
            ticket.queued = False
            self._nwoken -= ticket.woken
            ticket.woken = False
            self._ntimeouts += 1
            self._rewake()  # it may have been the one woken for an idle object
            return False
        finally:
            self._unlk()

    def _lk_cancel(self, Waiter ticket, double now):
        """Give back whatever the ticket holds that its caller never got (see the pure
        twin)."""
        cdef _Slot slot
        cdef object obj
        self._lkq()
        try:
            if ticket.queued:
                self._waiters.remove(ticket)
                ticket.queued = False
                self._nwoken -= ticket.woken
                ticket.woken = False
                self._rewake()  # it may have been the one woken for an idle object
                return None
            if ticket.slot is not None:
                slot = <_Slot>ticket.slot
                ticket.slot = None
                if slot.state == S_USING and ppp_table_get(
                    &self._index, <void*>slot.obj
                ) is <PyObject*>slot:
                    if self._shutdown:
                        self._forget(slot, now, True)
                    else:
                        self._idle(slot, now, True, 1, 0)
                return None
            if ticket.create >= 0:
                obj = ticket.obj
                if obj is not None:  # made, never pooled: closed like a forgotten one
                    ticket.obj = None
                    self._closing.append(obj)
                ticket.create = -1
                self._npending -= 1
                self._free_capacity(now, True)
            return None
        finally:
            self._unlk()

    def _lk_unget(self, _Slot slot, Py_ssize_t uses, double now):
        """The hot path was interrupted after taking ``slot``: give it back unused."""
        self._lkq()
        try:
            if self._live(slot, S_USING, uses):
                self._idle(slot, now, True, 1, 0)
        finally:
            self._unlk()

    def _lk_add(self, Waiter ticket, bint checkout, double now):
        """Register ``ticket.obj`` in the slot the ticket reserved: GOT (checked out to
        the ticket), QUEUED (made idle), GONE (shut down meanwhile) or FULL (``fun``
        returned an object the pool already holds)."""
        cdef object obj = ticket.obj
        cdef _Slot slot = _Slot(obj, ticket.create, now if self._timed else 0.0)
        self._lkq()
        try:
            if ppp_table_get(&self._index, <void*>obj) is not NULL:
                ticket.create = -1
                self._npending -= 1
                self._free_capacity(now, True)
                return C_FULL
            self._ncreated += 1
            if self._shutdown:
                ticket.create = -1
                ticket.obj = None
                self._npending -= 1
                self._ndestroys += 1
                self._closing.append(obj)
                self._free_capacity(now, True)
                return C_GONE
            ppp_table_set(&self._index, <void*>obj, <PyObject*>slot)
            self._slots[PyLong_FromVoidPtr(<void*>obj)] = slot
            slot.seq = self._ncreated
            slot.pos = len(self._reg)
            self._reg.append(slot)
            self._npending -= 1
            ticket.create = -1
            ticket.obj = None
            if checkout:
                slot.state = S_USING
                slot.uses = 1
                self._c_nuses += 1
                self._c_nusing += 1
                ticket.slot = slot
                return C_GOT
            self._idle(slot, now, True, 0, 0)
            return C_QUEUED
        finally:
            self._unlk()

    def _lk_reserve_fill(self, Waiter ticket):
        """Reserve a creation to fill ``min_size`` (False when none is needed)."""
        self._lkq()
        try:
            if (
                self._shutdown
                or self._waiters
                or len(self._slots) + self._npending >= self._min_size
                or not self._has_room()
            ):
                return False
            ticket.create = self._ncreating
            self._ncreating += 1
            self._npending += 1
            return True
        finally:
            self._unlk()

    # ------------------------------------------------------------ retirements

    def _lk_forget_if(self, _Slot slot, int state, Py_ssize_t uses, double now):
        """Forget ``slot`` if it is still in ``state`` at use ``uses``."""
        self._lkq()
        try:
            if not self._live(slot, state, uses):
                return False
            self._forget(slot, now, True)
            return True
        finally:
            self._unlk()

    def _lk_hung(self, _Slot slot, Py_ssize_t uses, double now):
        """A health check did not answer in time: retire its object (True)."""
        self._lkq()
        try:
            if not self._live(slot, S_BORROWED, uses):
                return False
            self._nhealth_timeouts += 1
            self._bad_health += 1
            self._forget(slot, now, True)
            return True
        finally:
            self._unlk()

    def _lk_discard(self, obj, double now):
        cdef PyObject *found
        cdef _Slot slot
        self._lkq()
        try:
            found = ppp_table_get(&self._index, <void*>obj)
            if found is NULL or (<_Slot>found).state != S_USING:
                self._nbad_returns += 1
                return False
            slot = <_Slot>found  # a reference of our own: _forget drops the pool's
            self._ndiscarded += 1
            self._forget(slot, now, True)
            return True
        finally:
            self._unlk()

    def _lk_put_closing(self, obj):
        """Queue ``obj`` for its closer again (its closer never started), last."""
        self._lkq()
        try:
            self._closing.append(obj)
        finally:
            self._unlk()

    def _lk_bad_return(self):
        self._lkq()
        self._nbad_returns += 1
        self._unlk()

    def _lk_take_closing(self, list box):
        """Move the oldest object queued for its closer into ``box``."""
        self._lkq()
        try:
            if self._closing:
                box.append(self._closing.popleft())
        finally:
            self._unlk()

    def _lk_take_deferred(self):
        """Empty ``_deferred`` (returns asked for by finalizers) and return what it held."""
        cdef list items = self._deferred
        cdef list taken
        self._lkq()
        try:
            taken = items[:]
            del items[: len(taken)]
            return taken
        finally:
            self._unlk()

    cdef int _forget_idle(self) except -1:
        """Drop every idle object, oldest first."""
        cdef list idle = self._avail[:]
        cdef _Slot slot
        del self._avail[:]
        for slot in idle:
            self._forget(slot, 0.0, False)
        return 0

    def _lk_shutdown(self):
        """Shut down: fail every waiter (PoolException), forget every idle object."""
        cdef Waiter waiter
        self._lkq()
        try:
            self._shutdown = True
            while self._waiters:
                waiter = <Waiter>self._waiters.popleft()
                waiter.queued = False
                self._nwoken -= waiter.woken
                waiter.error = True
                if not waiter.woken:
                    waiter.lock.release()
            self._forget_idle()
        finally:
            self._unlk()

    def _lk_drop_idle(self):
        """At exit or collection: forget the idle objects, never one in use."""
        self._lkq()
        try:
            self._forget_idle()
        finally:
            self._unlk()

    # ------------------------------------------------------------ housekeeping

    def _lk_scan(self, double now):
        """One scan, in C over typed fields: kill over-held objects, note long-held
        ones, expire idle ones.  Returns (round number, long-held, killed)."""
        cdef double warn_delay = self._max_using_delay_warn
        cdef double kill_delay = self._max_using_delay_kill
        cdef double held
        cdef list long_held = [], killed = [], keep, gone
        cdef _Slot slot
        cdef Py_ssize_t total, i, n
        cdef list avail
        self._lkq()
        try:
            self._hk_rounds += 1
            self._hk_last = now
            if warn_delay and not self._shutdown and self._c_nusing:
                for slot in list(self._slots.values()):
                    if slot.state != S_USING:
                        continue
                    held = now - slot.last_get
                    if kill_delay and held >= kill_delay:
                        killed.append((slot.obj, held, slot.holder, slot.stack, slot.uses))
                        self._nkilled += 1
                        self._forget(slot, now, True)
                    elif held >= warn_delay and not slot.warned:
                        slot.warned = True
                        long_held.append((slot.obj, held, slot.holder, slot.stack, slot.uses))
            avail = self._avail
            n = len(avail)
            if (self._max_lifetime or self._max_avail_delay) and n:
                total = len(self._slots) + self._npending
                gone = None
                keep = None
                for i in range(n):  # oldest idle first
                    slot = <_Slot>avail[i]
                    if self._max_lifetime and now - slot.created >= self._max_lifetime:
                        self._nexpired += 1
                    elif (
                        self._max_avail_delay
                        and total > self._min_size
                        and now - slot.last_ret >= self._max_avail_delay
                    ):
                        self._nrecycled += 1
                    else:
                        if keep is not None:
                            keep.append(slot)
                        continue
                    if keep is None:
                        keep = avail[:i]
                        gone = []
                    total -= 1
                    gone.append(slot)
                if gone is not None:
                    avail[:] = keep
                    for slot in gone:
                        self._forget(slot, now, True)
            return self._hk_rounds, long_held, killed
        finally:
            self._unlk()

    def _lk_hk_done(self, bint failed, double elapsed):
        self._lkq()
        self._hk_errors += failed
        self._hk_time += elapsed
        self._unlk()

    def _lk_health_candidates(self):
        self._lkq()
        try:
            self._hc_rounds += 1
            return self._avail[:]
        finally:
            self._unlk()

    def _lk_borrow(self, _Slot slot):
        """Take an idle object out of service for its health check; returns its use
        count, or -1 when it is no longer idle."""
        self._lkq()
        try:
            if slot.state != S_IDLE or self._shutdown:
                return -1
            self._avail.remove(slot)
            slot.state = S_BORROWED
            self._nborrows += 1
            self._nhealth += 1
            return slot.uses
        finally:
            self._unlk()

    def _lk_health_done(self, _Slot slot, Py_ssize_t uses, bint healthy, bint error,
                        double now):
        """Back to service after its health check, or retired (True: log it)."""
        self._lkq()
        try:
            self._hc_errors += error
            if not self._live(slot, S_BORROWED, uses):
                return False
            if healthy and not self._shutdown:
                self._idle(slot, now, True, 0, 0)
                return False
            self._bad_health += not healthy
            self._forget(slot, now, True)
            return not healthy
        finally:
            self._unlk()

    # ------------------------------------------------------------ statistics

    def _lk_stats(self, Py_ssize_t limit):
        """What ``stats()`` formats: the counts as they are now, and the rows of the
        first objects, with the cursor and the horizon for ``_lk_stats_more`` (see
        the pure twin)."""
        cdef Py_ssize_t horizon
        cdef list rows
        cdef Py_ssize_t cursor = 0
        self._lkq()
        try:
            horizon = self._ncreated  # objects registered from now on are not listed
            rows = self._stats_rows(&cursor, horizon, limit)
            return (
                rows,
                cursor,
                horizon,
                self._wait_samples[:],
                [
                    self._c_nusing, self._npending, self._ncreating, self._ncreated, self._c_nuses,
                    self._c_nreturns, self._nbad_returns, self._nborrows, self._nkilled,
                    self._nrecycled, self._nwornout, self._nexpired, self._ndiscarded,
                    self._ndestroys, self._nhealth, self._bad_health, self._hk_rounds,
                    self._hk_errors, self._hc_rounds, self._hc_errors, self._ntimeouts,
                    self._nwaits, self._max_waiting, self._nhealth_timeouts, self._nhandoffs,
                    self._max_passed,
                ],
                len(self._slots),
                len(self._avail),
                len(self._waiters),
                self._wait_max,
                self._shutdown,
                self._hk_time,
                self._hk_last,
            )
        finally:
            self._unlk()

    def _lk_stats_more(self, Py_ssize_t cursor, Py_ssize_t horizon, Py_ssize_t limit):
        """The next chunk of ``stats()``'s rows, from where ``cursor`` stopped."""
        cdef list rows
        self._lkq()
        try:
            rows = self._stats_rows(&cursor, horizon, limit)
            return rows, cursor
        finally:
            self._unlk()

    cdef list _stats_rows(self, Py_ssize_t *cursor, Py_ssize_t horizon, Py_ssize_t limit):
        """The rows of the objects registered after ``cursor[0]`` and up to ``horizon``
        (``seq`` numbers), reading at most ``limit`` entries of ``_reg``; ``cursor[0]``
        becomes where to go on from, -1 when there is nothing more."""
        cdef list reg = self._reg
        cdef list rows = []
        cdef Py_ssize_t i = self._reg_find(cursor[0] + 1)
        cdef Py_ssize_t n = len(reg)
        cdef Py_ssize_t end = min(n, i + max(limit, 1))
        cdef Py_ssize_t k
        cdef object entry
        cdef _Slot s
        for k in range(i, end):
            entry = reg[k]
            if _seq_of(entry) > horizon:
                cursor[0] = -1
                return rows
            if isinstance(entry, _Slot):
                s = <_Slot>entry
                rows.append(
                    (s.obj, s.state, s.n, s.uses, s.created, s.last_get, s.last_ret, s.holder)
                )
        cursor[0] = _seq_of(reg[end - 1]) if end < n else -1
        return rows

    # ------------------------------------------------------------ fork

    def _lk_reset(self):
        """In a forked child, on first use: start again as a new pool with the same
        parameters.  Returns the inherited objects (forgotten, never closed), or None
        when another thread did it already."""
        cdef list inherited
        cdef bint shutdown
        with _reset_lock:
            if self._gen == _fork_gen:
                return None
            _unstick_after_fork(
                self, getattr(self, "__dict__", None), self._slots, self._avail,
                self._deferred, self._closing, self._reg, self._waiters,
            )
            inherited = [(<_Slot>s).obj for s in self._slots.values()]
            inherited.extend(self._deferred)
            inherited.extend(self._closing)
            shutdown = self._shutdown
            # the fork may have caught the lock held by a thread that does not exist
            # here: a new one (the old one's memory, if any, is left alone)
            ppp_lock_init(&self._lock)
            ppp_table_free(&self._index)
            if ppp_table_init(&self._index) < 0:
                raise MemoryError("cannot allocate the pool index")
            self._new_state()
            self._shutdown = shutdown
            self._forks += 1
            self._pid = os.getpid()
            self._gen = _fork_gen
            return inherited


@cython.final
@cython.freelist(8)
@cython.auto_pickle(False)
cdef class _Lease:
    """``with pool.obj() as o``: ``get`` on entry, ``ret`` on exit, in C.  Made
    by ``Pool.obj`` only (``_pool`` is never None)."""

    cdef _Core _pool
    cdef object _timeout, _obj

    def __enter__(self):
        if self._pool is None:
            raise TypeError("a lease comes from Pool.obj()")
        self._obj = self._pool._get_c(self._timeout)
        return self._obj

    def __exit__(self, exc_type, exc, tb):
        if self._pool is None:
            raise TypeError("a lease comes from Pool.obj()")
        self._pool._ret_c(self._obj)


cdef object _ret_entry(object pool, object obj):
    """``Pool.ret``'s body (the descriptor checked that ``pool`` is a _Core)."""
    return (<_Core>pool)._ret_c(obj)


class Pool(_Core, PoolBase):
    """Thread-safe pool of objects created on demand by ``fun(n)`` (compiled twin).

    ``get(timeout=None)`` hands out an object (idle ones last-in first-out,
    waiters first come first served, with bounded barging) and ``ret(obj)`` gives
    it back.  See the README for every parameter."""

    _Slot = _Slot
    _Waiter = Waiter
    _backend = "cython"
    ret = ppp_ret_descriptor(_Core, _ret_entry)
