"""``stats()`` while the pool changes: the counts from one instant, each object once.

``stats()`` copies the counts in one hold of the lock and the objects a chunk of
``_STATS_CHUNK`` per hold, in registration order (README, ``stats()``).  Here the
chunk is made small, so that a pool of a few dozen objects is copied in many
holds while other threads get, return and discard objects and housekeeping
recycles and health-checks idle ones.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

WORKERS = 6
HOLD = 6  # objects a worker holds at most at once
MAX_SIZE = 48
ROUNDS = 150  # stats() calls per test, at least
DEADLINE = 60.0  # seconds for housekeeping to have run meanwhile


@pytest.fixture(autouse=True)
def fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


class Res:
    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


def registered(pool: Any) -> set[int]:
    """The creation numbers of the objects the pool holds now (read under its lock)."""
    pool._acquire()
    try:
        return {slot.n for slot in pool._slots.values()}
    finally:
        pool._release()


def reg_problems(pool: Any) -> list[str]:
    """White-box: ``_reg`` lists every registered slot once, in registration order,
    each at the index its ``pos`` says."""
    pool._acquire()
    try:
        reg = list(pool._reg)
        slots = list(pool._slots.values())
        dead = pool._reg_dead
    finally:
        pool._release()
    problems = []
    seqs = [e if isinstance(e, int) else e.seq for e in reg]
    if seqs != sorted(set(seqs)):
        problems.append("_reg is not in strictly increasing seq order")
    live = [e for e in reg if not isinstance(e, int)]
    if {id(s) for s in live} != {id(s) for s in slots} or len(live) != len(slots):
        problems.append(f"_reg holds {len(live)} slots, the pool {len(slots)}")
    if any(reg[s.pos] is not s for s in live):
        problems.append("a slot's pos is not its index in _reg")
    if len(reg) - len(live) != dead:
        problems.append(f"{len(reg) - len(live)} tombstones but _reg_dead={dead}")
    if dead > max(64, len(slots)):
        problems.append(f"{dead} tombstones for {len(slots)} objects: no compaction")
    return problems


def listed(stats: dict[str, Any]) -> list[int]:
    return [item["n"] for item in stats["avail"] + stats["using"]]


@pytest.mark.parametrize("chunk", [1, 5, 2048])
def test_stats_under_churn(Pool: Any, chunk: int) -> None:
    closed: set[int] = set()
    closed_lock = threading.Lock()

    def closer(obj: Res) -> None:
        with closed_lock:
            closed.add(obj.n)

    pool = Pool(
        Res,
        max_size=MAX_SIZE,
        min_size=4,
        timeout=30.0,
        max_use=7,  # returns retire objects now and then (worn out)
        max_avail_delay=0.01,  # housekeeping recycles idle objects
        delay=0.002,
        health=lambda obj: True,  # and borrows idle ones for their check
        closer=closer,
    )
    pool._STATS_CHUNK = chunk
    stop = threading.Event()
    # the workers pause now and then until housekeeping has recycled something:
    # under constant churn an idle object may never sit max_avail_delay unused
    pause = threading.Event()
    errors: list[str] = []

    def worker(i: int) -> None:
        rng = random.Random(i)
        try:
            while not stop.is_set():
                if pause.is_set():
                    stop.wait(0.001)
                    continue
                objs = [pool.get() for _ in range(rng.randint(1, HOLD))]
                for obj in objs:
                    if rng.random() < 0.05:
                        pool.discard(obj)
                    else:
                        pool.ret(obj)
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    uses: dict[int, int] = {}
    r = 0
    s: dict[str, Any] = {"nrecycled": 0, "nhealth": 0}
    deadline = time.monotonic() + DEADLINE
    resume_at = 0.0
    try:
        # until housekeeping has recycled and health-checked objects meanwhile
        while r < ROUNDS or not (s["nrecycled"] and s["nhealth"]):
            assert time.monotonic() < deadline, f"no housekeeping within {DEADLINE} s: {s}"
            r += 1
            if not s["nrecycled"] and r % 20 == 0 and not pause.is_set():
                pause.set()  # stats() goes on while housekeeping recycles
                resume_at = time.monotonic() + 0.05
            elif pause.is_set() and time.monotonic() > resume_at:
                pause.clear()
            with closed_lock:
                closed_before = set(closed)
            before = registered(pool)
            s = pool.stats()
            after = registered(pool)
            ns = listed(s)
            where = f"round {r}, chunk {chunk}"
            # the counts: one instant's
            assert s["nobjs"] == s["ncreated"] - s["ndestroys"], (where, s)
            assert s["navail"] >= 0 and 0 <= s["nusing"] <= WORKERS * HOLD, (where, s)
            assert 0 <= s["nborrowed"] <= 1, (where, s)  # health checks go one at a time
            assert s["nobjs"] + s["npending"] <= MAX_SIZE, (where, s)
            assert s["sem"]["value"] == MAX_SIZE - s["nobjs"] - s["npending"] >= 0, (where, s)
            assert s["nreturns"] + s["ndiscarded"] <= s["nuses"], (where, s)
            # the objects: each once, none registered after the counts were taken
            assert len(ns) == len(set(ns)), (where, "an object listed twice", ns)
            assert len(ns) <= s["nobjs"], (where, s["nobjs"], ns)
            assert before & after <= set(ns), (where, "missing", (before & after) - set(ns))
            assert not set(ns) & closed_before, (where, "closed before", set(ns) & closed_before)
            if chunk >= MAX_SIZE:  # copied in one hold: the lists match the counts
                assert len(s["avail"]) == s["navail"], (where, s)
                assert len(s["using"]) == s["nusing"] + s["nborrowed"], (where, s)
            for item in s["avail"] + s["using"]:
                assert item["uses"] >= uses.get(item["n"], 0), (where, item)
                uses[item["n"]] = item["uses"]
    finally:
        stop.set()
        for t in threads:
            t.join(60.0)
    assert not any(t.is_alive() for t in threads), "a worker did not finish"
    assert not errors, errors[:5]
    # the housekeeper still runs (recycling idle objects, refilling min_size): compare
    # with a stats() during which the registered set did not change
    for _ in range(100):
        before = registered(pool)
        s = pool.stats()
        after = registered(pool)
        if before == after:
            break
    assert s["nusing"] == 0 and s["ndiscarded"] > 0 and s["nwornout"] > 0, s
    assert before == after, "housekeeping changed the pool during every one of 100 stats()"
    assert sorted(listed(s)) == sorted(after), s
    assert reg_problems(pool) == []
    pool.shutdown()
    assert reg_problems(pool) == []


def test_stats_walk_across_changes(Pool: Any) -> None:
    """Changes between two chunks, made by the ``stats`` hook (it runs outside the
    lock, between holds): objects forgotten before their chunk are not listed,
    objects created after the counts are not, every other object is listed once,
    in the state of its chunk's time -- across a compaction of ``_reg``."""
    nobjs = 200
    pool = Pool(Res, max_size=0, min_size=0, stats=lambda obj: hook(obj))
    pool._STATS_CHUNK = 5
    objs = [pool.get() for _ in range(nobjs)]
    for obj in objs:  # the idle stack's top is the last made
        pool.ret(obj)
    del objs
    done: list[int] = []

    def hook(obj: Res) -> int:
        if not done:  # while the first chunk (objects 0-4) is formatted
            done.append(obj.n)
            for gone in [pool.get() for _ in range(150)]:  # objects 199 down to 50
                pool.discard(gone)
            again = [pool.get() for _ in range(60)]  # 49 down to 0, then 10 new ones
            for o in again:
                pool.ret(o)
        return obj.n

    s = pool.stats()
    assert done == [0]
    ns = listed(s)
    assert ns == list(range(50)), ns  # registration order; 50-199 gone, 200-209 new
    assert [item["stats"] for item in s["avail"]] == ns
    assert s["nobjs"] == nobjs and s["navail"] == nobjs  # the counts: before the hook ran
    uses = {item["n"]: item["uses"] for item in s["avail"]}
    assert all(uses[n] == 1 for n in range(5)), uses  # copied before the hook's gets
    assert all(uses[n] == 2 for n in range(5, 50)), uses  # copied after them
    assert len(pool._reg) < nobjs, "no compaction of _reg during the walk"
    assert reg_problems(pool) == []
    s = pool.stats()
    assert sorted(listed(s)) == sorted(registered(pool)) == [*range(50), *range(200, 210)]
    assert s["nobjs"] == 60 and s["ndiscarded"] == 150
    pool.shutdown()
