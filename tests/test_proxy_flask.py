"""The README's Flask example, run for real with Flask's test client.

The ``db.py`` and ``app.py`` blocks of the README's proxy section are written to a
temporary directory and imported as they are; ``ppp.Proxy`` is swapped for the
twin under test, so the example runs on both twins.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import ppp
from ppp import proxy as proxy_module

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE_MODULES = ("db", "app")


def readme_files() -> dict[str, str]:
    """The ``# name.py`` python blocks of the README's proxy section."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"<!-- section: proxy -->(.*?)<!-- end: proxy -->", text, re.S)
    assert section, "README has no proxy section"
    files = {}
    for block in re.findall(r"```python\n(.*?)```", section.group(1), re.S):
        first = block.splitlines()[0]
        match = re.fullmatch(r"# (\w+)\.py", first)
        if match:
            files[match.group(1)] = block
    return files


@pytest.fixture
def example(
    backend: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, ModuleType]]:
    files = readme_files()
    assert set(files) == set(EXAMPLE_MODULES)
    for name, code in files.items():
        (tmp_path / f"{name}.py").write_text(code, encoding="utf-8")
    monkeypatch.setattr(ppp, "Proxy", proxy_module._for_twin(backend))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in EXAMPLE_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    import app  # type: ignore[import-not-found]
    import db  # type: ignore[import-not-found]

    yield db, app
    if db.db._pool is not None:
        db.db._pool.shutdown()  # closes the idle connections
    for name in EXAMPLE_MODULES:
        sys.modules.pop(name, None)


def test_readme_example_with_test_client(
    backend: ModuleType, example: tuple[ModuleType, ModuleType], tmp_path: Path
) -> None:
    db_module, app_module = example
    db = db_module.db
    assert type(db) is proxy_module._for_twin(backend)
    assert db._pool is None  # nothing set before init_app
    flask_app = app_module.create_app(str(tmp_path / "hits.db"))
    pool: Any = db._pool
    assert type(pool) is backend.Pool and pool.stats()["max_size"] == 4
    assert pool.stats()["nusing"] == 0  # init_app's connection went back
    client = flask_app.test_client()
    for i in range(30):
        assert client.post(f"/hit/n{i}").get_json() == {"ok": True}
        assert pool.stats()["nusing"] == 0  # teardown_request gave it back
    assert client.get("/count").get_json() == {"count": 30}
    stats = pool.stats()
    assert stats["nusing"] == 0 and stats["nreturns"] == stats["nuses"] == 32
    assert stats["nobjs"] == 1  # one thread: one connection, reused


def test_readme_example_threaded(example: tuple[ModuleType, ModuleType], tmp_path: Path) -> None:
    """Eight request threads at once on a pool of four: teardown returns keep them
    all served, no timeouts, at most four connections."""
    db_module, app_module = example
    flask_app = app_module.create_app(str(tmp_path / "hits.db"))
    pool = db_module.db._pool
    failures: list[str] = []
    barrier = threading.Barrier(8)

    def client_thread(t: int) -> None:
        client = flask_app.test_client()
        barrier.wait()
        for i in range(15):
            response = client.post(f"/hit/t{t}-{i}")
            if response.status_code != 200:
                failures.append(f"{t}/{i}: {response.status_code}")

    threads = [threading.Thread(target=client_thread, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    client = flask_app.test_client()
    assert client.get("/count").get_json() == {"count": 120}
    stats: dict[str, Any] = pool.stats()
    assert stats["nusing"] == 0 and stats["ntimeouts"] == 0
    assert stats["nobjs"] <= 4 and stats["nreturns"] == stats["nuses"] == 1 + 120 + 1
