"""Displayed status and eligibility over every combination of both axes."""

from __future__ import annotations

import itertools

import pytest

from quiesce.core.states import Admin, Oper, Status
from quiesce.core.status import displayed_status, in_maintenance, is_eligible, status_text


@pytest.mark.parametrize(("admin", "oper"), list(itertools.product(Admin, Oper)))
def test_eligible_only_when_enabled_and_up(admin: Admin, oper: Oper) -> None:
    expected = admin is Admin.ENABLED and oper in (Oper.UP, Oper.UNMONITORED)
    assert is_eligible(admin, oper) is expected


@pytest.mark.parametrize(("admin", "oper"), list(itertools.product(Admin, Oper)))
def test_status_every_combination(admin: Admin, oper: Oper) -> None:
    busy, idle = displayed_status(admin, oper, 3), displayed_status(admin, oper, 0)
    if admin is Admin.MAINTENANCE:
        assert busy is idle is Status.DISABLED
    elif admin is Admin.DRAIN:
        assert (busy, idle) == (Status.DRAINING, Status.DRAINED)
    else:
        expected = {
            Oper.UP: Status.UP,
            Oper.UNMONITORED: Status.UP,
            Oper.DOWN: Status.DOWN,
            Oper.MAINTENANCE: Status.MAINTENANCE,
            Oper.UNKNOWN: Status.UNKNOWN,
        }[oper]
        assert busy is idle is expected


def test_status_text() -> None:
    assert status_text(Admin.DRAIN, Oper.UP, 4) == "draining (4)"
    assert status_text(Admin.DRAIN, Oper.UP, 0) == "drained"
    assert status_text(Admin.ENABLED, Oper.MAINTENANCE, 0) == "down for maintenance"


def test_in_maintenance_either_axis() -> None:
    assert in_maintenance(Admin.MAINTENANCE, Oper.UP)
    assert in_maintenance(Admin.ENABLED, Oper.MAINTENANCE)
    assert not in_maintenance(Admin.DRAIN, Oper.DOWN)
