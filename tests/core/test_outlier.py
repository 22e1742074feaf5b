"""Passive outlier detection, sans IO and with a fake clock: the detector's runs and back-off
(quiesce.core.outlier) and the registry's ejection, limits, events and return
(quiesce.state.ejections)."""

from __future__ import annotations

from typing import Any

import pytest

from quiesce.config import parse_config
from quiesce.core.admin import AdminCommand
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import FakeClock
from quiesce.core.events import Event, EventKind
from quiesce.core.outlier import (
    OutlierTrack,
    Policy,
    decayed_times,
    ejection_time,
    refusal,
)
from quiesce.core.states import Admin, Cause, Oper, Status, Verdict
from quiesce.core.status import displayed_status, is_eligible, status_text
from quiesce.state.registry import Registry, ServerRuntime

POLICY = Policy(
    consecutive_5xx=3,
    consecutive_connect_failures=2,
    interval=10.0,
    base_ejection_time=30.0,
    max_ejection_time=100.0,
    max_ejection_percent=50,
)

# the detector ------------------------------------------------------------------------------


def test_a_run_of_5xx_trips_at_the_threshold_and_an_answer_ends_it() -> None:
    t = OutlierTrack(POLICY)
    assert [t.response(500), t.response(503)] == [False, False]
    assert t.response(200) is False  # the run is over
    assert [t.response(502), t.response(500), t.response(504)] == [False, False, True]
    assert t.tripped() == "consecutive_5xx"
    assert t.response(500) is True  # asked again while not ejected (a refusal may lift)


def test_no_response_neither_counts_nor_ends_a_run() -> None:
    t = OutlierTrack(POLICY)
    t.response(500)
    t.response(500)
    t.response(0)  # the client went away: says nothing about the server
    assert t.response(500) is True


def test_connect_failures_have_their_own_run() -> None:
    t = OutlierTrack(POLICY)
    assert t.connect_failed() is False
    t.connected()
    assert t.connect_failed() is False
    assert t.connect_failed() is True
    assert t.tripped() == "consecutive_connect_failures"
    t.response(404)  # any answer: the server is reachable
    assert t.connect_failures == 0 and t.tripped() is None


def test_a_threshold_of_0_is_off() -> None:
    t = OutlierTrack(Policy(consecutive_5xx=0, consecutive_connect_failures=1))
    assert not any(t.response(500) for _ in range(100))
    assert t.connect_failed() is True


def test_the_back_off_grows_with_each_ejection_up_to_the_cap() -> None:
    t = OutlierTrack(POLICY)
    now = 1000.0
    lengths = []
    for _ in range(5):
        duration = t.eject(now)
        assert t.ejected and t.ejected_until == now + duration
        lengths.append(duration)
        now += duration
        t.restore(now)  # and ejected again at once: no interval in service
        assert not t.ejected
    assert lengths == [30.0, 60.0, 90.0, 100.0, 100.0]  # base × n, capped at max_ejection_time
    assert t.ejections == 5


def test_the_back_off_decays_one_step_per_interval_in_service() -> None:
    t = OutlierTrack(POLICY)
    t.eject(0.0)
    t.restore(30.0)
    t.eject(31.0)  # 1 s in service: times 2
    t.restore(91.0)
    assert t.times == 2
    assert t.eject(91.0 + 25.0) == 30.0  # 25 s = two intervals: 2 - 2 + 1
    assert decayed_times(5, 0.0, 35.0, 10.0) == 2
    assert decayed_times(2, 0.0, 1000.0, 10.0) == 0
    assert decayed_times(3, None, 1000.0, 10.0) == 3


def test_ejection_time_never_below_the_base() -> None:
    p = Policy(base_ejection_time=60.0, max_ejection_time=10.0)
    assert ejection_time(p, 1) == ejection_time(p, 7) == 60.0


