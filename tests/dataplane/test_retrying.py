"""Where a retry goes and what it counts (quiesce.dataplane.retrying), without sockets: the
pick is a function of the servers left out, the servers plain records."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from quiesce.core.retry import (
    CONNECT_FAILURE,
    CONNECT_TIMEOUT,
    DEFAULT,
    InFlight,
    RetryPolicy,
    Verdict,
)
from quiesce.dataplane.retrying import counted, target, tried_after, verdict

pytestmark = pytest.mark.one_path  # no HTTP head read


def server(name: str, limit: int | None = None, connections: int = 0) -> Any:
    return SimpleNamespace(
        name=name,
        eligible=True,
        connections=connections,
        config=SimpleNamespace(max_connections=limit),
        retries=0,
        redispatches=0,
    )


def pool(policy: RetryPolicy, sessions: int = 10) -> Any:
    return SimpleNamespace(
        config=SimpleNamespace(retry=policy), retrying=InFlight(), sessions=sessions
    )


def name(s: Any) -> str | None:
    return None if s is None else str(s.name)


def picker(servers: list[Any]) -> Any:
    def pick(leave_out: tuple[Any, ...]) -> Any:
        return next((s for s in servers if s not in leave_out), None)

    return pick


def test_a_full_server_is_passed_over_and_the_same_one_is_the_last_resort() -> None:
    a, b, c = server("a"), server("b", limit=1, connections=1), server("c")
    p = pool(RetryPolicy(retries=3))
    assert name(target(p, (a,), picker([a, b, c]))) == "c"  # b is at its max_connections
    assert name(target(p, (a, c), picker([a, b, c]))) == "a"  # not c, which just failed
    assert name(target(p, (a,), picker([a, b]))) == "a"  # b full, nothing else: the same one
    a.eligible = False
    assert target(p, (a,), picker([a, b])) is None  # not even that, when it left
    # the default: never the same server
    assert target(pool(DEFAULT), (c,), picker([c])) is None
    # redispatch: false: the same server
    assert name(target(pool(RetryPolicy(retries=1, redispatch=False)), (c,), picker([c, a]))) == "c"


def test_the_budget_and_the_counters() -> None:
    p = pool(
        RetryPolicy(
            retries=2,
            on=frozenset({CONNECT_FAILURE, CONNECT_TIMEOUT}),
            budget_percent=0.0,
            budget_min=1,
        ),
        sessions=50,
    )
    a, b = server("a"), server("b")
    live = {"r1", "r2"}

    def alive(owner: object, key: object) -> bool:
        return key in live

    assert verdict(p, CONNECT_TIMEOUT, 0, "r1", alive) is Verdict.RETRY
    counted(p, "r1", "conn1", a, b, CONNECT_TIMEOUT)
    assert (a.retries, a.redispatches) == (1, 1)
    assert verdict(p, CONNECT_TIMEOUT, 0, "r2", alive) is Verdict.BUDGET  # one at a time
    assert verdict(p, CONNECT_TIMEOUT, 1, "r1", alive) is Verdict.RETRY  # r1 keeps its place
    counted(p, "r1", "conn1", b, b, CONNECT_TIMEOUT)
    assert (b.retries, b.redispatches) == (1, 0)  # the same server: a retry, no redispatch
    live.discard("r1")  # r1 ended: its place is free
    assert verdict(p, CONNECT_TIMEOUT, 0, "r2", alive) is Verdict.RETRY
    assert verdict(p, 503, 0, "r2", alive) is Verdict.NOT_ON
    # a refused connect takes no place: r3 retries while r2 holds the only one
    counted(p, "r2", "conn2", a, b, CONNECT_TIMEOUT)
    assert verdict(p, CONNECT_TIMEOUT, 0, "r3", alive) is Verdict.BUDGET
    assert verdict(p, CONNECT_FAILURE, 0, "r3", alive) is Verdict.RETRY
    counted(p, "r3", "conn3", a, b, CONNECT_FAILURE)
    assert not p.retrying.holds("r3") and a.retries == 3
    assert tried_after((a, b), a) == (b, a) and tried_after((a,), b) == (a, b)
