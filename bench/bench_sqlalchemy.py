"""SQLAlchemy pools: ``ppp.sqlalchemy.PPPPool`` on each twin beside SQLAlchemy's ``QueuePool``.

Both pools hand out benchkit's stand-in DB-API connections (no database: what
is timed is the pool, SQLAlchemy's connection fairy and its events included),
with ``reset_on_return=None`` and ``max_overflow=0``.  ``QueuePool`` is each
group's reference; a ``PPPPool`` round is paired with a ``QueuePool`` round
timed just before it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, cast

import pytest
from benchkit import (
    WORKS,
    Face,
    Maker,
    contended_round,
    measure_loop,
    pair_loop,
    run_contended,
    scaled,
    tag,
)

sqlalchemy = pytest.importorskip(
    "sqlalchemy", reason="SQLAlchemy is not installed (pip install .[bench]): skipped"
)

from sqlalchemy.pool import QueuePool  # noqa: E402
from sqlalchemy.pool.base import _ConnectionFairy  # noqa: E402

from ppp.sqlalchemy import PPPPool  # noqa: E402

SIZE = 8


def _face(impl: str, label: str, size: int, pool: Any, maker: Maker) -> Face:
    def check_pool() -> None:
        assert pool.checkedout() == 0, pool.status()

    return Face(
        impl,
        label,
        size,
        maker,
        pool,
        pool.connect,
        _ConnectionFairy.close,
        pool.connect,
        pool.dispose,
        check_pool,
        key=lambda c: id(c.dbapi_connection),
    )


def queuepool_face(size: int) -> Face:
    maker = Maker()
    pool = QueuePool(
        cast(Any, maker), pool_size=size, max_overflow=0, timeout=30.0, reset_on_return=None
    )
    return _face("SQLAlchemy", "SQLAlchemy QueuePool", size, pool, maker)


def pppool_face(backend: ModuleType, size: int) -> Face:
    maker = Maker()
    pool = PPPPool(
        cast(Any, maker),
        pool_size=size,
        max_overflow=0,
        timeout=30.0,
        reset_on_return=None,
        ppp_pool_class=backend.Pool,
    )
    twin = backend.Pool._backend
    label = "PPPPool, ppp compiled" if twin == "cython" else "PPPPool, ppp pure"
    return _face(f"ppp-{twin}", label, size, pool, maker)


# ------------------------------------------------------- checkout+checkin, 1 thread


def test_sa_pair_peer(benchmark: Any) -> None:
    face = queuepool_face(SIZE)
    try:
        measure_loop(
            benchmark,
            pair_loop,
            (face.get, face.ret),
            "sqlalchemy-pair",
            face.impl,
            face.label,
            True,
        )
        face.check()
    finally:
        face.close()


def test_sa_pair_ppp(benchmark: Any, backend: ModuleType) -> None:
    face = pppool_face(backend, SIZE)
    ref = queuepool_face(SIZE)
    try:
        measure_loop(
            benchmark,
            pair_loop,
            (face.get, face.ret),
            "sqlalchemy-pair",
            face.impl,
            face.label,
            False,
            (pair_loop, (ref.get, ref.ret)),
        )
        face.check()
        ref.check()
    finally:
        face.close()
        ref.close()


# ------------------------------------------------------------ contended, N threads

CONTENDED_PAIRS = 8_000  # pairs per round, over all threads
CONTENDED_ROUNDS = 15  # unpaired: more rounds for a steadier median on a noisy machine


def _measure_contended(benchmark: Any, face: Face, nthreads: int) -> None:
    pairs = scaled(benchmark, CONTENDED_PAIRS, 2 * nthreads) // nthreads * nthreads
    group = f"sqlalchemy-contended-{nthreads}"
    tag(benchmark, group, face.impl, face.label, pairs, ref=face.impl == "SQLAlchemy")
    try:
        benchmark.pedantic(
            run_contended,
            setup=lambda: contended_round(face, nthreads, pairs, WORKS["cpu"]),
            rounds=CONTENDED_ROUNDS,
            warmup_rounds=1,
        )
        if face.impl.startswith("ppp-"):
            s = face.pool.ppp_stats()
            benchmark.extra_info["note"] = f"{s['nwaits'] / max(s['nuses'], 1):.0%} of gets waited"
    finally:
        face.close()


@pytest.mark.parametrize("nthreads", [8, 32])
def test_sa_contended_peer(benchmark: Any, nthreads: int) -> None:
    _measure_contended(benchmark, queuepool_face(nthreads // 2), nthreads)


@pytest.mark.parametrize("nthreads", [8, 32])
def test_sa_contended_ppp(benchmark: Any, backend: ModuleType, nthreads: int) -> None:
    _measure_contended(benchmark, pppool_face(backend, nthreads // 2), nthreads)
