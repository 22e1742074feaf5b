"""State across a restart: a new Registry and AdminService on the same SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from quiesce.admin import AdminService, CommandContext
from quiesce.config import parse_config
from quiesce.config.models import HealthMonitor
from quiesce.core.clock import FakeClock, SystemClock
from quiesce.core.events import Event, EventKind, EventQuery
from quiesce.core.states import Admin, Cause, CloseMode, Oper
from quiesce.state.registry import Registry
from quiesce.store import SqliteStore

from .conftest import RAW, make_harness, raw_config, stop_harness

A = CommandContext("alice", Cause.API)
HTTP = HealthMonitor.model_validate(
    {
        "type": "http",
        "send_interval": 3,
        "receive_timeout": 1,
        "http_monitor": {"maintenance_code": [503]},
    }
)


async def test_admin_states_flags_and_monitors_survive(db: Path) -> None:
    clock = FakeClock()
    h = await make_harness(db, clock)
    t0 = clock.time()
    h.service.maintenance("web/w1", replace(A, reason="disk", expires=t0 + 3600))
    h.service.drain("web/w2", replace(A, reason="deploy"), timeout=120)
    h.service.drain("api/a1", A)
    h.service.maintenance("web/w3", replace(A, force_guard=True))
    h.service.enable("web/w3", A)
    h.service.set_flag("maintenance_mode", True, A)
    h.service.set_flag("color", "blue", A)
    h.service.clear_flag("banner", A)
    h.service.put_monitor("web-http", HTTP, A)
    changed_hm = HealthMonitor.model_validate(
        {"type": "tcp", "send_interval": 7, "receive_timeout": 2}
    )
    h.service.put_monitor("hm", changed_hm, A)
    h.service.set_pool_monitors("web", ["web-http"], A)
    h.service.delete_monitor("spare", A)
    await stop_harness(h)

    clock.advance(30)  # down for 30 s
    h2 = await make_harness(db, clock)
    try:
        w1, w2, a1 = h2.server("web/w1"), h2.server("web/w2"), h2.server("api/a1")
        assert (w1.admin.state, w1.admin.reason, w1.admin.actor, w1.admin.since) == (
            Admin.MAINTENANCE,
            "disk",
            "alice",
            t0,
        )
        assert w1.admin.expires == t0 + 3600
        assert w2.admin.state is Admin.DRAIN and w2.admin.deadline == t0 + 120
        assert a1.admin.state is Admin.DRAIN and a1.admin.deadline is None
        assert h2.server("web/w3").admin.state is Admin.ENABLED
        assert h2.registry.flags == {"maintenance_mode": True, "color": "blue"}
        assert h2.registry.monitors["web-http"] == HTTP
        assert h2.registry.monitors["hm"] == changed_hm
        assert "spare" not in h2.registry.monitors
        assert h2.registry.pool("web").pool_monitors == ["web-http"]
        assert w1.monitors == ["web-http"] and w1.oper is Oper.UNKNOWN
        assert h2.monitor_syncs == 1  # the health manager is told once
        assert h2.registry.pool("web").eligible_count == 0  # w3, w4 unknown until checked
        startup = h2.service.events(EventQuery(kind="startup"))[-1]
        assert startup.detail["admin"] == {
            "api/a1": "drain",
            "web/w1": "maintenance",
            "web/w2": "drain",
        }
        assert startup.detail["ignored"] == []
        assert startup.reason == "persisted state restored"
        # The drain deadline resumes with the time it had left: 120 - 30 = 90 s.
        assert h2.registry.next_due() == t0 + 120
        clock.advance(89.9)
        assert h2.service.tick() == []
        clock.advance(0.1)
        assert len(h2.service.tick()) == 1 and w2.admin.state is Admin.MAINTENANCE
        assert h2.closes == [("web/w2", CloseMode.ALL)]
    finally:
        await stop_harness(h2)


async def test_a_new_state_file_does_not_claim_a_restore(db: Path) -> None:
    """A brand-new state file gives nothing back: the start-up event says so (it said
    "persisted state restored" at every start)."""
    h = await make_harness(db, FakeClock())
    try:
        (startup,) = h.service.events(EventQuery(kind="startup"))
        assert startup.reason == "nothing persisted to restore"
    finally:
        await stop_harness(h)


async def test_restoring_is_not_logged_as_changes(db: Path) -> None:
    h = await make_harness(db)
    h.service.maintenance("web/w1", A)
    h.service.set_flag("x", True, A)
    n = len(h.service.events(EventQuery(limit=1000)))
    await stop_harness(h)
    h2 = await make_harness(db)
    try:
        new = h2.service.events(EventQuery(limit=1000))[n:]
        assert [e.kind for e in new] == [EventKind.STARTUP]
        assert h2.closes == []  # a restored maintenance closes nothing (nothing is open yet)
    finally:
        await stop_harness(h2)


async def test_expiry_that_passed_while_down_fires_at_start(db: Path) -> None:
    clock = FakeClock()
    h = await make_harness(db, clock)
    h.service.maintenance("web/w1", replace(A, reason="patch", expires=clock.time() + 60))
    await stop_harness(h)
    clock.advance(3600)
    h2 = await make_harness(db, clock)
    try:
        w1 = h2.server("web/w1")
        assert w1.admin.state is Admin.ENABLED and w1.admin.cause is Cause.EXPIRY
        (e,) = [e for e in h2.service.events(EventQuery(limit=1000)) if e.cause == "expiry"]
        assert (e.from_, e.to, e.time) == ("maintenance", "enabled", clock.time())
        assert h2.store.load_admin()["web/w1"].state is Admin.ENABLED
        assert h2.service.tick() == []
    finally:
        await stop_harness(h2)
    h3 = await make_harness(db, clock)  # and it does not fire again on the next start
    try:
        assert (
            len([e for e in h3.service.events(EventQuery(limit=1000)) if e.cause == "expiry"]) == 1
        )
    finally:
        await stop_harness(h3)


async def test_deadline_that_passed_while_down_fires_at_start(db: Path) -> None:
    clock = FakeClock()
    h = await make_harness(db, clock)
    h.service.drain("web/w1", replace(A, expires=clock.time() + 20), timeout=10)
    h.service.drain("web/w2", A, timeout=10)
    await stop_harness(h)
    clock.advance(15)
    h2 = await make_harness(db, clock)
    try:
        assert h2.server("web/w2").admin.state is Admin.MAINTENANCE
        assert h2.server("web/w1").admin.state is Admin.MAINTENANCE  # expiry still ahead
        causes = [(e.server, e.cause) for e in h2.service.events(EventQuery(kind="admin_change"))]
        assert ("w1", "deadline") in causes and ("w2", "deadline") in causes
        clock.advance(5)
        h2.service.tick()
        assert h2.server("web/w1").admin.state is Admin.ENABLED
    finally:
        await stop_harness(h2)


async def test_state_of_a_removed_server_is_ignored_and_forgotten(db: Path) -> None:
    h = await make_harness(db)
    h.service.maintenance("api/a2", A)
    h.service.set_pool_monitors("batch", ["hm"], A)
    await stop_harness(h)
    raw = raw_config()
    raw["pools"]["api"]["servers"].pop()  # a2 is gone
    del raw["pools"]["batch"]
    h2 = await make_harness(db, raw=raw)
    try:
        ignored = h2.service.events(EventQuery(kind="startup"))[-1].detail["ignored"]
        assert any("api/a2" in i and "no such server" in i for i in ignored)
        assert any("'batch'" in i and "no such pool" in i for i in ignored)
        assert "api/a2" not in h2.store.load_admin()
        assert h2.server("api/a1").admin.state is Admin.ENABLED
    finally:
        await stop_harness(h2)


async def test_a_monitor_that_no_longer_validates_is_ignored(db: Path) -> None:
    s = SqliteStore(db)
    s.save_monitor("hm", {"type": "tcp", "send_interval": 1, "receive_timeout": 5})
    s.close()
    h = await make_harness(db)
    try:
        assert h.registry.monitors["hm"].send_interval == 2  # the config's definition
        (why,) = h.service.events(EventQuery(kind="startup"))[-1].detail["ignored"]
        assert "monitor 'hm' no longer validates" in why
    finally:
        await stop_harness(h)


async def test_in_memory_store_keeps_nothing(tmp_path: Path) -> None:
    h = await make_harness(":memory:")
    h.service.maintenance("web/w1", A)
    assert h.service.events(EventQuery(kind="admin_change"))  # listable while running
    await stop_harness(h)
    h2 = await make_harness(":memory:")
    try:
        assert h2.server("web/w1").admin.state is Admin.ENABLED
    finally:
        await stop_harness(h2)


# kill -9 ---------------------------------------------------------------------------------------

CHILD = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[2])
from tests.admin.conftest import RAW
from quiesce.admin import AdminService, CommandContext
from quiesce.config import parse_config
from quiesce.config.models import StateConfig
from quiesce.core.states import Cause
from quiesce.state.registry import Registry
from quiesce.store import open_store

async def main():
    config = parse_config(RAW)
    store = open_store(StateConfig(sqlite=sys.argv[1]), ".")
    await store.open()  # as quiesce run: a writer thread commits
    registry = Registry(config)
    service = AdminService(registry, store)
    await service.start()
    def a(**kw):
        return CommandContext("ops", Cause.CLI, **kw)

    service.maintenance("web/w1", a(reason="kernel"))
    long = service.drain("web/w2", a(reason="slow drain"), timeout=600).server.admin.deadline
    r = service.disable("web/w3", a(force_guard=True), graceful=True, timeout=1.5)
    short = r.server.admin.deadline
    service.set_flag("maintenance_mode", True, a())
    await service.durable()  # what the API and the runtime socket await before answering
    print(json.dumps({"long": long, "short": short}), flush=True)
    await asyncio.Event().wait()  # until killed

asyncio.run(main())
"""


