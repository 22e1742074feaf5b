"""Every AdminService command with a FakeClock and a Registry built from a small config."""

from __future__ import annotations

from dataclasses import replace

import pytest

from quiesce.admin import CommandContext
from quiesce.config.models import HealthMonitor
from quiesce.core.clock import FakeClock
from quiesce.core.errors import GuardRefused, InvalidCommand, NotFound
from quiesce.core.events import EventKind, EventQuery
from quiesce.core.states import Admin, Cause, CloseMode
from quiesce.state import sessions

from .conftest import Harness

A = CommandContext("alice", Cause.CLI)


def fake(h: Harness) -> FakeClock:
    assert isinstance(h.clock, FakeClock)
    return h.clock


# maintenance ---------------------------------------------------------------------------------


async def test_maintenance_changes_persists_and_logs(h: Harness) -> None:
    r = h.service.maintenance("web/w1", replace(A, reason="kernel update"))
    assert r.changed and r.closed == 0 and r.server is h.server("web/w1")
    assert r.message.startswith("web/w1: enabled → maintenance")
    assert h.server("web/w1").admin.state is Admin.MAINTENANCE
    rec = h.store.load_admin()["web/w1"]
    assert (rec.state, rec.actor, rec.reason, rec.cause) == (
        Admin.MAINTENANCE,
        "alice",
        "kernel update",
        Cause.CLI,
    )
    (e,) = h.service.events(EventQuery(kind="admin_change"))
    assert e.id is not None and (e.pool, e.server, e.from_, e.to) == (
        "web",
        "w1",
        "enabled",
        "maintenance",
    )
    assert (e.actor, e.reason, e.cause) == ("alice", "kernel update", "cli")
    assert h.closes == [("web/w1", CloseMode.AT_BOUNDARY)]


async def test_maintenance_without_force_closes_at_boundary(h: Harness) -> None:
    h.server("web/w1").connections = 4
    r = h.service.maintenance("w1", A)  # a name unique across pools works too
    assert r.closed == 0
    assert "4 connection(s) close at their next request boundary" in r.message
    assert h.closes == [("web/w1", CloseMode.AT_BOUNDARY)]


async def test_maintenance_says_database_and_tls_sessions_apart(h: Harness) -> None:
    """Review F11: a mysql relay's TLS sessions are drained at connection level, never closed
    at a boundary; the answer says them apart from the sessions it follows."""

    class Session:
        def __init__(self, state: str) -> None:
            self.state = state

    server = h.server("web/w1")
    kept = [Session("idle"), Session("transaction"), Session(sessions.OPAQUE)]
    for s in kept:
        sessions.track(server, s)
    server.connections = 3
    try:
        r = h.service.maintenance("web/w1", A)
    finally:
        for s in kept:
            sessions.untrack(server, s)
    assert r.closed == 0
    assert "2 session(s) close at their transaction boundary" in r.message, r.message
    assert "1 TLS session(s) drained at connection level" in r.message, r.message
    assert "request boundary" not in r.message, r.message


async def test_force_closes_and_counts(h: Harness) -> None:
    h.server("web/w2").connections = 7
    r = h.service.maintenance("web/w2", A, force=True)
    assert r.changed and r.closed == 7 and "7 connection(s) closed" in r.message
    assert h.closes == [("web/w2", CloseMode.ALL)]


async def test_idempotent_commands_say_so(h: Harness) -> None:
    h.service.maintenance("web/w1", replace(A, reason="first"))
    h.closes.clear()
    r = h.service.maintenance("web/w1", replace(A, reason="again"))
    assert not r.changed and r.closed == 0
    assert r.message == "web/w1 is already in maintenance: nothing changed"
    assert h.closes == []
    assert h.server("web/w1").admin.reason == "first"  # the original record stays
    r = h.service.enable("web/w3", A)
    assert not r.changed and r.message == "web/w3 is already enabled: nothing changed"
    h.service.drain("web/w4", A, timeout=30)
    r = h.service.drain("web/w4", A, timeout=30)
    assert not r.changed and "already draining" in r.message
    assert h.kinds().count("admin_command") == 3


async def test_force_on_maintenance_closes_what_is_left(h: Harness) -> None:
    h.service.maintenance("web/w1", A)
    h.server("web/w1").connections = 2
    r = h.service.maintenance("web/w1", A, force=True)
    assert not r.changed and r.closed == 2
    assert "already in maintenance" in r.message and "2 connection(s) closed" in r.message
    assert h.closes[-1] == ("web/w1", CloseMode.ALL)


