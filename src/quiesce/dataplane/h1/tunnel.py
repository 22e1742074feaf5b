"""The tunnel: after a server's ``101 Switching Protocols`` (WebSocket), client and server
connections relay bytes both ways until either side ends.

A request that asks to upgrade is forwarded like any other; bytes the client sends behind
its head are held (``upgrade_buf``, reading paused) until the server answers. A ``101`` to a
request that did not ask is a 502 (as HAProxy), never a tunnel. Once switched, the client
connection stays busy on its server (``table.hold``) until it closes; the relay itself is
one ``transport.write`` in each side's ``data_received``; an EOF from one side is passed on
as a half-close, and the tunnel ends when both sides have sent theirs. CONNECT is refused
(405) before it gets here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from quiesce.dataplane.h1.exchange import SWITCH_OF
from quiesce.dataplane.h1.types import P_UPGRADE

if TYPE_CHECKING:
    from quiesce.dataplane.h1.exchange import ConnState
    from quiesce.dataplane.h1.types import Service, UpstreamSide
    from quiesce.state.registry import ServerRuntime


class HalfClosing(Protocol):
    half_closed: int  # 1: the client's EOF passed on, 2: the server's


class Tunnelled(Protocol):
    """A client connection, as the tunnel sees it."""

    layer: int
    state: ConnState
    half_closed: int  # 1: the client's EOF passed on, 2: the server's
    upgrade_buf: list[bytes] | None
    out: list[bytes]
    resp_status: int
    server: ServerRuntime | None
    timer: asyncio.TimerHandle | None
    loop: asyncio.AbstractEventLoop
    rtime: float  # the 101's response time
    req_at: float  # the Upgrade request arrived at

    def fold(
        self, server: ServerRuntime | None, rtime: float = -1.0, ttime: float = 0.0
    ) -> None: ...

    @property
    def ctx(self) -> Service: ...
    @property
    def up(self) -> UpstreamSide | None: ...
    def flush(self) -> None: ...
    def resume(self, reason: int) -> None: ...
    def upstream_failed(self, up: Any, status: int) -> None: ...
    def cut(self) -> None: ...
    def close_at_boundary(self, force: bool = False) -> None: ...


def half_close(conn: HalfClosing, to: asyncio.Transport, side: int) -> bool:
    """One side's EOF: passed on to the other (``to``) as a half-close; the transport that
    received it stays open (``eof_received``'s answer) until both sides sent theirs."""
    if to.can_write_eof():
        to.write_eof()
        conn.half_closed |= side
        return conn.half_closed != 3
    return False


def start(conn: Tunnelled, up: UpstreamSide, rest: bytes) -> None:
    """The server answered 101: from now on both sides are a byte tunnel (``rest``: what the
    server sent behind its head)."""
    server = conn.server
    if conn.resp_status != 101 or server is None or conn.state not in SWITCH_OF:
        conn.upstream_failed(up, 502)
        return
    if rest:
        conn.out.append(rest)
    if conn.out:
        conn.flush()
    conn.state = SWITCH_OF[conn.state]
    up.tunnel = True
    ctx = conn.ctx
    # the request and the 101, timed; the tunnel's bytes are folded as they pass
    rtime = conn.rtime
    conn.rtime = -1.0
    conn.fold(server, rtime, conn.loop.time() - conn.req_at)
    ctx.table.request_finished(server, conn, 101, False)
    ctx.table.hold(server, conn)
    ctx.stats.count_response(101)
    if conn.timer is not None:
        conn.timer.cancel()
        conn.timer = None
    if conn.upgrade_buf is not None:
        release(conn)


def release(conn: Tunnelled) -> None:
    """Forward what the client sent behind its Upgrade request, and read it again."""
    buf = conn.upgrade_buf or []
    conn.upgrade_buf = None
    up = conn.up
    if up is not None:
        for chunk in buf:
            up.transport.write(chunk)
    conn.resume(P_UPGRADE)
