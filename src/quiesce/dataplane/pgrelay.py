"""The ``protocol: postgresql`` relay: the L4 relay with PostgreSQL's framing followed.

Bytes pass untouched both ways (quiesce.dataplane.tcp); every read is also fed to a framer
(quiesce.dataplane.pg) so the relay knows whether its session is idle, in a transaction or
running a query. That lets non-forced maintenance close at the transaction boundary: the
table's ``AT_BOUNDARY`` (quiesce.dataplane.table) calls :meth:`PgClient.close_at_boundary`,
which ends an idle session at once and any other right after the ``ReadyForQuery('I')`` that
ends its transaction, with the ``ErrorResponse`` PostgreSQL sends itself on an administrator's
shutdown (FATAL 57P01) and a ``Terminate`` to the server. ``--force`` and a drain deadline cut
as for any L4 relay.

An ``SSLRequest`` (or ``GSSENCRequest``) is answered ``N`` by the relay and not passed on:
the client goes on in cleartext or gives up, as its ``sslmode`` says. A framing error on
either side closes that connection with a log line and a ``protocol_error`` event.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from quiesce.core.events import Event, EventKind
from quiesce.dataplane.context import ServiceContext
from quiesce.dataplane.pg import GOODBYE, TERMINATE, BackendFramer, FrontendFramer, Session
from quiesce.dataplane.tcp import TcpClient, _TcpUpstream
from quiesce.logs import access as ts
from quiesce.state.sessions import track, untrack

if TYPE_CHECKING:
    from quiesce.state.registry import PoolRuntime, ServerRuntime

log = logging.getLogger("quiesce")

# A session whose client has not sent a query since its start-up is not closed idle at once:
# its first query is most likely on its way (a client that connects per transaction, such as
# pgbench -C, would see 57P01 instead of its answer). It is closed after its first query, or
# by the sweep once this long has passed (and it is still idle).
FRESH_GRACE = 0.5


class _PgUpstream(_TcpUpstream):
    __slots__ = ("pg",)

    def __init__(self, client: TcpClient) -> None:
        super().__init__(client)
        assert isinstance(client, PgClient)
        self.pg = client

    def data_received(self, data: bytes) -> None:
        c = self.pg
        if c.closed:
            return
        err = c.back.feed(data)
        if err is not None:
            c.protocol_error(err, ts.SERVER)
            return
        c.tx += len(data)
        c.transport.write(data)
        if c.boundary:
            session = c.session
            if session.closable() and not session.fresh:
                c.goodbye()


class PgClient(TcpClient):
    """One client connection of a ``postgresql`` service."""

    upstream_class = _PgUpstream

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.session = Session()
        limit = ctx.config.max_message_size
        self.front = FrontendFramer(self.session, limit)
        self.back = BackendFramer(self.session, limit)
        self.boundary = False  # maintenance: close at the next transaction boundary
        self.boundary_at = 0.0

    def _bind(self, pool: PoolRuntime, server: ServerRuntime) -> None:
        if self.server is not None:  # a retry on another server
            untrack(self.server, self.session)
        track(server, self.session)  # counted by state (quiesce.state.sessions)
        super()._bind(pool, server)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.server is not None:
            untrack(self.server, self.session)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        up = self.up
        if up is not None and self.session.started:  # the common read: no start-up left
            err = self.front.typed(data)
            if err is not None:
                self.protocol_error(err, ts.CLIENT)
                return
            self.rx += len(data)
            up.transport.write(data)
            return
        forward, reply, err = self.front.feed(data)
        if err is not None:
            self.protocol_error(err, ts.CLIENT)
            return
        if reply:
            self.transport.write(reply)  # "N" to an SSLRequest: no TLS here
        if forward:
            super().data_received(forward)

    def close_at_boundary(self, force: bool = False) -> bool:
        """End the session now when nothing would be lost (or ``force``), else right after
        its transaction or query ends; True: it will be closed."""
        if self.closed:
            return True
        self.boundary = True
        self.boundary_at = self.ctx.loop.time()
        session = self.session
        if force or session.cancel or session.ended or (session.closable() and not session.fresh):
            self.goodbye()
        return True

    def check(self, now: float) -> None:
        """The sweep: also closes a fresh session still idle ``FRESH_GRACE`` after the
        maintenance began (one that never sent a query since its start-up)."""
        super().check(now)
        if self.boundary and now - self.boundary_at >= FRESH_GRACE and self.session.closable():
            self.goodbye()

    def goodbye(self) -> None:
        """FATAL 57P01 to the client, Terminate to the server, both closed."""
        if self.closed:
            return
        self.closed = True
        if self.session.started and not self.session.cancel:
            self.transport.write(GOODBYE)
        up = self.up
        if up is not None:
            if self.session.started and not self.session.ended:
                up.transport.write(TERMINATE)
            up.transport.close()
        self.transport.close()

    def protocol_error(self, reason: str, side: str) -> None:
        """Close this connection (only): a log line and a ``protocol_error`` event."""
        ctx = self.ctx
        server = self.server
        log.warning(
            "service %s: closing the connection of %s:%d (server %s): %s",
            ctx.name,
            self.peer,
            self.port,
            "none" if server is None else f"{server.pool}/{server.name}",
            reason,
        )
        ctx.stats.protocol_errors += 1
        ctx.registry.emit(
            Event(
                ctx.registry.clock.time(),
                EventKind.PROTOCOL_ERROR,
                pool=None if server is None else server.pool,
                server=None if server is None else server.name,
                reason=reason,
                detail={"service": ctx.name, "client": f"{self.peer}:{self.port}"},
            )
        )
        self.term = side + (ts.DATA if self.up is not None else ts.CONNECT)
        self.cut()
