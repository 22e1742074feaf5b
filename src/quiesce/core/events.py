"""Events: every transition, election, pool change and admin command (DESIGN §2)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from quiesce.core.errors import InvalidCommand


class EventKind(StrEnum):
    OPER_CHANGE = "oper_change"
    ADMIN_CHANGE = "admin_change"
    ADMIN_COMMAND = "admin_command"  # accepted, including idempotent ones
    ADMIN_REFUSED = "admin_refused"
    ELECTION = "election"
    POOL_UP = "pool_up"
    POOL_DOWN = "pool_down"  # "pool has no server available"
    FLAG_CHANGE = "flag_change"
    MONITOR_CHANGE = "monitor_change"
    CONNECTIONS_CLOSED = "connections_closed"
    LOGIN_FAILED = "login_failed"
    STARTUP = "startup"
    SHUTDOWN = "shutdown"
    SERVER_ADDED = "server_added"  # issue 14: servers added, changed and removed at runtime
    SERVER_UPDATED = "server_updated"
    SERVER_REMOVED = "server_removed"
    CONFIG_RELOAD = "config_reload"  # issue 14: a live reload, applied or refused (summary)
    CONFIG_CHANGE = "config_change"  # one change of a reload with no event kind of its own
    PROTOCOL_ERROR = "protocol_error"  # issue 20: a database connection closed on bad framing
    NODE_ISOLATED = "node_isolated"  # issue 15: this node's link to the shared store is stale
    NODE_REJOINED = "node_rejoined"  # ... and up again
    NODE_JOINED = "node_joined"  # another node registered in the shared store
    NODE_LEFT = "node_left"  # its registration (lease) ended
    WRITE_CONFLICT = "write_conflict"  # a write to etcd lost to a newer change (not applied)
    STORE_REPLACED = "store_replaced"  # etcd's revision went back: re-read, republished
    LOCAL_RECONCILED = "local_reconciled"  # a --local change reached etcd once it was back
    SERVER_EJECTED = "server_ejected"  # issue 17: passive outlier detection took it out
    SERVER_RETURNED = "server_returned"  # ... and its ejection time is over
    EJECTION_REFUSED = "ejection_refused"  # ... a run reached its threshold, the pool said no
    BUDGET_EXCEEDED = "budget_exceeded"  # a server another node added: past this node's fds


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    kind: EventKind
    pool: str | None = None
    server: str | None = None
    from_: str | None = None
    to: str | None = None
    cause: str | None = None
    actor: str | None = None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    eligible: int | None = None
    sessions: int | None = None
    id: int | None = None

    def with_id(self, id: int) -> Event:
        """This event as stored under ``id`` (every field given in order: half the time of
        ``dataclasses.replace``, which a store pays once an event)."""
        return Event(
            self.time,
            self.kind,
            self.pool,
            self.server,
            self.from_,
            self.to,
            self.cause,
            self.actor,
            self.reason,
            self.detail,
            self.eligible,
            self.sessions,
            id,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "kind": self.kind.value,
            "pool": self.pool,
            "server": self.server,
            "from": self.from_,
            "to": self.to,
            "cause": self.cause,
            "actor": self.actor,
            "reason": self.reason,
            "detail": self.detail,
            "eligible": self.eligible,
            "sessions": self.sessions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(
            id=d.get("id"),
            time=float(d["time"]),
            kind=EventKind(d["kind"]),
            pool=d.get("pool"),
            server=d.get("server"),
            from_=d.get("from"),
            to=d.get("to"),
            cause=d.get("cause"),
            actor=d.get("actor"),
            reason=d.get("reason"),
            detail=dict(d.get("detail") or {}),
            eligible=d.get("eligible"),
            sessions=d.get("sessions"),
        )


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events to list: every filter is optional and they all apply
    (``since <= time < until``). With ``after_id``, the first ``limit`` events after that id;
    without, the newest ``limit``; oldest first either way. A front end builds one from what
    its user typed; a bad filter is an :class:`InvalidCommand` (400)."""

    pool: str | None = None
    server: str | None = None
    kind: str | None = None  # an EventKind value
    since: float | None = None
    until: float | None = None
    after_id: int | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if self.kind is not None:
            try:
                object.__setattr__(self, "kind", EventKind(self.kind).value)
            except ValueError:
                kinds = ", ".join(k.value for k in EventKind)
                raise InvalidCommand(f"unknown event kind {self.kind!r} (one of {kinds})") from None
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise InvalidCommand(f"limit must be a whole number of at least 1, got {self.limit!r}")
        if self.after_id is not None and (
            isinstance(self.after_id, bool)
            or not isinstance(self.after_id, int)
            or self.after_id < 0
        ):
            raise InvalidCommand(f"after_id must be an event id (0 or more), got {self.after_id!r}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise InvalidCommand(f"{name} must be a time in epoch seconds, got {value!r}")

    def matches(self, event: Event) -> bool:
        """Whether ``event`` passes the filters (``limit`` aside; ``after_id`` only for an
        event that has an id)."""
        return (
            (self.pool is None or event.pool == self.pool)
            and (self.server is None or event.server == self.server)
            and (self.kind is None or event.kind.value == self.kind)
            and (self.since is None or event.time >= self.since)
            and (self.until is None or event.time < self.until)
            and (self.after_id is None or event.id is None or event.id > self.after_id)
        )
