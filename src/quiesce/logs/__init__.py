"""Logging: the access log (one entry per L7 request and L4 connection: quiesce.logs.access
formats, quiesce.logs.sink writes without blocking the event loop) and the process log
(quiesce.logs.process). The composition root wires them (:func:`open_access_log`,
:func:`reconfigure`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from quiesce.logs.process import backlog as process_log_backlog
from quiesce.logs.process import log_event, log_line
from quiesce.logs.process import setup as setup_process_log
from quiesce.logs.sink import AccessLog, Destination, LogError, open_destinations

if TYPE_CHECKING:
    from quiesce.config.logs import LoggingConfig


def open_access_log(
    cfg: LoggingConfig, base_dir: Path, loop: asyncio.AbstractEventLoop
) -> AccessLog | None:
    """The access log of ``cfg`` with its destinations open, or None when there is no
    ``logging.access``; raises LogError naming the key that cannot be opened."""
    if cfg.access is None:
        return None
    return AccessLog(cfg.access, open_destinations(cfg.access, base_dir), loop)


def prepare(cfg: LoggingConfig, base_dir: Path, source: str) -> list[Destination] | None:
    """A reload's first step: the new destinations opened (files opened anew), or None for
    no access log. Raises ConfigError (``source``: the file) naming the key; nothing has
    changed then."""
    from quiesce.config.loader import ConfigError

    if cfg.access is None:
        return None
    try:
        return open_destinations(cfg.access, base_dir)
    except LogError as exc:
        raise ConfigError([exc.message], source) from None


def discard(dests: list[Destination] | None) -> None:
    """Close destinations :func:`prepare` opened for a reload refused after all."""
    for d in dests or ():
        d.close()


def reconfigure(
    current: AccessLog | None,
    cfg: LoggingConfig,
    dests: list[Destination] | None,
    loop: asyncio.AbstractEventLoop,
) -> AccessLog | None:
    """A reload's second step (cannot fail): the access log to use from now on, and the
    process log's format and level."""
    setup_process_log(cfg.process)
    if cfg.access is None or dests is None:
        if current is not None:
            current.close()
        return None
    if current is None:
        return AccessLog(cfg.access, dests, loop)
    current.reconfigure(cfg.access, dests)
    return current


def reopen(access: AccessLog | None) -> None:
    """SIGUSR1: the access log's files opened again (after logrotate moved them)."""
    if access is not None:
        access.reopen()


def close(access: AccessLog | None) -> None:
    """At exit: what is recorded written, the writer stopped."""
    if access is not None:
        access.close()


__all__ = [
    "AccessLog",
    "LogError",
    "close",
    "discard",
    "log_event",
    "log_line",
    "open_access_log",
    "prepare",
    "process_log_backlog",
    "reconfigure",
    "reopen",
    "setup_process_log",
]
