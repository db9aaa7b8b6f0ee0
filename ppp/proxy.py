"""``Proxy``: a stand-in for an object that is set later, shared or one per scope.

A module can export ``db = Proxy()`` and set it at start-up (``db.set(fun=connect)``);
every attribute access, operator and call on ``db`` then acts on the object of
the current scope: one shared object, or one per thread (``THREAD``), per thread,
asyncio task and greenlet (``VERSATILE``), or per greenlet (``GEVENT``,
``EVENTLET``), taken from a ``Pool`` when ``max_size`` is not ``None``.

The hot path -- forwarding -- lives in a base class with two twins: the compiled
``ppp._proxy.ProxyBase`` and the pure ``ppp._proxy_py.ProxyBase``.  This module
holds the cold parts, written once: setting, scopes, pooling and the return of
pooled objects when a thread, task or greenlet ends.

``ppp.Proxy`` is built over the active Pool twin and the matching base.
``ppp.proxy._for_twin("python")`` (or ``"cython"``, or the twin module itself)
returns the Proxy class over a chosen twin: tests use it to run every Proxy test
on both twins in one process.
"""

from __future__ import annotations

import enum
import functools
import importlib
import inspect
import itertools
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from . import _backend
from ._common import USING, _keep_forever, check_timeout
from ._errors import ProxyException
from ._proxy_py import LOCAL, NOT_INITIALISED, SHARED, UNSET, scope_hooks

__all__ = ["Proxy", "Scope"]

log = logging.getLogger("ppp")

FunHook = Callable[[int], Any]

_sa = object.__setattr__
_getpid = os.getpid
_pid = _getpid()  # this process's id (set again in a forked child, see _after_fork_in_child)
_RELEASE_TRIES = 100  # an interrupted return is retried (each try is idempotent)


class Scope(enum.Enum):
    """How far one wrapped object is shared.

    - ``AUTO``: ``SHARED`` when set with an object, ``THREAD`` with a function.
    - ``SHARED``: one object for everybody (it must be thread safe).
    - ``THREAD``: one object per thread, created by ``fun`` or taken from the pool.
    - ``VERSATILE`` (alias ``WERKZEUG``): one object per thread, per asyncio task
      and per greenlet, without werkzeug.
    - ``GEVENT``, ``EVENTLET``: one object per greenlet, with that library's local.
    """

    AUTO = 0
    SHARED = 1
    THREAD = 2
    VERSATILE = 3
    WERKZEUG = 3
    GEVENT = 4
    EVENTLET = 5


# ------------------------------------------------------------ pooled objects


