"""SQLAlchemy on a ppp Pool: ``create_engine(url, poolclass=PPPPool, pool_size=..., ...)``.

:class:`PPPPool` is a :class:`sqlalchemy.pool.Pool` whose checkouts and
check-ins go through a :class:`ppp.Pool` (FIFO waiters, ``max_use``,
``max_lifetime``, idle expiry, health checks of idle connections, long-hold
warnings with the holder's stack, wait statistics), while SQLAlchemy's own
machinery runs unchanged on top: reset on return, ``pool_pre_ping``,
invalidation after a disconnect error, recycling, ``engine.dispose()``, pool
events and ORM sessions.  This module is the only one of ppp that imports
SQLAlchemy (``pip install ppp-pool[sqlalchemy]``); it uses ppp's public API only.
Without SQLAlchemy it still imports, and ``PPPPool(...)`` raises ``ImportError``.

What ppp pools is SQLAlchemy's connection record (a ``ConnectionPoolEntry``),
as QueuePool does: the DB-API connection inside is made, pinged, recycled and
closed by SQLAlchemy, with its events.

Parameters, as ``create_engine`` names them (the pool's own name in brackets):

- ``pool_size`` (``pool_size``, 5): connections kept idle at most, as in
  QueuePool: a connection returned while ``pool_size`` are idle is closed.
  0 means no limit at all (as QueuePool).
- ``max_overflow`` (10): ppp's ``max_size`` is ``pool_size + max_overflow``
  (unlimited when ``max_overflow`` is -1 or ``pool_size`` is 0).
- ``pool_timeout`` (``timeout``, 30): how long ``connect()`` waits, in FIFO
  order, before ``sqlalchemy.exc.TimeoutError``.
- ``pool_use_lifo`` (``use_lifo``): ppp always hands out the most recently
  returned idle connection (LIFO) and queues waiters first come, first
  served, with bounded barging (see ``ppp.Pool``); ``use_lifo=False`` is
  accepted and logged as not applying.
- ``pool_recycle``, ``pool_pre_ping``, ``pool_reset_on_return``,
  ``echo_pool``, ``pool_logging_name``: SQLAlchemy's own, unchanged (recycle
  and pre-ping act at checkout, reconnecting the record in place).
- ``ppp_kwargs`` (a dict): ppp parameters SQLAlchemy has no word for, passed
  to the ppp Pool: ``min_size`` (default 0; at most ``pool_size``),
  ``max_use``, ``max_lifetime``, ``max_avail_delay``, ``max_using_delay``,
  ``max_using_delay_kill``, ``leak_trace``, ``health``, ``health_freq``,
  ``delay``, ``stats``, ``tracer``, ``log_level``, ``clock``.  The hooks
  ``health``, ``stats`` and ``tracer`` take the DB-API connection;
  ``health=True`` pings with the dialect's ``do_ping`` (then rolls back).
  ``fun``, ``max_size``, ``timeout`` and the hooks ``opener``, ``getter``,
  ``retter``, ``closer`` are the bridge's own (use SQLAlchemy's pool events).
- ``ppp_pool_class``: the ppp ``Pool`` class to use (default ``ppp.Pool``,
  the active twin).

A connection that SQLAlchemy invalidates (disconnect error, failed pre-ping)
is closed at once and its record goes back to the ppp Pool empty: it
reconnects at its next checkout, as under QueuePool (so pool events come in
the same order).  ppp's ``max_use`` and ``max_lifetime`` count a record's
uses and age, across such reconnections.  ``dispose()`` shuts the
ppp Pool down (idle connections closed now, those in use when they come back;
waiters move to the next ppp Pool) and the next checkout starts a new one.
Used in a process forked from the one that made it, the pool starts a new
ppp Pool and never closes the parent's connections, with or without
``Engine.dispose(close=False)``.  Asyncio engines are not supported.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

import ppp

try:
    from sqlalchemy import exc
    from sqlalchemy.pool import ConnectionPoolEntry
    from sqlalchemy.pool import Pool as _SAPool
except ImportError as _error:  # importable without SQLAlchemy; PPPPool() says what is missing
    _MISSING: ImportError | None = _error

    class _SAPool:  # type: ignore[no-redef]
        """Stands in for ``sqlalchemy.pool.Pool`` when SQLAlchemy is not installed."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError(
                "ppp.sqlalchemy.PPPPool needs SQLAlchemy 2: pip install 'ppp-pool[sqlalchemy]'"
            ) from _MISSING

