"""The displayed status and eligibility: pure functions of both axes (DESIGN §1).

HAProxy reduces its admin flags and operational state to READY / DRAIN / MAINT in one place;
this module is that place for quiesce.
"""

from __future__ import annotations

from quiesce.core.states import Admin, Oper, Status

_OPER_STATUS = {
    Oper.UP: Status.UP,
    Oper.UNMONITORED: Status.UP,
    Oper.DOWN: Status.DOWN,
    Oper.MAINTENANCE: Status.MAINTENANCE,
    Oper.UNKNOWN: Status.UNKNOWN,
}


_ENABLED = Admin.ENABLED
_SERVING = frozenset({Oper.UP, Oper.UNMONITORED})


def is_eligible(admin: Admin, oper: Oper) -> bool:
    """Eligible for new connections. Nothing else decides eligibility."""
    return admin is _ENABLED and oper in _SERVING


def in_maintenance(admin: Admin, oper: Oper) -> bool:
    """In maintenance on either axis (never elected primary)."""
    return admin is Admin.MAINTENANCE or oper is Oper.MAINTENANCE


def displayed_status(admin: Admin, oper: Oper, connections: int) -> Status:
    if admin is Admin.MAINTENANCE:
        return Status.DISABLED
    if admin is Admin.DRAIN:
        return Status.DRAINING if connections > 0 else Status.DRAINED
    return _OPER_STATUS[oper]


def status_text(admin: Admin, oper: Oper, connections: int) -> str:
    """The status as shown to people: ``draining (3)`` carries its count."""
    status = displayed_status(admin, oper, connections)
    if status is Status.DRAINING:
        return f"draining ({connections})"
    return status.value