class _Holder:
    """A pooled object held by one scope; it goes back to its pool exactly once.

    It lives in the scope's local next to the object, so when the scope ends
    (the thread's locals are cleared, the task's or greenlet's storage dropped)
    the holder is freed and ``__del__`` returns the object through ``Pool.ret``,
    ``retter`` included.  Only its scope touches it: no lock is needed.

    Interrupt safety (``KeyboardInterrupt``, a signal handler's exception, a
    raising tracer): ``_get_obj`` arms a holder in one *commit line* (attribute
    stores, no call: an interrupt lands before or after it, never inside), and
    ``release`` marks the return as sent on the line that calls ``Pool.ret``.  An
    interrupted ``release`` (or finalizer) is retried at once: a return that was
    sent but did not finish (the pure ``ret`` interrupted before it took effect;
    a profiler raising at the compiled ``ret``'s ``c_call`` event, before it
    runs) retires the object (``closer`` runs) unless the pool has it back
    (``Pool._drop_interrupted`` checks the slot and its use count, so an object
    that went back and on to another holder is left alone); the compiled
    ``ret``, once running, takes effect or retires the object itself.

    In a forked child a holder from before the fork never returns its object (it
    is the parent's): CPython frees the dead threads' locals in the child before
    any fork handler runs, so the holder checks the process id itself."""

    __slots__ = ("obj", "pid", "pool", "sent", "slot", "unlink", "uses")

    def __init__(self, pool: Any = None, obj: Any = None) -> None:
        self.pool: Any = None  # first: a holder interrupted half-built holds nothing
        self.obj: Any = None
        self.slot: Any = None  # the pool's record of obj, and its use count when taken
        self.uses = -1
        self.sent = False  # Pool.ret was called (maybe interrupted)
        self.pid = _pid  # no system call: the process id, refreshed after a fork
        self.unlink: Callable[[], Any] | None = None  # cancels an end-of-greenlet link
        if pool is not None:  # armed at once (tests); _get_obj arms its own in one line
            slot = pool._slots.get(id(obj))
            uses = -1 if slot is None else slot.uses
            self.obj = obj; self.slot = slot; self.uses = uses; self.pool = pool  # noqa: E702 # fmt: skip

    def release(self) -> None:
        """Give the object back (once; later calls do nothing).  Interrupted, the
        return is finished first (the object is back, or retired), then the first
        interrupt is re-raised."""
        try:
            self._release_step()
        except BaseException as exc:
            self._finish(exc)

    def _finish(self, first: BaseException) -> None:
        """``release`` was interrupted by ``first``: retry its step (idempotent) until
        it completes, then re-raise ``first``."""
        try:
            for _ in range(_RELEASE_TRIES):
                try:
                    self._release_step()
                    break
                except BaseException:  # retried; the first one is raised
                    continue
            raise first
        finally:
            first = None  # type: ignore[assignment]  # no cycle through the traceback

    def _release_step(self) -> None:
        pool = self.pool
        if pool is None:
            return
        if self.sent:  # a return interrupted: retire the object unless it is back
            if self.slot is not None:
                pool._drop_interrupted(self.slot, USING, self.uses)
            self.pool = self.obj = self.slot = None
            return
        if self.pid != _getpid():  # the parent's object, in a forked child
            _keep_forever([self.obj])
            self.pool = self.obj = self.slot = None
            return
        unlink = self.unlink
        if unlink is not None:
            self.unlink = None
            try:
                unlink()
            except Exception:  # the greenlet is ending: its links are spent anyway
                pass
        # one line: an interrupt lands before it (nothing sent) or after the call
        self.sent = True; pool.ret(self.obj)  # noqa: E702 # fmt: skip
        self.pool = self.obj = self.slot = None

    def on_end(self, *_: Any) -> None:
        """Link callback: the greenlet that held the object has ended."""
        self.unlink = None
        self._release_quietly()

    def _release_quietly(self) -> None:
        try:
            try:
                self.release()
            except BaseException as exc:  # even one raised as release was entered
                self._finish(exc)
        except Exception:
            log.exception("Proxy: returning an object at the end of its scope failed")

    def __del__(self) -> None:
        # the scope ended holding the object: give it back now, unless the
        # interpreter is tearing down (the pool may be half gone)
        if getattr(self, "pool", None) is not None and not sys.is_finalizing():
            self._release_quietly()


def _link_end(sub: Any, callback: Callable[[Any], Any]) -> Callable[[], Any] | None:
    """Call ``callback(sub)`` when task or greenlet ``sub`` ends; return an unlink
    function, or None when ``sub`` offers no such hook (a bare greenlet)."""
    add_done = getattr(sub, "add_done_callback", None)  # asyncio task
    if add_done is not None:
        add_done(callback)
        return functools.partial(sub.remove_done_callback, callback)
    rawlink = getattr(sub, "rawlink", None)  # gevent Greenlet
    if rawlink is not None:
        rawlink(callback)
        return functools.partial(sub.unlink, callback)
    greenthread = sys.modules.get("eventlet.greenthread")
    if greenthread is not None and isinstance(sub, greenthread.GreenThread):
        sub.link(callback)
        return functools.partial(sub.unlink, callback)
    return None


def _current_greenlet() -> Any:
    getcurrent = scope_hooks()[2]
    return None if getcurrent is None else getcurrent()


def _sub_scope() -> Any:
    """The running asyncio task, else the current greenlet unless it is its thread's
    main one, else None (plain thread code).  The compiled base's fast check for a
    plain thread (``_plain_thread``) uses the same hooks and agrees with it."""
    get_loop, current_task, getcurrent = scope_hooks()
    if get_loop is not None and get_loop() is not None:
        task = current_task()
        if task is not None:
            return task
    if getcurrent is not None:
        current = getcurrent()
        if current.parent is not None:
            return current
    return None


