"""The health manager launches at most LAUNCH_BUDGET checks a turn of the event loop (issue
21: checks due together, all the servers of a monitor with one phase or the ticks a stalled
loop missed, were all started in one turn). A recording prober stands in for the probes: no
socket is opened."""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from typing import Any

from quiesce.config.models import Config
from quiesce.health import HealthManager
from quiesce.health.manager import LAUNCH_BUDGET
from quiesce.health.probes import group
from quiesce.state.registry import Registry


class SamePhase(random.Random):
    """Every pair gets phase 0: all second checks are due in the same tick."""

    def uniform(self, a: float, b: float) -> float:
        return a


class Never:
    def cancel(self) -> None:
        pass


class Recorder:
    """A prober that notes the loop turn each check starts in and never reports."""

    def __init__(self) -> None:
        self.turn = 0
        self.started: list[int] = []

    def start(self, target: Any, monitor: Any, name: str, on_done: Any) -> Never:
        self.started.append(self.turn)
        return Never()

    def close(self) -> None:
        pass


def manager(n: int) -> HealthManager:
    config = Config.model_validate(
        {
            "healthmonitors": {"m": {"type": "tcp", "send_interval": 60, "receive_timeout": 1}},
            "pools": {
                "p": {
                    "healthmonitors": ["m"],
                    "servers": [
                        {"name": f"s{i}", "address": f"10.0.{i // 250}.{i % 250 + 1}:80"}
                        for i in range(n)
                    ],
                }
            },
        }
    )
    # first_rate: every first check due at the start (schedule.first_offset: offsets 0)
    return HealthManager(
        Registry(config), rng=SamePhase(), max_concurrency=10_000, first_rate=math.inf
    )


async def counting_turns(recorder: Recorder) -> None:
    """Bumps the recorder's turn once a turn of the loop (call_soon runs at the next one)."""
    loop = asyncio.get_running_loop()

    def bump() -> None:
        recorder.turn += 1
        loop.call_soon(bump)

    loop.call_soon(bump)


async def test_checks_due_together_start_a_budget_a_turn() -> None:
    m = manager(300)
    rec = Recorder()
    m._probers[group("tcp")] = rec  # type: ignore[assignment]
    await counting_turns(rec)
    m.start()
    try:
        async with asyncio.timeout(10):
            while len(rec.started) < 300:
                await asyncio.sleep(0.001)
        per_turn = Counter(rec.started)
        assert max(per_turn.values()) <= LAUNCH_BUDGET, per_turn
        assert len(per_turn) >= 300 // LAUNCH_BUDGET + 1  # five turns at least
        assert m.stats.started == 300
    finally:
        await m.stop()


async def test_stop_drops_the_checks_still_due() -> None:
    m = manager(300)
    rec = Recorder()
    m._probers[group("tcp")] = rec  # type: ignore[assignment]
    m.start()
    async with asyncio.timeout(10):
        while not rec.started:
            await asyncio.sleep(0)  # a turn at a time: stop right after the first launches
    await m.stop()
    launched = len(rec.started)
    assert launched == LAUNCH_BUDGET
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(rec.started) == launched  # none of the rest started after stop()
