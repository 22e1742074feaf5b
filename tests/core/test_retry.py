"""Retry decisions (quiesce.core.retry), sans-IO: counts are arguments."""

from __future__ import annotations

import pytest

from quiesce.core.retry import (
    CONNECT_FAILURE,
    CONNECT_TIMEOUT,
    DEFAULT,
    EMPTY_RESPONSE,
    RESPONSE_TIMEOUT,
    InFlight,
    RetryPolicy,
    Verdict,
    budget_allows,
    decide,
    exclusions,
)

ALL = RetryPolicy(
    retries=3,
    on=frozenset({CONNECT_FAILURE, CONNECT_TIMEOUT, EMPTY_RESPONSE, RESPONSE_TIMEOUT}),
    statuses=frozenset({502, 503}),
)


def test_the_default_retries_a_refusal_once_on_another_server_only() -> None:
    assert decide(DEFAULT, CONNECT_FAILURE, 0, False, False, 1, 0) is Verdict.RETRY
    assert decide(DEFAULT, CONNECT_FAILURE, 1, True, True, 1, 0) is Verdict.EXHAUSTED
    for cause in (CONNECT_TIMEOUT, EMPTY_RESPONSE, RESPONSE_TIMEOUT, 503):
        assert decide(DEFAULT, cause, 0, True, True, 1, 0) is Verdict.NOT_ON
    assert exclusions(DEFAULT, ("a",)) == (("a",),)  # never the same server again
    assert not DEFAULT.after_send


def test_a_request_that_reached_the_server_is_sent_twice_only_when_it_may_be() -> None:
    for cause in (EMPTY_RESPONSE, RESPONSE_TIMEOUT, 503):
        # a POST (not resendable): never, unless retry_non_idempotent
        assert decide(ALL, cause, 0, False, True, 1, 0) is Verdict.UNSAFE
        lax = RetryPolicy(retries=3, on=ALL.on, statuses=ALL.statuses, non_idempotent=True)
        assert decide(lax, cause, 0, False, True, 1, 0) is Verdict.RETRY
        # a body no longer held whole: never
        assert decide(lax, cause, 0, True, False, 1, 0) is Verdict.NOT_REPLAYABLE
        assert decide(ALL, cause, 0, True, True, 1, 0) is Verdict.RETRY
    # never sent: a POST is retried after a connect failure or timeout
    for cause in (CONNECT_FAILURE, CONNECT_TIMEOUT):
        assert decide(ALL, cause, 0, False, False, 1, 0) is Verdict.RETRY
    assert decide(ALL, 504, 0, True, True, 1, 0) is Verdict.NOT_ON
    assert decide(ALL, 503, 3, True, True, 1, 0) is Verdict.EXHAUSTED
    assert ALL.after_send


@pytest.mark.parametrize(
    ("in_flight", "retrying", "allowed"),
    [(0, 2, True), (0, 3, False), (100, 19, True), (100, 20, False), (1000, 199, True)],
)
def test_the_budget_is_a_share_of_the_requests_in_flight_or_the_minimum(
    in_flight: int, retrying: int, allowed: bool
) -> None:
    # Envoy's defaults: 20 %, at least 3
    assert budget_allows(ALL, in_flight, retrying) is allowed
    verdict = decide(ALL, 503, 0, True, True, in_flight, retrying)
    assert verdict is (Verdict.RETRY if allowed else Verdict.BUDGET)
    # a request retrying already keeps its place
    assert decide(ALL, 503, 1, True, True, in_flight, retrying, in_budget=True) is Verdict.RETRY


def test_a_zero_budget_allows_no_retry_but_of_a_refused_connect() -> None:
    none = RetryPolicy(
        retries=3, on=ALL.on, statuses=ALL.statuses, budget_percent=0.0, budget_min=0
    )
    for cause in (CONNECT_TIMEOUT, EMPTY_RESPONSE, RESPONSE_TIMEOUT, 503):
        assert decide(none, cause, 0, True, True, 1000, 0) is Verdict.BUDGET
    # refused at once: no server saw a byte of it, so a retry adds no work anywhere
    assert decide(none, CONNECT_FAILURE, 0, False, False, 1000, 999) is Verdict.RETRY
    assert decide(none, CONNECT_FAILURE, 3, True, True, 0, 0) is Verdict.EXHAUSTED


def test_where_a_retry_goes() -> None:
    # another untried server, else one that did not just fail, else the same one
    assert exclusions(ALL, ("a",)) == (("a",), None)
    assert exclusions(ALL, ("a", "b")) == (("a", "b"), ("b",), None)
    same = RetryPolicy(retries=2, redispatch=False)
    assert exclusions(same, ("a",)) == (None,)


def test_in_flight_forgets_ended_requests_when_counted() -> None:
    live = InFlight()
    ended: set[str] = set()
    live.add("r1", "c1")
    live.add("r2", "c2")
    live.add("r1", "c1")  # a second retry of r1: one place
    assert live.count(lambda owner, key: key not in ended) == 2
    ended.add("r1")
    assert live.count(lambda owner, key: key not in ended) == 1
    assert not live.holds("r1") and live.holds("r2")
