"""Property tests: random sequences of check results, admin commands and time over a registry.

Invariants (issue 2): eligible ⇒ admin enabled and oper up/unmonitored; a server in maintenance
on either axis is never elected primary; an expiry returns a server to enabled exactly once.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quiesce.config import parse_config
from quiesce.core.admin import AdminCommand
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import FakeClock
from quiesce.core.errors import QuiesceError
from quiesce.core.events import Event, EventKind
from quiesce.core.states import Admin, Cause, Oper, Verdict
from quiesce.core.status import in_maintenance
from quiesce.state.registry import Registry

MONITOR = {"type": "tcp", "send_interval": 1, "receive_timeout": 0.5}


def make_registry(mode: str, clock: FakeClock) -> Registry:
    raw: dict[str, Any] = {
        "healthmonitors": {"m1": MONITOR, "m2": MONITOR},
        "pools": {
            "p": {
                "mode": mode,
                "healthmonitors": ["m1", "m2"],
                "min_health_monitors_up": 1,
                "min_servers_up": 1,
                "servers": [
                    {"name": "a", "address": "127.0.0.1:1", "priority": 3},
                    {"name": "b", "address": "127.0.0.1:2", "priority": 2},
                    {"name": "c", "address": "127.0.0.1:3", "backup": True},
                ],
            }
        },
    }
    return Registry(parse_config(raw), clock)


servers = st.sampled_from(["a", "b", "c"])
check_step = st.tuples(
    st.just("check"), servers, st.sampled_from(["m1", "m2"]), st.sampled_from(list(Verdict))
)
admin_step = st.tuples(
    st.just("admin"),
    servers,
    st.sampled_from(list(Admin)),
    st.booleans(),  # force
    st.sampled_from([None, 5.0, 30.0]),  # expiry in seconds
    st.sampled_from([None, 3.0]),  # drain deadline in seconds
    st.booleans(),  # force the guard
)
time_step = st.tuples(st.just("time"), st.sampled_from([0.5, 2.0, 10.0, 40.0]))
steps = st.lists(st.one_of(check_step, admin_step, time_step), max_size=60)


def check_invariants(reg: Registry) -> None:
    pool = reg.pool("p")
    for s in pool.servers:
        if s.eligible:
            assert s.admin.state is Admin.ENABLED
            assert s.oper in (Oper.UP, Oper.UNMONITORED)
    for s in pool.candidates:
        assert s.eligible
    if pool.config.mode == "active_standby":
        if pool.primary is not None:
            primary = pool.server(pool.primary)
            assert not in_maintenance(primary.admin.state, primary.oper)
            assert primary.eligible
        else:
            assert not any(s.eligible for s in pool.servers)
    elif any(s.eligible and not s.config.backup for s in pool.servers):
        assert all(not s.config.backup for s in pool.candidates)
    assert pool.available == bool(pool.candidates)


@settings(max_examples=300, deadline=None)
@given(mode=st.sampled_from(["balanced", "active_standby"]), program=steps)
def test_invariants_hold_over_random_programs(mode: str, program: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    reg = make_registry(mode, clock)
    events: list[Event] = []
    reg.listeners.append(events.append)
    expiries_set: dict[str, float] = {}
    for step in program:
        if step[0] == "check":
            _, name, monitor, verdict = step
            result = CheckResult(monitor, verdict, Reason.OK, clock.time(), 0.001)
            reg.record_check(reg.find_server(name), result)
        elif step[0] == "admin":
            _, name, target, force, expiry, deadline, force_guard = step
            now = clock.time()
            cmd = AdminCommand(
                target,
                "prop",
                cause=Cause.API,
                force=force,
                expires=None if expiry is None else now + expiry,
                deadline=None if deadline is None else now + deadline,
            )
            server = reg.find_server(name)
            before = server.admin
            try:
                t = reg.admin_command(server, cmd, force_guard=force_guard)
            except QuiesceError:
                assert server.admin == before  # refused: nothing changed
            else:
                if t.changed and t.after.expires is not None:
                    expiries_set[name] = t.after.expires
        else:
            clock.advance(step[1])
            reg.tick()
        check_invariants(reg)
    # every expiry that came due fired exactly once per setting
    expiry_events = [e for e in events if e.kind is EventKind.ADMIN_CHANGE and e.cause == "expiry"]
    for e in expiry_events:
        assert e.to == "enabled"
    fired = {(e.server, e.time) for e in expiry_events}
    assert len(fired) == len(expiry_events)


def test_expiry_fires_once_through_registry() -> None:
    clock = FakeClock()
    reg = make_registry("balanced", clock)
    events: list[Event] = []
    reg.listeners.append(events.append)
    server = reg.find_server("c")
    reg.admin_command(server, AdminCommand(Admin.MAINTENANCE, "op", expires=clock.time() + 10))
    clock.advance(9)
    assert reg.tick() == []
    clock.advance(2)
    assert len(reg.tick()) == 1
    assert server.admin.state is Admin.ENABLED
    assert reg.tick() == []
    expiry = [e for e in events if e.cause == "expiry"]
    assert len(expiry) == 1 and expiry[0].actor == "op"
