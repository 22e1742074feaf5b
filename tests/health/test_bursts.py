"""A burst of check results (issue 21): the results the C engine hands over together are one
batch of the registry: one event per server that changed, one election and one pool event for
the pool, never one each."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from quiesce.config.models import Config
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.events import Event, EventKind
from quiesce.core.states import Verdict
from quiesce.health import HealthManager
from quiesce.health.probes import StreamProber, fast
from quiesce.state.registry import Registry
from tests.health.servers import HttpBackend

pytestmark = pytest.mark.loopback

MONITOR: dict[str, Any] = {
    "type": "http",
    "send_interval": 0.2,
    "receive_timeout": 0.1,
    "successful_checks": 1,
    "failed_checks": 1,
}


async def test_a_burst_of_results_is_one_batch(http_backend: HttpBackend, engine: str) -> None:
    if engine != "c":
        pytest.skip("the pure-Python path hands each result over on its own")
    n = 12
    servers = [
        {"name": f"s{i}", "address": f"127.0.0.1:{http_backend.port}", "priority": n - i}
        for i in range(n)
    ]
    config = Config.model_validate(
        {
            "healthmonitors": {"web": MONITOR},
            "pools": {
                "standby": {
                    "mode": "active_standby",
                    "preempt": True,
                    "healthmonitors": ["web"],
                    "servers": servers,
                }
            },
        }
    )
    registry = Registry(config)
    pool = registry.pool("standby")
    manager = HealthManager(registry)
    manager.start()
    events: list[Event] = []
    try:
        async with asyncio.timeout(5):
            while pool.eligible_count < n:
                await asyncio.sleep(0.02)
        assert pool.primary == "s0"
        prober = manager.prober("http")
        assert isinstance(prober, StreamProber)
        # every server fails in one delivery of the engine, in config order, as a blip
        # would: s0 (the primary) first, then s1 (next in line)...
        now = registry.clock.time()
        done = [
            (
                _Token(functools.partial(registry.record_check, s)),
                CheckResult("web", Verdict.FAIL, Reason.CONNECTION_REFUSED, now, 0.001),
            )
            for s in pool.servers
        ]
        registry.listeners.append(events.append)
        prober.engine()._deliver(done)  # type: ignore[arg-type]
        registry.listeners.remove(events.append)
    finally:
        await manager.stop()
    oper = [e for e in events if e.kind is EventKind.OPER_CHANGE]
    assert len(oper) == n and all(e.to == "down" for e in oper)
    elections = [e for e in events if e.kind is EventKind.ELECTION]
    assert [(e.from_, e.to) for e in elections] == [("s0", None)]  # not s1, s2, ... each
    assert [e.kind for e in events[n:]] == [EventKind.ELECTION, EventKind.POOL_DOWN]
    assert pool.primary is None and not pool.available


class _Token:
    monitor = "web"

    def __init__(self, on_done: Any) -> None:
        self.on_done = on_done


async def test_a_backlog_is_handed_over_a_slice_per_loop_turn(engine: str) -> None:
    if engine != "c":
        pytest.skip("the C engine's delivery")
    registry = Registry(Config.model_validate({"pools": {}}))
    manager = HealthManager(registry)
    manager.start()
    try:
        prober = manager.prober("http")
        assert isinstance(prober, StreamProber)
        got: list[CheckResult] = []
        now = registry.clock.time()
        result = CheckResult("web", Verdict.PASS, Reason.OK, now, 0.001)
        prober.engine()._deliver([(_Token(got.append), result)] * 300)  # type: ignore[arg-type]
        assert len(got) == fast.DELIVER_AT_ONCE  # the rest waits for the next turns
        async with asyncio.timeout(5):
            while len(got) < 300:
                await asyncio.sleep(0)
    finally:
        await manager.stop()
