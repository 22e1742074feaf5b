"""A client connection's access-log entries, and its answer when a deadline cuts a request.

One entry per exchange (quiesce.logs.access): at its end (``_after_response``, or the C fast
path's end of a keep-alive exchange), when it is dropped (``_abandon``: a broken or stalled
body, a client gone mid-request) or when the connection is lost with it in flight. The
termination state is set on the way (``term``: a server reset, a timeout, a cut) and read
once, here; an exchange that completed logs ``--``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from quiesce.dataplane.h1.exchange import HEAD_OF, R_DONE, R_SENT, RQ_BODY, Request, ResponseState
from quiesce.dataplane.pages import simple_response
from quiesce.logs.access import CONNECT, DATA, HEADERS, QUEUE, REQUEST

if TYPE_CHECKING:
    from quiesce.logs import AccessLog
    from quiesce.state.registry import ServerRuntime

RETRY_AFTER = "1"  # seconds, in the 503 a request gets when a deadline or --force cuts it
CUT_BODY = b"503 Service Unavailable: the server was taken out of service\n"


class _Stats(Protocol):
    def count_error(self, status: int) -> None: ...


class _Service(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def stats(self) -> _Stats: ...


class Conn(Protocol):
    """What this module reads and sets of a client connection (ResponseSide)."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    peer: str
    port: int
    ctime: float
    req_at: float
    term: str
    current: Request | None
    resp: ResponseState
    resp_close: bool
    resp_status: int
    tx: int
    up: Any
    server: ServerRuntime | None
    connecting: asyncio.Task[None] | None

    @property
    def ctx(self) -> _Service: ...

    def _unsend(self) -> None: ...
    def _response_done(self) -> None: ...


def log_exchange(
    conn: Conn,
    access: AccessLog,
    req: Request | None,
    server: ServerRuntime | None,
    status: int,
    nin: int,
    nout: int,
    rtime: float = -1.0,
) -> None:
    """One entry for ``req`` (None: a request head that could not be read), with the
    termination state set on the way (``conn.term``; none: it completed)."""
    now = conn.loop.time()
    c = conn.ctime
    term = conn.term or "--"
    conn.term = ""
    entry = (
        now,
        7,
        conn.peer,
        conn.port,
        conn.ctx.name,
        None if server is None else server.pool,
        None if server is None else server.name,
        None if req is None else req.method,
        None if req is None else req.url,
        status,
        nin,
        nout,
        0.0 if req is None or req.waiting is None else req.waiting.waited,
        c if c >= 0.0 else (0.0 if rtime >= 0.0 else -1.0),
        rtime,
        0.0 if req is None else now - conn.req_at,
        0 if req is None else req.retries,
        term,
    )
    grpc = getattr(req, "grpc", None)
    # a gRPC call's grpc-status: a 19th member (json and template formats: grpc_status)
    access.add(entry if grpc is None else (*entry, grpc))


def phase(conn: Conn) -> str:
    """Where the current exchange is, as the termination state's second letter."""
    if conn.resp is R_SENT or conn.resp is R_DONE:
        return DATA
    req = conn.current
    if req is None or req.state is RQ_BODY:
        return REQUEST
    if req.waiting is not None and conn.server is None:
        return QUEUE
    return CONNECT if conn.up is None else HEADERS


def answer_cut(conn: Conn, req: Request, why: str) -> None:
    """A drain deadline, ``--force`` or the end of a grace period cuts a request whose
    response has not started: it is answered ``503`` with ``Connection: close`` and
    ``Retry-After`` (not an empty reply), then the connection closes."""
    conn.term = why + phase(conn)
    up = conn.up
    if up is not None:
        conn.up = None
        up.client = None
        up.abort()
    if conn.connecting is not None:
        conn.connecting.cancel()
        conn.connecting = None
    conn._unsend()
    conn.ctx.stats.count_error(503)
    conn.resp_close = True
    conn.resp = HEAD_OF[conn.resp]
    conn.resp_status = 503
    data = simple_response(
        503,
        CUT_BODY,
        (("Retry-After", RETRY_AFTER),),
        head_only=req.head_only,
        close=True,
        http10=req.http10,
    )
    conn.tx += len(data)
    conn.transport.write(data)
    conn._response_done()
