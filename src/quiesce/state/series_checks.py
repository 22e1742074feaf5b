"""A server's check results as the live series counts them (:mod:`quiesce.state.series`):
read at the tick from the results the registry keeps anyway (``last_checks``, the last ten a
monitor). Sans-IO."""

from __future__ import annotations

from typing import Any

from quiesce.core.states import Verdict


def newest_check(server: Any) -> float:
    """The time of a server's newest check result (0: none): what tells the tick a check
    came since the last one."""
    newest = 0.0
    for recent in server.last_checks.values():
        at = recent.newest_at()
        if at > newest:
            newest = at
    return newest


def check_stats(server: Any, since: float) -> tuple[Any, ...]:
    """:data:`CHECK_FIELDS` of a server's check results newer than ``since`` (each monitor
    keeps its last ten, read from the newest back: ``Recent.newer``)."""
    n = failed = maintenance = 0
    slowest = -1.0
    fail, maint = _FAIL, _MAINTENANCE
    for recent in server.last_checks.values():
        for v, latency in recent.newer(since):
            n += 1
            if v is fail:
                failed += 1
            elif v is maint:
                maintenance += 1
            if latency > slowest:
                slowest = latency
    return (n, failed, maintenance, None if slowest < 0 else round(slowest * 1000.0, 3))


_FAIL, _MAINTENANCE = Verdict.FAIL, Verdict.MAINTENANCE


__all__ = ["check_stats", "newest_check"]
