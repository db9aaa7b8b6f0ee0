# cython: language_level=3, freethreading_compatible=True
"""The compiled forwarding base of ``Proxy``: attribute access and operators in C.

``ppp/_proxy_py.py`` is its pure-Python twin (with the reference docstrings);
both must behave identically.  The cold parts (setting, scopes, pooling) live
in ``ppp.proxy`` and are shared.

``tp_getattro`` asks one question -- is the name one of the proxy's own few
names? (on GIL builds a table of eight names last found not own, compared by
identity, answers first; then a bitmap of the own names' first characters
answers most names; a frozenset the rest) -- and otherwise reads the wrapped
object straight from a C field (shared object) or from the scope's local
(attribute ``o``), never trying the proxy's own attributes first.  The
binding (mode and target) is read and written in a critical section: a
per-object lock on free-threaded Python, nothing on GIL builds.

Per-thread reads skip ``threading.local``'s attribute lookup: the proxy keeps
the last reader's thread dict and the local's dict for that thread, checked on
every read by the thread-state dict's identity and a weak reference to a
marker stored in the local's dict (it dies with that dict: when the thread
ends or the local is dropped).  GIL builds only: on a free-threaded build one
cache written by every thread would be a point of contention.  A ``VERSATILE``
local is read the same way when the caller is a plain thread: no running
asyncio loop, and not inside a greenlet other than the thread's main one.  That
check calls the functions the slow path uses (``_proxy_py.scope_hooks``) from C:
asyncio's ``_get_running_loop`` directly, greenlet's ``getcurrent`` and the
greenlet's parent through greenlet's C API capsule.
"""

cimport cython
from cpython.object cimport PyObject_GenericGetAttr
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from cpython.unicode cimport PyUnicode_GET_LENGTH, PyUnicode_READ_CHAR
from cpython.weakref cimport PyWeakref_NewRef

cdef extern from "Python.h":
    int PyObject_GenericSetAttr(object o, object name, PyObject *value) except -1
    PyObject *PyThreadState_GetDict()
    bint PyCapsule_IsValid(object capsule, const char *name)
    void *PyCapsule_GetPointer(object capsule, const char *name) except? NULL

