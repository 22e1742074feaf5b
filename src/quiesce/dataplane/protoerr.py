"""The ``protocol_error`` log line and event of a database service, throttled per service and
side (review F4). A client that breaks the framing (an HTTP request to a PostgreSQL port, a
TLS ClientHello sent straight away) costs its connection one persisted event; anonymous
garbage at ~700 connections a second would otherwise write as many rows and push the admin
audit trail ("who put pg1 in maintenance") out of ``state.event_retention``, and flood the
process log.

Per service and side (client / server: a flood of bad clients does not hide a server that
breaks the framing), the first ``PROTOCOL_ERROR_BURST`` of a ``PROTOCOL_ERROR_PERIOD`` window
are logged and recorded as before; the others are counted, and when the window ends one
warning and one ``protocol_error`` event say ``N more client protocol errors suppressed in
60 s`` (detail ``suppressed: N``). The metric ``quiesce_service_protocol_errors_total`` counts
every one. The throttle is sans-IO (quiesce.core.throttle); this shell reads the clock and
schedules the summary on the loop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from quiesce.core.events import Event, EventKind
from quiesce.core.throttle import Throttle
from quiesce.logs import access as ts

if TYPE_CHECKING:
    from quiesce.state.registry import ServerRuntime

log = logging.getLogger("quiesce")

PROTOCOL_ERROR_BURST = 10  # recorded per service and side in each window
PROTOCOL_ERROR_PERIOD = 60.0  # seconds


def protocol_error_throttle() -> Throttle:
    """A service's throttle (``ServiceContext.protocol_errors``)."""
    return Throttle(PROTOCOL_ERROR_BURST, PROTOCOL_ERROR_PERIOD)


def _side(side: str) -> str:
    return "server" if side == ts.SERVER else "client"


def report(
    ctx: Any,
    side: str,
    reason: str,
    client: str,
    server: ServerRuntime | None,
    *,
    relayed: bool = True,
) -> None:
    """One protocol error on a connection of service ``ctx`` (a ServiceContext) from
    ``client`` (its address), ``side`` ``ts.CLIENT`` or ``ts.SERVER``: counted, and logged and
    recorded unless throttled. ``relayed``: the log line names the server (or none)."""
    ctx.stats.protocol_errors += 1
    throttle: Throttle = ctx.protocol_errors
    key = _side(side)
    now = ctx.registry.clock.monotonic()
    verdict = throttle.admit(key, now)
    if verdict.summary:
        _summarise(ctx, key, verdict.summary)
    if verdict.flush_at is not None:
        ctx.loop.call_later(max(0.0, verdict.flush_at - now), _flush, ctx, key, verdict.flush_at)
    if not verdict.record:
        return
    where = client
    if relayed:
        where += f" (server {'none' if server is None else f'{server.pool}/{server.name}'})"
    log.warning("service %s: closing the connection of %s: %s", ctx.name, where, reason)
    ctx.registry.emit(
        Event(
            ctx.registry.clock.time(),
            EventKind.PROTOCOL_ERROR,
            pool=None if server is None else server.pool,
            server=None if server is None else server.name,
            reason=reason,
            detail={"service": ctx.name, "client": client},
        )
    )


def _flush(ctx: Any, key: str, at: float) -> None:
    """At a window's end (``at``): its summary, unless a report after it summarised it."""
    throttle: Throttle = ctx.protocol_errors
    now = ctx.registry.clock.monotonic()
    if now < at:  # the loop's timer ran ahead of the clock
        ctx.loop.call_later(at - now, _flush, ctx, key, at)
        return
    n = throttle.flush(key, now)
    if n:
        _summarise(ctx, key, n)


def _summarise(ctx: Any, key: str, n: int) -> None:
    throttle: Throttle = ctx.protocol_errors
    reason = (
        f"{n} more {key} protocol error(s) suppressed in {throttle.period:g} s (after "
        f"{throttle.burst}; quiesce_service_protocol_errors_total counts each)"
    )
    log.warning("service %s: %s", ctx.name, reason)
    ctx.registry.emit(
        Event(
            ctx.registry.clock.time(),
            EventKind.PROTOCOL_ERROR,
            reason=reason,
            detail={"service": ctx.name, "side": key, "suppressed": n},
        )
    )


__all__ = ["PROTOCOL_ERROR_BURST", "PROTOCOL_ERROR_PERIOD", "protocol_error_throttle", "report"]
