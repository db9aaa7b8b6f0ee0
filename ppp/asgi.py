"""Request-scoped return for ASGI, for ``VERSATILE`` proxies.

``AsyncRequestScope(app, *proxies)`` awaits the ASGI application and then calls
``_ret_obj()`` on each proxy, in the task that ran the request, errors and
cancellation included::

    from ppp.asgi import AsyncRequestScope

    db = ppp.Proxy(scope=ppp.Proxy.Scope.VERSATILE, max_size=4)
    app = AsyncRequestScope(app, db)

Only ``VERSATILE`` proxies are accepted: they hold one object per asyncio task,
so the request's task gives back its own object.  A ``THREAD`` proxy holds one
object for the whole event-loop thread, shared by every request in flight:
giving it back at the end of one request would take it from the others.
A task that ends holding an object gives it back anyway (``VERSATILE``'s
end-of-task return); the middleware matters where a server runs several
requests in one task, and makes the return happen as soon as the application
is done.  Work the application hands to other tasks or threads holds its own
objects, returned when those end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .proxy import Scope
from .wsgi import Returnable, _check_proxies, release

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]
    ASGIApp = Callable[[MutableMapping[str, Any], ASGIReceive, ASGISend], Awaitable[None]]

__all__ = ["AsyncRequestScope"]


class AsyncRequestScope:
    """ASGI middleware: ``AsyncRequestScope(app, *proxies)`` gives back the request
    task's objects of ``VERSATILE`` ``proxies`` when the application returns or
    raises."""

    __slots__ = ("app", "proxies")

    def __init__(self, app: ASGIApp, *proxies: Returnable) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {type(app).__name__}")
        checked = _check_proxies(proxies)
        for proxy in checked:
            scope = getattr(proxy, "_scope", None)
            if scope is not Scope.VERSATILE:
                raise ValueError(
                    "AsyncRequestScope needs proxies with scope=Proxy.Scope.VERSATILE "
                    f"(one object per task), got scope {getattr(scope, 'name', scope)}"
                )
        self.app = app
        self.proxies = checked

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            release(self.proxies)
