"""quiesce.core.throttle on a fake clock, and the protocol_error shell on it
(quiesce.dataplane.protoerr, review F4): the first ``burst`` reports of a window pass, the
rest are counted and summarised once at the window's end, per key."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from quiesce.core.clock import FakeClock
from quiesce.core.events import Event
from quiesce.core.throttle import Throttle
from quiesce.dataplane import protoerr
from quiesce.logs import access as ts


def test_the_first_burst_passes_the_rest_is_summarised_once() -> None:
    t = Throttle(burst=3, period=60.0)
    verdicts = [t.admit("client", 100.0 + i) for i in range(10)]
    assert [v.record for v in verdicts] == [True] * 3 + [False] * 7
    assert [v.summary for v in verdicts] == [0] * 10
    # the window's first suppressed report says when its summary is due, only it
    assert [v.flush_at for v in verdicts] == [None] * 3 + [160.0] + [None] * 6
    assert t.pending("client") == 7
    assert t.flush("client", 159.9) == 0  # not ended
    assert t.flush("client", 160.0) == 7
    assert t.flush("client", 161.0) == 0  # handed back once
    assert t.admit("client", 161.0).record  # a new window


def test_a_report_after_the_window_carries_its_summary() -> None:
    t = Throttle(burst=1, period=10.0)
    t.admit("k", 0.0)
    t.admit("k", 1.0)
    t.admit("k", 2.0)
    v = t.admit("k", 10.5)  # no flush in between (a late timer): the summary comes with it
    assert (v.record, v.summary) == (True, 2)
    assert t.admit("k", 11.0).summary == 0


def test_keys_are_throttled_apart() -> None:
    t = Throttle(burst=1, period=10.0)
    assert t.admit("client", 0.0).record
    assert not t.admit("client", 0.0).record
    assert t.admit("server", 0.0).record  # a flood of bad clients hides no server's error


@pytest.mark.parametrize(("burst", "period"), [(0, 1.0), (1, 0.0)])
def test_a_throttle_needs_a_burst_and_a_period(burst: int, period: float) -> None:
    with pytest.raises(ValueError):
        Throttle(burst, period)


class _Loop:
    """call_later recorded, run by the test."""

    def __init__(self) -> None:
        self.later: list[tuple[float, Any, tuple[Any, ...]]] = []

    def call_later(self, delay: float, fn: Any, *args: Any) -> None:
        self.later.append((delay, fn, args))

    def run(self) -> None:
        due, self.later = self.later, []
        for _, fn, args in due:
            fn(*args)


def test_protocol_errors_of_a_service_are_throttled_and_summarised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    events: list[Event] = []
    loop = _Loop()
    ctx = SimpleNamespace(
        name="pgsvc",
        stats=SimpleNamespace(protocol_errors=0),
        protocol_errors=protoerr.protocol_error_throttle(),
        registry=SimpleNamespace(clock=clock, emit=events.append),
        loop=loop,
    )
    burst, period = protoerr.PROTOCOL_ERROR_BURST, protoerr.PROTOCOL_ERROR_PERIOD
    with caplog.at_level(logging.WARNING, logger="quiesce"):
        for i in range(1000):
            protoerr.report(ctx, ts.CLIENT, "not PostgreSQL", f"127.0.0.1:{i}", None)
        protoerr.report(ctx, ts.SERVER, "bad framing", "127.0.0.1:1", None)
    assert ctx.stats.protocol_errors == 1001  # the metric counts every one
    assert len(events) == burst + 1  # the server's error is not hidden by the clients'
    assert len(caplog.records) == burst + 1
    assert [d for d, _, _ in loop.later] == [period]  # one summary scheduled
    loop.run()  # the timer ran ahead of the fake clock: the summary waits for the window
    assert len(events) == burst + 1 and len(loop.later) == 1
    clock.advance(period)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="quiesce"):
        loop.run()
    summary = events[-1]
    assert summary.detail == {"service": "pgsvc", "side": "client", "suppressed": 1000 - burst}
    assert f"{1000 - burst} more client protocol error(s) suppressed" in str(summary.reason)
    assert [r.getMessage() for r in caplog.records] == [f"service pgsvc: {summary.reason}"]
    # a new window records again
    protoerr.report(ctx, ts.CLIENT, "not PostgreSQL", "127.0.0.1:2000", None)
    assert events[-1].reason == "not PostgreSQL" and not loop.later
