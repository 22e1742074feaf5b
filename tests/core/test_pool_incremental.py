"""Property tests (issue 21): the registry keeps each pool's derived state per change, in
O(log n) (quiesce.state.poolstate); after random sequences of check results, admin commands,
weight changes, server additions, updates and removals, connection counts, time, and batches
of these, it must equal what a from-scratch pass over the pool computes here (the rules the
registry recomputed over the whole pool before: DESIGN §1, core.pool)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quiesce.config import parse_config
from quiesce.config.models import ServerConfig
from quiesce.core import admin as admin_sm
from quiesce.core.admin import AdminCommand
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import FakeClock
from quiesce.core.errors import QuiesceError
from quiesce.core.events import Event, EventKind
from quiesce.core.pool import elect, slow_start_factor
from quiesce.core.states import Admin, Cause, Verdict
from quiesce.state.registry import Registry
from quiesce.state.runtime import PoolRuntime

MONITOR = {
    "type": "tcp",
    "send_interval": 1,
    "receive_timeout": 0.5,
    "successful_checks": 1,
    "failed_checks": 1,
}
NAMES = [f"s{i}" for i in range(8)]


def make_registry(mode: str, slow_start: float, preempt: bool, clock: FakeClock) -> Registry:
    servers = [
        {"name": n, "address": f"127.0.0.1:{1000 + i}", "priority": i % 3, "backup": i >= 5}
        for i, n in enumerate(NAMES[:6])
    ]
    raw: dict[str, Any] = {
        "healthmonitors": {"m1": MONITOR, "m2": MONITOR},
        "pools": {
            "p": {
                "mode": mode,
                "preempt": preempt,
                "slow_start": slow_start,
                "healthmonitors": ["m1"],
                "min_servers_up": 1,
                "servers": servers,
            }
        },
    }
    return Registry(parse_config(raw), clock)


name = st.sampled_from(NAMES)
step = st.one_of(
    st.tuples(st.just("check"), name, st.sampled_from(list(Verdict))),
    st.tuples(
        st.just("admin"),
        name,
        st.sampled_from(list(Admin)),
        st.sampled_from([None, 5.0]),  # expiry
        st.sampled_from([None, 3.0]),  # drain deadline
        st.booleans(),  # force the guard
    ),
    st.tuples(st.just("weight"), name, st.integers(0, 5)),
    st.tuples(st.just("update"), name, st.booleans(), st.integers(0, 3), st.integers(1, 4)),
    st.tuples(st.just("add"), name, st.booleans(), st.booleans()),
    st.tuples(st.just("remove"), name),
    st.tuples(st.just("connections"), name, st.integers(0, 3)),
    st.tuples(st.just("removing"), name, st.booleans()),  # drain-then-delete asked
    st.tuples(st.just("time"), st.sampled_from([0.5, 2.0, 10.0])),
    st.tuples(st.just("all"), st.sampled_from(list(Verdict))),  # a blip: every server
)
program = st.lists(
    st.one_of(step, st.tuples(st.just("batch"), st.lists(step, max_size=8))), max_size=40
)


def run(reg: Registry, clock: FakeClock, s: tuple[Any, ...]) -> None:
    pool = reg.pool("p")
    kind = s[0]
    if kind == "time":
        clock.advance(s[1])
        reg.tick()
        return
    if kind == "all":
        for name in NAMES:
            run(reg, clock, ("check", name, s[1]))
        return
    if kind == "add":
        if not pool.has(s[1]):
            monitors = ["m2"] if s[3] else []
            cfg = ServerConfig(
                name=s[1], address="127.0.0.1:9", backup=s[2], healthmonitors=monitors
            )
            reg.add_server("p", cfg, actor="t", cause=Cause.API)
        return
    if not pool.has(s[1]):
        return
    server = pool.server(s[1])
    try:
        if kind == "check":
            for m in list(server.tracks):
                reg.record_check(server, CheckResult(m, s[2], Reason.OK, clock.time(), 0.001))
        elif kind == "admin":
            now = clock.time()
            cmd = AdminCommand(
                s[2],
                "t",
                expires=None if s[3] is None else now + s[3],
                deadline=None if s[4] is None else now + s[4],
            )
            reg.admin_command(server, cmd, force_guard=s[5])
        elif kind == "weight":
            reg.set_weight(server, s[2])
        elif kind == "update":
            changes = {"backup": s[2], "priority": s[3], "weight": s[4]}
            reg.update_server(server, changes, actor="t", cause=Cause.API)
        elif kind == "remove":
            if server.admin.state is Admin.ENABLED:
                reg.admin_command(server, AdminCommand(Admin.MAINTENANCE, "t"), force_guard=True)
            server.connections = 0
            reg.remove_server(server, actor="t", cause=Cause.API)
        elif kind == "connections":
            server.connections = s[2]
        elif kind == "removing":
            server.removing = s[2]
    except QuiesceError:
        pass  # refused (the guard, a bad command): the comparison below still holds


class Reference:
    """The pool's derived state computed from scratch, as the registry once did per change:
    the election after each change (each event), or once at the end of a batch."""

    def __init__(self, pool: PoolRuntime) -> None:
        self.pool = pool
        self.batching = False
        self.primary = elect(pool.members(), None, pool.config.preempt)

    def elect(self, _: Event | None = None) -> None:
        if not self.batching:
            self.primary = elect(self.pool.members(), self.primary, self.pool.config.preempt)

    def check(self, reg: Registry, pool: PoolRuntime, now: float) -> None:
        eligible = [s for s in pool.servers if s.eligible]
        primaries = [s for s in eligible if not s.config.backup]
        candidates = primaries or [s for s in eligible if s.config.backup]
        assert pool.eligible_count == len(eligible)
        assert pool.sessions == sum(s.connections for s in pool.servers)
        assert set(pool.removing()) == {s for s in pool.servers if s.removing}
        assert pool.available == bool(candidates)
        for s in pool.servers:
            assert (s.eligible_since is not None) == s.eligible, s.name
        if pool.config.mode == "active_standby":
            assert pool.primary == self.primary
            assert list(pool.candidates) == ([pool.server(self.primary)] if self.primary else [])
        else:
            assert list(pool.candidates) == candidates  # config order
        period = pool.config.slow_start
        if period > 0:
            pool.refresh_weights(now)  # what every pick does under slow start
        for s in pool.candidates:
            assert s.effective_weight == s.weight * slow_start_factor(s.eligible_since, now, period)
        assert [s.name for s in pool.servers] == sorted(
            (s.name for s in pool.servers), key=lambda n: pool.server(n).order
        )
        dues = [t for s in reg.servers() if (t := admin_sm.next_due(s.admin)) is not None]
        due = reg.next_due()
        # the registry forgets a time tick() found nothing to fire at (an enabled record
        # keeps its expiry); a from-scratch pass would still name it
        assert due is None or due == min(dues)
        if due is None and dues:
            assert all(s.admin.state is Admin.ENABLED for s in reg.servers() if s.admin.expires)


@settings(max_examples=400, deadline=None)
@given(
    mode=st.sampled_from(["balanced", "active_standby"]),
    slow_start=st.sampled_from([0.0, 10.0]),
    preempt=st.booleans(),
    steps=program,
)
def test_incremental_pool_state_equals_a_from_scratch_pass(
    mode: str, slow_start: float, preempt: bool, steps: list[tuple[Any, ...]]
) -> None:
    clock = FakeClock()
    reg = make_registry(mode, slow_start, preempt, clock)
    pool = reg.pool("p")
    ref = Reference(pool)
    ref.check(reg, pool, clock.time())
    reg.listeners.append(ref.elect)
    run(reg, clock, ("all", Verdict.PASS))  # most programs start from a pool that is up
    ref.check(reg, pool, clock.time())
    events: list[Event] = []
    reg.listeners.append(events.append)
    for s in steps:
        if s[0] == "batch":
            before = len(events)
            ref.batching = True
            with reg.deferring():
                for sub in s[1]:
                    run(reg, clock, sub)
                ref.batching = False
            ref.elect()
            batch = events[before:]
            pool_events = [e for e in batch if e.kind in (EventKind.POOL_UP, EventKind.POOL_DOWN)]
            elections = [e for e in batch if e.kind is EventKind.ELECTION]
            assert len(pool_events) <= 1 and len(elections) <= 1  # one per batch, at its end
            assert all(e in batch[-2:] for e in pool_events + elections)
        else:
            run(reg, clock, s)
        ref.check(reg, pool, clock.time())
    ups_downs = [e for e in events if e.kind in (EventKind.POOL_UP, EventKind.POOL_DOWN)]
    if ups_downs:
        assert (ups_downs[-1].kind is EventKind.POOL_UP) == pool.available
    for a, b in itertools.pairwise(ups_downs):
        assert a.kind is not b.kind  # up and down alternate: no event repeats a state


def test_a_batch_of_ten_thousand_changes_has_one_event_each_and_one_pool_event() -> None:
    clock = FakeClock()
    raw: dict[str, Any] = {
        "healthmonitors": {"m": MONITOR},
        "pools": {
            "p": {
                "healthmonitors": ["m"],
                "servers": [
                    {"name": f"s{i}", "address": f"10.0.{i >> 8}.{i & 255}:80"}
                    for i in range(10_000)
                ],
            }
        },
    }
    reg = Registry(parse_config(raw), clock)
    pool = reg.pool("p")
    events: list[Event] = []
    reg.listeners.append(events.append)
    for verdict, kind in ((Verdict.PASS, EventKind.POOL_UP), (Verdict.FAIL, EventKind.POOL_DOWN)):
        events.clear()
        with reg.deferring():
            for s in pool.servers:
                reg.record_check(s, CheckResult("m", verdict, Reason.OK, clock.time(), 0.001))
        oper = [e for e in events if e.kind is EventKind.OPER_CHANGE]
        assert len(oper) == 10_000
        assert [e.kind for e in events if e.kind is not EventKind.OPER_CHANGE] == [kind]
        assert events[-1].kind is kind
        assert pool.eligible_count == (10_000 if verdict is Verdict.PASS else 0)


def test_a_batch_wraps_its_events_once_from_the_first_one() -> None:
    """The state store's transaction (a batch wrapper) is entered at a batch's first event
    and left at its end: one commit for a burst, none for a batch that changed nothing."""
    clock = FakeClock()
    reg = make_registry("balanced", 0.0, False, clock)
    pool = reg.pool("p")
    run(reg, clock, ("all", Verdict.PASS))
    log: list[str] = []

    @contextlib.contextmanager
    def transaction() -> Iterator[None]:
        log.append("begin")
        yield
        log.append("commit")

    reg.batch_wrappers.append(transaction)
    reg.listeners.append(lambda e: log.append(e.kind.value))
    with reg.deferring():
        for s in pool.servers:  # up already (a pass): nothing changes
            reg.record_check(s, CheckResult("m1", Verdict.PASS, Reason.OK, clock.time(), 0.0))
    assert log == []
    with reg.deferring():
        for s in pool.servers:
            reg.record_check(s, CheckResult("m1", Verdict.FAIL, Reason.OK, clock.time(), 0.0))
    assert log == ["begin", *["oper_change"] * 6, "pool_down", "commit"]
    log.clear()
    reg.record_check(pool.server("s0"), CheckResult("m1", Verdict.PASS, Reason.OK, 0.0, 0.0))
    assert log == ["oper_change", "pool_up"]  # outside a batch: no wrapper
