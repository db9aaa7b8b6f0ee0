"""Request-scoped return (``ppp.wsgi.RequestScope``, ``ppp.flask.PoolReturn``,
``ppp.asgi.AsyncRequestScope``) on both twins.

The handlers never call ``_ret_obj()``; the pool has one object
(``max_size=1``), so an object kept past a request would make every other
server thread wait.  The servers keep their threads (a werkzeug server on a
thread pool, as gunicorn ``gthread`` and waitress do): only the middleware can
give the object back.  Each connection object checks that no thread begins on
it while another thread's transaction is open (``retter`` rolls back).
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("werkzeug")
pytest.importorskip("flask")

import flask  # noqa: E402
from werkzeug.serving import BaseWSGIServer  # noqa: E402
from werkzeug.test import Client  # noqa: E402

from ppp import proxy as proxy_module  # noqa: E402
from ppp.asgi import AsyncRequestScope  # noqa: E402
from ppp.flask import PoolReturn  # noqa: E402
from ppp.wsgi import RequestScope  # noqa: E402

DEADLINE = 30.0


def no_headers(*args: Any) -> Any:
    """A start_response for direct calls."""


def wait_for(what: str, check: Callable[[], bool], limit: float = DEADLINE) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


class Conn:
    """A connection with a transaction: ``begin`` opens it, ``rollback`` (the
    pool's ``retter``) closes it; a thread beginning on another thread's open
    transaction is recorded as an error."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.lock = threading.Lock()
        self.owner: int | None = None
        self.uses = 0
        self.errors: list[str] = []

    def begin(self) -> int:
        me = threading.get_ident()
        with self.lock:
            if self.owner not in (None, me):
                self.errors.append(f"thread {me} began inside thread {self.owner}'s transaction")
            self.owner = me
            self.uses += 1
        return self.n

    def rollback(self) -> None:
        with self.lock:
            self.owner = None


class Env:
    """A pooled THREAD proxy (max_size=1) over the twin under test."""

    def __init__(self, backend: ModuleType, scope: Any = None, max_size: int = 1) -> None:
        self.made: list[Conn] = []
        cls = proxy_module._for_twin(backend)
        kwargs: dict[str, Any] = {} if scope is None else {"scope": scope}
        self.db: Any = cls(
            fun=self.make,
            max_size=max_size,
            min_size=0,
            timeout=DEADLINE,
            retter=lambda conn: conn.rollback(),
            **kwargs,
        )

    def make(self, n: int) -> Conn:
        conn = Conn(n)
        self.made.append(conn)
        return conn

    @property
    def pool(self) -> Any:
        return self.db._pool

    def nusing(self) -> int:
        return int(self.pool.stats()["nusing"])

    def errors(self) -> list[str]:
        return [e for conn in self.made for e in conn.errors]

    def check_done(self) -> None:
        wait_for("the object back in the pool", lambda: self.nusing() == 0)
        stats = self.pool.stats()
        assert stats["nuses"] == stats["nreturns"], stats
        assert self.errors() == []


@pytest.fixture
def env(backend: ModuleType) -> Iterator[Env]:
    env = Env(backend)
    yield env
    env.pool.shutdown()


# ------------------------------------------------------------------ a plain WSGI app


class Failing(Exception):
    pass


def forgetful_app(env: Env) -> Callable[..., Iterable[bytes]]:
    """A WSGI app whose handlers use ``db`` and never give it back."""
    db = env.db

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/boom":
            db.begin()
            raise Failing("the application failed")
        start_response("200 OK", [("Content-Type", "text/plain")])
        if path == "/row":
            return [b"row %d" % db.begin()]
        if path in ("/stream", "/stream-boom"):
            conn = db._get_obj()  # a cursor-like handle taken during the call

            def body() -> Iterator[bytes]:
                for i in range(3):
                    assert db._get_obj() is conn  # still this request's object
                    yield b"chunk %d of %d\n" % (i, conn.begin())
                    if path == "/stream-boom":
                        raise Failing("the body failed")

            return body()
        raise AssertionError(path)

    return app


def test_client_requests_give_back(env: Env) -> None:
    app = RequestScope(forgetful_app(env), env.db)
    client = Client(app)
    for i in range(20):
        response = client.get("/row" if i % 2 else "/stream")
        assert env.nusing() == 1  # the response is not closed yet: still held
        assert response.status_code == 200 and response.get_data()
        response.close()
        assert env.nusing() == 0
    assert env.made and len(env.made) == 1
    env.check_done()


def test_length_shows_through(env: Env) -> None:
    app = RequestScope(forgetful_app(env), env.db)
    listed = app({"PATH_INFO": "/row"}, no_headers)
    assert len(listed) == 1  # type: ignore[arg-type]  # servers use it for Content-Length
    listed.close()  # type: ignore[attr-defined]
    streamed = app({"PATH_INFO": "/stream"}, no_headers)
    assert not hasattr(streamed, "__len__")
    streamed.close()  # type: ignore[attr-defined]
    env.check_done()


def test_errors_give_back(env: Env) -> None:
    app = RequestScope(forgetful_app(env), env.db)
    environ = {"PATH_INFO": "/boom", "REQUEST_METHOD": "GET"}
    with pytest.raises(Failing):
        app(environ, no_headers)
    assert env.nusing() == 0
    # an error while the server iterates: PEP 3333 servers close anyway
    result = app({"PATH_INFO": "/stream-boom"}, no_headers)
    chunks = []
    with pytest.raises(Failing):
        try:
            for chunk in result:
                chunks.append(chunk)
        finally:
            result.close()  # type: ignore[attr-defined]
    assert len(chunks) == 1 and env.nusing() == 0
    env.check_done()


def test_never_iterated(env: Env) -> None:
    app = RequestScope(forgetful_app(env), env.db)
    # closed without being iterated (HEAD, client gone)
    result = app({"PATH_INFO": "/stream"}, no_headers)
    assert env.nusing() == 1
    result.close()  # type: ignore[attr-defined]
    assert env.nusing() == 0
    result.close()  # type: ignore[attr-defined]  # twice: nothing more
    # dropped without close (a server bug): freed in the calling thread
    result = app({"PATH_INFO": "/row"}, no_headers)
    assert env.nusing() == 1
    del result
    assert env.nusing() == 0
    # dropped after the thread began another request: that request keeps it
    old = app({"PATH_INFO": "/row"}, no_headers)
    new = app({"PATH_INFO": "/row"}, no_headers)
    del old
    assert env.nusing() == 1
    new.close()  # type: ignore[attr-defined]
    env.check_done()


def test_file_wrapper_gives_back_at_once(env: Env) -> None:
    class FileWrapper:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def __iter__(self) -> Iterator[bytes]:
            return iter([self.data])

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        env.db.begin()
        return environ["wsgi.file_wrapper"](b"file")

    scoped = RequestScope(app, env.db)
    result = scoped({"wsgi.file_wrapper": FileWrapper}, no_headers)
    assert isinstance(result, FileWrapper)  # untouched: the server may sendfile it
    assert env.nusing() == 0
    env.check_done()


def test_closed_in_another_thread(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ppp")
    app = RequestScope(forgetful_app(env), env.db)
    with ThreadPoolExecutor(1) as caller, ThreadPoolExecutor(1) as closer:
        result = caller.submit(app, {"PATH_INFO": "/row"}, no_headers).result()
        closer.submit(result.close).result()  # type: ignore[attr-defined]
        # the caller's object cannot be given back from another thread
        assert env.nusing() == 1
        assert "closed in thread" in caplog.text
        # the caller's next request through the middleware gives it back
        again = caller.submit(app, {"PATH_INFO": "/row"}, no_headers).result()
        caller.submit(again.close).result()  # type: ignore[attr-defined]
        assert env.nusing() == 0
    assert caplog.text.count("closed in thread") == 1
    env.check_done()


def test_a_failing_return_is_logged_and_the_others_still_go_back(
    backend: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = Env(backend), Env(backend)

    class Broken:
        def _ret_obj(self) -> None:
            raise RuntimeError("cannot give back")

    app = RequestScope(forgetful_app(first), first.db, Broken(), second.db)
    assert "Broken object at" in repr(app) and first.nusing() == 0  # repr borrows nothing
    try:
        second.db.begin()
        result = app({"PATH_INFO": "/row"}, no_headers)
        result.close()  # type: ignore[attr-defined]
        assert "giving back through" in caplog.text and "Broken" in caplog.text
        first.check_done()
        second.check_done()
    finally:
        first.pool.shutdown()
        second.pool.shutdown()


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="WSGI application"):
        RequestScope(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="_ret_obj"):
        RequestScope(forgetful_app, object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="_ret_obj"):
        PoolReturn(None, object())  # type: ignore[arg-type]


# ------------------------------------------------------------------ a Flask app


def forgetful_flask(env: Env, install: Callable[[Any], None]) -> flask.Flask:
    db = env.db
    app = flask.Flask(__name__)
    install(app)

    @app.get("/row")
    def row() -> Any:
        return {"n": db.begin()}

    @app.get("/stream")
    def stream() -> Any:
        def body() -> Iterator[str]:
            for i in range(3):
                yield f"{i}:{db.begin()}\n"

        return flask.Response(flask.stream_with_context(body()), mimetype="text/plain")

    @app.get("/stream-plain")
    def stream_plain() -> Any:
        conn = db._get_obj()  # read during the body, after Flask's teardown

        def body() -> Iterator[str]:
            for i in range(3):
                assert db._get_obj() is conn
                yield f"{i}:{conn.begin()}\n"

        return flask.Response(body(), mimetype="text/plain")

    @app.get("/boom")
    def boom() -> Any:
        db.begin()
        raise Failing("the view failed")

    return app


INSTALLS: dict[str, Callable[[Env], Callable[[Any], None]]] = {
    "constructor": lambda env: lambda app: None if PoolReturn(app, env.db) else None,
    "init_app": lambda env: PoolReturn(None, env.db).init_app,
}


@pytest.mark.parametrize("install", sorted(INSTALLS))
def test_flask_with_test_client(env: Env, install: str) -> None:
    app = forgetful_flask(env, INSTALLS[install](env))
    client = app.test_client()
    for i in range(10):
        for path in ("/row", "/stream", "/stream-plain", "/boom"):
            with client.get(path) as response:
                assert response.status_code == (500 if path == "/boom" else 200), path
                assert response.get_data()
            assert env.nusing() == 0, (i, path)
    env.check_done()


def test_flask_streamed_body_keeps_its_object(env: Env) -> None:
    """Why not teardown_request: Flask pops the request context (and runs
    teardown_request) before a generator without stream_with_context runs."""
    torn_down: list[int] = []
    app = forgetful_flask(env, PoolReturn(None, env.db).init_app)
    app.teardown_request(lambda exc: torn_down.append(env.nusing()))
    client = app.test_client()
    response = client.get("/stream-plain")
    assert torn_down == [1]  # teardown ran, before the body was produced
    chunks: Iterator[bytes] = iter(response.response)  # type: ignore[arg-type]
    assert next(chunks).startswith(b"0:")
    assert env.nusing() == 1  # the body is still using it
    assert b"".join(chunks).startswith(b"1:")
    response.close()
    assert env.nusing() == 0
    env.check_done()


def test_flask_init_app_once_per_app(env: Env) -> None:
    ext = PoolReturn(None, env.db)
    app = flask.Flask(__name__)
    original = app.wsgi_app
    ext.init_app(app)
    wrapped = app.wsgi_app
    ext.init_app(app)
    assert app.wsgi_app is wrapped
    assert isinstance(wrapped, RequestScope) and wrapped.app == original
    assert app.extensions["ppp.pool_return"] == [ext]


# ------------------------------------------------------------------ a real server


class PooledWSGIServer(BaseWSGIServer):
    """werkzeug's server on a fixed pool of threads that serve request after
    request, as gunicorn gthread and waitress do."""

    multithread = True

    def __init__(self, app: Any, threads: int) -> None:
        super().__init__("127.0.0.1", 0, app)
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="wsgi-worker")
        self.lock = threading.Lock()
        self.finished = 0
        self.threads: set[int] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.executor.submit(self.work, request, client_address)

    def work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self.lock:
                self.finished += 1
                self.threads.add(threading.get_ident())

    def done(self) -> int:
        with self.lock:
            return self.finished


class Running:
    def __init__(self, app: Any, threads: int = 4) -> None:
        self.server = PooledWSGIServer(app, threads)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}
        )
        self.thread.start()

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(DEADLINE)
        self.server.executor.shutdown(wait=True)
        self.server.server_close()


