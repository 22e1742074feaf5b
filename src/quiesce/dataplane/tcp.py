"""The L4 TCP relay: bytes both ways, half-close passed through, back-pressure both ways.

A relay picks its server when the client connects (source_ip persistence and the pool's
algorithm), holds the client's bytes unread until the upstream connection is up, then copies
in both directions. An EOF from one side becomes a ``write_eof`` on the other (half-close
passes through); the relay ends when both directions are shut or either side goes away. A full
write buffer on one side pauses reading on the other. No server available: the connection is
closed at once (or relayed to ``fallback_pool`` when the service has one).
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

from quiesce.core.retry import CONNECT_FAILURE, CONNECT_TIMEOUT, Verdict
from quiesce.dataplane.context import ServiceContext
from quiesce.dataplane.persistence import pick_by_source
from quiesce.dataplane.proxyproto import Header, for_upstream
from quiesce.dataplane.retrying import counted, target, tried_after, verdict
from quiesce.dataplane.tcpqueue import admit, leave
from quiesce.dataplane.tls import server_name
from quiesce.logs import access as ts  # the access log's termination states
from quiesce.rules.decision import RequestView, Router, ToPool
from quiesce.state.traffic import account, connected

if TYPE_CHECKING:
    from quiesce.core.queue import Waiting
    from quiesce.state.registry import PoolRuntime, ServerRuntime


def _connecting(owner: TcpClient, key: object) -> bool:
    """Does an L4 connection that was retried still hold its place in the retry budget?"""
    return not owner.closed and owner.up is None


def half_close(transport: asyncio.Transport) -> None:
    """Pass an EOF on. asyncio cannot half-close a TLS connection (no ``write_eof``): that
    side stays open until the other one ends or it closes itself."""
    if transport.can_write_eof():
        transport.write_eof()


class _TcpUpstream(asyncio.Protocol):
    __slots__ = ("client", "transport")

    def __init__(self, client: TcpClient) -> None:
        self.client = client
        self.transport: asyncio.Transport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        c = self.client
        c.tx += len(data)
        c.transport.write(data)

    def eof_received(self) -> bool | None:
        c = self.client
        if c.closed:
            return False
        half_close(c.transport)
        c.half |= 2
        if c.half == 3:
            c.transport.close()
            return False
        return self.transport.can_write_eof()  # TLS: closes anyway

    def connection_lost(self, exc: Exception | None) -> None:
        c = self.client
        if exc is not None and not c.term:
            c.term = ts.SERVER + ts.DATA  # the server reset the connection
            if c.server is not None:
                c.server.resp_errors += 1  # eresp, as HAProxy counts a server's reset
                c.server.srv_aborts += 1  # and srv_abrt: a data transfer it aborted
        if not c.closed:
            c.closed = True
            if exc is None:
                c.transport.close()
            else:
                c.transport.abort()

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.client.closed:
            self.client.transport.resume_reading()


class TcpClient(asyncio.Protocol):
    """One client connection of an L4 service."""

    layer = 4
    upstream_class = _TcpUpstream  # a protocol-aware relay follows the server's bytes too

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.up: _TcpUpstream | None = None
        self.server: ServerRuntime | None = None
        self.pool: PoolRuntime | None = None
        self.peer = ""
        self.closed = False
        self.half = 0  # 1: client EOF passed on, 2: server EOF passed on
        self.pending: list[bytes] = []
        self.connecting: asyncio.Task[None] | None = None
        # bytes from and to the client not yet counted (bin/bout: counted by the service's
        # sweep and at the end), accepted at (ttime: the session's duration)
        self.rx = 0
        self.tx = 0
        self.accepted_at = 0.0
        # the ClientHello's server name, for the rules (SNI routing: set by the front door)
        self.sni: str | None = None
        # access log: the client's port, bytes folded so far, connect time (-1: none made),
        # retries, the termination state when it did not end normally (quiesce.logs.access)
        self.port = 0
        self.total_in = 0
        self.total_out = 0
        self.ctime = -1.0
        self.retries = 0
        self.tried: tuple[ServerRuntime, ...] = ()  # the servers it went to, once retried
        self.term = ""
        self.waiting: Waiting[Any] | None = None  # its entry in its pool's queue (tcpqueue)
        self.proxied: Header | None = None  # accept_proxy: the header read (frontdoor)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ctx = self.ctx
        ctx.conns.add(self)
        ctx.stats.connections += 1
        ctx.stats.connections_total += 1
        ctx.stats.requests += 1
        ctx.opened()
        self.accepted_at = ctx.loop.time()
        ctx.watch()  # the sweep counts a long relay's bytes as they pass (check)
        peer = transport.get_extra_info("peername") if not self.proxied else self.proxied.source
        self.peer = sys.intern(peer[0]) if peer else ""  # one string per client address
        self.port = peer[1] if peer else 0
        if ctx.closing:
            self.closed = True
            self.term = ts.GRACE + ts.REQUEST
            transport.close()
            return
        self.transport.pause_reading()
        pool = ctx.pool if ctx.router is None else self._route(ctx.router)
        server = self._pick(pool, ())
        if server is None and ctx.fallback is not None:
            pool = ctx.fallback
            server = self._pick(pool, ())
        if server is None or server.config.max_connections is not None:
            server = admit(self, pool, server)  # closed, or it waits in the queue
            if server is None:
                return
        self._bind(pool, server)

    def _route(self, router: Router) -> PoolRuntime:
        """The pool the service's rules choose (sni, flag, source, usable_servers_below);
        the server name is the ClientHello's, read by the front door or by the TLS
        handshake when the service terminates TLS."""
        sni = self.sni
        if sni is None:  # a TLS connection this service terminates: the name it asked for
            sni = server_name(self.transport.get_extra_info("ssl_object"))
        decision = router.route(RequestView("", "", None, {}, {}, self.peer, sni))
        ctx = self.ctx
        return ctx.registry.pool(decision.pool) if isinstance(decision, ToPool) else ctx.pool

    def _pick(self, pool: PoolRuntime, exclude: tuple[ServerRuntime, ...]) -> ServerRuntime | None:
        now = self.ctx.registry.clock.time()
        persistence = pool.config.persistence
        if persistence is None or persistence.type != "source_ip":
            return pool.pick(self.peer, now, exclude)
        table = self.ctx.table.sticky_table(pool.name)
        return pick_by_source(
            pool, persistence, table, self.peer, now, self.ctx.loop.time(), exclude
        )

    def _bind(self, pool: PoolRuntime, server: ServerRuntime) -> None:
        self.pool = pool
        self.server = server
        self.ctx.table.opened(server, self)
        self.connecting = self.ctx.loop.create_task(self._connect(pool, server))

    async def _connect(self, pool: PoolRuntime, server: ServerRuntime) -> None:
        loop = self.ctx.loop
        began = loop.time()
        tls = self.ctx.tls
        kw = {} if tls is None else tls.upstream(pool.name, server.host)  # pools.X.tls
        try:
            _, up = await asyncio.wait_for(
                loop.create_connection(
                    lambda: self.upstream_class(self), server.host, server.port, **kw
                ),
                pool.config.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            self.connecting = None
            self.ctx.table.connect_failed(
                server, "timeout" if isinstance(exc, TimeoutError) else "refused"
            )
            if self.closed:
                return
            timeout = isinstance(exc, TimeoutError)
            if self._retry(pool, server, CONNECT_TIMEOUT if timeout else CONNECT_FAILURE):
                return
            server.conn_errors += 1  # econ: failed for good (a retried one is wretr)
            self.closed = True
            self.term = (ts.SERVER_TIMEOUT if timeout else ts.SERVER) + ts.CONNECT
            self.transport.abort()
            return
        self.connecting = None
        self.ctime = loop.time() - began
        connected(server.own_traffic or server.new_traffic(), self.ctime)
        if server.outlier is not None:  # outlier_detection: the run of connect failures ends
            server.outlier.connected()
        if self.closed:
            up.transport.close()
            return
        self.up = up
        if pool.config.send_proxy:  # pools.X.send_proxy: the header first
            up.transport.write(for_upstream(pool.config.send_proxy, self.transport, self.proxied))
        if self.pending:
            up.transport.writelines(self.pending)
            self.pending = []
        if self.half & 1:
            half_close(up.transport)
        self.transport.resume_reading()

    def _retry(self, pool: PoolRuntime, server: ServerRuntime, cause: str) -> bool:
        """The connection to ``server`` failed: made to another server (or the same) as the
        pool's retries allow (quiesce.dataplane.retrying). L4 retries connect failures and
        timeouts only: nothing of the client's was sent; until it is connected the retry
        holds its place in the pool's retry budget."""
        if verdict(pool, cause, self.retries, self, _connecting) is not Verdict.RETRY:
            return False
        tried = self.tried or (server,)
        to = target(pool, tried, lambda leave_out: self._pick(pool, leave_out))
        if to is None:
            return False
        counted(pool, self, self, server, to, cause)
        self.retries += 1
        self.tried = tried_after(tried, to)
        self.ctx.table.closed(server, self)
        self._bind(pool, to)
        return True

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        up = self.up
        if up is not None:
            up.transport.write(data)
        else:
            # uvloop starts reading after connection_made, whatever it asked: hold what
            # arrives until the upstream connection is up, and stop reading meanwhile.
            self.pending.append(data)
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self.closed:
            return False
        self.half |= 1
        up = self.up
        if up is None:  # passed on once the upstream connection is up
            return self.transport.can_write_eof()
        half_close(up.transport)
        return self.half != 3 and self.transport.can_write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ctx = self.ctx
        ctx.conns.discard(self)
        ctx.stats.connections -= 1
        ctx.lost()
        if self.connecting is not None:
            self.connecting.cancel()
        server = self.server
        waited = leave(self, server)
        now = ctx.loop.time()
        if server is not None and self.up is not None:
            # connected: a timed session (HAProxy: no response time in TCP mode)
            self.fold(0.0, now - self.accepted_at)
        else:
            self.fold()
        access = ctx.access
        if access is not None:
            if not self.term and exc is not None:
                self.term = ts.CLIENT + ts.DATA  # the client reset the connection
            access.add(
                (
                    now,
                    4,
                    self.peer,
                    self.port,
                    ctx.name,
                    None if server is None else server.pool,
                    None if server is None else server.name,
                    None,
                    None,
                    -1,
                    self.total_in,
                    self.total_out,
                    waited,
                    self.ctime,
                    -1.0,
                    now - self.accepted_at,
                    self.retries,
                    self.term or "--",
                )
            )
        if server is not None:
            ctx.table.closed(server, self)
        up = self.up
        if up is not None:
            if exc is None:
                up.transport.close()
            else:
                up.transport.abort()
        if ctx.closing and not ctx.conns and ctx.drained is not None:
            ctx.drained.set()

    def pause_writing(self) -> None:
        up = self.up
        if up is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self.up
        if up is not None:
            up.transport.resume_reading()

    def cut(self, why: str = "") -> None:
        if self.closed:
            return
        if why and not self.term:
            self.term = why + (ts.DATA if self.up is not None else ts.CONNECT)
        self.closed = True
        up = self.up
        if up is not None:
            up.transport.abort()
        self.transport.abort()

    def close_at_boundary(self, force: bool = False) -> bool:
        """L4 has no request boundary: connections are left to end on their own (False:
        not closed; a protocol-aware relay, quiesce.dataplane.pgrelay, knows better)."""
        return False

    def check(self, now: float) -> None:
        """L4 relays have no idle timeout of their own (the peers' keep-alives rule); the
        bytes relayed since the last sweep are counted."""
        self.fold()

    def fold(self, rtime: float = -1.0, ttime: float = 0.0) -> None:
        """Count the bytes relayed since the last fold for the service and the server (and,
        at the end, the session's times: quiesce.state.traffic)."""
        nin = self.rx
        nout = self.tx
        if nin or nout or rtime >= 0.0:
            self.rx = self.tx = 0
            self.total_in += nin
            self.total_out += nout
            server = self.server
            traffic = None if server is None else server.own_traffic or server.new_traffic()
            account(traffic, self.ctx.stats.traffic, nin, nout, rtime, ttime)
