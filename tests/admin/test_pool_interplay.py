"""Admin commands and the pool behaviours: active-standby elections, backup servers,
slow start, pool down, source-IP persistence (on the wire)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from quiesce.admin import CommandContext
from quiesce.core.clock import FakeClock
from quiesce.core.errors import GuardRefused
from quiesce.core.events import EventKind, EventQuery
from tests.dataplane.conftest import wait_for

from .conftest import make_harness, stop_harness
from .test_wire import A, stack

T = CommandContext("ops", A.cause)


def pools(**pool: Any) -> dict[str, Any]:
    return {"pools": {"p": pool}}


async def test_maintenance_of_the_primary_elects_the_standby(tmp_path: Path) -> None:
    raw = pools(
        mode="active_standby",
        min_servers_up=1,
        servers=[
            {"name": "main", "address": "127.0.0.1:1", "priority": 10},
            {"name": "standby", "address": "127.0.0.1:2", "priority": 5},
        ],
    )
    h = await make_harness(tmp_path / "s.db", raw=raw)
    try:
        pool = h.registry.pool("p")
        assert pool.primary == "main"
        h.service.maintenance("p/main", replace(T, reason="upgrade"))
        assert pool.primary == "standby" and [s.name for s in pool.candidates] == ["standby"]
        (e,) = h.service.events(EventQuery(kind="election"))
        assert (e.from_, e.to, e.cause) == ("main", "standby", "election")
        kinds = [x.kind for x in h.service.events(EventQuery(pool="p", limit=10))]
        assert kinds.index(EventKind.ADMIN_CHANGE) < kinds.index(EventKind.ELECTION)
        # The last eligible server is guarded.
        with pytest.raises(GuardRefused, match=r"pool 'p'.*0 eligible.*min_servers_up 1"):
            h.service.drain("p/standby", T)
        # Back in service: no preemption, the standby stays primary.
        h.service.enable("p/main", T)
        assert pool.primary == "standby"
    finally:
        await stop_harness(h)


async def test_preempt_gives_the_primary_back_on_enable(tmp_path: Path) -> None:
    raw = pools(
        mode="active_standby",
        preempt=True,
        servers=[
            {"name": "main", "address": "127.0.0.1:1", "priority": 10},
            {"name": "standby", "address": "127.0.0.1:2", "priority": 5},
        ],
    )
    h = await make_harness(tmp_path / "s.db", raw=raw)
    try:
        h.service.drain("p/main", T)
        assert h.registry.pool("p").primary == "standby"
        h.service.enable("p/main", T)
        assert h.registry.pool("p").primary == "main"
        assert [(e.from_, e.to) for e in h.service.events(EventQuery(kind="election"))] == [
            ("main", "standby"),
            ("standby", "main"),
        ]
    finally:
        await stop_harness(h)


async def test_backup_takes_over_and_pool_down_is_an_event(tmp_path: Path) -> None:
    raw = pools(
        servers=[
            {"name": "w1", "address": "127.0.0.1:1"},
            {"name": "w2", "address": "127.0.0.1:2"},
            {"name": "sorry", "address": "127.0.0.1:3", "backup": True},
        ]
    )
    h = await make_harness(tmp_path / "b.db", raw=raw)
    try:
        pool = h.registry.pool("p")
        assert [s.name for s in pool.candidates] == ["w1", "w2"]
        h.service.maintenance("p/w1", T)
        h.service.disable("p/w2", T)
        assert [s.name for s in pool.candidates] == ["sorry"] and pool.available
        h.service.maintenance("p/sorry", T)
        assert not pool.available
        down = h.service.events(EventQuery(kind="pool_down"))[-1]
        assert down.pool == "p" and down.reason == "pool has no server available"
        assert down.eligible == 0
        h.service.enable("p/w1", T)
        assert [s.name for s in pool.candidates] == ["w1"]
        assert h.service.events(EventQuery(kind="pool_up"))[-1].time >= down.time
    finally:
        await stop_harness(h)


async def test_slow_start_ramps_a_server_enabled_after_maintenance(tmp_path: Path) -> None:
    raw = pools(
        slow_start="10s",
        servers=[
            {"name": "w1", "address": "127.0.0.1:1", "weight": 10},
            {"name": "w2", "address": "127.0.0.1:2", "weight": 10},
        ],
    )
    clock = FakeClock()
    h = await make_harness(tmp_path / "w.db", clock=clock, raw=raw)
    try:
        pool = h.registry.pool("p")
        w1 = h.server("p/w1")
        h.service.maintenance("p/w1", T)
        clock.advance(3600)
        h.service.enable("p/w1", T)
        pool.refresh_weights(clock.time())
        assert w1.effective_weight == pytest.approx(1.0)  # 10% of 10
        clock.advance(5)
        pool.refresh_weights(clock.time())
        assert w1.effective_weight == pytest.approx(5.5)
        clock.advance(5)
        pool.refresh_weights(clock.time())
        assert w1.effective_weight == pytest.approx(10.0)
        assert h.server("p/w2").effective_weight == pytest.approx(10.0)
    finally:
        await stop_harness(h)


@pytest.mark.loopback
async def test_source_ip_client_stays_while_draining_and_moves_on_maintenance() -> None:
    async with (
        stack(3, pool={"persistence": {"type": "source_ip"}}) as st,
        httpx.AsyncClient(timeout=10) as c,
    ):
        first = (await c.get(st.url + "/")).headers["x-server"]
        ref = st.ref("abc".index(first))
        st.admin.drain(ref, A)
        for _ in range(5):  # the sticky source still reaches the draining server
            assert (await c.get(st.url + "/")).headers["x-server"] == first
        st.admin.maintenance(ref, A, force=True)
        await wait_for(lambda: st.service.connections == 0)  # the client sees the close first
        moved = {(await c.get(st.url + "/")).headers["x-server"] for _ in range(5)}
        assert len(moved) == 1 and first not in moved
