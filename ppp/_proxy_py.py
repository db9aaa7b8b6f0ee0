"""The pure-Python forwarding base of ``Proxy``: attribute access and operators.

``ppp/_proxy.pyx`` is its compiled twin; both must behave identically.  The
cold parts (setting, scopes, pooling) live in ``ppp.proxy`` and are shared.

How forwarding stays fast: the base never tries its own attributes first and
pays for an ``AttributeError`` (what wrapt and lazy-object-proxy do).  It asks
one question, "is this name one of the proxy's own few names?", answered by a
frozenset lookup; every other name goes straight to the wrapped object.  The
wrapped object is reached through one slot, ``_ppp_g``: a zero-argument C
callable that returns the shared object, reads the per-scope local, or raises
"not initialised".
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from ._errors import ProxyException

__all__ = ["UNSET", "SHARED", "LOCAL", "ProxyBase", "NOT_INITIALISED", "scope_hooks"]

# binding modes, as in the compiled twin
UNSET, SHARED, LOCAL = 0, 1, 2

NOT_INITIALISED = (
    "Proxy is not initialised: set it first with set(obj=...) or set(fun=...) "
    "(or _set, _set_obj, _set_fun)"
)

_ga = object.__getattribute__
_sa = object.__setattr__
_da = object.__delattr__


def _unset() -> NoReturn:
    raise ProxyException(NOT_INITIALISED)


class ProxyBase:
    """Forwards attribute access and operators to the object of the current scope.

    Subclasses set ``_ppp_own`` (a frozenset of the proxy's own attribute names)
    and get a ``__getattribute__``/``__setattr__``/``__delattr__`` bound to it."""

    __slots__ = ("_ppp_g",)

    _ppp_own: frozenset[str] = frozenset(
        {"__class__", "__reduce__", "__reduce_ex__", "_ppp_g", "_ppp_bind", "_ppp_mode"}
    )

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            """For type checkers only: any attribute may be forwarded."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        self = object.__new__(cls)
        _sa(self, "_ppp_g", _unset)
        return self

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls._ppp_own
        for name, make in (
            ("__getattribute__", _make_getattribute),
            ("__setattr__", _make_setattr),
            ("__delattr__", _make_delattr),
        ):
            current = getattr(cls, name)
            # bind ours to this class's names, unless a subclass wrote its own
            if getattr(current, "_ppp_bound", False) or current is getattr(object, name):
                method = make(own)
                method._ppp_bound = True  # type: ignore[union-attr]
                setattr(cls, name, method)

    def _ppp_bind(self, mode: int, value: Any) -> None:
        """Point the proxy at nothing (UNSET), one shared object (SHARED), or a
        local whose attribute ``o`` is the current scope's object (LOCAL)."""
        if mode == SHARED:
            g: Callable[[], Any] = itertools.repeat(value).__next__
        elif mode == LOCAL:
            g = functools.partial(getattr, value, "o")
        elif mode == UNSET:
            g = _unset
        else:
            raise ValueError(f"unknown binding mode {mode!r}")
        _sa(self, "_ppp_g", g)  # one slot write: readers see the old or the new binding

    def _ppp_mode(self) -> int:
        """The binding mode, for the cold code and tests."""
        g = _g_get(self)
        if g is _unset:
            return UNSET
        return LOCAL if isinstance(g, functools.partial) else SHARED

    # ------------------------------------------------------ forwarded protocol

    def __repr__(self) -> str:
        if _g_get(self) is _unset:
            return f"<{type(self).__module__}.{type(self).__qualname__}: not initialised>"
        return repr(_obj(self))

    def __str__(self) -> str:
        return str(_obj(self))

    def __bytes__(self) -> bytes:
        return bytes(_obj(self))

    def __format__(self, spec: str) -> str:
        return format(_obj(self), spec)

    def __dir__(self) -> list[str]:
        return dir(_obj(self))

    def __eq__(self, other: object) -> Any:
        return _obj(self) == other

    def __ne__(self, other: object) -> Any:
        return _obj(self) != other

    def __lt__(self, other: Any) -> Any:
        return _obj(self) < other

    def __le__(self, other: Any) -> Any:
        return _obj(self) <= other

    def __gt__(self, other: Any) -> Any:
        return _obj(self) > other

    def __ge__(self, other: Any) -> Any:
        return _obj(self) >= other

    def __hash__(self) -> int:
        return hash(_obj(self))

    def __bool__(self) -> bool:
        return bool(_obj(self))

    def __len__(self) -> int:
        return len(_obj(self))

    def __iter__(self) -> Iterator[Any]:
        return iter(_obj(self))

    def __reversed__(self) -> Iterator[Any]:
        return reversed(_obj(self))  # type: ignore[no-any-return]

    def __contains__(self, item: object) -> bool:
        return item in _obj(self)

    def __getitem__(self, key: Any) -> Any:
        return _obj(self)[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        _obj(self)[key] = value

    def __delitem__(self, key: Any) -> None:
        del _obj(self)[key]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _obj(self)(*args, **kwargs)

    def __enter__(self) -> Any:
        return _obj(self).__enter__()

    def __exit__(self, *exc_info: Any) -> Any:
        return _obj(self).__exit__(*exc_info)

    # asynchronous protocols: looked up on the object's type, as Python does

    def __await__(self) -> Generator[Any, None, Any]:
        steps: Generator[Any, None, Any] = _special(_obj(self), "__await__", _NOT_AWAITABLE)()
        return steps

    def __aenter__(self) -> Awaitable[Any]:
        entered: Awaitable[Any] = _special(_obj(self), "__aenter__", _NOT_ASYNC_CM)()
        return entered

    def __aexit__(self, *exc_info: Any) -> Awaitable[Any]:
        exited: Awaitable[Any] = _special(_obj(self), "__aexit__", _NOT_ASYNC_CM)(*exc_info)
        return exited

    def __aiter__(self) -> AsyncIterator[Any]:
        return aiter(_obj(self))

    # ``isinstance(x, proxy)`` and ``issubclass(c, proxy)`` for a proxy of a class

    def __instancecheck__(self, instance: Any) -> bool:
        return isinstance(instance, _obj(self))

    def __subclasscheck__(self, subclass: Any) -> bool:
        return issubclass(subclass, _obj(self))

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError(
            "a Proxy cannot be pickled or copied; pickle or copy proxy._get_obj() instead"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "a Proxy cannot be pickled or copied; pickle or copy proxy._get_obj() instead"
        )

    # unary and conversions
    def __neg__(self) -> Any:
        return -_obj(self)

    def __pos__(self) -> Any:
        return +_obj(self)

    def __abs__(self) -> Any:
        return abs(_obj(self))

    def __invert__(self) -> Any:
        return ~_obj(self)

    def __int__(self) -> int:
        return int(_obj(self))

    def __float__(self) -> float:
        return float(_obj(self))

    def __complex__(self) -> complex:
        return complex(_obj(self))

    def __index__(self) -> int:
        return operator.index(_obj(self))

    def __round__(self, ndigits: Any = None) -> Any:
        obj = _obj(self)
        return round(obj) if ndigits is None else round(obj, ndigits)

    def __trunc__(self) -> Any:
        return math.trunc(_obj(self))

    def __floor__(self) -> Any:
        return math.floor(_obj(self))

    def __ceil__(self) -> Any:
        return math.ceil(_obj(self))

    # binary, reflected and in-place: see _binary below
    def __pow__(self, other: Any, mod: Any = None) -> Any:
        obj = _obj(self)
        return obj**other if mod is None else pow(obj, other, mod)

    def __rpow__(self, other: Any, mod: Any = None) -> Any:
        obj = _obj(self)
        return other**obj if mod is None else pow(other, obj, mod)

    def __ipow__(self, other: Any) -> Any:  # type: ignore[misc]
        obj = _obj(self)
        result = operator.ipow(obj, other)  # type: ignore[no-untyped-call]
        return self if result is obj else result

    def __divmod__(self, other: Any) -> Any:
        return divmod(_obj(self), other)

    def __rdivmod__(self, other: Any) -> Any:
        return divmod(other, _obj(self))


_g_get: Callable[[ProxyBase], Callable[[], Any]] = vars(ProxyBase)["_ppp_g"].__get__


_MISSING: Any = object()


def _obj(self: ProxyBase) -> Any:
    """The object of the current scope (its slow path creates or borrows it)."""
    try:
        return _g_get(self)()
    except AttributeError:  # nothing in this scope's local yet
        pass
    # outside the handler: an error of the slow path (TimeOut...) has no context
    return _ga(self, "_get_obj")()


# Python's own wording, formatted with the object's type name
_NOT_AWAITABLE = "object {} can't be used in 'await' expression"
_NOT_ASYNC_CM = "{!r} object does not support the asynchronous context manager protocol"


def _special(obj: Any, name: str, error: str) -> Callable[..., Any]:
    """``obj``'s special method ``name``, bound, looked up on its type as Python's
    protocols do; else the ``TypeError`` Python raises (``error``: its wording)."""
    method = getattr(type(obj), name, None)
    if method is None:
        raise TypeError(error.format(type(obj).__name__))
    return method.__get__(obj, type(obj))  # type: ignore[no-any-return]


def _make_getattribute(own: frozenset[str]) -> Callable[[ProxyBase, str], Any]:
    g_get = _g_get

    def __getattribute__(self: ProxyBase, name: str, _own: frozenset[str] = own) -> Any:
        if name in _own:
            return _ga(self, name)
        try:
            obj = g_get(self)()
        except AttributeError:  # nothing in this scope's local yet
            obj = _MISSING
        if obj is _MISSING:  # outside the handler: the slow path's errors get no context
            obj = _ga(self, "_get_obj")()
        return getattr(obj, name)

    return __getattribute__


def _make_setattr(own: frozenset[str]) -> Callable[[ProxyBase, str, Any], None]:
    def __setattr__(self: ProxyBase, name: str, value: Any, _own: frozenset[str] = own) -> None:
        if name in _own:
            _sa(self, name, value)
        else:
            setattr(_obj(self), name, value)

    return __setattr__


def _make_delattr(own: frozenset[str]) -> Callable[[ProxyBase, str], None]:
    def __delattr__(self: ProxyBase, name: str, _own: frozenset[str] = own) -> None:
        if name in _own:
            _da(self, name)
        else:
            delattr(_obj(self), name)

    return __delattr__


def _binary(name: str, op: Callable[[Any, Any], Any]) -> None:
    """Add ``__op__``, ``__rop__`` and ``__iop__`` forwarding ``op`` to ProxyBase.

    In-place operators act on the wrapped object; when it changes in place (a
    list's ``+=``) the proxy is kept, else the new value is the result, as
    Python does for objects without in-place operators."""
    iop = getattr(operator, f"i{name}")

    def forward(self: ProxyBase, other: Any) -> Any:
        return op(_obj(self), other)

    def reflected(self: ProxyBase, other: Any) -> Any:
        return op(other, _obj(self))

    def inplace(self: ProxyBase, other: Any) -> Any:
        obj = _obj(self)
        result = iop(obj, other)
        return self if result is obj else result

    for dunder, fn in (
        (f"__{name}__", forward),
        (f"__r{name}__", reflected),
        (f"__i{name}__", inplace),
    ):
        fn.__name__ = fn.__qualname__ = dunder
        fn.__doc__ = f"Forward ``{dunder}`` to the wrapped object."
        setattr(ProxyBase, dunder, fn)


for _name in (
    "add",
    "sub",
    "mul",
    "matmul",
    "truediv",
    "floordiv",
    "mod",
    "lshift",
    "rshift",
    "and",
    "xor",
    "or",
):
    _binary(_name, getattr(operator, _name if _name not in ("and", "or") else f"{_name}_"))
del _name


# ------------------------------------------------------------------ scope hooks

#: asyncio's ``_get_running_loop`` and ``current_task``, and greenlet's
#: ``getcurrent``: each None until its module is first seen imported, then kept.
#: Both twins find a VERSATILE caller's scope with these same functions (the
#: compiled one calls them from C), so they always decide alike; once taken, a
#: later monkeypatch of the module attributes changes neither.
_HOOKS: list[Any] = [None, None, None]


def scope_hooks() -> list[Any]:
    """``[_get_running_loop, current_task, getcurrent]``, each None while its
    module (asyncio, greenlet) is not imported (or not done importing)."""
    hooks = _HOOKS
    if hooks[0] is None:
        aio = sys.modules.get("asyncio")
        if aio is not None:
            get_loop = getattr(aio, "_get_running_loop", None)
            current_task = getattr(aio, "current_task", None)
            if get_loop is not None and current_task is not None:
                hooks[1] = current_task  # before [0]: [0] set means both are
                hooks[0] = get_loop
    if hooks[2] is None:
        greenlet = sys.modules.get("greenlet")
        if greenlet is not None:
            hooks[2] = getattr(greenlet, "getcurrent", None)
    return hooks