async def test_drain_update_changes_deadline(h: Harness) -> None:
    now = h.clock.time()
    h.service.drain("web/w1", A)
    r = h.service.drain("web/w1", A, timeout=10)
    assert not r.changed and "drain updated" in r.message
    assert h.server("web/w1").admin.deadline == now + 10
    assert h.store.load_admin()["web/w1"].deadline == now + 10  # persisted too


# not found, guards, invalid --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nopool/w1", "no pool named 'nopool'"),
        ("web/w9", "pool 'web' has no server 'w9'"),
        ("w9", "no server named 'w9'"),
    ],
)
async def test_unknown_server_is_not_found(h: Harness, ref: str, message: str) -> None:
    with pytest.raises(NotFound, match=message):
        h.service.maintenance(ref, A)
    (e,) = h.service.events(EventQuery(kind="admin_refused"))
    assert message in e.detail["error"] and e.actor == "alice"
    assert all(s.admin.state is Admin.ENABLED for s in h.registry.servers())


async def test_ambiguous_name_needs_the_pool(db: object, tmp_path: object) -> None:
    from .conftest import make_harness, raw_config, stop_harness

    raw = raw_config()
    raw["pools"]["api"]["servers"].append({"name": "w1", "address": "127.0.0.1:9003"})
    h = await make_harness(f"{tmp_path}/amb.db", raw=raw)
    with pytest.raises(NotFound, match=r"several pools \(api, web\): use POOL/SERVER"):
        h.service.drain("w1", A)
    await stop_harness(h)


@pytest.mark.parametrize(
    "command",
    [
        lambda s: s.maintenance("web/w3", A),
        lambda s: s.maintenance("web/w3", A, force=True),
        lambda s: s.drain("web/w3", A),
        lambda s: s.disable("web/w3", A),
        lambda s: s.disable("web/w3", A, graceful=True, timeout=5),
    ],
)
async def test_guard_refuses_naming_pool_count_and_limit(h: Harness, command: object) -> None:
    h.service.maintenance("web/w1", A)
    h.service.drain("web/w2", A)  # 2 of 4 left eligible, min_servers_up 2
    h.closes.clear()
    before = h.store.load_admin()
    with pytest.raises(GuardRefused) as err:
        command(h.service)  # type: ignore[operator]
    msg = err.value.message
    assert "pool 'web'" in msg and "1 eligible server(s)" in msg and "min_servers_up 2" in msg
    assert err.value.status_hint == 409
    assert h.server("web/w3").admin.state is Admin.ENABLED
    assert h.store.load_admin() == before and h.closes == []
    refused = h.service.events(EventQuery(kind="admin_refused"))[-1]
    assert refused.server == "w3" and "min_servers_up 2" in refused.detail["error"]


async def test_force_guard_overrides(h: Harness) -> None:
    h.service.maintenance("web/w1", A)
    h.service.maintenance("web/w2", A)
    r = h.service.maintenance("web/w3", replace(A, force_guard=True))
    assert r.changed and h.registry.pool("web").eligible_count == 1


async def test_guard_does_not_block_servers_already_out(h: Harness) -> None:
    h.service.maintenance("web/w1", A)
    h.service.maintenance("web/w2", A)
    r = h.service.drain("web/w1", A)  # maintenance → drain: w1 was not eligible anyway
    assert r.changed
    assert h.service.enable("web/w2", A).changed


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (lambda s, now: s.drain("web/w1", A, timeout=0), "drain timeout must be above 0"),
        (lambda s, now: s.drain("web/w1", A, timeout=-5), "drain timeout must be above 0"),
        (lambda s, now: s.maintenance("web/w1", replace(A, expires=now - 1)), "expiry must be in"),
        (
            lambda s, now: s.drain("web/w1", replace(A, expires=now + 30), timeout=60),
            "after the drain",
        ),
        (lambda s, now: s.disable("web/w1", A, timeout=5), "needs graceful"),
        (lambda s, now: s.disable("web/w1", A, graceful=True, timeout=-3), "-1 .no timeout"),
        (lambda s, now: s.clear("web/w1", "enabled", A), "use maintenance or drain"),
    ],
)
async def test_invalid_commands_change_nothing(h: Harness, command: object, message: str) -> None:
    with pytest.raises(InvalidCommand, match=message):
        command(h.service, h.clock.time())  # type: ignore[operator]
    assert h.server("web/w1").admin.state is Admin.ENABLED
    assert h.store.load_admin() == {} and h.closes == []
    assert h.kinds()[-1] == "admin_refused"


# deadlines, expiries ---------------------------------------------------------------------------