@pytest.mark.peers
async def test_kill_9_then_restart(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(repo)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(repo / "src")},
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        deadlines = json.loads(line)
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert time.time() < deadlines["short"], "the restart came too late to see the deadline resume"

    h = await make_harness(db, clock=SystemClock())
    try:
        sub = h.service.subscribe()
        w1, w2, w3 = h.server("web/w1"), h.server("web/w2"), h.server("web/w3")
        assert (w1.admin.state, w1.admin.reason, w1.admin.actor) == (
            Admin.MAINTENANCE,
            "kernel",
            "ops",
        )
        assert w2.admin.state is Admin.DRAIN and w2.admin.deadline == deadlines["long"]
        assert 590 < w2.admin.deadline - time.time() <= 600  # the time it had left
        assert w3.admin.state is Admin.DRAIN and w3.admin.deadline == deadlines["short"]
        assert h.registry.flags["maintenance_mode"] is True
        # The short deadline resumes and fires at its original time, not 1.5 s after restart.
        async for e in sub:
            if e.kind is EventKind.ADMIN_CHANGE and e.cause == "deadline":
                break
        late = time.time() - deadlines["short"]
        assert e.server == "w3" and e.time >= deadlines["short"] and late < 0.1, late
        assert w3.admin.state is Admin.MAINTENANCE
        assert h.closes == [("web/w3", CloseMode.ALL)]
    finally:
        await stop_harness(h)


async def test_retention_is_applied_at_start(db: Path) -> None:
    clock = FakeClock()
    s = SqliteStore(db, retention_rows=100, retention_age=86400.0, prune_every=10**9)
    for i in range(150):  # 50 of them older than a day, 100 recent
        age = 2 * 86400.0 if i < 50 else 60.0
        s.append_event(Event(time=clock.time() - age, kind=EventKind.FLAG_CHANGE, reason=str(i)))
    s.close()
    registry = Registry(parse_config(RAW), clock)
    store = SqliteStore(db, retention_rows=100, retention_age=86400.0)
    service = AdminService(registry, store, clock)
    await service.start()
    try:
        kept = service.events(EventQuery(limit=1000))
        assert len(kept) == 100  # the old 50 went by age, then the oldest by rows
        assert kept[-1].kind is EventKind.STARTUP and kept[0].reason == "51"
    finally:
        await service.stop()
        store.close()
