"""The process log: quiesce's own lines (start, stop, reloads, limits, errors) and one line
per state event (a server up or down, a pool without servers, an admin change), to stderr,
as text or JSON, from ``logging.process`` (``format``, ``level``).

Records are formatted and written by a thread (the standard library's ``QueueHandler`` and
``QueueListener``): the event loop only puts a record on a queue, so a slow or blocked
stderr never holds it. Events that come by the thousand with a reload (a server added,
changed or removed, one change of a reload, an idempotent command) are not logged one by
one: the reload's own summary lines say what it did.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
from typing import TYPE_CHECKING, Any

from quiesce.core.events import Event, EventKind
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


_handler: logging.Handler | None = None


def setup(cfg: ProcessLogConfig) -> None:
    """Send the ``quiesce`` loggers to stderr in ``cfg.format`` at ``cfg.level`` (again at
    a reload: the new format and level at once), through a writer thread."""
    global _handler
    root = logging.getLogger()
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(q, _handler)
        listener.start()
        atexit.register(listener.stop)  # what is queued is written before the process ends
        for h in list(root.handlers):  # a basicConfig's, made before (not a test's capture)
            if type(h) is logging.StreamHandler:
                root.removeHandler(h)
        root.addHandler(logging.handlers.QueueHandler(q))
    _handler.setFormatter(
        JsonFormatter() if cfg.format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root.setLevel(cfg.level.upper())


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
        log.log(level, "event: %s", describe(event), extra={"event": event})