async def test_drain_deadline_fires_into_maintenance_and_closes(h: Harness) -> None:
    clock = fake(h)
    w1 = h.server("web/w1")
    w1.connections = 3
    r = h.service.drain("web/w1", replace(A, reason="swap disk"), timeout=30)
    assert r.changed and r.closed == 0 and h.closes == []
    assert w1.status == "draining (3)"
    clock.advance(29.999)
    assert h.service.tick() == [] and w1.admin.state is Admin.DRAIN
    clock.advance(0.001)
    assert len(h.service.tick()) == 1
    assert w1.admin.state is Admin.MAINTENANCE and w1.admin.cause is Cause.DEADLINE
    assert w1.admin.reason == "swap disk" and w1.admin.deadline is None
    assert h.closes == [("web/w1", CloseMode.ALL)]
    e = h.service.events(EventQuery(kind="admin_change"))[-1]
    assert (e.from_, e.to, e.cause, e.actor) == ("drain", "maintenance", "deadline", "alice")
    assert h.store.load_admin()["web/w1"].state is Admin.MAINTENANCE
    assert h.service.tick() == []


async def test_drain_without_deadline_stays_draining_and_shows_drained(h: Harness) -> None:
    clock = fake(h)
    w1 = h.server("web/w1")
    w1.connections = 2
    h.service.drain("web/w1", A)
    clock.advance(86400 * 365)
    assert h.service.tick() == [] and h.registry.next_due() is None
    assert w1.status == "draining (2)"
    w1.connections = 0
    assert w1.status == "drained" and h.closes == []


async def test_expiry_fires_exactly_once(h: Harness) -> None:
    clock = fake(h)
    w1 = h.server("web/w1")
    h.service.maintenance("web/w1", replace(A, reason="patch", expires=clock.time() + 600))
    assert h.registry.next_due() == clock.time() + 600
    clock.advance(599)
    assert h.service.tick() == []
    clock.advance(1)
    assert len(h.service.tick()) == 1
    assert w1.admin.state is Admin.ENABLED and w1.admin.cause is Cause.EXPIRY
    clock.advance(1000)
    assert h.service.tick() == []
    expiries = [e for e in h.service.events(EventQuery(kind="admin_change")) if e.cause == "expiry"]
    assert len(expiries) == 1 and expiries[0].reason == "expired: patch"
    assert h.store.load_admin()["web/w1"].state is Admin.ENABLED


async def test_drain_deadline_then_expiry(h: Harness) -> None:
    clock = fake(h)
    now = clock.time()
    h.service.drain("web/w1", replace(A, expires=now + 20), timeout=10)
    clock.advance(25)  # both passed: the deadline fires first, then the expiry
    fired = h.service.tick()
    assert [(t.before.state, t.after.state) for t in fired] == [
        (Admin.DRAIN, Admin.MAINTENANCE),
        (Admin.MAINTENANCE, Admin.ENABLED),
    ]


# disable: Avi's three modes -------------------------------------------------------------------


async def test_disable_immediate(h: Harness) -> None:
    h.server("web/w1").connections = 5
    r = h.service.disable("web/w1", A)
    assert r.server.admin.state is Admin.MAINTENANCE and r.closed == 5
    assert h.closes == [("web/w1", CloseMode.ALL)]


async def test_disable_graceful_with_timeout(h: Harness) -> None:
    clock = fake(h)
    r = h.service.disable("web/w1", A, graceful=True, timeout=90)
    assert r.server.admin.state is Admin.DRAIN and r.server.admin.deadline == clock.time() + 90
    clock.advance(90)
    h.service.tick()
    assert r.server.admin.state is Admin.MAINTENANCE and h.closes == [("web/w1", CloseMode.ALL)]


async def test_disable_graceful_uses_pool_default(h: Harness) -> None:
    now = h.clock.time()
    r = h.service.disable("web/w1", A, graceful=True)  # web: graceful_disable_timeout 30s
    assert r.server.admin.state is Admin.DRAIN and r.server.admin.deadline == now + 30


async def test_disable_pool_default_zero_is_immediate(h: Harness) -> None:
    h.server("api/a1").connections = 1
    r = h.service.disable("api/a1", A, graceful=True)  # api: 0
    assert r.server.admin.state is Admin.MAINTENANCE and r.closed == 1


async def test_disable_timeout_zero_is_immediate(h: Harness) -> None:
    r = h.service.disable("web/w1", A, graceful=True, timeout=0)
    assert r.server.admin.state is Admin.MAINTENANCE
    assert h.closes == [("web/w1", CloseMode.ALL)]


@pytest.mark.parametrize(
    ("ref", "timeout"), [("web/w1", -1), ("web/w1", float("inf")), ("batch/b1", None)]
)
async def test_disable_until_all_flows_drain(h: Harness, ref: str, timeout: float | None) -> None:
    r = h.service.disable(ref, A, graceful=True, timeout=timeout)
    assert r.server.admin.state is Admin.DRAIN and r.server.admin.deadline is None
    assert "no deadline" in r.message and h.closes == []


