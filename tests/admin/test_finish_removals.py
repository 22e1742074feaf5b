"""The admin timer's deletions of drained servers (``AdminService._finish_removals``) look
only at the servers that were at 0 connections since the last call (``PoolTally.drained``):
on random histories (removals asked with and without connections, connections coming and
going, removals cancelled, maintenance, deadlines passing on a fake clock, servers added,
removals marked as a restart restores them), each call deletes what a walk of every server
being removed deleted, in its order, and says the same about what is left."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from quiesce.admin import CommandContext
from quiesce.config.models import ServerConfig
from quiesce.core.clock import FakeClock
from quiesce.core.errors import QuiesceError
from quiesce.core.events import EventQuery
from quiesce.core.states import Admin, Cause
from quiesce.state.registry import ServerRuntime
from tests.admin.conftest import Harness, make_harness, stop_harness

CTX = CommandContext("alice", Cause.API)


def walk_of_every_server(h: Harness) -> tuple[list[str], bool]:
    """What the timer deleted before: a walk of each pool's servers being removed, in the
    order asked, the removable ones (no budget), and whether any other was left."""
    gone: list[str] = []
    left = False
    for pool in h.registry.pools.values():
        for server in pool.removing():
            if h.registry.removable(server) is None:
                gone.append(server.key)
            else:
                left = True
    return gone, left


def removed_keys(h: Harness, before: int) -> list[str]:
    events = h.store.list_events(EventQuery(kind="server_removed", limit=10000))
    keys = [f"{e.pool}/{e.server}" for e in sorted(events, key=lambda e: e.id or 0)]
    return keys[before:]


def one_step(rng: random.Random, h: Harness, added: list[int]) -> None:
    servers: list[ServerRuntime] = [s for p in h.registry.pools.values() for s in p.servers]
    r = rng.random()
    if not servers or r < 0.1:
        added[0] += 1
        pool = rng.choice(sorted(h.registry.pools))
        cfg = ServerConfig(name=f"n{added[0]}", address=f"127.0.0.1:{9600 + added[0]}")
        h.service.add_server(pool, cfg, CTX)
        return
    s = rng.choice(servers)
    try:
        if r < 0.4:
            s.connections = rng.choice((0, 0, 1, 2))
        elif r < 0.65:
            h.service.remove_server(s.key, CTX, drain=True)
        elif r < 0.72:
            h.service.cancel_removal(s.key, CTX)
        elif r < 0.78:
            h.service.enable(s.key, CTX)
        elif r < 0.82:
            h.service.maintenance(s.key, CTX, force=True)
        elif r < 0.88:  # marked being removed as a restart's restore does (any connections)
            if not s.removing and s.admin.state is not Admin.ENABLED:
                s.removing = True
        else:
            assert isinstance(h.clock, FakeClock)
            h.clock.advance(rng.choice((0.5, 10.0, 40.0)))
            h.service.tick()  # deadlines passing
    except QuiesceError:
        pass  # refused (guards, not being removed, ...): nothing changed


@pytest.mark.parametrize("seed", range(25))
async def test_deletions_are_those_of_a_walk_of_every_server_being_removed(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    h = await make_harness(tmp_path / "state.db")
    added = [0]
    try:
        for _ in range(120):
            for _ in range(rng.choice((1, 1, 2, 5))):
                one_step(rng, h, added)
            want, left = walk_of_every_server(h)
            before = len(removed_keys(h, 0))
            got = h.service._finish_removals()
            assert removed_keys(h, before) == want
            assert got is left
            every = [s for p in h.registry.pools.values() for s in p.servers]
            assert not any(s.removing and h.registry.removable(s) is None for s in every)
    finally:
        await stop_harness(h)


async def test_a_call_looks_at_the_drained_servers_alone(tmp_path: Path) -> None:
    """1,000 servers being removed with a connection each: a call looks at none of them
    (no pass over the pool's removing list); the one that drains is deleted."""
    h = await make_harness(tmp_path / "state.db")
    try:
        for i in range(1000):
            name = f"x{i}"
            h.service.add_server("api", ServerConfig(name=name, address="127.0.0.1:9500"), CTX)
            h.server(f"api/{name}").connections = 1
            h.service.remove_server(f"api/{name}", CTX, drain=True)
        pool = h.registry.pools["api"]
        assert not pool.tally.drained
        walked: list[ServerRuntime] = []
        real = h.registry.removable

        def removable(server: ServerRuntime) -> str | None:
            walked.append(server)
            return real(server)

        h.registry.removable = removable  # type: ignore[method-assign]
        assert h.service._finish_removals() is True
        assert walked == []
        h.server("api/x7").connections = 0
        assert h.service._finish_removals() is True
        assert {s.name for s in walked} == {"x7"}  # (and remove_server's own guard)
        assert not pool.has("x7") and len(pool.removing()) == 999
    finally:
        await stop_harness(h)
