"""What the L7 and L4 retry shells share (pools.X.retries; the decisions are
quiesce.core.retry): asking the pool's policy and budget about one failure, choosing the
server a retry goes to, and counting it (HAProxy's ``wretr`` and ``wredis``, on the server
that failed). Only failures call here: nothing on the request path."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from quiesce.core.retry import (
    OUTSIDE_BUDGET,
    Cause,
    RetryPolicy,
    Verdict,
    budget_allows,
    decide,
    exclusions,
)

if TYPE_CHECKING:
    from quiesce.state.registry import PoolRuntime, ServerRuntime

Pick = Callable[[tuple["ServerRuntime", ...]], "ServerRuntime | None"]


def verdict(
    pool: PoolRuntime,
    cause: Cause,
    done: int,
    key: Hashable,
    alive: Callable[[Any, Any], bool],
    resendable: bool = True,
    replayable: bool = True,
) -> Verdict:
    """The pool's answer to a failure of the request (or L4 connection) ``key``, which had
    ``done`` retries; ``alive(owner, key)`` tells which of the pool's retrying requests are
    still in flight (the budget's count)."""
    policy: RetryPolicy = pool.config.retry
    # the budget last: counting it forgets the ended retries, a pass over the live ones
    v = decide(policy, cause, done, resendable, replayable, 0, 0, in_budget=True)
    budget = pool.retrying
    if v is not Verdict.RETRY or cause in OUTSIDE_BUDGET or budget.holds(key):
        return v
    if not budget_allows(policy, pool.sessions, budget.count(alive)):
        return Verdict.BUDGET
    return v


def target(pool: PoolRuntime, tried: tuple[ServerRuntime, ...], pick: Pick) -> ServerRuntime | None:
    """The server the retry goes to (``tried``: the servers the request went to, the one
    that failed last), or None: none may take it. A server at its ``max_connections`` is
    passed over (a retry does not queue)."""
    failed = tried[-1]
    for leave_out in exclusions(pool.config.retry, tried):
        if leave_out is None:
            if failed.eligible:
                return failed  # its own slot is given back as the retry takes it
            continue
        while True:
            server = pick(leave_out)
            if server is None:
                break
            limit = server.config.max_connections
            if limit is None or server.connections < limit:
                return server
            leave_out = (*leave_out, server)
    return None


def tried_after(tried: tuple[ServerRuntime, ...], to: ServerRuntime) -> tuple[ServerRuntime, ...]:
    """The servers tried once the retry goes to ``to``: ``to`` last (the one a next failure
    comes from), each server once."""
    return (*(s for s in tried if s is not to), to)


def counted(
    pool: PoolRuntime, key: Hashable, owner: Any, failed: ServerRuntime, to: Any, cause: Cause
) -> None:
    """A retry from ``failed`` to ``to`` after ``cause`` is on its way: its place in the
    budget (none for a refused connect: quiesce.core.retry), and the failed server's
    counters (``wretr``; ``wredis`` when it went elsewhere)."""
    if cause not in OUTSIDE_BUDGET:
        pool.retrying.add(key, owner)
    failed.retries += 1
    if to is not failed:
        failed.redispatches += 1
