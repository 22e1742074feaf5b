"""The vocabulary of the two axes of a server's state (DESIGN §1)."""

from __future__ import annotations

from enum import StrEnum


class Oper(StrEnum):
    """Operational state: what the health monitors concluded."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"
    MAINTENANCE = "maintenance"
    UNMONITORED = "unmonitored"


class Admin(StrEnum):
    """Administrative state: what an operator asked for."""

    ENABLED = "enabled"
    DRAIN = "drain"
    MAINTENANCE = "maintenance"


class Verdict(StrEnum):
    """What one health check concluded about one reply."""

    PASS = "pass"
    FAIL = "fail"
    MAINTENANCE = "maintenance"


class Status(StrEnum):
    """The displayed status, derived from both axes and the live connection count."""

    UP = "up"
    DOWN = "down"
    MAINTENANCE = "down for maintenance"
    EJECTED = "ejected (passive)"  # out for a while by passive outlier detection
    UNKNOWN = "unknown"
    DRAINING = "draining"
    DRAINED = "drained"
    DISABLED = "disabled"


class Cause(StrEnum):
    """Why a change happened (HAProxy's SRV_ADMF_* / check causes, Avi's event causes)."""

    HEALTH = "health"
    PASSIVE = "passive"
    API = "api"
    CLI = "cli"
    DASHBOARD = "dashboard"
    RUNTIME_SOCKET = "runtime-socket"
    CONFIG = "config"
    EXPIRY = "expiry"
    DEADLINE = "deadline"
    STARTUP = "startup"


class CloseMode(StrEnum):
    """What the data plane must do with a server's existing connections."""

    NONE = "none"  # leave them to close on their own
    AT_BOUNDARY = "at_boundary"  # L7: idle now, busy after the in-flight response; L4: leave
    ALL = "all"  # cut every connection now
