"""A small config, a FakeClock, a Registry and an AdminService on a SQLite file: no sockets."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from quiesce.admin import AdminService
from quiesce.config import parse_config
from quiesce.core.clock import Clock, FakeClock
from quiesce.core.events import EventQuery
from quiesce.core.states import CloseMode
from quiesce.state.registry import Registry, ServerRuntime
from quiesce.store import SqliteStore

RAW: dict[str, Any] = {
    "healthmonitors": {
        "hm": {"type": "tcp", "send_interval": 2, "receive_timeout": 1},
        "spare": {"type": "tcp", "send_interval": 5, "receive_timeout": 1},
    },
    "flags": {"maintenance_mode": False, "banner": "hello"},
    "pools": {
        "web": {
            "min_servers_up": 2,
            "graceful_disable_timeout": "30s",
            "servers": [
                {"name": f"w{i}", "address": f"127.0.0.1:{8000 + i}"} for i in (1, 2, 3, 4)
            ],
        },
        "api": {
            "graceful_disable_timeout": 0,
            "servers": [
                {"name": "a1", "address": "127.0.0.1:9001"},
                {"name": "a2", "address": "127.0.0.1:9002"},
            ],
        },
        "batch": {
            "graceful_disable_timeout": "infinite",
            "servers": [{"name": "b1", "address": "127.0.0.1:9101"}],
        },
    },
}


def raw_config(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    raw.update(changes)
    return raw


@dataclass
class Harness:
    registry: Registry
    store: SqliteStore
    service: AdminService
    clock: Clock
    closes: list[tuple[str, CloseMode]] = field(default_factory=list)
    monitor_syncs: int = 0

    def server(self, ref: str) -> ServerRuntime:
        return self.registry.find_server(ref)

    def kinds(self) -> list[str]:
        return [e.kind.value for e in self.store.list_events(EventQuery(limit=10_000))]


async def make_harness(
    path: Path | str, clock: Clock | None = None, raw: dict[str, Any] | None = None, **kw: Any
) -> Harness:
    clock = clock or FakeClock()
    registry = Registry(parse_config(raw or RAW), clock)
    store = SqliteStore(path)
    await store.open()  # as quiesce run does: writes go to the writer thread
    h = Harness(registry, store, AdminService(registry, store, clock, **kw), clock)

    def on_close(server: ServerRuntime, mode: CloseMode) -> None:
        h.closes.append((server.key, mode))

    def on_sync() -> None:
        h.monitor_syncs += 1

    registry.close_handlers.append(on_close)
    h.service.on_monitors_changed = on_sync
    await h.service.start()
    return h


async def stop_harness(h: Harness) -> None:
    await h.service.stop()
    h.store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
async def h(db: Path) -> AsyncIterator[Harness]:
    harness = await make_harness(db)
    yield harness
    await stop_harness(harness)
