"""The one event factory (quiesce.state.events) and the one event filter (EventQuery)."""

from __future__ import annotations

from quiesce.config import parse_config
from quiesce.core.clock import FakeClock
from quiesce.core.events import EventKind
from quiesce.core.states import Admin, Cause
from quiesce.state.events import make_event
from quiesce.state.registry import Registry

RAW = {"pools": {"web": {"servers": [{"name": "a", "address": "127.0.0.1:1"}]}}}


def test_make_event_stamps_time_and_the_pool_counts() -> None:
    clock = FakeClock(1000.0)
    reg = Registry(parse_config(RAW), clock)
    pool = reg.pool("web")
    e = make_event(
        clock,
        EventKind.ADMIN_REFUSED,
        pool,
        server="a",
        from_=Admin.ENABLED,
        to=Admin.MAINTENANCE,
        cause=Cause.API,
        actor="alice",
    )
    assert (e.time, e.pool, e.eligible, e.sessions) == (1000.0, "web", 1, 0)
    # enum members are stored as their text, exactly like the store reads them back
    assert (e.from_, e.to, e.cause) == ("enabled", "maintenance", "api")
    assert type(e.cause) is str and type(e.from_) is str
    assert e.detail == {} and e.id is None


def test_make_event_with_a_pool_name_or_no_pool() -> None:
    clock = FakeClock(5.0)
    named = make_event(clock, EventKind.ADMIN_REFUSED, "web", server="zz")
    assert (named.pool, named.eligible, named.sessions) == ("web", None, None)
    bare = make_event(clock, EventKind.SHUTDOWN, cause="signal")
    assert (bare.pool, bare.kind, bare.cause, bare.time) == (
        None,
        EventKind.SHUTDOWN,
        "signal",
        5.0,
    )