def test_refusal_max_percent_and_min_servers_up() -> None:
    assert refusal(0, 4, 50, 3, 0) is None
    assert refusal(1, 4, 50, 2, 0) is None  # 2 of 4 = 50 %: allowed
    assert "3 of 4 server(s) out, over max_ejection_percent 50" in str(refusal(2, 4, 50, 1, 0))
    assert refusal(0, 3, 10, 2, 0) is not None  # 10 % of 3 servers is none
    assert "leave 1 eligible server(s), below min_servers_up 2" in str(refusal(0, 4, 100, 1, 2))


@pytest.mark.parametrize("admin", list(Admin))
@pytest.mark.parametrize("oper", list(Oper))
def test_ejected_is_a_third_input_of_eligibility_and_status(admin: Admin, oper: Oper) -> None:
    assert is_eligible(admin, oper, True) is False
    shown = displayed_status(admin, oper, 0, ejected=True)
    if admin is Admin.ENABLED and oper in (Oper.UP, Oper.UNMONITORED):
        assert shown is Status.EJECTED
        assert status_text(admin, oper, 0, True) == "ejected (passive)"
    else:
        assert shown is displayed_status(admin, oper, 0)  # the axes say it first


# the registry --------------------------------------------------------------------------------


def build(
    servers: int = 4, min_up: int = 0, percent: int = 50, monitored: bool = False
) -> tuple[Registry, FakeClock, list[Event]]:
    raw: dict[str, Any] = {
        "healthmonitors": {"hm": {"type": "tcp", "send_interval": 1, "receive_timeout": 0.5}},
        "pools": {
            "web": {
                "min_servers_up": min_up,
                "healthmonitors": ["hm"] if monitored else [],
                "outlier_detection": {
                    "consecutive_5xx": 3,
                    "consecutive_connect_failures": 2,
                    "interval": "10s",
                    "base_ejection_time": "30s",
                    "max_ejection_time": "100s",
                    "max_ejection_percent": percent,
                },
                "servers": [
                    {"name": f"s{i}", "address": f"127.0.0.1:{i + 1}"} for i in range(servers)
                ],
            },
        },
    }
    clock = FakeClock()
    reg = Registry(parse_config(raw), clock)
    events: list[Event] = []
    reg.listeners.append(events.append)
    return reg, clock, events


def fail(reg: Registry, s: ServerRuntime, n: int = 3, status: int = 500) -> None:
    """What the connection table does for each response (quiesce.dataplane.table)."""
    for _ in range(n):
        o = s.outlier
        assert o is not None
        if o.response(status):
            reg.outlier_tripped(s, {"status_code": status})


def kinds(events: list[Event]) -> list[str]:
    return [e.kind.value for e in events]


def test_ejected_after_the_run_then_back_after_the_time_with_events() -> None:
    reg, clock, events = build()
    pool = reg.pool("web")
    s0 = pool.server("s0")
    fail(reg, s0, 2)
    assert s0.eligible and not events
    fail(reg, s0, 1)
    assert not s0.eligible and s0.status == "ejected (passive)"
    assert s0 not in pool.candidates and len(pool.candidates) == 3
    assert pool.pick(None, clock.time(), sticky="s0") is not s0  # not even a sticky session
    (e,) = events
    assert (e.kind, e.from_, e.to, e.cause) == (
        EventKind.SERVER_EJECTED,
        "up",
        "ejected (passive)",
        "passive",
    )
    assert e.detail["rule"] == "consecutive_5xx" and e.detail["count"] == 3
    assert e.detail["status_code"] == 500 and e.detail["ejection_time"] == 30.0
    assert e.eligible == 3
    assert reg.next_due() == clock.time() + 30.0
    clock.advance(29.9)
    reg.tick()
    assert not s0.eligible
    clock.advance(0.1)
    reg.tick()
    assert s0.eligible and s0.status == "up" and s0 in pool.candidates
    assert kinds(events) == ["server_ejected", "server_returned"]
    assert (events[1].from_, events[1].to) == ("ejected (passive)", "up")
    assert reg.next_due() is None


