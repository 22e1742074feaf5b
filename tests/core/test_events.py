"""The one event factory (quiesce.state.events) and the one event filter (EventQuery)."""

from __future__ import annotations

import re
from dataclasses import FrozenInstanceError, replace
from typing import Any

import pytest

from quiesce.config import parse_config
from quiesce.core.clock import FakeClock
from quiesce.core.errors import InvalidCommand
from quiesce.core.events import Event, EventKind, EventQuery
from quiesce.core.states import Admin, Cause
from quiesce.state.events import make_event
from quiesce.state.registry import Registry

RAW: dict[str, Any] = {"pools": {"web": {"servers": [{"name": "a", "address": "127.0.0.1:1"}]}}}


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


def test_event_query_normalises_and_matches() -> None:
    q = EventQuery(pool="web", kind=EventKind.ADMIN_CHANGE, since=10, until=20.5)
    assert q.kind == "admin_change" and type(q.kind) is str
    assert EventQuery(kind="admin_change") == q.__class__(kind=EventKind.ADMIN_CHANGE)
    e = Event(time=10.0, kind=EventKind.ADMIN_CHANGE, pool="web", server="a", id=7)
    assert q.matches(e)
    assert not q.matches(replace(e, pool="api"))
    assert not q.matches(replace(e, kind=EventKind.FLAG_CHANGE))
    assert not q.matches(replace(e, time=20.5))  # until is exclusive
    assert not q.matches(replace(e, time=9.99))
    assert EventQuery(after_id=6).matches(e) and not EventQuery(after_id=7).matches(e)
    assert EventQuery(after_id=7).matches(replace(e, id=None))  # not stored yet
    assert EventQuery(server="a").matches(e) and not EventQuery(server="b").matches(e)
    with pytest.raises(FrozenInstanceError):
        q.limit = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"kind": "nope"}, "unknown event kind 'nope' (one of oper_change, admin_change"),
        ({"limit": 0}, "limit must be a whole number of at least 1, got 0"),
        ({"limit": True}, "limit must be"),
        ({"limit": 2.5}, "limit must be"),
        ({"after_id": -1}, "after_id must be an event id"),
        ({"after_id": "3"}, "after_id must be an event id"),
        ({"since": float("nan")}, "since must be a time"),
        ({"until": float("inf")}, "until must be a time"),
        ({"since": "10m"}, "since must be a time"),
    ],
)
def test_event_query_refuses_bad_filters(filters: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidCommand, match=re.escape(message)) as err:
        EventQuery(**filters)
    assert err.value.status_hint == 400


def test_event_query_defaults() -> None:
    q = EventQuery()
    assert (q.pool, q.server, q.kind, q.since, q.until, q.after_id, q.limit) == (
        None,
        None,
        None,
        None,
        None,
        None,
        100,
    )


def test_with_id_is_replace_of_the_id_with_every_field_kept() -> None:
    """Event.with_id names every field in order: a field added to Event must be added there
    too, or this fails (each field below differs from its default)."""
    from dataclasses import fields

    e = Event(
        1.5,
        EventKind.OPER_CHANGE,
        "p",
        "s",
        "up",
        "down",
        "health",
        "me",
        "why",
        {"k": 1},
        3,
        4,
        None,
    )
    assert all(getattr(e, f.name) is not None for f in fields(Event) if f.name != "id")
    assert e.with_id(7) == replace(e, id=7)
    assert e.with_id(7).detail is e.detail
