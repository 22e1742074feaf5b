"""Sending a request again: the keep-alive race's resend, and retries after a server failed
(``pools.X.retries``, ``retry_on``, ``redispatch``, ``retry_non_idempotent``,
``retry_budget``; the decisions are quiesce.core.retry, the shared shell
quiesce.dataplane.retrying). Only failures call here.

A retry drops the failed attempt (its upstream connection aborted, its server's slot given
back, counted there as ``wretr``/``wredis``), binds the request to the server the policy
chooses and sends it from the start: its head, and its body as far as it came — never sent
(a connect failure: ``pending``), or held since it was sent (``replay``, up to
``REPLAY_LIMIT``: kept by ``_attach`` only when the pool may retry a request that reached a
server and this one may be sent twice). Nothing of the failed attempt's response reached
the client: a response head is retried before it is forwarded, and a request whose response
has started is never sent again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quiesce.core.retry import (
    CONNECT_FAILURE,
    EMPTY_RESPONSE,
    RESPONSE_TIMEOUT,
    Cause,
    Verdict,
)
from quiesce.dataplane.h1.exchange import R_NONE, Request, may_resend, resendable
from quiesce.dataplane.retrying import counted, target, tried_after, verdict

if TYPE_CHECKING:
    from quiesce.dataplane.h1.upstream import Upstream
    from quiesce.state.registry import ServerRuntime


_AS: dict[Cause, int] = {EMPTY_RESPONSE: 502, RESPONSE_TIMEOUT: 504}


def _alive(owner: Any, req: Any) -> bool:
    """Is ``req`` still in flight on its client connection (its place in the budget)?"""
    return owner.current is req and not owner.closed


def replayable(req: Request) -> bool:
    """Is the whole request still held, to be sent again? Its body was kept (``replay``),
    or it has none (a request whose head said so has no ``body_since``)."""
    return req.replay is not None or not req.body_since


def keeps_body(conn: Any, req: Request) -> bool:
    """Should ``_attach`` keep the body it sends to a new connection (the pool retries
    requests that reached a server, and this one may be sent twice)?"""
    pool = conn.pool
    if pool is None:
        return False
    config = pool.config
    if config.protocol == "h2":
        return True  # a stream the server refuses unprocessed goes to another server
    policy = config.retry
    return policy.after_send and (policy.non_idempotent or resendable(req))


def again(conn: Any, cause: Cause, status: int = 0) -> bool:
    """Send ``conn``'s current request again after ``cause`` (its server failed), if the
    pool's policy allows it. True: it is on its way (the caller does nothing more); False:
    the caller answers as it did without retries (502, 504, the server's response)."""
    req: Request | None = conn.current
    pool = conn.pool
    server: ServerRuntime | None = conn.server
    if req is None or pool is None or server is None or conn.closed or conn.resp is not R_NONE:
        return False
    ok = verdict(pool, cause, req.retries, req, _alive, resendable(req), replayable(req))
    if ok is not Verdict.RETRY:
        return False
    tried: tuple[ServerRuntime, ...] = getattr(req, "tried", None) or (server,)
    to = target(pool, tried, lambda leave_out: conn._pick(pool, req, leave_out))
    if to is None:
        return False
    counted(pool, req, conn, server, to, cause)
    up: Upstream | None = conn.up
    if up is not None:
        conn.up = None
        up.client = None
        up.abort()
    conn.up_paused = False
    if req.replay:  # (None for a connect that failed: nothing was sent)
        req.pending = req.replay + req.pending  # sent already: from the start again
        req.pending_size = sum(map(len, req.pending))
    req.replay = None
    conn.sent_at = -1.0
    # the failed attempt counts for its server (hrsp_5xx, outlier_detection) as the answer
    # the client would have had: its status, 502 for an empty response, 504 for a timeout
    conn.ctx.table.request_finished(server, conn, status or _AS.get(cause, 0), False)
    conn.server = None
    req.retries += 1
    req.tried = tried_after(tried, to)
    conn._bind(pool, to)
    conn._upstream()
    return True


def on_status(conn: Any, status: int) -> bool:
    """A response head with ``status`` (>= 400) came: retried, not forwarded, when the
    pool's ``retry_on`` lists it and the policy allows (True)."""
    pool = conn.pool
    return pool is not None and status in pool.config.retry.statuses and again(conn, status, status)


def after_lost(conn: Any, req: Request, up: Upstream) -> bool:
    """The server closed ``up`` before any response was started (``upstream_lost``): the
    keep-alive race's resend, or a retry of an empty response. True: it is on its way
    again; False: the client gets a 502.

    The keep-alive race: a reused idle connection the server closed as we wrote to it.
    Nothing came back at once, we still hold the whole request and it may be sent twice:
    it is resent on a fresh connection to the same server (not a retry: nothing failed)."""
    if conn.closed:
        return False
    if getattr(up.transport, "unprocessed", False) and not up.got_byte and replayable(req):
        # an h2 pool's stream the server refused unprocessed (REFUSED_STREAM, above its
        # GOAWAY; RFC 9113 8.7) and its server would not take again (it stopped listening):
        # as a refused connect, whatever the method, on another server
        return again(conn, CONNECT_FAILURE)
    sent = conn.sent_at
    if may_resend(req, up.reused, up.got_byte, conn.loop.time() - sent if sent >= 0 else -1.0):
        assert req.replay is not None  # may_resend says so
        req.pending = req.replay + req.pending
        req.pending_size = sum(map(len, req.pending))
        req.replay = None
        conn.sent_at = -1.0
        server = conn.server
        assert server is not None
        conn.connecting = conn.loop.create_task(conn._open(server))
        return True
    return not up.got_byte and again(conn, EMPTY_RESPONSE)