else:
    _MISSING = None

if TYPE_CHECKING:
    from sqlalchemy.pool.base import _CreatorFnType, _CreatorWRecFnType

__all__ = ["PPPPool"]

_getpid = os.getpid

# a record's state as the bridge sees it (attribute ``_ppp_state``)
_IDLE = 0  # in the ppp Pool, counted in _Generation.idle
_HELD = 1  # checked out by SQLAlchemy
_DROP = 2  # closed by the bridge (pool_size idle already), then discarded
_KILLED = 3  # retired by ppp while held (max_using_delay_kill): closed on its return
_GONE = 4  # closed

PASSED = frozenset(
    {
        "min_size",
        "max_use",
        "max_lifetime",
        "max_avail_delay",
        "max_using_delay",
        "max_using_delay_kill",
        "leak_trace",
        "health",
        "health_freq",
        "delay",
        "stats",
        "tracer",
        "log_level",
        "clock",
    }
)
OWN = {
    "fun": "the bridge creates SQLAlchemy connection records",
    "max_size": "use pool_size and max_overflow",
    "timeout": "use pool_timeout",
    "opener": "use SQLAlchemy's 'connect' pool event",
    "getter": "use SQLAlchemy's 'checkout' pool event",
    "retter": "use SQLAlchemy's 'checkin' or 'reset' pool event",
    "closer": "use SQLAlchemy's 'close' pool event",
}


