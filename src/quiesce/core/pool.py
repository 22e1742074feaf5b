"""Pool rules that need no I/O: the min_servers_up guard, backup selection, active-standby
election and slow-start weights (DESIGN §1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quiesce.core.states import Admin, Oper
from quiesce.core.status import in_maintenance, is_eligible


@dataclass(frozen=True, slots=True)
class Member:
    """What the pool rules need to know of one server."""

    name: str
    admin: Admin
    oper: Oper
    backup: bool = False
    priority: int = 0
    order: int = 0  # position in the config, the last tie-breaker

    @property
    def eligible(self) -> bool:
        return is_eligible(self.admin, self.oper)


def eligible_count(members: Sequence[Member]) -> int:
    return sum(1 for m in members if m.eligible)


def guard_violation(
    members: Sequence[Member], target: str, new_admin: Admin, min_servers_up: int
) -> str | None:
    """Why an admin change would break ``min_servers_up``, or None if it is allowed.

    Only a change that takes an eligible server out can break the guard; a pool already below
    its minimum may still have ineligible servers changed.
    """
    if min_servers_up <= 0:
        return None
    current = next((m for m in members if m.name == target), None)
    if current is None or not current.eligible:
        return None
    if is_eligible(new_admin, current.oper):
        return None
    return guard_refusal(eligible_count(members) - 1, min_servers_up)


def guard_refusal(remaining: int, min_servers_up: int) -> str | None:
    """Why leaving ``remaining`` eligible servers breaks ``min_servers_up``, or None."""
    if remaining < min_servers_up:
        return f"would leave {remaining} eligible server(s), below min_servers_up {min_servers_up}"
    return None


def candidates(members: Sequence[Member]) -> list[Member]:
    """Who may get new connections: eligible primaries, else eligible backups."""
    primaries = [m for m in members if m.eligible and not m.backup]
    if primaries:
        return primaries
    return [m for m in members if m.eligible and m.backup]


def elect(members: Sequence[Member], current: str | None, preempt: bool = False) -> str | None:
    """Active-standby: the primary. The current one stays while eligible unless ``preempt``
    and a server of higher priority is eligible. Highest ``priority`` wins, non-backup before
    backup, then config order. A server in maintenance on either axis is never elected."""
    pool = [m for m in candidates(members) if not in_maintenance(m.admin, m.oper)]
    if not pool:
        return None
    best = min(pool, key=lambda m: (-m.priority, m.order))
    if current is not None and not preempt and any(m.name == current for m in pool):
        return current
    return best.name


def slow_start_factor(since_eligible: float | None, now: float, period: float) -> float:
    """Weight multiplier from 0.1 to 1.0 over ``period`` seconds after becoming eligible."""
    if period <= 0 or since_eligible is None:
        return 1.0
    elapsed = now - since_eligible
    if elapsed >= period:
        return 1.0
    return 0.1 + 0.9 * max(0.0, elapsed) / period
