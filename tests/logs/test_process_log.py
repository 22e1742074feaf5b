"""The process log's event lines (quiesce.logs.process): made and written by the writer
thread, not on the caller's thread (the event loop), stamped with the event's time (issue 21:
20,000 lines of a mass flap cost the loop ≈ 12-18 µs each as records made there)."""

from __future__ import annotations

import calendar
import io
import json
import logging
import threading

import pytest

from quiesce.config.logs import ProcessLogConfig
from quiesce.core.events import Event, EventKind
from quiesce.logs import process

WALL = calendar.timegm((2026, 12, 6, 14, 20, 31)) + 0.25


def event(kind: EventKind = EventKind.OPER_CHANGE, server: str = "a") -> Event:
    return Event(
        time=WALL,
        kind=kind,
        pool="p",
        server=server,
        from_="up",
        to="down",
        cause="health",
        eligible=0,
    )


def written(cfg: ProcessLogConfig, *events: Event, spy: list[int] | None = None) -> str:
    """What the process log writes for ``events`` (the writer thread drained and stopped)."""
    buf = io.StringIO()
    # an earlier test of the session may have set the log up (an in-process `run`) and left
    # its writer installed: start from none, as a process does
    process.shutdown()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    process.setup(cfg)
    try:
        assert process._handler is not None
        process._handler.setStream(buf)
        for e in events:
            process.log_event(e)
    finally:
        process.shutdown()  # drains the queue: every line is written when it returns
    assert root.handlers == handlers  # as before setup()
    root.setLevel(level)
    return buf.getvalue()


def test_the_line_is_made_by_the_writer_thread_not_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made_on: list[int] = []
    describe = process.describe

    def spy(e: Event) -> str:
        made_on.append(threading.get_ident())
        return describe(e)

    monkeypatch.setattr(process, "describe", spy)
    out = written(ProcessLogConfig(), event(), event(EventKind.POOL_DOWN, None))
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert lines[0].endswith(" INFO event: oper_change p/a up -> down cause=health eligible=0")
    assert " WARNING event: pool_down p " in lines[1]
    assert len(made_on) == 2 and threading.get_ident() not in made_on


def test_json_lines_carry_the_event_and_its_time() -> None:
    out = written(ProcessLogConfig(format="json"), event(server="b"))
    doc = json.loads(out)
    assert doc["time"] == "2026-12-06T14:20:31.250Z"  # the event's, not the writing's
    assert doc["level"] == "info" and doc["logger"] == "quiesce"
    assert doc["message"] == "event: oper_change p/b up -> down cause=health eligible=0"
    assert doc["event"]["server"] == "b" and doc["event"]["to"] == "down"


def test_a_level_above_info_and_quiet_kinds_write_nothing() -> None:
    quiet = event(EventKind.SERVER_ADDED)
    assert written(ProcessLogConfig(level="warning"), event()) == ""
    assert written(ProcessLogConfig(), quiet) == ""


def test_without_setup_the_line_goes_through_the_root_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="quiesce"):
        process.log_event(event())
    assert [r.getMessage() for r in caplog.records] == [
        "event: oper_change p/a up -> down cause=health eligible=0"
    ]


def test_a_plain_line_is_made_by_the_writer_thread_with_the_calls_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``log_line`` (a reload's line per change, a thousand at a time): the record is made
    by the writer thread, stamped with the time of the call; text and JSON as any line."""
    made_on: list[int] = []
    line_record = process.line_record

    def spy(level: int, text: str, when: float) -> logging.LogRecord:
        made_on.append(threading.get_ident())
        return line_record(level, text, when)

    monkeypatch.setattr(process, "line_record", spy)
    monkeypatch.setattr("time.time", lambda: WALL)
    for fmt in ("text", "json"):
        buf = io.StringIO()
        process.shutdown()
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        process.setup(ProcessLogConfig(format=fmt))
        try:
            assert process._handler is not None
            process._handler.setStream(buf)
            process.log_line(logging.INFO, "reload: web/w3: added at 127.0.0.1:9003")
            process.log_line(logging.DEBUG, "not at info")
        finally:
            process.shutdown()
        root.handlers[:] = handlers
        root.setLevel(level)
        out = buf.getvalue()
        if fmt == "text":
            assert out.endswith(" INFO reload: web/w3: added at 127.0.0.1:9003\n"), out
        else:
            doc = json.loads(out)
            assert doc["time"] == "2026-12-06T14:20:31.250Z"
            assert doc["message"] == "reload: web/w3: added at 127.0.0.1:9003"
    assert len(made_on) == 2 and threading.get_ident() not in made_on


def test_without_setup_a_plain_line_goes_through_the_root_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    process.shutdown()
    with caplog.at_level(logging.INFO, logger="quiesce"):
        process.log_line(logging.INFO, "reload: web/w3: removed (drained first)")
    assert [r.getMessage() for r in caplog.records] == ["reload: web/w3: removed (drained first)"]
