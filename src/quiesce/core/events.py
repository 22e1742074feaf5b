"""Events: every transition, election, pool change and admin command (DESIGN §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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
