"""Retries and redispatch, decided without I/O (issue 17, part 3): what may be sent again,
where to, and the retry budget. The data plane's shells (quiesce.dataplane.h1.retry for
HTTP, quiesce.dataplane.tcp for L4) ask here and do what they are told.

Theory of operation
-------------------
A pool's :class:`RetryPolicy` (made from ``pools.X.retries``, ``retry_on``, ``redispatch``,
``retry_non_idempotent`` and ``retry_budget``: quiesce.config.retries) says which failures
are retried and how many times. A failure has a *cause*: the connection was refused or
reset (``connect_failure``) or not made in time (``connect_timeout``), the server closed
without a byte of response (``empty_response``), no response head came in
``response_timeout`` (``response_timeout``), or the response head has a status the policy
lists (an ``int``).

:func:`decide` answers one failure with a :class:`Verdict`, in this order: the cause is not
one to retry (``NOT_ON``); the request had all its retries (``EXHAUSTED``); the request
reached the server (every cause but the two connect ones) and may not be sent twice — not
idempotent (RFC 9110 §9.2.2) nor carrying an ``Idempotency-Key``, unless
``retry_non_idempotent`` — (``UNSAFE``), or its body is no longer held whole
(``NOT_REPLAYABLE``); the pool's retry budget is spent (``BUDGET``); else ``RETRY``. A request
that never reached a server (the connect causes) is retried whatever its method: nothing of
it was sent.

The budget (Envoy's ``retry_budget``) keeps retries from amplifying an outage: at most
``percent`` % of the pool's requests in flight may be retries in flight, or ``min_retries``
when that is more (so a quiet pool can still retry). A refused or reset connect
(``connect_failure``) is outside the budget: nothing of the request reached a server, so
sending it elsewhere adds no work to any server (HAProxy's ``retries`` and ``redispatch``
have no budget at all); counted against it, a server that stops listening (a back end's own
graceful stop, before its monitor notices) failed every request beyond ``min_retries`` that
was refused at once. A connect timeout stays in it (the time, and a server that may be
overloaded). A request keeps its place in the
budget from its first retry until it ends, however many more it makes (:class:`InFlight`
counts them; the shell says which of them are still alive, so nothing on the request path
has to tell it when a request ends).

Where a retry goes (:func:`exclusions`): with ``redispatch`` (the default) to an eligible
server the request has not tried yet, else to one other than the server that just failed,
else, when the policy allows it (``same_server``), to that server again; without
``redispatch``, to the same server (HAProxy without ``option redispatch``).

When ``retries`` is not set, the pool keeps quiesce's behaviour from before the setting
existed: :data:`DEFAULT` — one retry of a refused connection, on another eligible server
only (none: 502), within the budget.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

CONNECT_FAILURE = "connect_failure"  # refused, reset or unreachable before any byte
CONNECT_TIMEOUT = "connect_timeout"  # no connection within connect_timeout
EMPTY_RESPONSE = "empty_response"  # the server closed without a byte of response
RESPONSE_TIMEOUT = "response_timeout"  # no response head within response_timeout
CAUSES = (CONNECT_FAILURE, CONNECT_TIMEOUT, EMPTY_RESPONSE, RESPONSE_TIMEOUT)
# Nothing of the request reached a server: any method may be retried.
BEFORE_SEND = frozenset({CONNECT_FAILURE, CONNECT_TIMEOUT})
# Retried without a place in the budget: refused at once, no server saw a byte of it.
OUTSIDE_BUDGET = frozenset({CONNECT_FAILURE})

Cause = str | int  # one of CAUSES, or a response status

T = TypeVar("T")


class Verdict(enum.Enum):
    RETRY = "retry"
    NOT_ON = "not a cause to retry (retry_on)"
    EXHAUSTED = "no retry left (retries)"
    UNSAFE = "may not be sent twice (method; retry_non_idempotent)"
    NOT_REPLAYABLE = "its body is not held whole any more"
    BUDGET = "the retry budget is spent (retry_budget)"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 1
    on: frozenset[str] = frozenset({CONNECT_FAILURE})
    statuses: frozenset[int] = frozenset()
    redispatch: bool = True
    # redispatch, with no other eligible server: the one that failed is tried again
    same_server: bool = True
    non_idempotent: bool = False
    budget_percent: float = 20.0
    budget_min: int = 3

    @property
    def after_send(self) -> bool:
        """Does it retry a request that reached the server (so its body must be kept)?"""
        return self.retries > 0 and bool(self.statuses or self.on - BEFORE_SEND)

    def retries_on(self, cause: Cause) -> bool:
        return cause in self.statuses if isinstance(cause, int) else cause in self.on


# retries not set: one retry of a refused connection, on another server only
DEFAULT = RetryPolicy(same_server=False)


def budget_allows(policy: RetryPolicy, in_flight: int, retrying: int) -> bool:
    """May one more request start retrying, with ``in_flight`` requests in the pool and
    ``retrying`` of them retrying already?"""
    cap = max(policy.budget_min, int(in_flight * policy.budget_percent / 100.0))
    return retrying < cap


def decide(
    policy: RetryPolicy,
    cause: Cause,
    done: int,
    resendable: bool,
    replayable: bool,
    in_flight: int,
    retrying: int,
    in_budget: bool = False,
) -> Verdict:
    """May the request be sent again after ``cause``? ``done``: the retries it had;
    ``resendable``: it may be sent twice (idempotent, or an Idempotency-Key); ``replayable``:
    its whole body is still held; ``in_flight``/``retrying``: the pool's requests and
    retrying requests now; ``in_budget``: this request has its place in the budget already."""
    if not policy.retries_on(cause):
        return Verdict.NOT_ON
    if done >= policy.retries:
        return Verdict.EXHAUSTED
    if cause not in BEFORE_SEND:
        if not (resendable or policy.non_idempotent):
            return Verdict.UNSAFE
        if not replayable:
            return Verdict.NOT_REPLAYABLE
    in_budget = in_budget or cause in OUTSIDE_BUDGET
    if not in_budget and not budget_allows(policy, in_flight, retrying):
        return Verdict.BUDGET
    return Verdict.RETRY


def exclusions(policy: RetryPolicy, tried: tuple[T, ...]) -> tuple[tuple[T, ...] | None, ...]:
    """The servers to leave out of a pick for the retry, in order of preference (``tried``:
    the servers the request went to, the one that just failed last). ``None``: the one that
    failed, again."""
    if not policy.redispatch:
        return (None,)
    order: list[tuple[T, ...] | None] = [tried]
    if len(tried) > 1:
        order.append(tried[-1:])
    if policy.same_server:
        order.append(None)
    return tuple(order)


class InFlight:
    """The requests of one pool that are retrying now (their place in the budget), each
    with its owner (the shell's connection): kept until ``alive(owner, key)`` says the
    request ended, which is asked whenever they are counted (only when a failure asks for a
    retry: nothing on the request path)."""

    __slots__ = ("_live",)

    def __init__(self) -> None:
        self._live: dict[Hashable, Any] = {}

    def count(self, alive: Callable[[Any, Any], bool]) -> int:
        """The requests still retrying (the ended ones are forgotten here)."""
        live = self._live
        for key in [k for k, owner in live.items() if not alive(owner, k)]:
            del live[key]
        return len(live)

    def holds(self, key: Hashable) -> bool:
        return key in self._live

    def add(self, key: Hashable, owner: Any) -> None:
        self._live[key] = owner


__all__ = [
    "BEFORE_SEND",
    "CAUSES",
    "CONNECT_FAILURE",
    "CONNECT_TIMEOUT",
    "DEFAULT",
    "EMPTY_RESPONSE",
    "OUTSIDE_BUDGET",
    "RESPONSE_TIMEOUT",
    "Cause",
    "InFlight",
    "RetryPolicy",
    "Verdict",
    "budget_allows",
    "decide",
    "exclusions",
]
