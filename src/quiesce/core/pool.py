"""Pool rules that need no I/O: the min_servers_up guard, backup selection, active-standby
election and slow-start weights (DESIGN §1)."""

from __future__ import annotations

import math
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


RAMP_STEPS = 20
"""Slow start raises a weight in steps, as HAProxy's warm-up does (every ``period / 20``, at
least every :data:`RAMP_STEP_MIN` seconds): a ramping server's weight changes at most that
often, so the balancing state follows it per step, not per pick."""
RAMP_STEP_MIN = 1.0
_EPSILON = 1e-9  # a step boundary reached exactly counts as reached (float sums)


def _ramp(since_eligible: float | None, now: float, period: float) -> tuple[int, float] | None:
    """The steps a ramp has taken by ``now`` and the step's length (None: no ramp now)."""
    if period <= 0 or since_eligible is None or now - since_eligible >= period:
        return None
    step = max(period / RAMP_STEPS, RAMP_STEP_MIN)
    return math.floor(max(0.0, now - since_eligible) / step + _EPSILON), step


def slow_start_factor(since_eligible: float | None, now: float, period: float) -> float:
    """Weight multiplier from 0.1 to 1.0 over ``period`` seconds after becoming eligible, in
    steps (:data:`RAMP_STEPS`): ``0.1 + 0.9 x`` the share of the period the steps taken cover."""
    ramp = _ramp(since_eligible, now, period)
    if ramp is None:
        return 1.0
    taken, step = ramp
    return min(1.0, 0.1 + 0.9 * taken * step / period)


def slow_start_next(since_eligible: float | None, now: float, period: float) -> float | None:
    """When :func:`slow_start_factor` next changes after ``now`` (None: it is 1.0 for good)."""
    ramp = _ramp(since_eligible, now, period)
    if ramp is None or since_eligible is None:
        return None
    taken, step = ramp
    return min(since_eligible + (taken + 1) * step, since_eligible + period)
