"""The administrative state machine: every state × every command, deadlines and expiry."""

from __future__ import annotations

import itertools

import pytest

from quiesce.core import admin as sm
from quiesce.core.admin import AdminCommand, AdminRecord
from quiesce.core.errors import InvalidCommand
from quiesce.core.states import Admin, Cause, CloseMode

NOW = 1000.0


def rec(state: Admin, **kw: float) -> AdminRecord:
    return AdminRecord(state=state, actor="setup", since=NOW - 10, **kw)  # type: ignore[arg-type]


# from, to → (changed, close without force)
EXPECTED = {
    (Admin.ENABLED, Admin.ENABLED): (False, CloseMode.NONE),
    (Admin.ENABLED, Admin.DRAIN): (True, CloseMode.NONE),
    (Admin.ENABLED, Admin.MAINTENANCE): (True, CloseMode.AT_BOUNDARY),
    (Admin.DRAIN, Admin.ENABLED): (True, CloseMode.NONE),
    (Admin.DRAIN, Admin.DRAIN): (False, CloseMode.NONE),
    (Admin.DRAIN, Admin.MAINTENANCE): (True, CloseMode.AT_BOUNDARY),
    (Admin.MAINTENANCE, Admin.ENABLED): (True, CloseMode.NONE),
    (Admin.MAINTENANCE, Admin.DRAIN): (True, CloseMode.NONE),
    (Admin.MAINTENANCE, Admin.MAINTENANCE): (False, CloseMode.NONE),
}


@pytest.mark.parametrize(("frm", "to"), list(itertools.product(Admin, Admin)))
def test_every_command_from_every_state(frm: Admin, to: Admin) -> None:
    t = sm.apply(rec(frm), AdminCommand(to, "alice", "deploy", Cause.CLI), NOW)
    changed, close = EXPECTED[(frm, to)]
    assert t.changed is changed
    assert t.close is close
    assert t.after.state is to
    if changed:
        assert (t.after.actor, t.after.reason, t.after.since) == ("alice", "deploy", NOW)
        assert t.after.cause is Cause.CLI
    else:
        assert t.after == t.before  # idempotent: nothing recorded changes
        assert t.message.startswith("already")


@pytest.mark.parametrize("frm", list(Admin))
def test_force_maintenance_closes_all_even_when_already_there(frm: Admin) -> None:
    t = sm.apply(rec(frm), AdminCommand(Admin.MAINTENANCE, "a", force=True), NOW)
    assert t.close is CloseMode.ALL
    assert t.after.state is Admin.MAINTENANCE


@pytest.mark.parametrize(
    ("cmd", "message"),
    [
        (AdminCommand(Admin.DRAIN, "a", force=True), "^force .* applies only to maintenance$"),
        (AdminCommand(Admin.ENABLED, "a", force=True), "^force .* applies only to maintenance$"),
        (AdminCommand(Admin.MAINTENANCE, "a", deadline=NOW + 5), "deadline"),
        (AdminCommand(Admin.DRAIN, "a", deadline=NOW), "future"),
        (AdminCommand(Admin.DRAIN, "a", expires=NOW - 1), "future"),
        (AdminCommand(Admin.ENABLED, "a", expires=NOW + 5), "expiry"),
        (AdminCommand(Admin.DRAIN, "a", deadline=NOW + 10, expires=NOW + 5), "after"),
    ],
)
def test_invalid_commands_raise(cmd: AdminCommand, message: str) -> None:
    before = rec(Admin.ENABLED)
    with pytest.raises(InvalidCommand, match=message):
        sm.apply(before, cmd, NOW)


def test_drain_update_keeps_since_and_changes_deadline() -> None:
    before = rec(Admin.DRAIN, deadline=NOW + 100)
    t = sm.apply(before, AdminCommand(Admin.DRAIN, "b", deadline=NOW + 5), NOW)
    assert not t.changed
    assert t.after.deadline == NOW + 5
    assert t.after.since == before.since


def test_maintenance_expiry_can_be_extended_without_leaving() -> None:
    before = rec(Admin.MAINTENANCE, expires=NOW + 60)
    t = sm.apply(before, AdminCommand(Admin.MAINTENANCE, "b", "longer", expires=NOW + 600), NOW)
    assert not t.changed and t.close is CloseMode.NONE
    assert (t.after.expires, t.after.since, t.after.reason) == (NOW + 600, before.since, "longer")
    same = sm.apply(t.after, AdminCommand(Admin.MAINTENANCE, "c"), NOW)
    assert same.after == t.after and same.message == "already in maintenance"


