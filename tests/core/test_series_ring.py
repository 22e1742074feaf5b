"""The live series' rows kept as runs (quiesce.state.ring): the same rows as the ring of one
slot a second it replaced (kept here as the reference), in a few words for an idle server."""

from __future__ import annotations

import random
from typing import Any

import pytest

from quiesce.state.series import BOUNDS, COUNTERS, SECONDS, Series, Snapshot

Row = tuple[Any, ...]


class Dense(Series):
    """The storage before issue 21's memory work: a slot and a stamp a second."""

    __slots__ = ("rows", "stamps")

    def __init__(self, size: int, checks: bool) -> None:
        super().__init__(size, checks)
        self.rows: list[Row | None] = [None] * size
        self.stamps = [-1] * size

    def _more(self, second: int) -> bool:
        return False

    def _cut(self, second: int) -> Row | None:
        i = second % self.size
        return self.rows[i] if self.stamps[i] == second else None

    def _put(self, second: int, row: Row) -> None:
        i = second % self.size
        self.rows[i], self.stamps[i] = row, second

    def _rows(self, lo: int, hi: int) -> list[Row | None]:
        size = self.size
        return [
            self.rows[s % size] if self.stamps[s % size] == s else None for s in range(lo, hi + 1)
        ]


def random_checks(rng: random.Random) -> tuple[Any, ...]:
    n = rng.choice((1, 1, 1, 2, 70))  # 70: over a word's 6 bits
    ms = rng.choice(
        (
            round(rng.uniform(0.01, 200.0), 3),
            round(rng.uniform(0.01, 2.0), 3),
            300_000.0,  # 300 s: over a word's 28 bits of µs
            1.2345,  # not a whole µs
            None,
        )
    )
    return (n, rng.randrange(n + 1), rng.choice((0, 0, 1)), ms)


def random_snapshot(
    rng: random.Random, counters: list[int], conns: list[int], checks: bool
) -> Snapshot:
    if rng.random() < 0.4:  # traffic moved
        for i in range(len(counters)):
            counters[i] += rng.choice((0, 0, 1, 5))
        if rng.random() < 0.1:
            counters[0] = 0  # a counter going down
    if rng.random() < 0.2:
        conns[0] = rng.choice((0, 1, 3, 2**50))
    latency = [rng.choice((0, 0, 0, 1)) for _ in range(len(BOUNDS) + 1)]
    if rng.random() < 0.5:
        latency = [0] * len(latency)
    c = (*counters, None)
    return Snapshot(
        c, conns[0], latency, random_checks(rng) if checks and rng.random() < 0.3 else None
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("checks", [True, False])
def test_the_runs_hold_the_rows_the_slots_did(seed: int, checks: bool) -> None:
    rng = random.Random(seed)
    size = 60
    got, ref = Series(size, checks), Dense(size, checks)
    counters = [0] * (len(COUNTERS) - 1)
    conns = [0]
    now = 10_000
    for _ in range(300):
        r = rng.random()
        if r < 0.45:
            snap = random_snapshot(rng, counters, conns, checks)
            got.sample(now, snap)
            ref.sample(now, snap)
        else:
            news = random_checks(rng) if checks and r < 0.6 else None
            got.idle(now, news)
            ref.idle(now, news)
        for seconds in (size, 1, 7):
            assert got.window(now, seconds) == ref.window(now, seconds), (now, seconds)
        # twice in a second, the next, a miss, a long miss, past the whole ring
        now += rng.choice((0, 1, 1, 1, 1, 1, 1, 1, 2, 3, 59, 61, 200))
        if rng.random() < 0.05:  # a long idle stretch
            for _ in range(rng.choice((30, 59, 61, 130))):
                got.idle(now)
                ref.idle(now)
                now += 1
            now -= 1
    assert got._p is not None and len(got._p) <= 2 * (size + 64) + 2  # pruned as it goes


def test_an_idle_server_with_checks_keeps_a_word_a_check() -> None:
    s = Series(SECONDS, checks=True)
    s.sample(0, Snapshot((*(0,) * (len(COUNTERS) - 1), None), 0, [0] * (len(BOUNDS) + 1)))
    for t in range(1, 3600):
        s.idle(t, (1, 0, 0, 1.25) if t % 10 == 0 else None)
    assert s._p is not None and len(s._p) <= SECONDS // 10 + 64 // 10 + 2
    assert s._full is None  # no row kept whole
    rows = s.window(3599, SECONDS)
    assert len(rows) == SECONDS
    assert [r["checks"] for r in rows[:11]] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert rows[0]["check_ms"] == 1.25 and rows[0]["requests"] == 0


def test_a_run_longer_than_a_word_holds_goes_on_in_the_next() -> None:
    s = Series(SECONDS)
    for t in range(32_900):  # 15 bits of idle seconds a word: 32,767 after its first
        s.idle(t)
    assert s._p is not None and len(s._p) == 2
    rows = s.window(32_899, 200)  # across the two
    assert [r["connections"] for r in rows] == [0] * 200
    assert [r["connections"] for r in s.window(40_000, 3)] == [None] * 3  # never written


def test_a_clock_stepped_back_drops_the_later_rows() -> None:
    s = Series(60, checks=True)
    for t in range(100, 110):
        s.idle(t, (1, 1, 0, 3.0))
    s.idle(105)  # the clock went back to 105: 106-109 were never written
    rows = s.window(109, 10)
    assert [r["checks"] for r in rows] == [1, 1, 1, 1, 1, 1, None, None, None, None]
    assert rows[5]["checks_failed"] == 1  # 105's row kept, a second tick in it adds nothing
