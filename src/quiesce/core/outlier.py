"""Passive outlier detection (Envoy's consecutive-failure ejection): what the data plane sees
of a server's live traffic takes it out of balancing for a while, apart from its monitors.

Theory of operation
-------------------
Each server of a pool with ``outlier_detection`` has an :class:`OutlierTrack`. The data plane
reports each exchange's outcome to it where it already records one: a response status
(:meth:`OutlierTrack.response`, per request) and a failed connect
(:meth:`OutlierTrack.connect_failed`). A status >= 500 adds to the run of 5xx; any other
status ends both runs (the server answered); a failed connect adds to the run of connect
failures, a made one ends it (:meth:`OutlierTrack.connected`). Those calls only count and say
whether a run reached its :class:`Policy` threshold: the registry then decides
(:func:`refusal`: never past ``max_ejection_percent`` of the pool, never below its
``min_servers_up``) and ejects (:meth:`OutlierTrack.eject`), which says until when.

The ejection time grows with each ejection, Envoy's rule: ``base_ejection_time`` times the
server's ejection count, capped at ``max_ejection_time``; the count drops by one for each
``interval`` the server spends in service since it last returned (Envoy decrements it each
sweep a host is not ejected), computed when the next ejection comes, so no sweep runs.
A returned server starts its runs afresh (:meth:`OutlierTrack.restore`).

Ejection is a third input of eligibility, beside the two axes: a monitor that says up does not
end it, and an operator's drain or maintenance applies as ever on top. Sans-IO: time is an
argument.
"""

from __future__ import annotations

from dataclasses import dataclass

CONSECUTIVE_5XX = "consecutive_5xx"
CONSECUTIVE_CONNECT_FAILURES = "consecutive_connect_failures"


@dataclass(frozen=True, slots=True)
class Policy:
    """A pool's ``outlier_detection`` settings (quiesce.config.outlier validates them).
    A threshold of 0 turns that rule off."""

    consecutive_5xx: int = 5
    consecutive_connect_failures: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 50


class OutlierTrack:
    """One server's runs of failures, its ejection count and whether it is ejected."""

    __slots__ = (
        "connect_failures",
        "ejected_until",
        "ejections",
        "fives",
        "limit_5xx",
        "limit_connect",
        "policy",
        "refused",
        "returned_at",
        "times",
    )

    def __init__(self, policy: Policy) -> None:
        self.fives = 0  # the run of 5xx responses
        self.connect_failures = 0  # the run of failed connects
        self.times = 0  # Envoy's ejection multiplier
        self.ejections = 0  # ejections ever (quiesce_server_ejections_total)
        self.ejected_until: float | None = None
        self.returned_at: float | None = None
        self.refused = False  # this run's ejection was refused once (one event per run)
        self.policy = policy
        self.limit_5xx = policy.consecutive_5xx  # 0: the rule is off
        self.limit_connect = policy.consecutive_connect_failures

    def set_policy(self, policy: Policy) -> None:
        """New settings (a reload): the runs and the ejection count carry on."""
        self.policy = policy
        self.limit_5xx = policy.consecutive_5xx
        self.limit_connect = policy.consecutive_connect_failures

    # what the data plane reports (per request: keep these short) --------------------------

    def response(self, status: int) -> bool:
        """A response with ``status`` (0: none came); True when the 5xx run reached its
        threshold (then ask the registry, every further 5xx too, until it ejects)."""
        if status >= 500:
            self.fives += 1
            return self.fives >= self.limit_5xx > 0
        if status and (self.fives or self.connect_failures):
            self.fives = self.connect_failures = 0
            self.refused = False
        return False

    def connect_failed(self) -> bool:
        """A connect to the server failed (refused, reset, timed out); True when the run
        reached its threshold."""
        self.connect_failures += 1
        return self.connect_failures >= self.limit_connect > 0

    def connected(self) -> None:
        """A connect to the server succeeded (the L4 relay's only outcome)."""
        if self.connect_failures:
            self.connect_failures = 0
            self.refused = False

    def forget_runs(self) -> None:
        """Start both runs afresh (a run reached while the server was out another way)."""
        self.fives = self.connect_failures = 0
        self.refused = False

    def tripped(self) -> str | None:
        """Which rule's run is at its threshold, if any (for the event)."""
        if self.fives >= self.limit_5xx > 0:
            return CONSECUTIVE_5XX
        if self.connect_failures >= self.limit_connect > 0:
            return CONSECUTIVE_CONNECT_FAILURES
        return None

    # the decision's consequences -----------------------------------------------------------

    @property
    def ejected(self) -> bool:
        return self.ejected_until is not None

    def eject(self, now: float) -> float:
        """Eject the server at ``now``; returns for how long (seconds)."""
        self.times = decayed_times(self.times, self.returned_at, now, self.policy.interval) + 1
        duration = ejection_time(self.policy, self.times)
        self.ejected_until = now + duration
        self.ejections += 1
        self.forget_runs()
        return duration

    def restore(self, now: float) -> None:
        """Back in service at ``now``: the runs start afresh."""
        self.ejected_until = None
        self.returned_at = now
        self.forget_runs()


def ejection_time(policy: Policy, times: int) -> float:
    """Envoy's rule: ``base_ejection_time`` × the ejection count, at most
    ``max_ejection_time`` (but never less than the base)."""
    cap = max(policy.max_ejection_time, policy.base_ejection_time)
    return min(policy.base_ejection_time * max(1, times), cap)


def decayed_times(times: int, returned_at: float | None, now: float, interval: float) -> int:
    """The ejection count less one for each whole ``interval`` in service since
    ``returned_at`` (never below 0)."""
    if returned_at is None or times <= 0 or interval <= 0:
        return times
    return max(0, times - int(max(0.0, now - returned_at) // interval))


def refusal(
    ejected: int, servers: int, max_percent: int, eligible_after: int, min_servers_up: int
) -> str | None:
    """Why one more ejection is not allowed, or None: ``ejected`` servers of ``servers`` are
    out already, and ``eligible_after`` would be left eligible in the pool."""
    if servers <= 0 or (ejected + 1) * 100 > max_percent * servers:
        return (
            f"ejecting it would put {ejected + 1} of {servers} server(s) out, "
            f"over max_ejection_percent {max_percent}"
        )
    if eligible_after < min_servers_up:
        return (
            f"ejecting it would leave {eligible_after} eligible server(s), "
            f"below min_servers_up {min_servers_up}"
        )
    return None


__all__ = [
    "CONSECUTIVE_5XX",
    "CONSECUTIVE_CONNECT_FAILURES",
    "OutlierTrack",
    "Policy",
    "decayed_times",
    "ejection_time",
    "refusal",
]