cdef extern from *:
    """
    #ifdef Py_GIL_DISABLED
    #define PPP_GIL 0
    #else
    #define PPP_GIL 1
    #endif
    /* Whether weak reference ``wr`` still has its referent (GIL builds only). */
    static CYTHON_INLINE int ppp_wr_alive(PyObject *wr) {
    #if PY_VERSION_HEX >= 0x030D0000
        PyObject *ref = NULL;
        int alive = PyWeakref_GetRef(wr, &ref) > 0;
        Py_XDECREF(ref);
        return alive;
    #else
        return PyWeakref_GET_OBJECT(wr) != Py_None;
    #endif
    }
    /* PyDict_GetItem without its saving and restoring of the error indicator
       (about 4 ns of a per-thread read on 3.11), for callers with no error set:
       a borrowed reference, or NULL when missing; an error raised by the lookup
       is dropped, as PyDict_GetItem does. */
    static CYTHON_INLINE PyObject *ppp_dict_get(PyObject *d, PyObject *key) {
        PyObject *value = PyDict_GetItemWithError(d, key);
        if (value == NULL && PyErr_Occurred()) PyErr_Clear();
        return value;
    }
    /* The scope check of a VERSATILE read (GIL builds): 1 or 0, or -1 with the
       error of the call set (the slow path would raise it too).  ppp_noargs_of:
       the C function of a builtin taking no argument (``_get_running_loop``),
       for a direct call, else NULL. */
    typedef PyObject *(*ppp_noargs_t)(PyObject *, PyObject *);
    static ppp_noargs_t ppp_noargs_of(PyObject *f, PyObject **self) {
        if (!PyCFunction_CheckExact(f)) return NULL;
        int call = PyCFunction_GET_FLAGS(f) & (METH_VARARGS | METH_KEYWORDS | METH_NOARGS
                                               | METH_O | METH_FASTCALL | METH_METHOD);
        if (call != METH_NOARGS) return NULL;
        *self = PyCFunction_GET_SELF(f);
        return (ppp_noargs_t)PyCFunction_GET_FUNCTION(f);
    }
    /* Whether f() (called as fn(self, NULL) when fn is set) returns None. */
    static CYTHON_INLINE int ppp_returns_none(PyObject *f, ppp_noargs_t fn, PyObject *self) {
        PyObject *result = fn != NULL ? fn(self, NULL) : PyObject_Vectorcall(f, NULL, 0, NULL);
        if (result == NULL) return -1;
        int none = result == Py_None;
        Py_DECREF(result);
        return none;
    }
    /* Whether getcurrent().parent is None: through greenlet's C API (``api``,
       whose PyGreenlet_GetCurrent is ``getcurrent``) for a plain greenlet, 0
       for a subclass's (gevent's Greenlet: never a thread's main greenlet);
       without ``api``, through Python. */
    typedef PyObject *(*ppp_green_current_t)(void);
    typedef PyObject *(*ppp_green_parent_t)(PyObject *);
    static CYTHON_INLINE int ppp_green_main(void **api, PyObject *getcurrent,
                                            PyObject *parent_name) {
        PyObject *current = api != NULL ? ((ppp_green_current_t)api[4])()
                                        : PyObject_Vectorcall(getcurrent, NULL, 0, NULL);
        if (current == NULL) return -1;
        PyObject *parent;
        if (api == NULL) {
            parent = PyObject_GetAttr(current, parent_name);
        } else if (Py_TYPE(current) == (PyTypeObject *)api[0]) {
            parent = ((ppp_green_parent_t)api[11])(current);  /* NULL: none, or an error */
            if (parent == NULL && !PyErr_Occurred()) parent = Py_NewRef(Py_None);
        } else {
            parent = Py_NewRef(current);  /* any non-None */
        }
        Py_DECREF(current);
        if (parent == NULL) return -1;
        int main = parent == Py_None;
        Py_DECREF(parent);
        return main;
    }
    """
    const bint PPP_GIL
    bint ppp_wr_alive(PyObject *wr)
    PyObject *ppp_dict_get(PyObject *d, PyObject *key)  # borrowed, never raises
    ctypedef PyObject *(*ppp_noargs_t)(PyObject *, PyObject *) noexcept
    ppp_noargs_t ppp_noargs_of(PyObject *f, PyObject **self) noexcept
    int ppp_returns_none(PyObject *f, ppp_noargs_t fn, PyObject *self) except -1
    int ppp_green_main(void **api, PyObject *getcurrent, PyObject *parent_name) except -1

import math
import operator
import sys
import threading

from ._errors import ProxyException
from ._proxy_py import _NOT_ASYNC_CM, _NOT_AWAITABLE, NOT_INITIALISED, _special, scope_hooks

__all__ = ["LOCAL", "SHARED", "UNSET", "ProxyBase"]

UNSET, SHARED, LOCAL = 0, 1, 2

cdef enum:
    M_UNSET = 0
    M_SHARED = 1
    M_LOCAL = 2

cdef enum:
    N_SEEN = 8  # entries of the table of names found not own (a power of two)

cdef enum:
    K_OTHER = 0  # any local: ``getattr(local, "o")``
    K_THREAD = 1  # a plain ``threading.local``
    K_VERSATILE = 2  # a VERSATILE local over a ``threading.local`` (``_ppp_thread``)

_BASE_OWN = frozenset({"__class__", "__reduce__", "__reduce_ex__", "_ppp_bind", "_ppp_mode"})

_PICKLE = "a Proxy cannot be pickled or copied; pickle or copy proxy._get_obj() instead"

cdef object _THREAD_LOCAL = threading.local
cdef dict _MODULES = sys.modules
cdef str _O = "o"
cdef str _MARK = "_ppp_mark"
cdef object _MISSING = object()
cdef str _ASYNCIO = "asyncio"
cdef str _GREENLET = "greenlet"
cdef str _PARENT = "parent"


@cython.final
cdef class _Mark:
    """Lives in one thread's dict of a local: a weak reference to it says the dict
    is still alive."""

    cdef object __weakref__


# The scope hooks (``scope_hooks()``: asyncio's ``_get_running_loop``, greenlet's
# ``getcurrent``) as C sees them, GIL builds: taken once each hook is known, and
# written with no Python code run in between, so under the GIL a reader sees
# them all or none.  The hooks list keeps the functions alive.
cdef PyObject *_h_loop = NULL  # _get_running_loop
cdef ppp_noargs_t _h_loop_fn = NULL  # its C function, called directly
cdef PyObject *_h_loop_self = NULL
cdef PyObject *_h_current = NULL  # getcurrent
cdef void **_h_green = NULL  # greenlet's C API, when it is usable (see _green_api)
cdef object _h_capsule = None  # the capsule holding it