def test_the_second_ejection_lasts_longer() -> None:
    reg, clock, events = build()
    s0 = reg.find_server("web/s0")
    fail(reg, s0)
    clock.advance(30)
    reg.tick()
    fail(reg, s0)
    assert events[-1].detail["ejection_time"] == 60.0
    assert events[-1].detail["times_ejected"] == 2
    clock.advance(59)
    reg.tick()
    assert s0.ejected
    clock.advance(1)
    reg.tick()
    assert not s0.ejected


def test_never_past_max_ejection_percent_refused_once_per_run() -> None:
    reg, clock, events = build(servers=4, percent=50)
    s = [reg.find_server(f"web/s{i}") for i in range(4)]
    fail(reg, s[0])
    fail(reg, s[1])
    fail(reg, s[2], 6)  # a third would be 75 %
    assert [x.ejected for x in s] == [True, True, False, False]
    assert kinds(events) == ["server_ejected", "server_ejected", "ejection_refused"]
    assert "over max_ejection_percent 50" in str(events[-1].reason)
    clock.advance(30)
    reg.tick()  # s0 and s1 return: room again, the next 5xx of s2's run ejects it
    fail(reg, s[2], 1)
    assert s[2].ejected


def test_never_below_min_servers_up() -> None:
    reg, _, events = build(servers=2, percent=100, min_up=1)
    a, b = reg.find_server("web/s0"), reg.find_server("web/s1")
    fail(reg, a)
    assert a.ejected
    fail(reg, b)
    assert not b.ejected and b.eligible
    assert "below min_servers_up 1" in str(events[-1].reason)


def test_connect_failures_eject() -> None:
    reg, _, events = build()
    s0 = reg.find_server("web/s0")
    for _ in range(2):
        o = s0.outlier
        assert o is not None
        if o.connect_failed():
            reg.outlier_tripped(s0, {"connect": "refused"})
    assert s0.ejected and events[0].detail["rule"] == "consecutive_connect_failures"


def test_an_operator_ends_an_ejection_keeping_the_back_off_count() -> None:
    reg, clock, events = build()
    pool = reg.pool("web")
    s0 = pool.server("s0")
    assert not reg.end_ejection(s0, Cause.CLI, "ops", "")  # not ejected: nothing to end
    fail(reg, s0)
    fail(reg, s0, 2)  # counted during the ejection (in-flight answers)
    clock.advance(5)
    assert reg.end_ejection(s0, Cause.CLI, "ops", "fixed the disk")
    assert s0.eligible and s0.status == "up" and s0 in pool.candidates and not pool.ejected
    back = events[-1]
    assert (back.kind, back.from_, back.to, back.cause, back.actor, back.reason) == (
        EventKind.SERVER_RETURNED,
        "ejected (passive)",
        "up",
        "cli",
        "ops",
        "fixed the disk",
    )
    assert back.detail["times_ejected"] == 1
    fail(reg, s0, 2)  # the run started afresh: two are not three
    assert not s0.ejected
    fail(reg, s0, 1)  # the count was kept: the next ejection lasts twice the base
    assert s0.ejected and events[-1].detail["ejection_time"] == 60.0
    clock.advance(25)  # the first ejection's end (t=30) is stale: no return then
    reg.tick()
    assert s0.ejected and kinds(events) == ["server_ejected", "server_returned", "server_ejected"]


