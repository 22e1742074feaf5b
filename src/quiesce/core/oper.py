"""The operational state machine: what the health monitors concluded (DESIGN §1).

Theory of operation
-------------------
Each (server, monitor) pair has a :class:`MonitorTrack`: an operational state and one integer,
``streak``, that counts consecutive results disagreeing with that state (HAProxy keeps rise and
fall in one ``health`` counter for the same reason). What a verdict does in a state is data, in
:data:`TRANSITIONS`; the code below only interprets it:

* ``Goto(X)`` moves to X at once (maintenance is an explicit signal: no hysteresis);
* ``Count(threshold, X)`` adds one to the streak and moves to X when the streak reaches the
  monitor's ``successful_checks`` or ``failed_checks``;
* ``Stay`` keeps the state and resets the streak.

A server's operational state combines its tracks (:func:`combine`): maintenance if any monitor
says so, else up if at least ``min_up`` say up, unknown while undecided monitors could still
make it up, else down. A server with no monitor is ``unmonitored``.

From ``unknown`` (start-up, or a monitor just attached) one result decides: nothing has been
sent to the server yet, so waiting for ``successful_checks`` passes would only delay service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from quiesce.core.states import Oper, Verdict


@dataclass(frozen=True, slots=True)
class Goto:
    target: Oper


@dataclass(frozen=True, slots=True)
class Count:
    threshold: Literal["successful_checks", "failed_checks"]
    target: Oper


@dataclass(frozen=True, slots=True)
class Stay:
    pass


Action = Goto | Count | Stay

TRANSITIONS: dict[Oper, dict[Verdict, Action]] = {
    Oper.UNKNOWN: {
        Verdict.PASS: Goto(Oper.UP),
        Verdict.FAIL: Goto(Oper.DOWN),
        Verdict.MAINTENANCE: Goto(Oper.MAINTENANCE),
    },
    Oper.UP: {
        Verdict.PASS: Stay(),
        Verdict.FAIL: Count("failed_checks", Oper.DOWN),
        Verdict.MAINTENANCE: Goto(Oper.MAINTENANCE),
    },
    Oper.DOWN: {
        Verdict.PASS: Count("successful_checks", Oper.UP),
        Verdict.FAIL: Stay(),
        Verdict.MAINTENANCE: Goto(Oper.MAINTENANCE),
    },
    Oper.MAINTENANCE: {
        Verdict.PASS: Goto(Oper.UP),
        Verdict.FAIL: Count("failed_checks", Oper.DOWN),
        Verdict.MAINTENANCE: Stay(),
    },
}
"""state → verdict → action. ``unmonitored`` has no row: no monitor, no verdicts."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    successful_checks: int = 2
    failed_checks: int = 2

    def __post_init__(self) -> None:
        if self.successful_checks < 1 or self.failed_checks < 1:
            raise ValueError("successful_checks and failed_checks must be at least 1")


@dataclass(frozen=True, slots=True)
class MonitorTrack:
    """One monitor's view of one server. Immutable: :meth:`feed` returns the next track."""

    state: Oper = Oper.UNKNOWN
    streak: int = 0

    def feed(self, verdict: Verdict, thresholds: Thresholds) -> MonitorTrack:
        action = TRANSITIONS[self.state][verdict]
        if isinstance(action, Goto):
            return AT_REST[action.target]
        if isinstance(action, Stay):
            return AT_REST[self.state]
        streak = self.streak + 1
        if streak >= getattr(thresholds, action.threshold):
            return AT_REST[action.target]
        return MonitorTrack(self.state, streak)


AT_REST = {o: MonitorTrack(o, 0) for o in Oper}
"""The track of each state with no streak, one object each (immutable): shared by every
server at rest rather than one per server and monitor (issue 21, memory at scale)."""


def combine(states: list[Oper], min_up: int | None = None) -> Oper:
    """A server's operational state from its monitors' states (DESIGN §1).

    ``min_up`` defaults to all of them.
    """
    if not states:
        return Oper.UNMONITORED
    if Oper.MAINTENANCE in states:
        return Oper.MAINTENANCE
    need = len(states) if min_up is None else max(1, min(min_up, len(states)))
    up = states.count(Oper.UP)
    if up >= need:
        return Oper.UP
    if up + states.count(Oper.UNKNOWN) >= need:
        return Oper.UNKNOWN
    return Oper.DOWN