cdef object _green_api(object getcurrent):
    """greenlet's C API capsule when ``getcurrent`` is greenlet's own and the API
    has PyGreenlet_GetParent (greenlet >= 2), else None."""
    try:
        greenlet = _MODULES.get("greenlet")
        module = _MODULES.get("greenlet._greenlet")
        if module is None or getattr(module, "getcurrent", None) is not getcurrent:
            return None
        version = getattr(greenlet, "__version__", "")
        major = version.partition(".")[0] if isinstance(version, str) else ""
        if not (major.isdigit() and int(major) >= 2):
            return None
        capsule = getattr(greenlet, "_C_API", None)
        if capsule is None or not PyCapsule_IsValid(capsule, b"greenlet._C_API"):
            return None
        return capsule
    except Exception:  # an odd greenlet: getcurrent is called through Python
        return None


cdef int _take_hooks() except -1:
    """Take the C views of the hooks known so far (cold: only while asyncio or
    greenlet is imported and its hook not yet taken)."""
    global _h_loop, _h_loop_fn, _h_loop_self, _h_current, _h_green, _h_capsule
    cdef PyObject *loop_self = NULL
    cdef ppp_noargs_t loop_fn = NULL
    cdef void **api = NULL
    get_loop, _, getcurrent = scope_hooks()
    capsule = None
    if getcurrent is not None:
        capsule = _green_api(getcurrent)
        if capsule is not None:
            api = <void **>PyCapsule_GetPointer(capsule, b"greenlet._C_API")
    if get_loop is not None:
        loop_fn = ppp_noargs_of(<PyObject *>get_loop, &loop_self)
    # no Python code from here on
    if get_loop is not None and _h_loop == NULL:
        _h_loop_fn = loop_fn
        _h_loop_self = loop_self
        _h_loop = <PyObject *>get_loop
    if getcurrent is not None and _h_current == NULL:
        _h_capsule = capsule  # releases None: runs no Python code
        _h_green = api
        _h_current = <PyObject *>getcurrent
    return 0


cdef inline bint _imported(str name) noexcept:
    """Whether module ``name`` is in sys.modules (None there blocks its import)."""
    cdef PyObject *module = ppp_dict_get(<PyObject *>_MODULES, <PyObject *>name)
    return module != NULL and module != <PyObject *>None


cdef int _plain_thread() except -1:
    """Whether the caller is plain thread code for a VERSATILE local: no running
    asyncio loop, not in a greenlet other than its thread's main one.  Asks
    asyncio and greenlet through the hooks the slow path uses (``_sub_scope``),
    from C; 0 when unsure (the slow path then decides)."""
    if not PPP_GIL:
        return _plain_thread_any()
    if _h_loop == NULL and _imported(_ASYNCIO):
        _take_hooks()
    if _h_loop != NULL and not ppp_returns_none(_h_loop, _h_loop_fn, _h_loop_self):
        return False
    if _h_current == NULL and _imported(_GREENLET):
        _take_hooks()
    if _h_current != NULL:
        return ppp_green_main(_h_green, _h_current, <PyObject *>_PARENT)
    return True


cdef int _plain_thread_any() except -1:
    """``_plain_thread`` in Python, for free-threaded builds (no shared C state)."""
    get_loop, _, getcurrent = scope_hooks()
    if get_loop is not None and get_loop() is not None:
        return False
    if getcurrent is not None and getcurrent().parent is not None:
        return False
    return True


