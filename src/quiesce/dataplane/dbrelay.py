"""The relay shell of database services (``protocol: postgresql``, ``protocol: mysql``): the
L4 relay with the protocol's framing followed.

Bytes pass untouched both ways (quiesce.dataplane.tcp); every read is also fed to one framer
per direction (sans-IO: quiesce.dataplane.pg, quiesce.dataplane.mysql) so the relay knows
whether its session is idle, in a transaction or running a query. That lets non-forced
maintenance close at the transaction boundary: the table's ``AT_BOUNDARY``
(quiesce.dataplane.table) calls :meth:`DbClient.close_at_boundary`, which ends an idle session
at once and any other right after the answer that ends its transaction or query, with the
protocol's own goodbye (PostgreSQL: FATAL 57P01 and a ``Terminate`` to the server; MySQL: ERR
1053 and a ``COM_QUIT``). ``--force`` and a drain deadline cut as for any L4 relay. A session
the framers cannot follow (a MySQL client that asked for TLS) is left to end on its own, as a
plain L4 connection is. A framing error on either side closes that connection with a log line
and a ``protocol_error`` event.

A protocol is a subclass naming its session and framers (:meth:`DbClient.framers`). The
session has ``started`` (past the start-up: the client's reads go to ``front.typed``), ``fresh``,
``opaque``, ``done``, ``state``, ``closable()`` and ``goodbye()``; ``front.feed(data)`` returns
(bytes to pass on, bytes to answer the client with, an error), ``front.typed(data)`` and
``back.feed(data)`` an error or None.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from quiesce.dataplane.context import ServiceContext
from quiesce.dataplane.protoerr import report as report_protocol_error
from quiesce.dataplane.tcp import TcpClient, _TcpUpstream
from quiesce.logs import access as ts
from quiesce.state.sessions import track, untrack

if TYPE_CHECKING:
    from quiesce.state.registry import PoolRuntime, ServerRuntime

log = logging.getLogger("quiesce")

# A session whose client has not sent a query since its start-up is not closed idle at once:
# its first query is most likely on its way (a client that connects per transaction, such as
# pgbench -C, would see the goodbye instead of its answer). It is closed after its first
# query, or by the sweep once this long has passed (and it is still idle).
FRESH_GRACE = 0.5

_WARNED: set[str] = set()  # services whose first opaque (TLS) session was logged


class Session(Protocol):
    started: bool
    fresh: bool
    opaque: bool

    @property
    def state(self) -> str: ...

    @property
    def done(self) -> bool: ...

    def closable(self) -> bool: ...

    def goodbye(self) -> tuple[bytes, bytes]: ...


class FrontFramer(Protocol):
    def feed(self, data: bytes) -> tuple[bytes, bytes, str | None]: ...

    def typed(self, data: bytes) -> str | None: ...


class BackFramer(Protocol):
    def feed(self, data: bytes) -> str | None: ...


class _DbUpstream(_TcpUpstream):
    __slots__ = ("db", "feed")

    def __init__(self, client: TcpClient) -> None:
        super().__init__(client)
        assert isinstance(client, DbClient)
        self.db = client
        self.feed = client.back.feed  # bound once: a read costs the walk and the write

    def data_received(self, data: bytes) -> None:
        c = self.db
        if c.closed:
            return
        err = self.feed(data)
        if err is not None:
            c.protocol_error(err, ts.SERVER)
            return
        c.tx += len(data)
        c.transport.write(data)
        if c.boundary:
            session = c.session
            if session.closable() and not session.fresh:
                c.goodbye()


class DbClient(TcpClient):
    """One client connection of a database service."""

    upstream_class = _DbUpstream
    session: Session
    front: FrontFramer
    back: BackFramer

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.session, self.front, self.back = self.framers(ctx.config.max_message_size)
        self.typed = self.front.typed  # a read once started (bound once)
        self.boundary = False  # maintenance: close at the next transaction boundary
        self.boundary_at = 0.0

    def framers(self, max_message: int) -> tuple[Session, FrontFramer, BackFramer]:
        raise NotImplementedError

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
            err = self.typed(data)
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
            self.transport.write(reply)  # PostgreSQL: "N" to an SSLRequest, no TLS here
        if forward:
            super().data_received(forward)
        if self.session.opaque and self.ctx.name not in _WARNED:
            _WARNED.add(self.ctx.name)
            log.warning(
                "service %s: client %s:%d asked for TLS, which this service does not "
                "terminate: its session (and any such) is relayed opaque and drained at "
                "connection level, not at the transaction boundary (docs/database.md)",
                self.ctx.name,
                self.peer,
                self.port,
            )

    def close_at_boundary(self, force: bool = False) -> bool:
        """End the session now when nothing would be lost (or ``force``), else right after
        its transaction or query ends; True: it will be closed, False: a session the relay
        cannot follow (TLS), left to end on its own like a plain L4 connection."""
        if self.closed:
            return True
        session = self.session
        if force or session.done or (session.closable() and not session.fresh):
            self.goodbye()
            return True
        if session.opaque:
            return False
        self.boundary = True
        self.boundary_at = self.ctx.loop.time()
        return True

    def check(self, now: float) -> None:
        """The sweep: also closes a fresh session still idle ``FRESH_GRACE`` after the
        maintenance began (one that never sent a query since its start-up)."""
        super().check(now)
        if self.boundary and now - self.boundary_at >= FRESH_GRACE and self.session.closable():
            self.goodbye()

    def goodbye(self) -> None:
        """The protocol's goodbye to both sides (as the session's state allows), both
        closed. Not to a side whose peer's EOF was passed on to it (``half``): its writing
        side is shut (``write_eof``; asyncio and uvloop raise RuntimeError on a write after
        it), and that side had ended the session anyway (a client that sent Terminate and
        has not closed yet, its server gone at once)."""
        if self.closed:
            return
        self.closed = True
        to_client, to_server = self.session.goodbye()
        if to_client and not self.half & 2:
            self.transport.write(to_client)
        up = self.up
        if up is not None:
            if to_server and not self.half & 1:
                up.transport.write(to_server)
            up.transport.close()
        self.transport.close()

    def protocol_error(self, reason: str, side: str) -> None:
        """Close this connection (only): a log line and a ``protocol_error`` event."""
        # counted; logged and recorded unless throttled (quiesce.dataplane.protoerr, F4)
        report_protocol_error(self.ctx, side, reason, f"{self.peer}:{self.port}", self.server)
        self.term = side + (ts.DATA if self.up is not None else ts.CONNECT)
        self.cut()