def test_a_monitor_saying_up_does_not_end_an_ejection_and_admin_still_applies() -> None:
    reg, clock, _ = build(monitored=True)
    s0 = reg.find_server("web/s0")
    result = CheckResult("hm", Verdict.PASS, Reason.OK, clock.time(), 0.001, None)
    reg.record_check(s0, result)
    assert s0.eligible
    fail(reg, s0)
    reg.record_check(s0, result)
    reg.force_oper(s0, Oper.UP, Cause.API, {})
    assert s0.ejected and not s0.eligible
    reg.admin_command(s0, AdminCommand(Admin.MAINTENANCE, actor="ops", cause=Cause.CLI))
    assert s0.status == "disabled"  # the operator's state shows first
    clock.advance(30)
    reg.tick()
    assert not s0.ejected and not s0.eligible  # back from ejection, still in maintenance
    reg.admin_command(s0, AdminCommand(Admin.ENABLED, actor="ops", cause=Cause.CLI))
    assert s0.eligible


def test_a_server_out_another_way_is_not_ejected() -> None:
    reg, _, events = build()
    s0 = reg.find_server("web/s0")
    reg.admin_command(s0, AdminCommand(Admin.DRAIN, actor="ops", cause=Cause.CLI))
    fail(reg, s0)  # e.g. a drain deadline's 503s
    assert not s0.ejected and EventKind.SERVER_EJECTED not in [e.kind for e in events]
    reg.admin_command(s0, AdminCommand(Admin.ENABLED, actor="ops", cause=Cause.CLI))
    fail(reg, s0, 2)  # the run while drained does not carry over: two are not three
    assert not s0.ejected
    fail(reg, s0, 1)
    assert s0.ejected


def test_a_reload_without_outlier_detection_returns_everyone() -> None:
    reg, _, _ = build()
    pool = reg.pool("web")
    s0 = pool.server("s0")
    fail(reg, s0)
    assert s0.ejected
    reg.update_pool("web", pool.config.model_copy(update={"outlier_detection": None}))
    assert s0.outlier is None and s0.eligible and s0 in pool.candidates and not pool.ejected
    assert reg.next_due() is None  # the stale return is dropped


def test_a_server_added_at_runtime_is_tracked() -> None:
    reg, _, _ = build()
    pool = reg.pool("web")
    assert all(s.outlier is not None for s in pool.servers)
    added = pool.add(pool.servers[0].config.model_copy(update={"name": "new"}))
    assert added.outlier is not None and added.outlier.policy.consecutive_5xx == 3


def test_the_haproxy_views_call_an_ejected_server_down() -> None:
    from quiesce.frontends.metrics import haproxy_server_state
    from quiesce.frontends.runtime_socket.stats import haproxy_status

    reg, _, _ = build()
    s0 = reg.find_server("web/s0")
    assert (haproxy_server_state(s0), haproxy_status(s0)) == ("UP", "no check")
    fail(reg, s0)
    assert (haproxy_server_state(s0), haproxy_status(s0)) == ("DOWN", "DOWN (ejected)")
    reg.admin_command(s0, AdminCommand(Admin.DRAIN, actor="ops", cause=Cause.CLI))
    assert (haproxy_server_state(s0), haproxy_status(s0)) == ("DRAIN", "DRAIN")


def test_the_connection_tables_report_ends_a_run_at_an_answer() -> None:
    """The data plane's one report (ConnectionTable.request_finished), which calls the
    detector only for a 5xx or while a run is open."""
    from quiesce.dataplane.table import ConnectionTable

    reg, _, _ = build()
    table = ConnectionTable(reg)
    s0 = reg.find_server("web/s0")
    conn = object()

    def answer(*statuses: int) -> None:
        for status in statuses:
            table.request_started(s0, conn, None)  # type: ignore[arg-type]
            table.request_finished(s0, conn, status, False)  # type: ignore[arg-type]

    answer(500, 502, 200, 503, 0, 500)  # the 200 ends the first run; no answer (0) is nothing
    assert not s0.ejected and s0.outlier is not None and s0.outlier.fives == 2
    table.connect_failed(s0, "refused")
    answer(404)  # an answer ends both runs
    assert (s0.outlier.fives, s0.outlier.connect_failures) == (0, 0)
    answer(504, 500)
    assert not s0.ejected
    answer(500)
    assert s0.ejected and s0.outlier.ejections == 1
