"""Pool rules: guard, backup selection, active-standby election, slow start."""

from __future__ import annotations

import pytest

from quiesce.core.pool import (
    Member,
    candidates,
    elect,
    eligible_count,
    guard_violation,
    slow_start_factor,
)
from quiesce.core.states import Admin, Oper

E, D, M = Admin.ENABLED, Admin.DRAIN, Admin.MAINTENANCE


def m(name: str, admin: Admin = E, oper: Oper = Oper.UP, **kw: object) -> Member:
    return Member(name, admin, oper, **kw)  # type: ignore[arg-type]


def test_guard_refuses_below_minimum_and_names_counts() -> None:
    pool = [m("a"), m("b"), m("c", oper=Oper.DOWN)]
    assert guard_violation(pool, "a", M, 1) is None
    why = guard_violation(pool, "a", M, 2)
    assert why is not None and "1 eligible" in why and "min_servers_up 2" in why
    assert guard_violation(pool, "a", D, 2) is not None  # drain also takes it out
    assert guard_violation(pool, "c", M, 2) is None  # not eligible: no change in count
    assert guard_violation(pool, "a", E, 5) is None  # enabling never breaks it
    assert guard_violation(pool, "a", M, 0) is None


def test_backups_only_when_no_primary_is_eligible() -> None:
    pool = [m("a"), m("b", backup=True)]
    assert [c.name for c in candidates(pool)] == ["a"]
    pool = [m("a", admin=D), m("b", backup=True), m("c", backup=True, oper=Oper.DOWN)]
    assert [c.name for c in candidates(pool)] == ["b"]
    assert candidates([m("a", oper=Oper.MAINTENANCE)]) == []
    assert eligible_count(pool) == 1


def test_election_by_priority_sticky_and_never_maintenance() -> None:
    pool = [m("a", priority=1, order=0), m("b", priority=5, order=1), m("c", priority=5, order=2)]
    assert elect(pool, None) == "b"
    assert elect(pool, "a") == "a"  # sticky without preempt
    assert elect(pool, "a", preempt=True) == "b"
    pool = [m("a", oper=Oper.MAINTENANCE, priority=9), m("b", admin=M, priority=8), m("c")]
    assert elect(pool, "a") == "c"
    assert elect([m("a", oper=Oper.DOWN)], "a") is None


@pytest.mark.parametrize(
    ("elapsed", "expected"), [(0.0, 0.1), (5.0, 0.55), (10.0, 1.0), (50.0, 1.0), (-1.0, 0.1)]
)
def test_slow_start(elapsed: float, expected: float) -> None:
    assert slow_start_factor(100.0, 100.0 + elapsed, 10.0) == pytest.approx(expected)
    assert slow_start_factor(None, 0, 10.0) == 1.0
    assert slow_start_factor(100.0, 100.0, 0.0) == 1.0
