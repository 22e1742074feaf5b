"""The administrative state machine: what an operator asked for (DESIGN §1).

Theory of operation
-------------------
An :class:`AdminRecord` is the whole administrative state of one server: the state itself and
who set it, why, when, until when (``expires``: back to ``enabled`` by itself) and, for a drain,
the ``deadline`` at which remaining connections are closed and the server enters maintenance.

:func:`apply` turns a command into a :class:`Transition` (or raises :class:`InvalidCommand` and
changes nothing); :func:`tick` fires what time makes due. Which moves exist and what each does
to existing connections is data, in :data:`TRANSITIONS`. Times are wall-clock seconds because
admin state is persisted and must mean the same thing after a restart.

Avi's three disable modes reduce to these commands through :func:`disable_command`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from quiesce.core.errors import InvalidCommand
from quiesce.core.states import Admin, Cause, CloseMode

MAX_HORIZON = 10 * 365 * 86400.0
"""How far ahead a deadline or expiry may be: further is a typo."""

TRANSITIONS: dict[tuple[Admin, Admin], CloseMode] = {
    (Admin.ENABLED, Admin.DRAIN): CloseMode.NONE,
    (Admin.ENABLED, Admin.MAINTENANCE): CloseMode.AT_BOUNDARY,
    (Admin.DRAIN, Admin.MAINTENANCE): CloseMode.AT_BOUNDARY,
    (Admin.DRAIN, Admin.ENABLED): CloseMode.NONE,
    (Admin.MAINTENANCE, Admin.ENABLED): CloseMode.NONE,
    (Admin.MAINTENANCE, Admin.DRAIN): CloseMode.NONE,
    (Admin.DRAIN, Admin.DRAIN): CloseMode.NONE,  # new deadline or expiry
}
"""(from, to) → what happens to existing connections without ``force``. With ``force``, any
move to maintenance closes all. A move to the same state that is not listed is idempotent."""


@dataclass(frozen=True, slots=True)
class AdminRecord:
    state: Admin = Admin.ENABLED
    actor: str = ""
    reason: str = ""
    since: float = 0.0
    cause: Cause = Cause.CONFIG
    expires: float | None = None
    deadline: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "actor": self.actor,
            "reason": self.reason,
            "since": self.since,
            "cause": self.cause.value,
            "expires": self.expires,
            "deadline": self.deadline,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> AdminRecord:
        def opt(key: str) -> float | None:
            v = data.get(key)
            return None if v is None else float(v)  # type: ignore[arg-type]

        return cls(
            state=Admin(str(data["state"])),
            actor=str(data.get("actor", "")),
            reason=str(data.get("reason", "")),
            since=float(data.get("since", 0.0)),  # type: ignore[arg-type]
            cause=Cause(str(data.get("cause", Cause.CONFIG.value))),
            expires=opt("expires"),
            deadline=opt("deadline"),
        )


@dataclass(frozen=True, slots=True)
class AdminCommand:
    """Set the admin state to ``target``. ``deadline`` (drain only) and ``expires`` are absolute
    wall-clock times."""

    target: Admin
    actor: str
    reason: str = ""
    cause: Cause = Cause.API
    force: bool = False
    deadline: float | None = None
    expires: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    before: AdminRecord
    after: AdminRecord
    close: CloseMode
    message: str

    @property
    def changed(self) -> bool:
        return self.before.state != self.after.state


def apply(record: AdminRecord, cmd: AdminCommand, now: float) -> Transition:
    """The transition ``cmd`` makes from ``record`` at ``now``; raises InvalidCommand."""
    if cmd.force and cmd.target is not Admin.MAINTENANCE:
        raise InvalidCommand("force (close every connection now) applies only to maintenance")
    if cmd.deadline is not None:
        if cmd.target is not Admin.DRAIN:
            raise InvalidCommand("a timeout (deadline) applies only to drain")
        if cmd.deadline <= now:
            raise InvalidCommand("the drain deadline must be in the future")
    for label, when in (("deadline", cmd.deadline), ("expiry", cmd.expires)):
        if when is not None and not (when - now <= MAX_HORIZON):  # also catches NaN
            raise InvalidCommand(f"the {label} is more than 10 years ahead")
    if cmd.expires is not None:
        if cmd.target is Admin.ENABLED:
            raise InvalidCommand("enable takes no expiry: it is the state expiry returns to")
        if cmd.expires <= now:
            raise InvalidCommand("the expiry must be in the future")
        if cmd.deadline is not None and cmd.expires <= cmd.deadline:
            raise InvalidCommand("the expiry must come after the drain deadline")

    frm, to = record.state, cmd.target
    after = AdminRecord(
        state=to,
        actor=cmd.actor,
        reason=cmd.reason,
        since=now,
        cause=cmd.cause,
        expires=cmd.expires,
        deadline=cmd.deadline,
    )
    if frm is to:
        if to is Admin.DRAIN:
            # A repeated drain changes what it names (a new --timeout or --for) and keeps the rest.
            deadline = record.deadline if cmd.deadline is None else cmd.deadline
            expires = record.expires if cmd.expires is None else cmd.expires
            if (deadline, expires) != (record.deadline, record.expires):
                if expires is not None and deadline is not None and expires <= deadline:
                    raise InvalidCommand("the expiry must come after the drain deadline")
                updated = replace(after, since=record.since, deadline=deadline, expires=expires)
                return Transition(record, updated, CloseMode.NONE, "drain updated")
        close = CloseMode.ALL if cmd.force and to is Admin.MAINTENANCE else CloseMode.NONE
        if to is Admin.MAINTENANCE and cmd.expires is not None and cmd.expires != record.expires:
            # A new --for/--until extends (or shortens) the stay without leaving maintenance.
            return Transition(
                record, replace(after, since=record.since), close, "maintenance expiry updated"
            )
        return Transition(record, record, close, f"already {_ALREADY[to]}")
    close = TRANSITIONS[(frm, to)]
    if cmd.force:
        close = CloseMode.ALL
    return Transition(record, after, close, f"{_name(frm)} → {_name(to)}")


def next_due(record: AdminRecord) -> float | None:
    """When :func:`tick` will next have something to do, or None."""
    times = [t for t in (record.expires, _deadline(record)) if t is not None]
    return min(times) if times else None


def _deadline(record: AdminRecord) -> float | None:
    return record.deadline if record.state is Admin.DRAIN else None


def tick(record: AdminRecord, now: float) -> Transition | None:
    """Fire the earliest due deadline or expiry, if any. Call until it returns None."""
    deadline = _deadline(record)
    expires = record.expires
    if deadline is not None and deadline <= now and (expires is None or deadline <= expires):
        after = replace(
            record, state=Admin.MAINTENANCE, since=now, cause=Cause.DEADLINE, deadline=None
        )
        return Transition(record, after, CloseMode.ALL, "drain deadline reached: maintenance")
    if expires is not None and expires <= now and record.state is not Admin.ENABLED:
        after = AdminRecord(
            state=Admin.ENABLED,
            actor=record.actor,
            reason=f"expired: {record.reason}" if record.reason else "expired",
            since=now,
            cause=Cause.EXPIRY,
        )
        return Transition(record, after, CloseMode.NONE, "expired: enabled")
    return None


def disable_command(
    *,
    actor: str,
    reason: str,
    cause: Cause,
    now: float,
    graceful: bool,
    timeout: float | None,
    pool_default: float,
    expires: float | None = None,
) -> AdminCommand:
    """Avi's disable modes: immediate, graceful with a timeout, graceful until flows drain.

    ``timeout`` (seconds; -1 = no timeout; None = the pool's ``graceful_disable_timeout``)
    only matters when ``graceful``. A zero timeout is immediate.
    """
    if not graceful:
        return AdminCommand(Admin.MAINTENANCE, actor, reason, cause, force=True, expires=expires)
    t = pool_default if timeout is None else timeout
    if t == 0:
        return AdminCommand(Admin.MAINTENANCE, actor, reason, cause, force=True, expires=expires)
    deadline = None if t < 0 else now + t
    return AdminCommand(Admin.DRAIN, actor, reason, cause, deadline=deadline, expires=expires)


_ALREADY = {Admin.ENABLED: "enabled", Admin.DRAIN: "draining", Admin.MAINTENANCE: "in maintenance"}


def _name(state: Admin) -> str:
    """The admin state's one word (``enabled``, ``drain``, ``maintenance``), as the API, the
    events and ``list servers``' Admin column say it (docs/admin.md, "One word a state")."""
    return state.value