@cython.auto_pickle(False)
cdef class ProxyBase:
    """Forwards attribute access and operators to the object of the current scope."""

    _ppp_own = _BASE_OWN

    cdef frozenset _own
    cdef unsigned long long _first[2]  # bit c: an own name starts with ASCII char c
    cdef int _mode
    cdef int _kind
    cdef object _target
    cdef object _tl  # the threading.local of a K_THREAD or K_VERSATILE binding
    # per-thread read cache (GIL builds): valid while _c_wr's marker lives
    cdef PyObject *_c_tdict  # the thread-state dict of the cached thread (identity only)
    cdef PyObject *_c_ldict  # that thread's dict of _tl (alive while the marker is)
    cdef object _c_wr
    # GIL builds: names found not own, by address (strong references: an
    # address is not reused while its entry holds it); only exact str, whose
    # verdict cannot change as _own is fixed
    cdef PyObject *_seen[N_SEEN]

    def __cinit__(self, *args, **kwargs):
        cdef unsigned int c
        cdef int i
        for i in range(N_SEEN):
            self._seen[i] = NULL
        self._own = frozenset(getattr(type(self), "_ppp_own", _BASE_OWN))
        self._first[0] = self._first[1] = 0
        for name in self._own:
            if isinstance(name, str) and PyUnicode_GET_LENGTH(name):
                c = PyUnicode_READ_CHAR(name, 0)
                if c < 128:
                    self._first[c >> 6] |= 1ULL << (c & 63)
        self._mode = M_UNSET
        self._kind = K_OTHER
        self._target = None
        self._tl = None
        self._c_tdict = NULL
        self._c_ldict = NULL
        self._c_wr = None

    def __dealloc__(self):
        cdef int i
        for i in range(N_SEEN):
            Py_XDECREF(self._seen[i])
            self._seen[i] = NULL

    def _ppp_bind(self, int mode, value):
        """Point the proxy at nothing, one shared object, or a scope local."""
        cdef int kind = K_OTHER
        tl = None
        if mode != M_UNSET and mode != M_SHARED and mode != M_LOCAL:
            raise ValueError(f"unknown binding mode {mode!r}")
        if mode == M_LOCAL:
            if type(value) is _THREAD_LOCAL:
                kind, tl = K_THREAD, value
            elif getattr(type(value), "_ppp_versatile", False):
                tl = PyObject_GenericGetAttr(value, "_ppp_thread")
                if type(tl) is _THREAD_LOCAL:
                    kind = K_VERSATILE
                else:
                    tl = None
        with cython.critical_section(self):
            # the old target, local and marker are released after the swap, so
            # what their release runs (a holder giving back) sees the new binding
            old = (self._target, self._tl, self._c_wr)
            self._c_tdict = NULL
            self._c_ldict = NULL
            self._c_wr = None
            self._mode = mode
            self._kind = kind
            self._target = None if mode == M_UNSET else value
            self._tl = tl
        del old

    def _ppp_mode(self):
        """The binding mode, for the cold code and tests."""
        with cython.critical_section(self):
            return self._mode

    cdef object _thread_o(self, object tl):
        """Attribute ``o`` of threading.local ``tl`` in this thread, or _MISSING."""
        cdef PyObject *tdict
        cdef PyObject *found
        if PPP_GIL:
            tdict = PyThreadState_GetDict()
            if (
                tdict != NULL
                and tdict == self._c_tdict
                and self._tl is tl
                and ppp_wr_alive(<PyObject *>self._c_wr)
            ):
                found = ppp_dict_get(self._c_ldict, <PyObject *>_O)
                return _MISSING if found == NULL else <object>found
        ldict = getattr(tl, "__dict__")  # this thread's dict (created if new)
        found = ppp_dict_get(<PyObject *>ldict, <PyObject *>_O)
        value = _MISSING if found == NULL else <object>found
        if PPP_GIL:
            mark = ldict.get(_MARK)
            if type(mark) is not _Mark:
                mark = _Mark()
                ldict[_MARK] = mark
            wr = PyWeakref_NewRef(mark, None)
            tdict = PyThreadState_GetDict()
            # no allocation from here on: nothing can rebind the proxy in between
            if tdict != NULL and self._tl is tl:
                old_wr = self._c_wr
                self._c_wr = wr
                self._c_tdict = tdict
                self._c_ldict = <PyObject *>ldict
                del old_wr
        return value

    cdef object _obj(self):
        cdef int mode, kind
        cdef object target, tl
        with cython.critical_section(self):
            mode = self._mode
            kind = self._kind
            target = self._target
            tl = self._tl
        if mode == M_SHARED:
            return target
        if mode == M_LOCAL:
            if kind == K_THREAD or (kind == K_VERSATILE and _plain_thread()):
                value = self._thread_o(tl)
                if value is not _MISSING:
                    return value
            else:
                try:
                    return getattr(target, "o")
                except AttributeError:  # nothing in this scope's local yet
                    pass
            # outside the handler: the slow path's errors (TimeOut...) get no context
            return PyObject_GenericGetAttr(self, "_get_obj")()
        raise ProxyException(NOT_INITIALISED)

    # ------------------------------------------------------ attributes

    def __getattribute__(self, name):
        # a shared object's read of a name in the table: the shortest path (GIL builds)
        if (
            PPP_GIL
            and self._mode == M_SHARED
            and self._seen[(<size_t><PyObject *>name >> 4) & (N_SEEN - 1)] == <PyObject *>name
        ):
            return getattr(self._target, name)
        if _is_own(self, name):
            return PyObject_GenericGetAttr(self, name)
        if PPP_GIL and self._mode == M_SHARED:  # the GIL makes the critical section moot
            return getattr(self._target, name)
        return getattr(self._obj(), name)

    def __setattr__(self, name, value):
        if _is_own(self, name):
            PyObject_GenericSetAttr(self, name, <PyObject *>value)
        else:
            setattr(self._obj(), name, value)

    def __delattr__(self, name):
        if _is_own(self, name):
            PyObject_GenericSetAttr(self, name, NULL)
        else:
            delattr(self._obj(), name)

    # ------------------------------------------------------ forwarded protocol

    def __repr__(self):
        if self._ppp_mode() == M_UNSET:
            return f"<{type(self).__module__}.{type(self).__qualname__}: not initialised>"
        return repr(self._obj())

    def __str__(self):
        return str(self._obj())

    def __bytes__(self):
        return bytes(self._obj())

    def __format__(self, spec):
        return format(self._obj(), spec)

    def __dir__(self):
        return dir(self._obj())

    def __eq__(self, other):
        return self._obj() == other

    def __ne__(self, other):
        return self._obj() != other

    def __lt__(self, other):
        return self._obj() < other

    def __le__(self, other):
        return self._obj() <= other

    def __gt__(self, other):
        return self._obj() > other

    def __ge__(self, other):
        return self._obj() >= other

    def __hash__(self):
        return hash(self._obj())

    def __bool__(self):
        return bool(self._obj())

    def __len__(self):
        return len(self._obj())

    def __iter__(self):
        return iter(self._obj())

    def __reversed__(self):
        return reversed(self._obj())

    def __contains__(self, item):
        return item in self._obj()

    def __getitem__(self, key):
        return self._obj()[key]

    def __setitem__(self, key, value):
        self._obj()[key] = value

    def __delitem__(self, key):
        del self._obj()[key]

    def __call__(self, *args, **kwargs):
        return self._obj()(*args, **kwargs)

    def __enter__(self):
        return self._obj().__enter__()

    def __exit__(self, *exc_info):
        return self._obj().__exit__(*exc_info)

    # asynchronous protocols: looked up on the object's type, as Python does

    def __await__(self):
        return _special(self._obj(), "__await__", _NOT_AWAITABLE)()

    def __aenter__(self):
        return _special(self._obj(), "__aenter__", _NOT_ASYNC_CM)()

    def __aexit__(self, *exc_info):
        return _special(self._obj(), "__aexit__", _NOT_ASYNC_CM)(*exc_info)

    def __aiter__(self):
        return aiter(self._obj())

    # ``isinstance(x, proxy)`` and ``issubclass(c, proxy)`` for a proxy of a class

    def __instancecheck__(self, instance):
        return isinstance(instance, self._obj())

    def __subclasscheck__(self, subclass):
        return issubclass(subclass, self._obj())

    def __reduce_ex__(self, protocol):
        raise TypeError(_PICKLE)

    def __reduce__(self):
        raise TypeError(_PICKLE)

    # unary and conversions

    def __neg__(self):
        return -self._obj()

    def __pos__(self):
        return +self._obj()

    def __abs__(self):
        return abs(self._obj())

    def __invert__(self):
        return ~self._obj()

    def __int__(self):
        return int(self._obj())

    def __float__(self):
        return float(self._obj())

    def __complex__(self):
        return complex(self._obj())

    def __index__(self):
        return operator.index(self._obj())

    def __round__(self, ndigits=None):
        obj = self._obj()
        return round(obj) if ndigits is None else round(obj, ndigits)

    def __trunc__(self):
        return math.trunc(self._obj())

    def __floor__(self):
        return math.floor(self._obj())

    def __ceil__(self):
        return math.ceil(self._obj())

    # binary, reflected and in-place (in-place keeps the proxy when the object
    # changes in place, else returns the new value)

    def __add__(self, other):
        return self._obj() + other

    def __radd__(self, other):
        return other + self._obj()

    def __iadd__(self, other):
        obj = self._obj()
        result = operator.iadd(obj, other)
        return self if result is obj else result

    def __sub__(self, other):
        return self._obj() - other

    def __rsub__(self, other):
        return other - self._obj()

    def __isub__(self, other):
        obj = self._obj()
        result = operator.isub(obj, other)
        return self if result is obj else result

    def __mul__(self, other):
        return self._obj() * other

    def __rmul__(self, other):
        return other * self._obj()

    def __imul__(self, other):
        obj = self._obj()
        result = operator.imul(obj, other)
        return self if result is obj else result

    def __matmul__(self, other):
        return self._obj() @ other

    def __rmatmul__(self, other):
        return other @ self._obj()

    def __imatmul__(self, other):
        obj = self._obj()
        result = operator.imatmul(obj, other)
        return self if result is obj else result

    def __truediv__(self, other):
        return self._obj() / other

    def __rtruediv__(self, other):
        return other / self._obj()

    def __itruediv__(self, other):
        obj = self._obj()
        result = operator.itruediv(obj, other)
        return self if result is obj else result

    def __floordiv__(self, other):
        return self._obj() // other

    def __rfloordiv__(self, other):
        return other // self._obj()

    def __ifloordiv__(self, other):
        obj = self._obj()
        result = operator.ifloordiv(obj, other)
        return self if result is obj else result

    def __mod__(self, other):
        return self._obj() % other

    def __rmod__(self, other):
        return other % self._obj()

    def __imod__(self, other):
        obj = self._obj()
        result = operator.imod(obj, other)
        return self if result is obj else result

    def __divmod__(self, other):
        return divmod(self._obj(), other)

    def __rdivmod__(self, other):
        return divmod(other, self._obj())

    def __pow__(self, other, mod):
        obj = self._obj()
        return obj ** other if mod is None else pow(obj, other, mod)

    def __rpow__(self, other, mod):
        obj = self._obj()
        return other ** obj if mod is None else pow(other, obj, mod)

    def __ipow__(self, other):
        obj = self._obj()
        result = operator.ipow(obj, other)
        return self if result is obj else result

    def __lshift__(self, other):
        return self._obj() << other

    def __rlshift__(self, other):
        return other << self._obj()

    def __ilshift__(self, other):
        obj = self._obj()
        result = operator.ilshift(obj, other)
        return self if result is obj else result

    def __rshift__(self, other):
        return self._obj() >> other

    def __rrshift__(self, other):
        return other >> self._obj()

    def __irshift__(self, other):
        obj = self._obj()
        result = operator.irshift(obj, other)
        return self if result is obj else result

    def __and__(self, other):
        return self._obj() & other

    def __rand__(self, other):
        return other & self._obj()

    def __iand__(self, other):
        obj = self._obj()
        result = operator.iand(obj, other)
        return self if result is obj else result

    def __xor__(self, other):
        return self._obj() ^ other

    def __rxor__(self, other):
        return other ^ self._obj()

    def __ixor__(self, other):
        obj = self._obj()
        result = operator.ixor(obj, other)
        return self if result is obj else result

    def __or__(self, other):
        return self._obj() | other

    def __ror__(self, other):
        return other | self._obj()

    def __ior__(self, other):
        obj = self._obj()
        result = operator.ior(obj, other)
        return self if result is obj else result


cdef inline bint _is_own(ProxyBase self, object name) except -1:
    """Whether ``name`` is one of the proxy's own names (never forwarded)."""
    cdef unsigned int c
    cdef PyObject **seen = NULL
    if PPP_GIL:  # one table written by every thread would be contended without the GIL
        seen = &self._seen[(<size_t><PyObject *>name >> 4) & (N_SEEN - 1)]
        if seen[0] == <PyObject *>name:
            return False
    if isinstance(name, str) and PyUnicode_GET_LENGTH(name):
        c = PyUnicode_READ_CHAR(name, 0)
        if c < 128 and not (self._first[c >> 6] >> (c & 63)) & 1:
            _seen_put(seen, name)
            return False
    if name in self._own:
        return True
    _seen_put(seen, name)
    return False


cdef inline void _seen_put(PyObject **seen, object name) noexcept:
    """Remember ``name`` as not own in table entry ``seen`` (GIL builds, exact str only)."""
    cdef PyObject *old
    if PPP_GIL and type(name) is str:
        old = seen[0]
        Py_INCREF(name)
        seen[0] = <PyObject *>name
        Py_XDECREF(old)  # a str: its release runs no Python code
