"""The first checks of many pairs started together are spread at FIRST_RATE a second, every
pool's first pair first (issue 21: 100,000 first checks as one burst left their results,
state changes and events piled up, and memory resident). The slots are read from the
manager's jobs (no socket, no wait); one test runs the checks through a recording prober."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from quiesce.config.models import Config
from quiesce.health import HealthManager
from quiesce.health.probes import group
from quiesce.health.schedule import FIRST_RATE, TICK, first_offset
from quiesce.state.registry import Registry


def registry(pools: dict[str, int], interval: float = 60.0) -> Registry:
    config = Config.model_validate(
        {
            "healthmonitors": {
                "m": {"type": "tcp", "send_interval": interval, "receive_timeout": 1}
            },
            "pools": {
                name: {
                    "healthmonitors": ["m"],
                    "servers": [
                        {"name": f"s{i}", "address": f"10.0.{i // 250}.{i % 250}:80"}
                        for i in range(n)
                    ],
                }
                for name, n in pools.items()
            },
        }
    )
    return Registry(config)


class Never:
    def cancel(self) -> None:
        pass


class Recorder:
    """A prober that notes when each check starts (the loop's time) and never reports."""

    def __init__(self) -> None:
        self.started: list[tuple[float, str]] = []

    def start(self, target: Any, monitor: Any, name: str, on_done: Any) -> Never:
        self.started.append((asyncio.get_running_loop().time(), f"{target.host}"))
        return Never()

    def close(self) -> None:
        pass


def slots(m: HealthManager) -> dict[str, list[float]]:
    """Each pool's first-check slots, relative to the earliest, in its servers' order."""
    jobs = m._jobs.values()
    start = min(j.due for j in jobs)
    out: dict[str, list[float]] = {}
    for j in jobs:
        out.setdefault(j.server.pool, []).append(j.due - start)
    return out


async def test_a_small_pool_is_all_due_in_the_first_tick() -> None:
    m = HealthManager(registry({"web": 5}))
    m.start()
    try:
        assert slots(m)["web"] == pytest.approx([i / FIRST_RATE for i in range(5)])
        assert max(slots(m)["web"]) < TICK
    finally:
        await m.stop()


async def test_pools_interleaved_at_first_rate_and_within_the_interval() -> None:
    """Pools of 3,000, 7 and 1,000 (4,007 pairs: 2 s at FIRST_RATE): the i-th of all, every
    pool's first pair first, at first_offset(i); the small pool done in the first tick."""
    m = HealthManager(registry({"big": 3000, "small": 7, "mid": 1000}))
    m.start()
    try:
        got = slots(m)
        n = 4007
        # the order: big0 small0 mid0 big1 small1 mid1 ... small6 ..., then big and mid only
        assert got["small"] == pytest.approx([first_offset(3 * i + 1, n, 60.0) for i in range(7)])
        assert got["mid"][:7] == pytest.approx([first_offset(3 * i + 2, n, 60.0) for i in range(7)])
        assert got["mid"][7] == pytest.approx(first_offset(7 + 2 * 7 + 1, n, 60.0))
        assert max(got["small"]) < 2 * TICK
        assert max(got["big"]) == pytest.approx((n - 1) / FIRST_RATE)  # ≈ 2 s, not 1
        every = sorted(d for ds in got.values() for d in ds)
        assert every == pytest.approx([first_offset(i, n, 60.0) for i in range(n)])
    finally:
        await m.stop()


async def test_more_than_an_interval_at_first_rate_is_squeezed_into_it() -> None:
    m = HealthManager(registry({"a": 3000, "b": 3000}, interval=2.0))  # 3 s at FIRST_RATE
    m.start()
    try:
        every = sorted(d for ds in slots(m).values() for d in ds)
        assert every[-1] < 2.0
        assert every == pytest.approx([2.0 * i / 6000 for i in range(6000)])
    finally:
        await m.stop()


async def test_checks_start_at_their_slots() -> None:
    """Through the loop: 200 first checks at FIRST_RATE take 0.1 s; none starts before its
    slot, and no tick starts more than FIRST_RATE's share of them (20)."""
    m = HealthManager(registry({"p": 200}), max_concurrency=10_000)
    rec = Recorder()
    m._probers[group("tcp")] = rec  # type: ignore[assignment]
    m.start()
    try:
        due = {f"10.0.{i // 250}.{i % 250}": j.due for i, j in enumerate(m._jobs.values())}
        async with asyncio.timeout(10):
            while len(rec.started) < 200:
                await asyncio.sleep(0.01)
        assert all(at >= due[host] - 1e-9 for at, host in rec.started)
        start = min(due.values())
        assert max(due.values()) - start == pytest.approx(199 / FIRST_RATE)
        per_tick = Counter(int((d - start) / TICK + 1e-6) for d in due.values())
        assert max(per_tick.values()) <= FIRST_RATE * TICK
    finally:
        await m.stop()


def test_first_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="first_rate"):
        HealthManager(registry({"p": 1}), first_rate=0.0)