class _ScopeLocal:
    """Attributes per thread, per asyncio task and per greenlet (``VERSATILE``).

    Thread-level values live in a ``threading.local``; task and greenlet values in
    a dict keyed by the task or greenlet, dropped when it ends (done callback,
    gevent or eventlet link) or is collected (weak reference), which frees the
    pooled object's holder.  Unlike a ``ContextVar``, a value is never seen by
    another task or thread that inherited or copied the context."""

    __slots__ = ("__weakref__", "_ppp_subs", "_ppp_thread")

    # the compiled base reads ``_ppp_thread`` directly when the caller is a plain thread
    _ppp_versatile: ClassVar[bool] = True
    _ppp_thread: threading.local
    _ppp_subs: dict[weakref.ref[Any], dict[str, Any]]

    def __init__(self) -> None:
        _sa(self, "_ppp_thread", threading.local())
        _sa(self, "_ppp_subs", {})

    def _ppp_dict(self, create: bool) -> dict[str, Any] | None:
        sub = _sub_scope()
        if sub is None:
            return self._ppp_thread.__dict__
        # Keyed by a weak reference to the task or greenlet: a live one equals a fresh
        # reference to the same object, a dead one only itself.  Only ``sub`` adds its
        # entry and a drop removes exactly its own, each one dict operation: no lock,
        # so no interrupt can leave one held.
        values = self._ppp_subs.get(weakref.ref(sub))
        if values is not None or not create:
            return values
        values = {}
        drop = functools.partial(_ScopeLocal._ppp_drop, weakref.ref(self))
        self._ppp_subs[weakref.ref(sub, drop)] = values
        _link_end(sub, drop)
        return values

    @staticmethod
    def _ppp_drop(local_ref: weakref.ref[_ScopeLocal], what: Any) -> None:
        """``what`` (the dead weak reference, or the ended task or greenlet) is over;
        its values, hence any holder, are freed on return."""
        local = local_ref()
        if local is not None:
            key = what if type(what) is weakref.ref else weakref.ref(what)
            local._ppp_subs.pop(key, None)

    def __getattr__(self, name: str) -> Any:
        values = self._ppp_dict(False)
        if values is None or name not in values:
            raise AttributeError(name)
        return values[name]

    def __setattr__(self, name: str, value: Any) -> None:
        values = self._ppp_dict(True)
        assert values is not None
        values[name] = value

    def __delattr__(self, name: str) -> None:
        values = self._ppp_dict(False)
        if values is None or name not in values:
            raise AttributeError(name)
        del values[name]


# scope -> (module whose ``local`` holds one object per greenlet, package to install)
_GREEN_LOCALS = {
    Scope.GEVENT: ("gevent.local", "gevent"),
    Scope.EVENTLET: ("eventlet.corolocal", "eventlet"),
}


def _make_local(scope: Scope) -> Any:
    """The local that holds one object per ``scope``."""
    if scope is Scope.THREAD:
        return threading.local()
    if scope is Scope.VERSATILE:
        return _ScopeLocal()
    if scope in _GREEN_LOCALS:
        module, package = _GREEN_LOCALS[scope]
        try:
            green_local = importlib.import_module(module).local
        except ImportError as exc:
            raise ProxyException(
                f"Proxy scope {scope.name} needs the {package} package, which is not "
                f"installed (pip install {package})"
            ) from exc
        return green_local()
    raise ProxyException(f"Proxy scope {scope.name} holds no per-scope object")  # pragma: no cover


# ------------------------------------------------------------ checks


def _check_scope(scope: object) -> Scope:
    if isinstance(scope, Scope):
        return scope
    if isinstance(scope, int) and not isinstance(scope, bool):
        try:
            return Scope(scope)
        except ValueError:
            pass
        raise ValueError(f"scope must be a Proxy.Scope or its value 0 to 5, got {scope!r}")
    raise TypeError(f"scope must be a Proxy.Scope, got {type(scope).__name__}: {scope!r}")


def _check_max_size(max_size: object) -> int | None:
    if max_size is None:
        return None
    if not isinstance(max_size, int) or isinstance(max_size, bool):
        raise TypeError(
            f"max_size must be an int or None, got {type(max_size).__name__}: {max_size!r}"
        )
    if max_size < 0:
        raise ValueError(f"max_size must be >= 0 (0: unlimited, None: no pool), got {max_size}")
    return max_size


def _check_log_level(log_level: object) -> None:
    if log_level is None:
        return
    if not isinstance(log_level, (int, str)) or isinstance(log_level, bool):
        raise TypeError(f"log_level must be a logging level, got {log_level!r}")
    try:
        log.setLevel(log_level)
    except ValueError as exc:  # logging's "Unknown level: 'LOUD'", as the Pool words it
        raise ValueError(f"log_level: {exc}") from None


