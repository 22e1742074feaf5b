"""The registry, sans IO: events in order, guards, elections, passive maintenance, flags."""

from __future__ import annotations

from typing import Any

import pytest

from quiesce.config import parse_config
from quiesce.core.admin import AdminCommand
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import FakeClock
from quiesce.core.errors import GuardRefused, InvalidCommand, NotFound
from quiesce.core.events import Event, EventKind
from quiesce.core.states import Admin, Cause, CloseMode, Oper, Verdict
from quiesce.state.registry import Registry, ServerRuntime


def build(mode: str = "balanced", min_up: int = 1) -> tuple[Registry, list[Event]]:
    raw: dict[str, Any] = {
        "healthmonitors": {"hm": {"type": "tcp", "send_interval": 1, "receive_timeout": 0.5}},
        "pools": {
            "web": {
                "mode": mode,
                "healthmonitors": ["hm"],
                "min_servers_up": min_up,
                "servers": [
                    {"name": "a", "address": "127.0.0.1:1", "priority": 2},
                    {"name": "b", "address": "127.0.0.1:2", "priority": 1},
                ],
            },
            "other": {"servers": [{"name": "a", "address": "127.0.0.1:3"}]},
        },
    }
    reg = Registry(parse_config(raw), FakeClock())
    events: list[Event] = []
    reg.listeners.append(events.append)
    return reg, events


def check(reg: Registry, s: ServerRuntime, verdict: Verdict, code: int | None = None) -> None:
    reason = {
        Verdict.PASS: Reason.OK,
        Verdict.FAIL: Reason.CONNECTION_REFUSED,
        Verdict.MAINTENANCE: Reason.MAINTENANCE_RESPONSE_CODE_MATCH,
    }[verdict]
    reg.record_check(s, CheckResult("hm", verdict, reason, reg.clock.time(), 0.002, code))


def test_unmonitored_pool_is_available_at_start() -> None:
    reg, _ = build()
    other = reg.pool("other")
    assert other.available and other.servers[0].oper is Oper.UNMONITORED
    assert not reg.pool("web").available  # monitored: unknown until the first verdict


def test_oper_event_before_pool_up_with_check_detail() -> None:
    reg, events = build()
    a = reg.find_server("web/a")
    check(reg, a, Verdict.PASS)
    assert [e.kind for e in events] == [EventKind.OPER_CHANGE, EventKind.POOL_UP]
    detail = events[0].detail
    assert detail["reason"] == "OK" and detail["monitor"] == "hm"
    assert events[0].eligible == 1 and events[0].cause == "health"


def test_maintenance_reply_and_pool_down_event() -> None:
    reg, events = build()
    a, b = reg.find_server("web/a"), reg.find_server("web/b")
    check(reg, a, Verdict.PASS)
    check(reg, a, Verdict.MAINTENANCE, 503)
    assert a.status == "down for maintenance" and not a.eligible
    assert events[-1].kind is EventKind.POOL_DOWN
    assert events[-1].reason == "pool has no server available"
    assert events[-2].detail["reason"] == "MAINTENANCE_RESPONSE_CODE_MATCH"
    assert events[-2].detail["status_code"] == 503
    check(reg, b, Verdict.PASS)
    assert reg.pool("web").available


def test_find_server_by_unique_name_or_pool() -> None:
    reg, _ = build()
    assert reg.find_server("b").key == "web/b"
    with pytest.raises(NotFound, match="several pools"):
        reg.find_server("a")
    with pytest.raises(NotFound, match="no server 'zz'"):
        reg.find_server("web/zz")
    with pytest.raises(NotFound, match="no pool"):
        reg.find_server("nope/a")


