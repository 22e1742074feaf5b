"""A takeover's server state (quiesce.state.handover), sans IO: the new process's registry
seeded with the old one's tracks serves at once and keeps the old one's hysteresis; what no
longer applies (a server gone or re-addressed, a monitor changed) is checked afresh."""

from __future__ import annotations

import json
from typing import Any

from quiesce.config import parse_config
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import FakeClock
from quiesce.core.events import EventKind
from quiesce.core.states import Oper, Verdict
from quiesce.state.handover import seed, snapshot
from quiesce.state.registry import Registry, ServerRuntime


def raw(*, port_b: int = 2, interval: float = 1, weight_a: int = 1) -> dict[str, Any]:
    return {
        "healthmonitors": {
            "hm": {
                "type": "tcp",
                "send_interval": interval,
                "receive_timeout": 0.5,
                "failed_checks": 3,
            }
        },
        "pools": {
            "web": {
                "healthmonitors": ["hm"],
                "servers": [
                    {"name": "a", "address": "127.0.0.1:1", "weight": weight_a},
                    {"name": "b", "address": f"127.0.0.1:{port_b}"},
                    {"name": "c", "address": "127.0.0.1:3"},
                ],
            },
            "plain": {"servers": [{"name": "p", "address": "127.0.0.1:4"}]},
        },
    }


def fail(reg: Registry, s: ServerRuntime) -> None:
    reg.record_check(
        s,
        CheckResult("hm", Verdict.FAIL, Reason.TIMEOUT, reg.clock.time(), 0.5),
    )


def passed(reg: Registry, s: ServerRuntime) -> None:
    reg.record_check(s, CheckResult("hm", Verdict.PASS, Reason.OK, reg.clock.time(), 0.001))


def old_registry() -> Registry:
    old = Registry(parse_config(raw()), FakeClock())
    a, b, c = old.pool("web").servers
    passed(old, a)
    passed(old, b)
    fail(old, a)  # a: up, one failure of three counted
    fail(old, c)  # c: down
    old.set_weight(b, 7)  # set weight (runtime, not persisted)
    old.set_health_checks(old.find_server("plain/p"), False)
    return old


def test_the_new_registry_serves_as_the_old_one_did_before_any_check() -> None:
    state = json.loads(json.dumps(snapshot(old_registry())))  # what crosses the socket
    new = Registry(parse_config(raw()), FakeClock())
    events: list[Any] = []
    new.listeners.append(events.append)
    assert not new.pool("web").available  # fresh: every monitored server unknown
    assert seed(new, state) == 3
    a, b, c = new.pool("web").servers
    assert (a.oper, b.oper, c.oper) == (Oper.UP, Oper.UP, Oper.DOWN)
    assert [s.name for s in new.pool("web").candidates] == ["a", "b"]
    assert b.weight == 7 and b.effective_weight == 7
    assert new.find_server("plain/p").health_checks is False
    assert a.checks_failed == 1 and c.went_down == 1
    assert [e.kind for e in events] == [EventKind.POOL_UP]
    # the old process's hysteresis carries on: a had one failure of three counted
    fail(new, a)
    assert a.oper is Oper.UP
    fail(new, a)
    assert a.oper is Oper.DOWN


def test_one_timeout_does_not_take_a_seeded_server_down() -> None:
    """The 503s of issue 14: a fresh process took a server down on one slow check."""
    state = snapshot(old_registry())
    fresh = Registry(parse_config(raw()), FakeClock())
    seeded = Registry(parse_config(raw()), FakeClock())
    seed(seeded, state)
    for reg in (fresh, seeded):
        fail(reg, reg.find_server("web/b"))
    assert fresh.find_server("web/b").oper is Oper.DOWN
    assert seeded.find_server("web/b").oper is Oper.UP
    assert seeded.pool("web").available


def test_what_changed_is_checked_afresh() -> None:
    state = snapshot(old_registry())
    # b re-addressed, a's weight changed in the file
    new = Registry(parse_config(raw(port_b=9, weight_a=5)), FakeClock())
    seed(new, state)
    a, b, _ = new.pool("web").servers
    assert a.oper is Oper.UP and b.oper is Oper.UNKNOWN
    assert b.weight == 7  # set weight kept: the file did not change b's weight (reload's rule)
    assert a.weight == 5  # the file's new weight
    # a monitor changed: every track starts afresh
    changed = Registry(parse_config(raw(interval=2)), FakeClock())
    assert seed(changed, state) == 0
    assert all(s.oper is Oper.UNKNOWN for s in changed.pool("web").servers)


def test_a_state_it_does_not_understand_changes_nothing() -> None:
    new = Registry(parse_config(raw()), FakeClock())
    for bad in ({}, {"version": 99}, {"version": 1, "servers": {"web/a": [1, 2]}}, []):
        assert seed(new, bad) == 0  # type: ignore[arg-type]
    assert all(s.oper is Oper.UNKNOWN for s in new.pool("web").servers)