# enable, clear, weight ---------------------------------------------------------------------------


async def test_enable_returns_to_service(h: Harness) -> None:
    h.service.maintenance("web/w1", A)
    r = h.service.enable("web/w1", replace(A, reason="done"))
    assert r.changed and r.server.eligible and r.server.admin.reason == "done"
    assert h.store.load_admin()["web/w1"].state is Admin.ENABLED


async def test_clear_only_the_named_state(h: Harness) -> None:
    h.service.drain("web/w1", A)
    r = h.service.clear("web/w1", "maintenance", A)
    assert not r.changed and r.server.admin.state is Admin.DRAIN
    assert r.message == "web/w1 is not in maintenance (it is draining): nothing to clear"
    assert h.service.events()[-1].kind is EventKind.ADMIN_COMMAND
    r = h.service.clear("web/w1", "drain", A)
    assert r.changed and r.server.admin.state is Admin.ENABLED


async def test_set_weight(h: Harness) -> None:
    h.service.set_weight("web/w1", 5, A)
    assert h.server("web/w1").weight == 5
    e = h.service.events()[-1]
    assert e.kind is EventKind.ADMIN_COMMAND and e.detail["weight"] == 5
    with pytest.raises(InvalidCommand, match="outside 0-256"):
        h.service.set_weight("web/w1", 300, A)
    assert h.server("web/w1").weight == 5


# flags, monitors ------------------------------------------------------------------------------


async def test_flags_are_persisted(h: Harness) -> None:
    h.service.set_flag("maintenance_mode", True, replace(A, reason="deploy"))
    h.service.set_flag("color", "blue", A)
    h.service.clear_flag("banner", A)
    assert h.store.load_flags() == {"maintenance_mode": True, "color": "blue"}
    assert h.store.load_cleared_flags() == {"banner"}
    with pytest.raises(NotFound):
        h.service.clear_flag("banner", A)
    with pytest.raises(InvalidCommand, match="flag name"):
        h.service.set_flag("bad name!", True, A)
    assert "bad name!" not in h.registry.flags


async def test_monitors_are_persisted_and_health_told(h: Harness) -> None:
    m = HealthMonitor.model_validate(
        {
            "type": "http",
            "send_interval": 3,
            "receive_timeout": 1,
            "http_monitor": {"maintenance_code": [503]},
        }
    )
    assert h.service.put_monitor("web-http", m, A) is True
    assert h.service.put_monitor("web-http", m, A) is False
    h.service.set_pool_monitors("web", ["web-http", "hm"], A)
    h.service.delete_monitor("spare", A)
    assert h.monitor_syncs == 4
    assert HealthMonitor.model_validate(h.store.load_monitors()["web-http"]) == m
    assert h.store.load_pool_monitors() == {"web": ["web-http", "hm"]}
    assert h.store.load_deleted_monitors() == {"spare"}
    with pytest.raises(GuardRefused, match="detach it first"):
        h.service.delete_monitor("hm", A)
    with pytest.raises(NotFound):
        h.service.set_pool_monitors("web", ["nope"], A)
    assert h.store.load_pool_monitors() == {"web": ["web-http", "hm"]}


# the event log ---------------------------------------------------------------------------------


async def test_event_listing_filters(h: Harness) -> None:
    clock = fake(h)
    t0 = clock.time()
    h.service.maintenance("web/w1", A)
    clock.advance(10)
    h.service.drain("api/a1", A)
    clock.advance(10)
    h.service.set_flag("x", True, A)
    assert [e.server for e in h.service.events(EventQuery(pool="api"))] == ["a1"]
    assert [e.to for e in h.service.events(EventQuery(server="w1"))] == ["maintenance"]
    assert [e.kind.value for e in h.service.events(EventQuery(since=t0 + 15))] == ["flag_change"]
    assert [e.server for e in h.service.events(EventQuery(kind="admin_change", until=t0 + 5))] == [
        "w1"
    ]
    everything = h.service.events(EventQuery(limit=1000))
    assert everything[0].kind is EventKind.STARTUP
    first_id = everything[0].id
    assert first_id is not None
    assert h.service.events(EventQuery(after_id=first_id, limit=1))[0] == everything[1]
    with pytest.raises(InvalidCommand, match="unknown event kind 'nope'"):
        h.service.events(EventQuery(kind="nope"))
    with pytest.raises(InvalidCommand, match="limit"):
        h.service.events(EventQuery(limit=0))