def test_guard_refusal_names_pool_count_and_limit_and_is_an_event() -> None:
    reg, events = build(min_up=2)
    a, b = reg.find_server("web/a"), reg.find_server("web/b")
    check(reg, a, Verdict.PASS)
    check(reg, b, Verdict.PASS)
    with pytest.raises(GuardRefused) as info:
        reg.admin_command(a, AdminCommand(Admin.MAINTENANCE, "bob", "deploy", Cause.CLI))
    assert "'web'" in info.value.message and "1 eligible" in info.value.message
    assert "min_servers_up 2" in info.value.message
    assert a.admin.state is Admin.ENABLED
    refused = events[-1]
    assert refused.kind is EventKind.ADMIN_REFUSED and refused.actor == "bob"
    t = reg.admin_command(a, AdminCommand(Admin.MAINTENANCE, "bob"), force_guard=True)
    assert t.changed and a.status == "disabled"


def test_invalid_command_is_refused_event_and_changes_nothing() -> None:
    reg, events = build()
    a = reg.find_server("web/a")
    with pytest.raises(InvalidCommand):
        reg.admin_command(a, AdminCommand(Admin.DRAIN, "x", force=True))
    assert a.admin.state is Admin.ENABLED and events[-1].kind is EventKind.ADMIN_REFUSED


def test_close_requests_reach_the_data_plane() -> None:
    reg, _ = build(min_up=0)
    closes: list[tuple[str, CloseMode]] = []
    reg.close_handlers.append(lambda s, mode: closes.append((s.key, mode)))
    a = reg.find_server("web/a")
    reg.admin_command(a, AdminCommand(Admin.MAINTENANCE, "x"))
    reg.admin_command(a, AdminCommand(Admin.MAINTENANCE, "x", force=True))
    assert closes == [("web/a", CloseMode.AT_BOUNDARY), ("web/a", CloseMode.ALL)]


def test_active_standby_elects_and_re_elects_never_maintenance() -> None:
    reg, events = build("active_standby", min_up=0)
    a, b = reg.find_server("web/a"), reg.find_server("web/b")
    check(reg, b, Verdict.PASS)
    assert reg.pool("web").primary == "b"
    check(reg, a, Verdict.PASS)
    assert reg.pool("web").primary == "b"  # no preemption by default
    check(reg, b, Verdict.MAINTENANCE)
    assert reg.pool("web").primary == "a"
    elections = [e for e in events if e.kind is EventKind.ELECTION]
    assert [(e.from_, e.to) for e in elections] == [(None, "b"), ("b", "a")]
    assert [s.name for s in reg.pool("web").candidates] == ["a"]


def test_passive_maintenance_and_recovery_by_monitor() -> None:
    reg, events = build()
    a = reg.find_server("web/a")
    check(reg, a, Verdict.PASS)
    reg.mark_passive_maintenance(a, {"status_code": 506})
    assert a.oper is Oper.MAINTENANCE
    assert next(e for e in events if e.cause == "passive").detail["status_code"] == 506
    check(reg, a, Verdict.PASS)
    assert a.oper is Oper.UP


def test_flags_and_monitor_attach() -> None:
    reg, events = build()
    reg.set_flag("maintenance_mode", True, actor="ops", cause=Cause.CLI, reason="release")
    assert reg.flags["maintenance_mode"] is True
    assert events[-1].kind is EventKind.FLAG_CHANGE and events[-1].to == "true"
    reg.clear_flag("maintenance_mode", actor="ops", cause=Cause.CLI)
    with pytest.raises(NotFound):
        reg.clear_flag("maintenance_mode", actor="ops", cause=Cause.CLI)
    reg.set_pool_monitors("web", [], actor="ops", cause=Cause.API)
    assert reg.find_server("web/a").oper is Oper.UNMONITORED and reg.pool("web").available
    with pytest.raises(NotFound):
        reg.set_pool_monitors("web", ["ghost"], actor="ops", cause=Cause.API)
    reg.set_pool_monitors("web", ["hm"], actor="ops", cause=Cause.API)
    assert reg.find_server("web/a").oper is Oper.UNKNOWN
    with pytest.raises(GuardRefused, match="attached"):
        reg.delete_monitor("hm", actor="ops", cause=Cause.API)
