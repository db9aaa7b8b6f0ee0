"""Concurrency: many threads, many rounds, invariants checked every round."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ppp import TimeOut

THREADS = 32
ROUNDS = 12
PAIRS = 150


@pytest.fixture(autouse=True)
def fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


class Holders:
    """Who holds what: fails on an object handed to two holders at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: set[int] = set()
        self.peak = 0
        self.errors: list[str] = []

    def take(self, obj: Any) -> None:
        with self.lock:
            if id(obj) in self.held:
                self.errors.append(f"object {obj!r} handed out twice")
            self.held.add(id(obj))
            self.peak = max(self.peak, len(self.held))

    def give(self, obj: Any) -> None:
        with self.lock:
            self.held.discard(id(obj))


def run_threads(target: Any, n: int = THREADS) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "deadlock: a worker did not finish"


@pytest.mark.parametrize("max_size", [1, 4, 16])
def test_rounds_of_contention(Pool: Any, max_size: int) -> None:
    made: list[int] = []
    made_lock = threading.Lock()

    def fun(n: int) -> list[int]:
        with made_lock:
            made.append(n)
        return [n]

    pool = Pool(fun, max_size=max_size, min_size=0, timeout=30)
    holders = Holders()
    expected_uses = 0
    for _ in range(ROUNDS):

        def worker(i: int) -> None:
            rng = random.Random(i)
            for _ in range(PAIRS):
                obj = pool.get()
                holders.take(obj)
                if rng.random() < 0.1:
                    sum(range(50))  # a little work while holding
                holders.give(obj)
                pool.ret(obj)

        run_threads(worker)
        expected_uses += THREADS * PAIRS
        s = pool.stats()
        assert holders.errors == []
        assert holders.peak <= max_size
        assert s["nusing"] == 0 and s["npending"] == 0 and s["nwaiting"] == 0
        assert s["navail"] == s["nobjs"] <= max_size
        assert s["nuses"] == s["nreturns"] == expected_uses
        assert s["ntimeouts"] == 0 and s["nbad_returns"] == 0
        assert sorted(made) == list(range(len(made))) == list(range(s["ncreated"]))


def test_creation_numbers_unique_under_threads(Pool: Any) -> None:
    seen: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def fun(n: int) -> list[int]:
        with lock:
            seen.append(n)
        return [n]

    pool = Pool(fun, min_size=0)
    got: list[Any] = []

    def worker(i: int) -> None:
        barrier.wait()
        o = pool.get()
        with lock:
            got.append(o)

    run_threads(worker)
    assert sorted(seen) == list(range(THREADS))
    assert len({id(o) for o in got}) == THREADS


def test_fun_runs_outside_the_lock(Pool: Any) -> None:
    entered = threading.Event()
    release = threading.Event()

    def fun(n: int) -> list[int]:
        if n == 1:
            entered.set()
            release.wait(30)
        return [n]

    pool = Pool(fun, min_size=1, max_size=4)
    a = pool.get()
    slow = threading.Thread(target=pool.get)  # must create #1: blocks inside fun
    slow.start()
    assert entered.wait(10)
    # while fun(1) runs, the pool keeps serving others
    pool.ret(a)
    assert pool.get(timeout=0) is a
    s = pool.stats()
    assert s["npending"] == 1 and s["nusing"] == 1
    pool.ret(a)
    release.set()
    slow.join(10)
    assert pool.stats()["nobjs"] == 2


def test_timeouts_under_contention_lose_nothing(Pool: Any) -> None:
    pool = Pool(lambda n: [n], max_size=2, min_size=0)
    holders = Holders()
    timeouts = [0] * 16
    gets = [0] * 16

    def worker(i: int) -> None:
        rng = random.Random(i)
        for _ in range(200):
            try:
                obj = pool.get(timeout=rng.choice([0, 0.0001, 0.001]))
            except TimeOut:
                timeouts[i] += 1
                continue
            gets[i] += 1
            holders.take(obj)
            holders.give(obj)
            pool.ret(obj)

    for _ in range(5):
        run_threads(worker, 16)
        s = pool.stats()
        assert holders.errors == []
        assert s["nusing"] == 0 and s["nwaiting"] == 0 and s["npending"] == 0
        assert s["navail"] == s["nobjs"] <= 2
        assert s["ntimeouts"] == sum(timeouts)
        assert s["nuses"] == s["nreturns"] == sum(gets)


def test_failing_and_retiring_objects_under_threads(Pool: Any) -> None:
    lock = threading.Lock()
    closed: list[Any] = []

    def fun(n: int) -> list[int]:
        if n % 3 == 1:
            raise OSError(f"creation {n} failed")
        return [n]

    def closer(o: Any) -> None:
        with lock:
            closed.append(o)

    pool = Pool(fun, max_size=4, min_size=0, max_use=5, closer=closer, timeout=30)
    holders = Holders()
    errors = [0] * THREADS

    def worker(i: int) -> None:
        for _ in range(100):
            try:
                obj = pool.get()
            except OSError:
                errors[i] += 1
                continue
            holders.take(obj)
            holders.give(obj)
            pool.ret(obj)

    for _ in range(4):
        run_threads(worker)
        s = pool.stats()
        assert holders.errors == []
        assert s["nusing"] == 0 and s["npending"] == 0 and s["nwaiting"] == 0
        assert s["nobjs"] <= 4
        assert s["ncreating"] == s["ncreated"] + sum(errors)
        assert s["ncreated"] == s["nobjs"] + len(closed) == s["nobjs"] + s["ndestroys"]
        assert s["nwornout"] == len(closed)