@functools.cache
def _pool_params(pool_class: type) -> frozenset[str]:
    """The keyword parameters a proxy may pass to ``pool_class`` besides ``fun`` and
    ``max_size``."""
    params = inspect.signature(pool_class).parameters
    return frozenset(params) - {"fun", "max_size"}


def _alias_names(set_name: str | None) -> tuple[str, ...]:
    if not set_name or set_name == "_set":
        return ()
    return (set_name, f"{set_name}_obj", f"{set_name}_fun")


_PPP_PUBLIC = frozenset({"Scope", "set", "set_obj", "set_fun"})
_OWN_DUNDERS = frozenset({"__class__", "__reduce__", "__reduce_ex__"})


def _own_names(cls: type, set_name: str | None) -> frozenset[str]:
    """The names a proxy of class ``cls`` keeps for itself (everything else is
    forwarded): the non-dunder names its classes define, minus ppp's public
    ``Scope`` and default setter names, plus the setters named after ``set_name``."""
    names = set(_OWN_DUNDERS)
    for klass in cls.__mro__:
        if klass is object:
            continue
        ppp_class = klass.__module__.startswith("ppp.")
        for name in vars(klass):
            if name.startswith("__") and name.endswith("__"):
                continue
            if ppp_class and name in _PPP_PUBLIC:
                continue
            names.add(name)
    names.update(_alias_names(set_name))
    return frozenset(names)


# ------------------------------------------------------------ the Proxy


_Scope = Scope  # for annotations inside classes that have a Scope attribute


class _State(NamedTuple):
    """What a proxy is set to; replaced as a whole, so one read is consistent."""

    scope: Scope
    obj: Any  # the shared object, or None
    fun: FunHook | None
    local: Any  # the scope's local (attribute ``o``: the object, ``h``: its holder)
    pool: Any  # the Pool objects come from, or None


_SLOTS = (
    "__weakref__",
    "_ppp_count",
    "_ppp_kwargs",
    "_ppp_lock",
    "_ppp_max_size",
    "_ppp_req",
    "_ppp_st",
)