def load(server: Running, paths: list[str], clients: int = 8, rounds: int = 15) -> None:
    failures: list[str] = []

    def client(k: int) -> None:
        for r in range(rounds):
            path = paths[(k + r) % len(paths)]
            status, body = server.get(path)
            if status != (500 if path == "/boom" else 200) or not body:
                failures.append(f"{path}: {status} {body[:80]!r}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE * 4)
        assert not t.is_alive(), "a client hung"
    assert failures == []


APPS: dict[str, Callable[[Env], Any]] = {
    "wsgi": lambda env: RequestScope(forgetful_app(env), env.db),
    "flask": lambda env: forgetful_flask(env, PoolReturn(None, env.db).init_app),
}


@pytest.mark.parametrize("kind", sorted(APPS))
def test_real_server_with_kept_threads(env: Env, kind: str) -> None:
    server = Running(APPS[kind](env))
    try:
        paths = ["/row", "/stream"] + (["/stream-plain", "/boom"] if kind == "flask" else [])
        for i in range(12):  # one at a time: back after every request
            path = paths[i % len(paths)]
            status, body = server.get(path)
            assert status == (500 if path == "/boom" else 200) and body
            finished = i + 1
            wait_for("the server to finish", lambda: server.server.done() == finished)  # noqa: B023
            assert env.nusing() == 0, path
        load(server, paths)  # many clients, one object
        wait_for("the server to finish", lambda: server.server.done() == 12 + 8 * 15)
        env.check_done()
        assert len(server.server.threads) <= 4  # the threads served many requests each
    finally:
        server.stop()
    assert len(env.made) == 1


def test_real_server_without_the_middleware_keeps_it(env: Env) -> None:
    """The control: the same server and app, unwrapped, keep the object."""
    server = Running(forgetful_app(env), threads=1)
    try:
        status, _ = server.get("/row")
        assert status == 200
        wait_for("the server to finish the request", lambda: server.server.done() == 1)
        assert env.nusing() == 1  # held by the idle server thread
    finally:
        server.stop()  # the thread ends: its object comes back
    env.check_done()


# ------------------------------------------------------------------ ASGI


def test_asgi_versatile(backend: ModuleType) -> None:
    env = Env(backend, scope=proxy_module.Scope.VERSATILE)
    db = env.db

    async def app(scope: Any, receive: Any, send: Any) -> None:
        n = db.begin()
        if scope["path"] == "/boom":
            raise Failing("the application failed")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % n})

    scoped = AsyncRequestScope(app, db)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    async def serve_in_one_task() -> None:  # a server running requests in one task
        for i in range(10):
            path = "/boom" if i % 3 == 0 else "/row"
            if path == "/boom":
                with pytest.raises(Failing):
                    await scoped({"type": "http", "path": path}, receive, send)
            else:
                await scoped({"type": "http", "path": path}, receive, send)
            assert env.nusing() == 0

    async def main() -> None:
        await asyncio.create_task(serve_in_one_task())

    try:
        asyncio.run(main())
        assert len(sent) == 2 * 6
        env.check_done()
    finally:
        env.pool.shutdown()


