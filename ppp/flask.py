"""Flask integration: ``PoolReturn`` gives pooled objects back at the end of each request.

::

    from ppp.flask import PoolReturn

    pool_return = PoolReturn(None, db)   # db: a pooled ppp.Proxy

    def create_app():
        app = Flask(__name__)
        pool_return.init_app(app)        # or PoolReturn(app, db)
        return app

It wraps ``app.wsgi_app`` in ``ppp.wsgi.RequestScope`` rather than using
``teardown_request``: Flask runs ``teardown_request`` when the request context
is popped, which for a streamed response (a generator without
``stream_with_context``) is before the body is sent, so a generator reading
from the connection would read from one already back in the pool.  The
middleware gives the objects back when the server closes the response, after
the body was sent and after Flask's own teardown; it covers errors, aborted
requests and responses that are never iterated too (see ``ppp.wsgi``).  Flask
itself is not imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .wsgi import RequestScope, Returnable, _check_proxies

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["PoolReturn"]

EXTENSION = "ppp.pool_return"


class PoolReturn:
    """Flask extension, ``init_app`` style: ``PoolReturn(app=None, *proxies)``
    gives back the request thread's objects of ``proxies`` at the end of every
    request of each app it is installed on (once per app)."""

    def __init__(self, app: Flask | None = None, *proxies: Returnable) -> None:
        self.proxies = _check_proxies(proxies)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Install the request-scoped return on ``app`` (``app.wsgi_app`` wrapped in
        a ``RequestScope``); installing the same extension twice does nothing."""
        installed: list[PoolReturn] = app.extensions.setdefault(EXTENSION, [])
        if any(ext is self for ext in installed):
            return
        app.wsgi_app = RequestScope(app.wsgi_app, *self.proxies)  # type: ignore[method-assign]
        installed.append(self)