class _ProxyCold:
    """The cold parts of ``Proxy``, shared by both forwarding bases."""

    if not TYPE_CHECKING:  # the concrete classes declare the slots
        __slots__ = ()

    Scope = Scope
    _ppp_set_name: str | None = "set"
    _ppp_pool_class: Any
    _ppp_own: frozenset[str]

    _ppp_count: Iterator[int]  # numbers for fun(n) without a pool: one C step, no lock
    _ppp_kwargs: dict[str, Any]
    _ppp_lock: threading.RLock
    _ppp_max_size: int | None
    _ppp_req: _Scope
    _ppp_st: _State

    if TYPE_CHECKING:

        def _ppp_bind(self, mode: int, value: Any) -> None: ...

    def __init_subclass__(cls, **kwargs: Any) -> None:
        cls._ppp_own = _own_names(cls, cls._ppp_set_name)
        super().__init_subclass__(**kwargs)

    def __new__(
        cls,
        obj: Any = None,
        fun: FunHook | None = None,
        set_name: str | None = "set",
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        klass = cls if set_name == cls._ppp_set_name else _alias_class(cls, set_name)
        return super().__new__(klass)

    def __init__(
        self,
        obj: Any = None,
        fun: FunHook | None = None,
        set_name: str | None = "set",
        scope: _Scope | int = Scope.AUTO,
        log_level: int | str | None = None,
        max_size: int | None = 0,
        **pool_kwargs: Any,
    ) -> None:
        _check_log_level(log_level)
        self._ppp_lock = threading.RLock()
        self._ppp_req = _check_scope(scope)
        self._ppp_max_size = _check_max_size(max_size)
        self._ppp_kwargs = self._ppp_check_kwargs(pool_kwargs)
        self._ppp_count = itertools.count()
        self._ppp_st = _State(self._ppp_req, None, None, None, None)
        self._ppp_bind(UNSET, None)
        if obj is not None or fun is not None:
            self._set(obj, fun)

    def _ppp_check_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(kwargs) - _pool_params(self._ppp_pool_class))
        if unknown:
            raise TypeError(f"Proxy got unknown pool parameter(s): {', '.join(unknown)}")
        return dict(kwargs)

    # ------------------------------------------------------------ setting

    def _set_pool(self, **kwargs: Any) -> None:
        """Change the parameters of the pool that ``set_fun`` will build (``max_size``
        and any ``Pool`` parameter); too late once the pool exists."""
        kwargs = dict(kwargs)
        has_max_size = "max_size" in kwargs
        max_size = _check_max_size(kwargs.pop("max_size", None))
        checked = self._ppp_check_kwargs(kwargs)
        with self._ppp_lock:
            if self._ppp_st.pool is not None:
                raise ProxyException(
                    "Proxy cannot override pool parameters once the pool exists: "
                    "call _set_pool before setting fun"
                )
            if has_max_size:
                self._ppp_max_size = max_size
            self._ppp_kwargs.update(checked)

    def _set_obj(self, obj: Any) -> _ProxyCold:
        """Wrap ``obj``, one object shared by every thread (any value but None)."""
        if obj is None:
            raise ProxyException("Proxy cannot wrap None: give set_obj an object")
        with self._ppp_lock:
            old = self._ppp_st.pool
            self._ppp_st = _State(Scope.SHARED, obj, None, None, None)
            self._ppp_bind(SHARED, obj)
        if old is not None:
            old.shutdown()
        return self

    def _set_fun(self, fun: FunHook) -> _ProxyCold:
        """Create objects with ``fun(n)``, one per scope (from a pool unless
        ``max_size`` is None).  A pool this proxy built before is shut down."""
        if not callable(fun):
            raise TypeError(f"fun must be callable, got {type(fun).__name__}: {fun!r}")
        req = self._ppp_req
        if req is Scope.SHARED:
            raise ProxyException(
                "Proxy with scope SHARED wraps one object: set it with set_obj, or use a "
                "per-scope scope (THREAD, VERSATILE, GEVENT, EVENTLET) with fun"
            )
        scope = Scope.THREAD if req is Scope.AUTO else req
        local = _make_local(scope)
        with self._ppp_lock:
            old = self._ppp_st.pool
            pool = None
            if self._ppp_max_size is not None:
                pool = self._ppp_pool_class(fun, max_size=self._ppp_max_size, **self._ppp_kwargs)
            self._ppp_st = _State(scope, None, fun, local, pool)
            self._ppp_count = itertools.count()
            self._ppp_bind(LOCAL, local)
            _PER_SCOPE[id(self)] = self  # not a WeakSet: hash() is forwarded
        if old is not None:
            old.shutdown()
        return self

    def _set(self, obj: Any = None, fun: FunHook | None = None) -> _ProxyCold:
        """Set the wrapped object (``obj``) or the function creating one per scope
        (``fun``): exactly one of them."""
        if obj is not None and fun is not None:
            raise ProxyException("Proxy cannot set both obj and fun")
        if obj is not None:
            return self._set_obj(obj)
        if fun is not None:
            return self._set_fun(fun)
        raise ProxyException("Proxy must set either obj or fun")

    # default names of the setters (see set_name)
    set = _set
    set_obj = _set_obj
    set_fun = _set_fun

    # ------------------------------------------------------------ objects

    def _get_obj(self, timeout: float | None = None) -> Any:
        """The object of the current scope, created or taken from the pool if it has
        none yet (this may raise ``TimeOut`` or what ``fun`` raises)."""
        st = self._ppp_st
        local = st.local
        if local is None:
            if st.obj is None:
                raise ProxyException(NOT_INITIALISED)
            return st.obj
        try:
            return local.o
        except AttributeError:
            pass
        pool = st.pool
        if pool is None:
            n = next(self._ppp_count)  # atomic, free-threaded builds included (3.13+)
            assert st.fun is not None
            obj = st.fun(n)
            local.o = obj
            return obj
        # What the pool hands over is owned by ``got`` or ``ticket`` until the holder
        # is armed, in one commit line that also empties them; an interrupt at any
        # point, even as the object comes back to this frame, can give it back.
        holder = _Holder()
        got: list[Any] = []
        ticket = None
        try:
            if pool._backend == "cython":
                # the compiled get gives back all it took when it raises, and ``+=``
                # stores its result from C: no point in between where Python runs.
                got += map(pool.get, (timeout,))
                holder.obj = got[0]; holder.pool = pool; del got[0]  # noqa: E702 # fmt: skip
                # the slot and its use count, for a return interrupted before the
                # compiled ret runs (a profiler's c_call event); only this thread
                # holds the object, so they cannot change meanwhile
                # (``in`` and a subscript: on the free-threaded build dict.get takes the
                # dict's lock, which a fork can leave held in the child for good)
                slots, key = pool._slots, id(holder.obj)
                slot = slots[key] if key in slots else None  # noqa: SIM401
                if slot is not None:
                    holder.uses = slot.uses; holder.slot = slot  # noqa: E702 # fmt: skip
            else:
                # the pure get can be interrupted as it returns (a profiler's return
                # event): take it as get's slow path does, through a ticket that the
                # pool fills under its lock and ``_cancel`` empties
                if timeout is not None:
                    timeout = check_timeout(timeout)
                if pool._stale():
                    pool._forked()
                ticket = pool._Waiter(False)
                obj = pool._get_slow(timeout, ticket)
                slot = ticket.slot
                if slot is None or slot.obj is not obj:  # served by a plain get (a kill raced)
                    slot = pool._slots.get(id(obj))
                uses = -1 if slot is None else slot.uses
                holder.obj = obj; holder.slot = slot; holder.uses = uses; holder.pool = pool; ticket.slot = None  # noqa: E501,E702 # fmt: skip
            obj = holder.obj
            if st.scope is Scope.GEVENT or st.scope is Scope.EVENTLET:
                current = _current_greenlet()
                if current is not None:
                    holder.unlink = _link_end(current, holder.on_end)
            # h before o: a scope never sees an object without its holder (one step on
            # a threading.local; elsewhere an h alone is returned when it is replaced)
            local.h = holder; local.o = obj  # noqa: E702 # fmt: skip
        except BaseException:  # interrupted: what was obtained goes back, once
            if holder.pool is not None:
                if getattr(local, "h", None) is not holder:  # else the scope holds it
                    holder.release()
            elif got:
                pool.ret(got[0])
            elif ticket is not None:
                pool._cancel(ticket)
            raise
        return obj

    def _ret_obj(self) -> None:
        """Give the current scope's object back to the pool (``retter`` runs); the
        next use takes another.  Does nothing without a pool or an object."""
        st = self._ppp_st
        local = st.local
        if local is None or st.pool is None:
            return
        holder = getattr(local, "h", None)
        if holder is None:
            return
        try:
            try:
                del local.o  # first: the scope never sees an object it does not hold
            except AttributeError:  # pragma: no cover - set together with h
                pass
            del local.h
            holder.release()
        except BaseException:  # interrupted: once out of the scope, it goes back now
            if getattr(local, "h", None) is not holder:
                holder.release()
            raise

    def _has_obj(self) -> bool:
        """Whether the current scope has an object now (none is created)."""
        st = self._ppp_st
        if st.local is None:
            return st.obj is not None
        return hasattr(st.local, "o")

    @contextmanager
    def _obj(self, timeout: float | None = None) -> Iterator[Any]:
        """The current scope's object for a ``with`` block, given back to the pool
        on exit, exceptions included."""
        obj = self._get_obj(timeout)
        try:
            yield obj
        finally:
            self._ret_obj()

    def _ppp_forked(self) -> None:
        """In a forked child (from the fork handler): every scope's object from
        before the fork is dropped -- the old local is kept alive for ever, so no
        holder returns or finalizes the parent's object -- and the next use takes
        a fresh one.  A shared object set with ``obj`` is kept."""
        self._ppp_lock = threading.RLock()  # the fork may have caught it held
        st = self._ppp_st
        if st.local is None:
            return
        _keep_forever([st.local])
        local = _make_local(st.scope)
        self._ppp_st = st._replace(local=local)
        self._ppp_bind(LOCAL, local)

    @property
    def _pool(self) -> Any:
        """The Pool objects come from, or None."""
        return self._ppp_st.pool

    @property
    def _scope(self) -> _Scope:
        """The effective scope (``AUTO`` resolved once set)."""
        return self._ppp_st.scope


