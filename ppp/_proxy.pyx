# cython: language_level=3, freethreading_compatible=True
"""The compiled forwarding base of ``Proxy``: attribute access and operators in C.

``ppp/_proxy_py.py`` is its pure-Python twin (with the reference docstrings);
both must behave identically.  The cold parts (setting, scopes, pooling) live
in ``ppp.proxy`` and are shared.

``tp_getattro`` asks one question -- is the name one of the proxy's own few
names (a frozenset lookup)? -- and otherwise reads the wrapped object straight
from a C field (shared object) or from the scope's local (attribute ``o``),
never trying the proxy's own attributes first.  The binding (mode and target)
is read and written in a critical section: a per-object lock on free-threaded
Python, nothing on GIL builds.
"""

cimport cython
from cpython.object cimport PyObject_GenericGetAttr
from cpython.ref cimport PyObject

cdef extern from "Python.h":
    int PyObject_GenericSetAttr(object o, object name, PyObject *value) except -1

import math
import operator

from ._errors import ProxyException
from ._proxy_py import _NOT_ASYNC_CM, _NOT_AWAITABLE, NOT_INITIALISED, _special

__all__ = ["LOCAL", "SHARED", "UNSET", "ProxyBase"]

UNSET, SHARED, LOCAL = 0, 1, 2

cdef enum:
    M_UNSET = 0
    M_SHARED = 1
    M_LOCAL = 2

_BASE_OWN = frozenset({"__class__", "__reduce__", "__reduce_ex__", "_ppp_bind", "_ppp_mode"})

_PICKLE = "a Proxy cannot be pickled or copied; pickle or copy proxy._get_obj() instead"


@cython.auto_pickle(False)
cdef class ProxyBase:
    """Forwards attribute access and operators to the object of the current scope."""

    _ppp_own = _BASE_OWN

    cdef frozenset _own
    cdef int _mode
    cdef object _target

    def __cinit__(self, *args, **kwargs):
        self._own = frozenset(getattr(type(self), "_ppp_own", _BASE_OWN))
        self._mode = M_UNSET
        self._target = None

    def _ppp_bind(self, int mode, value):
        """Point the proxy at nothing, one shared object, or a scope local."""
        if mode != M_UNSET and mode != M_SHARED and mode != M_LOCAL:
            raise ValueError(f"unknown binding mode {mode!r}")
        with cython.critical_section(self):
            self._mode = mode
            self._target = None if mode == M_UNSET else value

    def _ppp_mode(self):
        """The binding mode, for the cold code and tests."""
        with cython.critical_section(self):
            return self._mode

    cdef object _obj(self):
        cdef int mode
        cdef object target
        with cython.critical_section(self):
            mode = self._mode
            target = self._target
        if mode == M_SHARED:
            return target
        if mode == M_LOCAL:
            try:
                return getattr(target, "o")
            except AttributeError:  # nothing in this scope's local yet
                return PyObject_GenericGetAttr(self, "_get_obj")()
        raise ProxyException(NOT_INITIALISED)

    # ------------------------------------------------------ attributes

    def __getattribute__(self, name):
        if name in self._own:
            return PyObject_GenericGetAttr(self, name)
        return getattr(self._obj(), name)

    def __setattr__(self, name, value):
        if name in self._own:
            PyObject_GenericSetAttr(self, name, <PyObject *>value)
        else:
            setattr(self._obj(), name, value)

    def __delattr__(self, name):
        if name in self._own:
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