def test_asgi_refuses_thread_proxies(env: Env) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(ValueError, match="VERSATILE"):
        AsyncRequestScope(app, env.db)


# ------------------------------------------------------------------ metrics, served


def test_flask_serves_the_pool_metrics(env: Env) -> None:
    """A Flask app with PoolReturn serves ppp.prometheus at /metrics on the real
    server; after the load, the scrape agrees with stats()."""
    prometheus_client = pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from ppp.prometheus import PoolCollector

    registry = prometheus_client.CollectorRegistry()
    registry.register(PoolCollector({"db": env.db}))
    app = forgetful_flask(env, PoolReturn(None, env.db).init_app)

    @app.get("/metrics")
    def metrics() -> Any:
        return flask.Response(
            prometheus_client.generate_latest(registry),
            mimetype=prometheus_client.CONTENT_TYPE_LATEST,
        )

    server = Running(app)
    try:
        load(server, ["/row", "/stream", "/boom"], clients=6, rounds=10)
        wait_for("the server to finish", lambda: server.server.done() == 60)
        env.check_done()
        status, body = server.get("/metrics")
        assert status == 200
        stats = env.pool.stats()
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            if sample.labels.get("pool") == "db" and "quantile" not in sample.labels
        }
        assert samples["ppp_pool_gets_total"] == stats["nuses"] == 60
        assert samples["ppp_pool_returns_total"] == stats["nreturns"] == 60
        assert samples["ppp_pool_in_use"] == 0 and samples["ppp_pool_objects"] == 1
        assert samples["ppp_pool_waits_total"] == stats["nwaits"]
        assert samples["ppp_pool_wait_seconds_count"] == stats["nwaits"]
        assert samples["ppp_pool_timeouts_total"] == 0
    finally:
        server.stop()