# Proxies holding one object per scope, reset in a forked child.
_PER_SCOPE: weakref.WeakValueDictionary[int, _ProxyCold] = weakref.WeakValueDictionary()


def _after_fork_in_child() -> None:
    """Drop every per-scope object from before the fork (see ``_ppp_forked``).  It
    calls no user code, closes nothing and logs nothing."""
    global _pid
    _pid = _getpid()
    for proxy in list(_PER_SCOPE.values()):
        try:
            proxy._ppp_forked()
        except Exception:  # pragma: no cover - a fork handler must not raise
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)


_ALIAS_LOCK = threading.Lock()
_ALIASES: dict[tuple[type, str | None], type] = {}


def _alias_class(cls: type, set_name: str | None) -> type:
    """``cls`` with its setters named after ``set_name`` (cached per name)."""
    if set_name is not None and not isinstance(set_name, str):
        raise TypeError(f"set_name must be a str or None, got {type(set_name).__name__}")
    key = (cls, set_name)
    with _ALIAS_LOCK:
        klass = _ALIASES.get(key)
        if klass is not None:
            return klass
        aliases = _alias_names(set_name)
        if aliases:
            assert set_name is not None
            if not set_name.isidentifier() or set_name.startswith("__"):
                raise ValueError(f"set_name must be a plain identifier, got {set_name!r}")
            taken = _own_names(cls, None) & set(aliases)
            if taken:
                raise ValueError(
                    f"set_name {set_name!r} would hide the proxy's own {sorted(taken)[0]!r}"
                )
        ns: dict[str, Any] = {
            "__slots__": (),
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "_ppp_set_name": set_name,
        }
        if aliases:
            setters = (_ProxyCold._set, _ProxyCold._set_obj, _ProxyCold._set_fun)
            ns.update(zip(aliases, setters, strict=True))
        klass = type(cls)(cls.__name__, (cls,), ns)
        _ALIASES[key] = klass
        return klass


