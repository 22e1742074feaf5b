"""Active health monitors (issue 4): probes, the check-reply classifiers, the scheduler.

``probes/`` are the I/O shells, :mod:`~quiesce.health.classify` the sans-IO rules,
:mod:`~quiesce.health.schedule` the timing arithmetic and :class:`HealthManager` runs them
against the registry. See docs/health.md.
"""

from __future__ import annotations

from quiesce.health.capabilities import library_problems, raw_socket_problems, startup_problems
from quiesce.health.classify import (
    WINDOW,
    build_http_request,
    classify_http,
    classify_tcp,
    classify_udp,
)
from quiesce.health.manager import CheckStats, HealthManager
from quiesce.health.probes import Target
from quiesce.health.types import MONITOR_TYPES

__all__ = [
    "MONITOR_TYPES",
    "WINDOW",
    "CheckStats",
    "HealthManager",
    "Target",
    "build_http_request",
    "classify_http",
    "classify_tcp",
    "classify_udp",
    "library_problems",
    "raw_socket_problems",
    "startup_problems",
]
