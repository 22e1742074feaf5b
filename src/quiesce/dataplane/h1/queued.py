"""An L7 request and its pool's queue (quiesce.dataplane.waiting, quiesce.core.queue).

``ClientConnection._start`` calls :func:`admit` only when the server it picked has a
``max_connections`` or when it found none: a pool with no limit and an eligible server pays
one attribute check per request. A request that waits keeps its place on the connection
(``current``, with ``Request.waiting`` its queue entry); its body, if any, is held as while
an upstream connection opens. When it gets a server it is bound to it at once (the slot is
taken) and sent on the next loop turn; at its deadline it is answered: a ``503`` naming the
queue timeout (``sQ`` in the access log), or, when it was held for an empty pool, the
service's maintenance page as it would have had without ``hold_when_empty`` (``MQ``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from quiesce.core.queue import Waiting
from quiesce.dataplane.waiting import Waiter, at_limit
from quiesce.logs import access as ts

if TYPE_CHECKING:
    from quiesce.dataplane.h1.exchange import Request
    from quiesce.state.runtime import PoolRuntime, ServerRuntime


class ClientConnection(Protocol):
    """What this module uses of h1.client.ClientConnection (which imports this module)."""

    closed: bool
    current: Request | None
    server: ServerRuntime | None
    up: Any
    connecting: asyncio.Task[None] | None
    loop: asyncio.AbstractEventLoop
    term: str
    ctx: Any  # ServiceContext

    def _bind(self, pool: PoolRuntime, server: ServerRuntime) -> None: ...
    def _pick(
        self, pool: PoolRuntime, req: Request, exclude: tuple[ServerRuntime, ...]
    ) -> ServerRuntime | None: ...
    def _upstream(self) -> None: ...
    def _serve_page(self, page: Any) -> None: ...
    def _respond(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...]) -> None: ...


QUEUE_BODY = (
    b"503 Service Unavailable: every server of this pool is busy, "
    b"and the request waited its queue_timeout in the queue\n"
)


class Queued:
    """One waiting request (the queue's waiter)."""

    __slots__ = ("conn", "pool", "req")

    def __init__(self, conn: ClientConnection, pool: PoolRuntime, req: Request) -> None:
        self.conn = conn
        self.pool = pool
        self.req = req

    def dispatch(self, pool: PoolRuntime) -> bool:
        conn = self.conn
        req = self.req
        if conn.closed or conn.current is not req:
            return True  # gone: out of the queue
        server = free_server(conn, pool, req)
        if server is None:
            return False
        conn._bind(pool, server)
        conn.loop.call_soon(_send, conn, server)
        return True

    def timed_out(self, entry: Waiting[Waiter]) -> None:
        conn = self.conn
        if conn.closed or conn.current is not self.req:
            return
        self.pool.conn_errors += 1  # no server took it: the BACKEND's econ, as HAProxy's
        if entry.held:
            conn.term = ts.NO_SERVER + ts.QUEUE
            conn._serve_page(conn.ctx.page)
            return
        conn.term = ts.SERVER_TIMEOUT + ts.QUEUE
        conn.ctx.stats.count_error(503)
        conn._respond(503, QUEUE_BODY, (("Retry-After", "1"),))


def _send(conn: ClientConnection, server: ServerRuntime) -> None:
    if not conn.closed and conn.server is server and conn.up is None and conn.connecting is None:
        conn._upstream()


def free_server(conn: ClientConnection, pool: PoolRuntime, req: Request) -> ServerRuntime | None:
    """The pick among the pool's eligible servers under their limit (None: all full)."""
    full = tuple(s for s in pool.candidates if at_limit(s))
    return conn._pick(pool, req, full)


def admit(
    conn: ClientConnection, pool: PoolRuntime, server: ServerRuntime | None, req: Request
) -> ServerRuntime | None:
    """The server ``req`` goes to now, or None: it waits in the pool's queue, or it was
    answered (no eligible server and no ``hold_when_empty``: the maintenance page)."""
    queue = pool.queue
    if server is None:
        hold = pool.config.hold_when_empty
        if hold is None:
            pool.conn_errors += 1  # no server: the BACKEND's econ, as HAProxy's
            conn.term = ts.NO_SERVER + ts.DONE
            conn._serve_page(conn.ctx.page)
            return None
        _wait(conn, pool, req, hold, True)
        return None
    if not queue:  # nobody waits ahead of it
        if not at_limit(server):
            return server
        other = free_server(conn, pool, req)
        if other is not None:
            return other
    _wait(conn, pool, req, pool.config.queue_timeout, False)
    return None


def _wait(
    conn: ClientConnection, pool: PoolRuntime, req: Request, timeout: float, held: bool
) -> None:
    req.waiting = conn.ctx.table.queues.wait(pool, Queued(conn, pool, req), timeout, held)


def leave(conn: ClientConnection, req: Request | None) -> Request | None:
    """The connection is lost: if ``req`` was waiting, out of the queue. Returns ``req``."""
    entry = None if req is None or conn.server is not None else req.waiting
    if entry is not None:
        w = entry.waiter
        assert isinstance(w, Queued)
        w.conn.ctx.table.queues.leave(w.pool, entry)
    return req


__all__ = ["QUEUE_BODY", "Queued", "admit", "free_server", "leave"]