_impl, _BACKEND = _backend.load()

if TYPE_CHECKING:
    from ._proxy_py import ProxyBase as _ActiveBase
else:
    _ActiveBase = _backend.load_proxy_base(_BACKEND).ProxyBase


class Proxy(_ProxyCold, _ActiveBase):
    """A stand-in for an object set later: ``db = Proxy()``, then ``db.set(...)``.

    ``Proxy(obj=None, fun=None, set_name="set", scope=Proxy.Scope.AUTO,
    log_level=None, max_size=0, **pool_kwargs)``: wraps one shared ``obj``, or
    objects made by ``fun(n)``, one per scope, taken from a ``Pool(fun, max_size,
    **pool_kwargs)`` unless ``max_size`` is None.  Attribute access, assignment,
    deletion, operators, calls and ``with`` act on the current scope's object.
    The proxy's own names are few and underscored: ``_get_obj``, ``_ret_obj``,
    ``_has_obj``, ``_obj``, ``_set``, ``_set_obj``, ``_set_fun``, ``_set_pool``,
    ``_pool``, ``_scope``, ``_ppp_*``, plus the setters named after ``set_name``
    (``set``, ``set_obj``, ``set_fun`` by default)."""

    __slots__ = _SLOTS
    _ppp_pool_class = _impl.Pool


_TWIN_LOCK = threading.Lock()
_TWIN_CLASSES: dict[str, type[Proxy]] = {}


def _for_twin(twin: ModuleType | str) -> type[Proxy]:
    """The Proxy class over one twin: ``"cython"`` (``ppp._pool.Pool`` and the
    compiled base) or ``"python"`` (``ppp._pool_py.Pool`` and the pure base); the
    twin's Pool module is accepted too.  ``ppp.Proxy`` is the one of the active
    backend.  Private, for tests and benchmarks; raises ImportError when the
    compiled twin is missing."""
    if isinstance(twin, ModuleType):
        name = {"ppp._pool": "cython", "ppp._pool_py": "python"}.get(twin.__name__, "")
    else:
        name = twin
    if name not in ("cython", "python"):
        raise ValueError(f"twin must be 'cython', 'python' or a Pool twin module, got {twin!r}")
    with _TWIN_LOCK:
        klass = _TWIN_CLASSES.get(name)
        if klass is not None:
            return klass
        pool_class: Any
        base: Any
        if name == "cython":
            from . import _pool, _proxy

            pool_class, base = _pool.Pool, _proxy.ProxyBase
        else:
            from . import _pool_py, _proxy_py

            pool_class, base = _pool_py.Pool, _proxy_py.ProxyBase
        if Proxy._ppp_pool_class is pool_class and base in Proxy.__mro__:
            _TWIN_CLASSES[name] = Proxy
            return Proxy
        ns = {
            "__slots__": _SLOTS,
            "__module__": __name__,
            "__qualname__": "Proxy",
            "__doc__": Proxy.__doc__,
            "_ppp_pool_class": pool_class,
        }
        klass = type("Proxy", (_ProxyCold, base), ns)
        _TWIN_CLASSES[name] = klass
        return klass
