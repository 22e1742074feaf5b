"""The process log: quiesce's own lines (start, stop, reloads, limits, errors) and one line
per state event (a server up or down, a pool without servers, an admin change), to stderr,
as text or JSON, from ``logging.process`` (``format``, ``level``).

Records are formatted and written by a thread (the standard library's ``QueueHandler`` and
``QueueListener``): the event loop only puts a record on a queue, so a slow or blocked
stderr never holds it. An event's line is not even a record on the loop: :func:`log_event`
puts the event itself on that queue and the thread makes the record (its time the event's),
describes it and writes it. A mass flap makes 20,000 lines in seconds; as records made on
the loop they took ≈ 12-18 µs of the loop each (the record, the caller's frame looked up,
the message formatted and the record copied by ``QueueHandler.prepare``), now ≈ 0.5 µs
(issue 21, bench/mass_flap.py). Events that come by the thousand with a reload (a server
added, changed or removed, one change of a reload, an idempotent command) are not logged
one by one: the reload's own summary lines say what it did.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import time as _time
from typing import TYPE_CHECKING, Any

from quiesce.core.events import Event, EventKind
from quiesce.core.pace import ThreadPace
from quiesce.logs.access import iso_utc

if TYPE_CHECKING:
    from quiesce.config.logs import ProcessLogConfig

log = logging.getLogger("quiesce")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"

# events worth a line at warning: traffic is refused or a server stops taking it unasked
_WARNING = {EventKind.POOL_DOWN, EventKind.LOGIN_FAILED, EventKind.ADMIN_REFUSED}
# events not logged one by one (a reload makes them by the thousand; it logs a summary)
_QUIET = {
    EventKind.SERVER_ADDED,
    EventKind.SERVER_UPDATED,
    EventKind.SERVER_REMOVED,
    EventKind.CONFIG_CHANGE,
    EventKind.CONFIG_RELOAD,
    EventKind.ADMIN_COMMAND,
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, and for an event
    line the event's fields under ``event``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, Event):
            out["event"] = event.to_dict()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


class _Writer(logging.handlers.QueueListener):
    """The writer thread: records, and events put by :func:`log_event`, made into records
    here, off the event loop. A burst (a live reload's line per change, a thousand) rests
    1 ms after each 1 ms of work (quiesce.core.pace): formatting in pure Python, the thread
    held the GIL while the event loop waited for it."""

    def __init__(self, q: Any, *handlers: logging.Handler) -> None:
        super().__init__(q, *handlers)
        self._pace = ThreadPace(_time.perf_counter, _time.sleep)

    def handle(self, record: logging.LogRecord) -> None:
        self._pace.touch()
        super().handle(record)
        self._pace.step()

    def prepare(self, record: _Queued) -> logging.LogRecord:
        if isinstance(record, tuple):
            if len(record) == 3:
                return line_record(*record)
            return event_record(*record)
        return record


def log_line(level: int, text: str) -> None:
    """``text`` as a line of the process log (the ``quiesce`` logger), its record made by
    the writer thread, as :func:`log_event` does for events: a live reload logs one line
    per change, a thousand at a time, and a record made on the loop (``log.info``: the
    caller's frame looked up, the record formatted and copied for the queue) cost ≈ 12-18 µs
    of it each; this costs ≈ 1 µs. Stamped with the time of the call."""
    if log.isEnabledFor(level):
        q = _queue
        if q is not None:
            q.put((level, text, _time.time()))
        else:
            log.log(level, "%s", text)


def line_record(level: int, text: str, when: float) -> logging.LogRecord:
    record = log.makeRecord(log.name, level, __file__, 0, "%s", (text,), None)
    record.created = when
    record.msecs = (when - int(when)) * 1000
    return record


def event_record(level: int, event: Event) -> logging.LogRecord:
    """The record of an event's line, stamped with the event's time."""
    record = log.makeRecord(
        log.name, level, __file__, 0, "event: %s", (describe(event),), None, extra={"event": event}
    )
    record.created = event.time
    record.msecs = (event.time - int(event.time)) * 1000
    return record


_handler: logging.Handler | None = None
_Queued = logging.LogRecord | tuple[int, Event] | tuple[int, str, float]
_queue: queue.SimpleQueue[_Queued] | None = None
_installed: tuple[_Writer, logging.Handler] | None = None  # the thread, the root's handler


def setup(cfg: ProcessLogConfig) -> None:
    """Send the ``quiesce`` loggers to stderr in ``cfg.format`` at ``cfg.level`` (again at
    a reload: the new format and level at once), through a writer thread."""
    global _handler, _queue, _installed
    root = logging.getLogger()
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _queue = queue.SimpleQueue()
        writer = _Writer(_queue, _handler)
        writer.start()
        for h in list(root.handlers):  # a basicConfig's, made before (not a test's capture)
            if type(h) is logging.StreamHandler:
                root.removeHandler(h)
        _installed = (writer, logging.handlers.QueueHandler(_queue))
        root.addHandler(_installed[1])
    _handler.setFormatter(
        JsonFormatter() if cfg.format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root.setLevel(cfg.level.upper())


def backlog() -> int:
    """Records and events queued for the writer thread, not written yet (0 without
    :func:`setup`): a live reload keeps the interpreter's switch interval short until its
    lines are written (the thread formats them in pure Python, holding the GIL)."""
    q = _queue
    return 0 if q is None else q.qsize()


@atexit.register
def shutdown() -> None:
    """What is queued written, the thread stopped, the root logger as before :func:`setup`
    (at exit; again :func:`setup` starts anew)."""
    global _handler, _queue, _installed
    if _installed is not None:
        writer, handler = _installed
        logging.getLogger().removeHandler(handler)
        writer.stop()
    _handler = _queue = _installed = None


def describe(event: Event) -> str:
    """An event as one line of text: what changed, where, why, who."""
    where = event.pool or ""
    if event.server:
        where = f"{where}/{event.server}" if where else event.server
    parts = [event.kind.value]
    if where:
        parts.append(where)
    if event.from_ is not None or event.to is not None:
        parts.append(f"{event.from_ or '-'} -> {event.to or '-'}")
    if event.reason:
        parts.append(f"({event.reason})")
    if event.cause:
        parts.append(f"cause={event.cause}")
    if event.actor:
        parts.append(f"actor={event.actor}")
    if event.eligible is not None:
        parts.append(f"eligible={event.eligible}")
    return " ".join(parts)


def log_event(event: Event) -> None:
    """A registry listener: a state event as a process-log line (info; warning when a pool
    has no server left, a login fails or a command is refused), but those of _QUIET."""
    if event.kind in _QUIET:
        return
    level = logging.WARNING if event.kind in _WARNING else logging.INFO
    if log.isEnabledFor(level):
        q = _queue
        if q is not None:  # the writer thread makes the record and the line
            q.put((level, event))
        else:  # no setup(): wherever the root logger's handlers send it
            log.log(level, "event: %s", describe(event), extra={"event": event})