def test_deadline_fires_maintenance_force_once() -> None:
    r = sm.apply(rec(Admin.ENABLED), AdminCommand(Admin.DRAIN, "a", deadline=NOW + 5), NOW).after
    assert sm.next_due(r) == NOW + 5
    assert sm.tick(r, NOW + 4.999) is None
    t = sm.tick(r, NOW + 5)
    assert t is not None
    assert (t.after.state, t.close, t.after.cause) == (
        Admin.MAINTENANCE,
        CloseMode.ALL,
        Cause.DEADLINE,
    )
    assert sm.tick(t.after, NOW + 6) is None


def test_expiry_returns_to_enabled_exactly_once() -> None:
    r = sm.apply(rec(Admin.ENABLED), AdminCommand(Admin.MAINTENANCE, "a", expires=NOW + 60), NOW)
    t = sm.tick(r.after, NOW + 61)
    assert t is not None
    assert (t.after.state, t.after.cause, t.after.expires) == (Admin.ENABLED, Cause.EXPIRY, None)
    assert sm.tick(t.after, NOW + 62) is None
    assert sm.next_due(t.after) is None


def test_deadline_then_expiry_in_order() -> None:
    cmd = AdminCommand(Admin.DRAIN, "a", deadline=NOW + 5, expires=NOW + 10)
    r = sm.apply(rec(Admin.ENABLED), cmd, NOW).after
    first = sm.tick(r, NOW + 20)
    assert first is not None and first.after.state is Admin.MAINTENANCE
    second = sm.tick(first.after, NOW + 20)
    assert second is not None and second.after.state is Admin.ENABLED
    assert sm.tick(second.after, NOW + 20) is None


@pytest.mark.parametrize(
    ("graceful", "timeout", "pool_default", "target", "deadline", "force"),
    [
        (False, None, 60.0, Admin.MAINTENANCE, None, True),  # immediate
        (True, 30.0, 60.0, Admin.DRAIN, NOW + 30, False),  # graceful with timeout
        (True, None, 60.0, Admin.DRAIN, NOW + 60, False),  # pool default
        (True, -1.0, 60.0, Admin.DRAIN, None, False),  # until all flows drain
        (True, None, -1.0, Admin.DRAIN, None, False),  # pool default infinite
        (True, 0.0, 60.0, Admin.MAINTENANCE, None, True),  # 0 = immediate
        (True, None, 0.0, Admin.MAINTENANCE, None, True),
    ],
)
def test_disable_modes(
    graceful: bool,
    timeout: float | None,
    pool_default: float,
    target: Admin,
    deadline: float | None,
    force: bool,
) -> None:
    cmd = sm.disable_command(
        actor="a",
        reason="r",
        cause=Cause.API,
        now=NOW,
        graceful=graceful,
        timeout=timeout,
        pool_default=pool_default,
    )
    assert (cmd.target, cmd.deadline, cmd.force) == (target, deadline, force)


def test_record_round_trips() -> None:
    r = AdminRecord(Admin.DRAIN, "a", "why", 5.0, Cause.API, expires=10.0, deadline=7.0)
    assert AdminRecord.from_dict(r.to_dict()) == r


def test_times_more_than_ten_years_ahead_are_refused() -> None:
    far = NOW + 11 * 365 * 86400
    for cmd in (
        AdminCommand(Admin.MAINTENANCE, "a", expires=far),
        AdminCommand(Admin.DRAIN, "a", deadline=far),
        AdminCommand(Admin.DRAIN, "a", deadline=float("nan")),
    ):
        with pytest.raises(InvalidCommand, match="10 years"):
            sm.apply(rec(Admin.ENABLED), cmd, NOW)


def test_repeated_drain_keeps_what_it_does_not_name() -> None:
    first = sm.apply(
        rec(Admin.ENABLED), AdminCommand(Admin.DRAIN, "a", deadline=NOW + 10, expires=NOW + 30), NOW
    ).after
    again = sm.apply(first, AdminCommand(Admin.DRAIN, "a", deadline=NOW + 20), NOW)
    assert (again.after.deadline, again.after.expires) == (NOW + 20, NOW + 30)
    with pytest.raises(InvalidCommand, match="after the drain deadline"):
        sm.apply(first, AdminCommand(Admin.DRAIN, "a", deadline=NOW + 40), NOW)
    assert sm.apply(first, AdminCommand(Admin.DRAIN, "a"), NOW).message == "already draining"


def test_expiry_reason_without_a_reason() -> None:
    r = sm.apply(rec(Admin.ENABLED), AdminCommand(Admin.MAINTENANCE, "a", expires=NOW + 1), NOW)
    t = sm.tick(r.after, NOW + 2)
    assert t is not None and t.after.reason == "expired"
