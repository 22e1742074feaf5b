"""The one event factory: every event quiesce records is made by :func:`make_event`.

An event is stamped with the clock's time and, when it is about a pool, with the pool's
eligible count and live sessions at that moment (DESIGN §2). Enum values (a
:class:`~quiesce.core.states.Cause`, an admin or oper state) are stored as their text, as the
store and the API show them. Reading events back (the stores, ``Event.from_dict``) is
deserialisation, not this.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from quiesce.core.clock import Clock
from quiesce.core.events import Event, EventKind
from quiesce.state.runtime import PoolRuntime


def make_event(
    clock: Clock,
    kind: EventKind,
    pool: PoolRuntime | str | None = None,
    *,
    server: str | None = None,
    from_: str | None = None,
    to: str | None = None,
    cause: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Event:
    """An event of ``kind`` at ``clock``'s time. ``pool`` given as a :class:`PoolRuntime` adds
    its eligible count and sessions; as a name, only the name."""
    runtime = pool if isinstance(pool, PoolRuntime) else None
    return Event(
        time=clock.time(),
        kind=kind,
        pool=runtime.name if runtime is not None else pool if isinstance(pool, str) else None,
        server=server,
        from_=_text(from_),
        to=_text(to),
        cause=_text(cause),
        actor=actor,
        reason=reason,
        detail={} if detail is None else detail,
        eligible=runtime.eligible_count if runtime is not None else None,
        sessions=runtime.sessions if runtime is not None else None,
    )


def _text(value: str | None) -> str | None:
    """A str enum member as its plain value (``Cause.API`` → ``"api"``)."""
    return value.value if isinstance(value, Enum) else value


__all__ = ["make_event"]
