"""The metrics' event listeners, which every event of the registry reaches: the HAProxy
exporter's (``HaproxyCollector._on_event``) and quiesce's own (``QuiesceCollector``): their
counts are those of the listeners they replaced (which built tuples and looked up enum
values, ~0.3 µs each, an event), on random events of every kind, any from/to, with and
without a pool and a server. No sockets."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quiesce.config import parse_config
from quiesce.core.events import Event, EventKind
from quiesce.core.states import Oper
from quiesce.frontends.metrics import HaproxyCollector, QuiesceCollector
from quiesce.state.registry import Registry

STATES = [o.value for o in Oper] + ["", "UP", "down ", None]
NAMES = st.sampled_from(["", None, "web", "a", "b"])


def reference(events: list[Event]) -> dict[tuple[str, str], int]:
    """The listener before (its code, inline)."""
    out: dict[tuple[str, str], int] = {}
    for e in events:
        up_down = (e.from_, e.to) == (Oper.UP.value, Oper.DOWN.value)
        if e.kind is EventKind.OPER_CHANGE and e.pool and e.server and up_down:
            key = (e.pool, e.server)
            out[key] = out.get(key, 0) + 1
    return out


EVENTS = st.lists(
    st.builds(
        Event,
        time=st.just(1.0),
        kind=st.sampled_from(list(EventKind)),
        pool=NAMES,
        server=NAMES,
        from_=st.sampled_from(STATES),
        to=st.sampled_from(STATES),
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(events=EVENTS)
def test_up_down_counts_are_those_of_the_listener_before(events: list[Event]) -> None:
    registry = Registry(parse_config({"pools": {"web": {"servers": []}}}))
    collector = HaproxyCollector(SimpleNamespace(registry=registry))
    for e in events:
        registry.emit(e)
    assert collector.up_down == reference(events)
    # and an up -> down change is counted (the property above is not vacuous)
    registry.emit(Event(1.0, EventKind.OPER_CHANGE, "web", "a", Oper.UP.value, "down"))
    want = reference(events).get(("web", "a"), 0) + 1
    assert collector.up_down[("web", "a")] == want


def reference_own(events: list[Event]) -> tuple[dict[str, int], dict[tuple[str, str], Any]]:
    """QuiesceCollector's counts by the listener before (its code, inline)."""
    counts: dict[str, int] = {}
    transitions: dict[tuple[str, str], dict[str, int]] = {}
    for e in events:
        counts[e.kind.value] = counts.get(e.kind.value, 0) + 1
        if e.kind in (EventKind.OPER_CHANGE, EventKind.ADMIN_CHANGE) and e.pool and e.server:
            axis = "oper" if e.kind is EventKind.OPER_CHANGE else "admin"
            by = transitions.setdefault((e.pool, axis), {})
            by[e.server] = by.get(e.server, 0) + 1
        elif e.kind is EventKind.SERVER_REMOVED and e.pool and e.server:
            for axis in ("oper", "admin"):
                if (e.pool, axis) in transitions:
                    transitions[(e.pool, axis)].pop(e.server, None)
    return counts, transitions


@settings(max_examples=300)
@given(events=EVENTS)
def test_quiesces_own_counts_are_those_of_the_listener_before(events: list[Event]) -> None:
    registry = Registry(parse_config({"pools": {"web": {"servers": []}}}))
    collector = QuiesceCollector(SimpleNamespace(registry=registry))
    for e in events:
        registry.emit(e)
    assert (collector.events, collector.transitions) == reference_own(events)
