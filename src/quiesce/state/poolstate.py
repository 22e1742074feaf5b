"""Incremental pool state (issue 21): what a pool derives from its servers' states, kept per
change in O(log n) instead of recomputed over the pool.

A pool keeps two sorted sets of its eligible servers, primaries and backups
(:class:`Members`, ordered by :attr:`ServerRuntime.rank`: config order, and priority first in
an active-standby pool). One server's change moves that server alone between them
(:func:`place`): its eligibility, its backup flag or priority, its effective weight. Then
:func:`settle` reads off the pool what follows, in O(log n): the candidates (the primaries, or
the backups when no primary is eligible: a pointer, not a copy), the active-standby primary
(the current one while it stays a candidate, else the first of the candidate set) and
whether the pool is available, with the events of what changed. Counts are the sizes of the
sets and the pool's running session total (:class:`~quiesce.state.runtime.PoolTally`).

The balancing algorithms pick from the candidates as they are (their per-pick cost is theirs):
weights live on the servers, so a weight change is one server's update, and the consistent
source hash is rendezvous hashing, which has no ring to rebuild: a server that leaves or joins
moves only its own share of the keys.

:func:`rebuild` does it over the whole pool, only when the pool's own settings change (its
mode, slow start) and at start.
"""

from __future__ import annotations

from quiesce.core.clock import Clock
from quiesce.core.events import Event, EventKind
from quiesce.core.pool import guard_refusal, slow_start_factor
from quiesce.core.states import Admin
from quiesce.core.status import is_eligible
from quiesce.state.events import make_event
from quiesce.state.runtime import Members, PoolRuntime, ServerRuntime

ACTIVE_STANDBY = "active_standby"


PRIORITY = 1 << 40
"""A rank's weight of one priority step: above any order (a pool's count of servers ever
added)."""


def rank(pool: PoolRuntime, server: ServerRuntime) -> int:
    """The server's place in the pool's eligible sets: config order, after priority (highest
    first) in an active-standby pool, so the first of a set is who an election picks. One
    whole number, the order itself at priority 0 (the same object: a tuple took 56 bytes a
    server, issue 21)."""
    priority = server.config.priority if pool.config.mode == ACTIVE_STANDBY else 0
    return server.order - priority * PRIORITY if priority else server.order


def place(pool: PoolRuntime, server: ServerRuntime, now: float) -> None:
    """Put ``server`` where its state says in the pool's eligible sets (or in none), and set
    its ``eligible_since`` and effective weight. O(log n)."""
    want: Members | None = None
    if server.eligible:
        want = pool.backups if server.config.backup else pool.primaries
    key = rank(pool, server)
    listed: Members | None = server.listed
    if listed is not want or key != server.rank:
        if listed is not None:
            listed.remove(server)  # under its old rank: ranks change only while unlisted
        server.rank = key
        if want is not None:
            want.add(server)
        server.listed = want
    if want is None:
        server.eligible_since = None
        return
    if server.eligible_since is None:
        server.eligible_since = now
    period = pool.config.slow_start
    if period > 0:
        server.reweigh(server.weight * slow_start_factor(server.eligible_since, now, period))
        pool.ramp(server, now)  # its next step, applied by a pick (PoolRuntime.refresh_weights)
    else:
        server.reweigh(server.weight)


def unplace(server: ServerRuntime) -> None:
    """Take ``server`` out of its pool's eligible sets (it is being deleted)."""
    listed: Members | None = server.listed
    if listed is not None:
        listed.remove(server)
        server.listed = None


def rebuild(pool: PoolRuntime, now: float) -> None:
    """Every server placed afresh: at start and when the pool's settings change (its mode
    changes every rank), never for one server's change."""
    for members in (pool.primaries, pool.backups):
        members.clear()
    pool.clear_ramps()
    for s in pool.servers:
        s.listed = None
        place(pool, s, now)


def settle(pool: PoolRuntime, clock: Clock, *, emit: bool = True) -> list[Event]:
    """The candidates, the active-standby primary and availability from the eligible sets;
    returns the events of what changed (an election, the pool up or down). O(log n)."""
    out: list[Event] = []
    current = pool.primaries if pool.primaries else pool.backups
    if pool.config.mode == ACTIVE_STANDBY:
        primary = pool.server_or_none(pool.primary)
        if primary is None or pool.config.preempt or primary.listed is not current:
            primary = current[0] if current else None
        new = primary.name if primary is not None else None
        if new != pool.primary:
            old, pool.primary = pool.primary, new
            if emit:
                out.append(
                    make_event(
                        clock,
                        EventKind.ELECTION,
                        pool,
                        server=new,
                        from_=old,
                        to=new,
                        cause="election",
                    )
                )
        pool.candidates = [primary] if primary is not None else []
    else:
        pool.candidates = current
    available = bool(current)
    if available != pool.available:
        pool.available = available
        if emit:
            kind = EventKind.POOL_UP if available else EventKind.POOL_DOWN
            reason = None if available else "pool has no server available"
            out.append(make_event(clock, kind, pool, reason=reason))
    return out


def guard_violation(pool: PoolRuntime, server: ServerRuntime, new_admin: Admin) -> str | None:
    """Why setting ``server`` to ``new_admin`` would break the pool's ``min_servers_up``
    (core.pool.guard_violation's rule on the pool's live count, in O(1)), or None."""
    if not server.eligible or is_eligible(new_admin, server.oper):
        return None
    return guard_refusal(len(pool.primaries) + len(pool.backups) - 1, pool.config.min_servers_up)


__all__ = [
    "ACTIVE_STANDBY",
    "guard_violation",
    "place",
    "rank",
    "rebuild",
    "settle",
    "unplace",
]