_live: weakref.WeakSet[PPPPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A fork may have caught a pool's start lock held by another thread: renew it."""
    for pool in list(_live):
        pool._start_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Generation:
    """One ppp Pool and the bridge's count of the records idle in it.

    ``dispose()`` and a fork start a new generation; records remember theirs."""

    __slots__ = ("idle", "lock", "pid", "pool")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle = 0
        self.pid = _getpid()
        self.pool: Any = None


class PPPPool(_SAPool):
    """A SQLAlchemy connection pool backed by a ppp Pool (see the module's docstring)."""

    _is_asyncio = False
    _sqla_logger_namespace = "sqlalchemy.pool.impl.PPPPool"

    def __init__(
        self,
        creator: _CreatorFnType | _CreatorWRecFnType,
        pool_size: int = 5,
        max_overflow: int = 10,
        timeout: float = 30.0,
        use_lifo: bool = True,
        ppp_pool_class: Any = None,
        ppp_kwargs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        _SAPool.__init__(self, creator, **kw)
        for name, value in (("pool_size", pool_size), ("max_overflow", max_overflow)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise exc.ArgumentError(f"{name} must be an int, got {value!r}")
        if pool_size < 0:
            raise exc.ArgumentError(f"pool_size must be >= 0, got {pool_size}")
        options = dict(ppp_kwargs or {})
        for key in options:
            if key in OWN:
                raise exc.ArgumentError(f"ppp_kwargs: {key!r} is the bridge's own: {OWN[key]}")
            if key not in PASSED:
                raise exc.ArgumentError(
                    f"ppp_kwargs: unknown ppp Pool parameter {key!r} "
                    f"(passed through: {', '.join(sorted(PASSED))})"
                )
        min_size = options.setdefault("min_size", 0)
        if pool_size and isinstance(min_size, int) and min_size > pool_size:
            raise exc.ArgumentError(
                f"ppp_kwargs: min_size ({min_size}) must not exceed pool_size ({pool_size})"
            )
        self._size = pool_size
        self._max_overflow = -1 if pool_size == 0 else max_overflow
        self._max_size = 0 if self._max_overflow < 0 else pool_size + max(self._max_overflow, 0)
        self._timeout = timeout
        self._use_lifo = use_lifo
        if not use_lifo:
            self.logger.info("use_lifo=False does not apply: ppp hands out idle connections LIFO")
        self._ppp_pool_class = ppp.Pool if ppp_pool_class is None else ppp_pool_class
        self._ppp_kwargs = dict(ppp_kwargs or {})
        self._options = self._wrap_hooks(options)
        self._start_lock = threading.Lock()
        self._gen: _Generation | None = None
        _live.add(self)
        if not min_size:  # no connection is made: check ppp's parameters now
            self._gen = self._new_generation()

    # ------------------------------------------------------------ the ppp Pool

    def _wrap_hooks(self, options: dict[str, Any]) -> dict[str, Any]:
        """ppp hooks see the record; the user's take the DB-API connection."""
        health = options.get("health")
        if health is True:
            if not hasattr(self._dialect, "do_ping"):
                raise exc.ArgumentError(
                    "ppp_kwargs: health=True pings with the dialect's do_ping: "
                    "create the pool with create_engine(), or pass dialect="
                )
            options["health"] = self._ping
        elif callable(health):
            options["health"] = lambda rec, f=health: (
                rec.dbapi_connection is None or f(rec.dbapi_connection)
            )
        for name in ("stats", "tracer"):
            hook = options.get(name)
            if callable(hook):
                options[name] = lambda rec, f=hook: f(rec.dbapi_connection)
        options.setdefault("tracer", lambda rec: repr(rec.dbapi_connection))
        return options

    def _ping(self, rec: ConnectionPoolEntry) -> bool:
        """``health=True``: the dialect's ping, as ``pool_pre_ping`` does, then a rollback
        (the ping may have begun a transaction on an idle connection)."""
        conn = rec.dbapi_connection
        if conn is None:  # invalidated: reconnects at its next checkout
            return True
        dialect: Any = self._dialect
        if not dialect._do_ping_w_event(conn):
            return False
        dialect.do_rollback(conn)
        return True

    def _new_generation(self) -> _Generation:
        gen = _Generation()

        def fun(n: int) -> ConnectionPoolEntry:
            rec = self._create_connection()
            r: Any = rec  # the bridge keeps _ppp_gen and _ppp_state on records
            r._ppp_gen = gen
            with gen.lock:
                r._ppp_state = _IDLE
                gen.idle += 1
            return rec

        gen.pool = self._ppp_pool_class(
            fun, max_size=self._max_size, timeout=None, closer=self._closer, **self._options
        )
        return gen

    def _start(self) -> _Generation:
        """The current generation, started now if there is none (or this is a forked child)."""
        with self._start_lock:
            gen = self._gen
            if gen is None or gen.pid != _getpid():
                gen = self._gen = self._new_generation()
            return gen

    def _closer(self, rec: ConnectionPoolEntry) -> None:
        """ppp's ``closer``: close a record ppp retired, unless SQLAlchemy still holds it."""
        r: Any = rec  # the bridge keeps _ppp_gen and _ppp_state on records
        gen: _Generation = r._ppp_gen
        if gen.pid != _getpid():  # never close a connection a parent process made
            return
        with gen.lock:
            state = r._ppp_state
            if state == _HELD:  # killed after max_using_delay_kill: closed when it comes back
                r._ppp_state = _KILLED
                return
            if state == _IDLE:
                gen.idle -= 1
            r._ppp_state = _GONE
        rec.close()

    # ------------------------------------------------------------ SQLAlchemy's hooks

    def _do_get(self) -> ConnectionPoolEntry:
        while True:
            gen = self._gen
            if gen is None or gen.pid != _getpid():
                gen = self._start()
            try:
                rec = gen.pool.get(self._timeout)
            except ppp.TimeOut:
                raise exc.TimeoutError(
                    f"PPPPool limit of size {self._size} overflow {self._max_overflow} "
                    f"reached, connection timed out, timeout {self._timeout:0.2f}",
                    code="3o7r",
                ) from None
            except ppp.PoolException:
                if self._gen is not gen:  # disposed while waiting: on to the next ppp Pool
                    continue
                raise
            r: Any = rec  # the bridge keeps _ppp_gen and _ppp_state on records
            with gen.lock:
                if r._ppp_state == _IDLE:
                    gen.idle -= 1
                r._ppp_state = _HELD
            return r  # type: ignore[no-any-return]

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        r: Any = record
        gen: _Generation = r._ppp_gen
        if gen.pid != _getpid():  # checked out before a fork: the parent's, left alone
            return
        size = self._size
        with gen.lock:
            state = r._ppp_state
            keep = state == _HELD and (not size or gen.idle < size)
            if keep:
                r._ppp_state = _IDLE
                gen.idle += 1
            elif state == _HELD:  # pool_size connections idle already: close this one
                r._ppp_state = _DROP
            else:  # killed by ppp while held: closed now
                r._ppp_state = _GONE
        if keep:
            gen.pool.ret(record)
        elif state == _HELD:
            # closed before its slot is freed, so that no new connection is made while
            # it is still open (QueuePool too closes an overflow one, then frees its slot)
            try:
                record.close()
            finally:
                gen.pool.discard(record)
        elif state == _KILLED:
            record.close()

    def recreate(self) -> PPPPool:
        self.logger.info("Pool recreating")
        return self.__class__(
            self._creator,
            pool_size=self._size,
            max_overflow=self._max_overflow,
            timeout=self._timeout,
            use_lifo=self._use_lifo,
            ppp_pool_class=self._ppp_pool_class,
            ppp_kwargs=self._ppp_kwargs,
            pre_ping=self._pre_ping,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            _dispatch=self.dispatch,
            dialect=self._dialect,
        )

    def dispose(self) -> None:
        """Close the idle connections and shut the ppp Pool down; connections in use
        are closed when they come back.  The next checkout starts a new ppp Pool."""
        with self._start_lock:
            gen, self._gen = self._gen, None
        if gen is not None and gen.pid == _getpid():
            gen.pool.shutdown()
        self.logger.info("Pool disposed. %s", self.status())

    # ------------------------------------------------------------ figures

    @property
    def ppp_pool(self) -> Any:
        """The ppp Pool in use now (``None`` before the first checkout after ``dispose``)."""
        gen = self._gen
        return None if gen is None else gen.pool

    def ppp_stats(self) -> dict[str, Any] | None:
        """The ppp Pool's ``stats()``: waits, timeouts, uses, retirements, every connection."""
        pool = self.ppp_pool
        return None if pool is None else pool.stats()

    def _figures(self) -> dict[str, Any]:
        stats = self.ppp_stats()
        if stats is None:
            return {"navail": 0, "nusing": 0, "nobjs": 0, "npending": 0, "nwaiting": 0}
        return stats

    def status(self) -> str:
        s = self._figures()
        overflow = s["nobjs"] + s["npending"] - self._size if self._size else 0
        twin = getattr(self._ppp_pool_class, "_backend", "?")
        return (
            f"Pool size: {self.size()}  Connections in pool: {s['navail']} "
            f"Current Overflow: {overflow} Current Checked out "
            f"connections: {s['nusing']} Waiting: {s['nwaiting']} (ppp {twin})"
        )

    def size(self) -> int:
        return self._size

    def timeout(self) -> float:
        return self._timeout

    def checkedin(self) -> int:
        return int(self._figures()["navail"])

    def overflow(self) -> int:
        s = self._figures()
        return int(s["nobjs"] + s["npending"] - self._size) if self._size else 0

    def checkedout(self) -> int:
        return int(self._figures()["nusing"])
