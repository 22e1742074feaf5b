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


def is_eligible(admin: Admin, oper: Oper, ejected: bool = False) -> bool:
    """Eligible for new connections. Nothing else decides eligibility: the two axes, and a
    passive ejection (quiesce.core.outlier), which keeps out a server both axes would let in."""
    return admin is _ENABLED and oper in _SERVING and not ejected


def in_maintenance(admin: Admin, oper: Oper) -> bool:
    """In maintenance on either axis (never elected primary)."""
    return admin is Admin.MAINTENANCE or oper is Oper.MAINTENANCE


def displayed_status(admin: Admin, oper: Oper, connections: int, ejected: bool = False) -> Status:
    """An operator's state first, then a monitor's verdict unless it lets the server in, then
    an ejection: ``ejected (passive)`` is shown only where it is what keeps the server out."""
    if admin is Admin.MAINTENANCE:
        return Status.DISABLED
    if admin is Admin.DRAIN:
        return Status.DRAINING if connections > 0 else Status.DRAINED
    if ejected and oper in _SERVING:
        return Status.EJECTED
    return _OPER_STATUS[oper]


def status_text(admin: Admin, oper: Oper, connections: int, ejected: bool = False) -> str:
    """The status as shown to people: ``draining (3)`` carries its count."""
    status = displayed_status(admin, oper, connections, ejected)
    if status is Status.DRAINING:
        return f"draining ({connections})"
    return status.value
