"""Request-scoped return for WSGI: pooled objects go back at the end of each request.

A per-thread pooled ``Proxy`` (``THREAD``, ``VERSATILE``) keeps its object until
``_ret_obj()`` or the end of the thread.  Servers that keep their threads
(gunicorn ``gthread``, waitress, uWSGI threads, a ``ThreadPoolExecutor``) would
hold a forgotten object for the thread's whole life, inside whatever
transaction it left open.  ``RequestScope`` wraps the WSGI application and
calls ``_ret_obj()`` on the given proxies when the request is over::

    from ppp.wsgi import RequestScope

    application = RequestScope(application, db)

When a request is over, in the thread where that happens:

- the response iterable was closed (PEP 3333: the server calls ``close()``
  after sending it, after an error while sending it, and when it sends no
  body at all): the application's own ``close()`` runs first (Flask runs its
  streamed ``teardown_request`` there), then the objects go back;
- the application raised instead of returning a response;
- the response is a ``wsgi.file_wrapper`` (a file the server sends itself):
  no application code runs while it is sent, so the objects go back at once;
- the server dropped the response without closing it (a server bug): when it
  is freed in the thread that called the application, before that thread
  starts another request through this middleware.

The server thread that called the application is the one that holds the
objects, and a proxy can only give back the calling thread's object
(``_ret_obj()`` acts on the current thread).  Every mainstream WSGI server
(gunicorn, waitress, werkzeug, uWSGI, mod_wsgi, wsgiref) calls the application,
iterates the response and closes it in one thread.  A server that closes the
response in another thread gets that thread's objects back; the calling
thread's stay with it until its next request through the middleware ends or it
exits, and a warning (once per middleware) says so.  Returning at the end of
the application call instead would be wrong for streamed responses: a
generator that reads a cursor of the request's connection would read it after
the connection went back to the pool, maybe to another thread.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["RequestScope", "Returnable"]

log = logging.getLogger("ppp")


class Returnable(Protocol):
    """What the middleware gives back through: a ``ppp.Proxy`` (any object with
    ``_ret_obj()`` returning the current thread's object)."""

    def _ret_obj(self) -> None: ...


def _check_proxies(proxies: tuple[Returnable, ...]) -> tuple[Returnable, ...]:
    for proxy in proxies:
        if not callable(getattr(proxy, "_ret_obj", None)):
            raise TypeError(
                f"expected ppp.Proxy objects (with _ret_obj), got {type(proxy).__name__}"
            )
    return tuple(proxies)


def release(proxies: Iterable[Returnable]) -> None:
    """Give back the current thread's objects of ``proxies`` (``_ret_obj()`` on
    each); a failure is logged and the others are still given back."""
    for proxy in proxies:
        try:
            proxy._ret_obj()
        except Exception:
            # object.__repr__: the proxy's own repr would forward, maybe borrow
            log.exception("request scope: giving back through %s failed", object.__repr__(proxy))


class RequestScope:
    """WSGI middleware: ``RequestScope(app, *proxies)`` calls ``_ret_obj()`` on each
    proxy at the end of every request, in the request's thread, whether or not the
    application did (see the module's documentation for exactly when)."""

    __slots__ = ("_local", "_warned", "app", "proxies")

    def __init__(self, app: WSGIApplication, *proxies: Returnable) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI application, got {type(app).__name__}")
        self.app = app
        self.proxies = _check_proxies(proxies)
        self._local = threading.local()  # ``request``: the token of the thread's request
        self._warned = False

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        token = object()
        self._local.request = token
        try:
            result = self.app(environ, start_response)
        except BaseException:
            self.release()
            raise
        wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(wrapper, type) and isinstance(result, wrapper):
            self.release()  # a file the server sends: no application code runs any more
            return result
        kind = _SizedResponse if hasattr(result, "__len__") else _Response
        return kind(self, result, token)

    def release(self) -> None:
        """Give back the current thread's objects now (``_ret_obj()`` on each proxy)."""
        release(self.proxies)

    def _closed_in(self, thread: int) -> None:
        """The response of a request that ``thread`` called the application for is
        closed in the current thread."""
        self.release()
        if thread != threading.get_ident() and not self._warned:
            self._warned = True
            log.warning(
                "request scope: a response was closed in thread %d, but the application "
                "ran in thread %d; that thread's pooled objects stay with it until its "
                "next request through this middleware ends, or it exits",
                threading.get_ident(),
                thread,
            )

    def __repr__(self) -> str:
        proxies = "".join(f", {object.__repr__(proxy)}" for proxy in self.proxies)
        return f"RequestScope({self.app!r}{proxies})"


class _Response:
    """The application's response iterable, with a ``close()`` that gives the
    objects back after the application's own ``close()``.  Iterating it iterates
    the application's iterable directly: no cost per chunk."""

    __slots__ = ("_closed", "_result", "_scope", "_thread", "_token")

    def __init__(self, scope: RequestScope, result: Iterable[bytes], token: object) -> None:
        self._scope = scope
        self._result = result
        self._thread = threading.get_ident()
        self._token = token
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        """Close the application's iterable, then give the objects back (once)."""
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._scope._closed_in(self._thread)

    def __del__(self) -> None:
        # a server that never closed the response: give back from the calling
        # thread only, and only while it has not started another request
        if self._closed or sys.is_finalizing() or threading.get_ident() != self._thread:
            return
        if getattr(self._scope._local, "request", None) is not self._token:
            return
        try:
            self.close()
        except Exception:
            log.exception("request scope: closing a response the server dropped failed")


class _SizedResponse(_Response):
    """A response whose iterable has a length (a list): servers such as waitress
    set ``Content-Length`` from a one-item list, so the length shows through."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]
