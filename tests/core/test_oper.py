"""Every state × every verdict of the operational state machine, and the combination rule."""

from __future__ import annotations

import itertools

import pytest

from quiesce.core.oper import TRANSITIONS, MonitorTrack, Thresholds, combine
from quiesce.core.states import Oper, Verdict

T = Thresholds(successful_checks=3, failed_checks=2)
MONITORED = [Oper.UNKNOWN, Oper.UP, Oper.DOWN, Oper.MAINTENANCE]

# (state, verdict) → state after 1 result, and after `threshold` consecutive ones.
EXPECTED: dict[tuple[Oper, Verdict], tuple[Oper, Oper]] = {
    (Oper.UNKNOWN, Verdict.PASS): (Oper.UP, Oper.UP),
    (Oper.UNKNOWN, Verdict.FAIL): (Oper.DOWN, Oper.DOWN),
    (Oper.UNKNOWN, Verdict.MAINTENANCE): (Oper.MAINTENANCE, Oper.MAINTENANCE),
    (Oper.UP, Verdict.PASS): (Oper.UP, Oper.UP),
    (Oper.UP, Verdict.FAIL): (Oper.UP, Oper.DOWN),  # failed_checks=2
    (Oper.UP, Verdict.MAINTENANCE): (Oper.MAINTENANCE, Oper.MAINTENANCE),
    (Oper.DOWN, Verdict.PASS): (Oper.DOWN, Oper.UP),  # successful_checks=3
    (Oper.DOWN, Verdict.FAIL): (Oper.DOWN, Oper.DOWN),
    (Oper.DOWN, Verdict.MAINTENANCE): (Oper.MAINTENANCE, Oper.MAINTENANCE),
    (Oper.MAINTENANCE, Verdict.PASS): (Oper.UP, Oper.UP),  # first ordinary pass: up at once
    (Oper.MAINTENANCE, Verdict.FAIL): (Oper.MAINTENANCE, Oper.DOWN),
    (Oper.MAINTENANCE, Verdict.MAINTENANCE): (Oper.MAINTENANCE, Oper.MAINTENANCE),
}


def test_table_covers_every_state_and_verdict() -> None:
    assert set(TRANSITIONS) == set(MONITORED)
    for state in MONITORED:
        assert set(TRANSITIONS[state]) == set(Verdict)
    assert set(EXPECTED) == set(itertools.product(MONITORED, Verdict))


@pytest.mark.parametrize(("state", "verdict"), sorted(EXPECTED))
def test_every_transition(state: Oper, verdict: Verdict) -> None:
    after_one, after_many = EXPECTED[(state, verdict)]
    track = MonitorTrack(state)
    assert track.feed(verdict, T).state is after_one
    threshold = T.successful_checks if verdict is Verdict.PASS else T.failed_checks
    for _ in range(threshold):
        track = track.feed(verdict, T)
    assert track.state is after_many


def test_threshold_needs_consecutive_results() -> None:
    track = MonitorTrack(Oper.DOWN)
    for verdict in [Verdict.PASS, Verdict.PASS, Verdict.FAIL, Verdict.PASS, Verdict.PASS]:
        track = track.feed(verdict, T)
    assert track.state is Oper.DOWN  # the fail reset the streak
    assert track.feed(Verdict.PASS, T).state is Oper.UP


def test_maintenance_streak_of_failures_then_down() -> None:
    track = MonitorTrack(Oper.MAINTENANCE)
    track = track.feed(Verdict.FAIL, T)
    assert track.state is Oper.MAINTENANCE
    track = track.feed(Verdict.MAINTENANCE, T)  # maintenance reply resets the failure streak
    track = track.feed(Verdict.FAIL, T)
    assert track.state is Oper.MAINTENANCE
    assert track.feed(Verdict.FAIL, T).state is Oper.DOWN


def test_thresholds_reject_zero() -> None:
    with pytest.raises(ValueError):
        Thresholds(0, 1)


@pytest.mark.parametrize(
    ("states", "min_up", "expected"),
    [
        ([], None, Oper.UNMONITORED),
        ([Oper.UP], None, Oper.UP),
        ([Oper.UP, Oper.UP], None, Oper.UP),
        ([Oper.UP, Oper.DOWN], None, Oper.DOWN),
        ([Oper.UP, Oper.DOWN], 1, Oper.UP),
        ([Oper.UP, Oper.MAINTENANCE], 1, Oper.MAINTENANCE),
        ([Oper.DOWN, Oper.MAINTENANCE], None, Oper.MAINTENANCE),
        ([Oper.UNKNOWN, Oper.UP], None, Oper.UNKNOWN),
        ([Oper.UNKNOWN, Oper.DOWN], None, Oper.DOWN),
        ([Oper.UNKNOWN, Oper.DOWN], 1, Oper.UNKNOWN),
        ([Oper.UNKNOWN], None, Oper.UNKNOWN),
        ([Oper.DOWN, Oper.DOWN, Oper.UP], 2, Oper.DOWN),
        ([Oper.UP, Oper.DOWN, Oper.UP], 2, Oper.UP),
    ],
)
def test_combine(states: list[Oper], min_up: int | None, expected: Oper) -> None:
    assert combine(states, min_up) is expected
