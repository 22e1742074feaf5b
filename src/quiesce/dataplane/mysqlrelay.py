"""The ``protocol: mysql`` relay: the database relay shell (quiesce.dataplane.dbrelay) with
the MySQL / MariaDB client/server protocol followed (quiesce.dataplane.mysql).

Maintenance without ``--force`` ends an idle session at once and any other right after the
OK (or EOF) that ends its command with no transaction left open, with an ERR packet
``ER_SERVER_SHUTDOWN`` (1053, SQLSTATE 08S01) to the client and a ``COM_QUIT`` to the server.

TLS: on a service with ``tls`` (certificates, as for any listener) the session is a
:class:`MysqlTlsClient`: the greeting passed to the client offers ``CLIENT_SSL``, and a
client's SSL request starts TLS with the service's certificates (``loop.start_tls`` on the
client's transport, the bytes read after the request handed to the TLS engine as
quiesce.dataplane.frontdoor does); the connection phase is rewritten by a sans-IO
:class:`~quiesce.dataplane.mysqltls.Splice` (sequence ids renumbered, ``CLIENT_SSL`` cleared
for the server, which sees cleartext). Once the server's OK ends the authentication (or a
cleartext client's handshake response has passed) the connection is a plain
:class:`MysqlClient` again (its class and its upstream swapped, the transports told again):
the command phase runs the very same path, followed as a cleartext session (transaction
boundary, ERR 1053).

To the server: cleartext, or with ``pools.X.tls`` TLS after an SSL request of the relay's
own, sent once the client's handshake response is in (:meth:`_MysqlTlsUpstream.secure`; the
greeting must offer ``CLIENT_SSL``); a service without ``tls`` whose pool has it does not offer
``CLIENT_SSL`` to its clients.

Without ``tls``, a client that asks for TLS (``CLIENT_SSL`` in its handshake response) is
relayed opaque: its session is counted ``tls`` and drained at connection level, as a plain
L4 connection is (the service's first one is logged as a warning; ``quiesce check`` and
``run`` say so too).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable
from typing import Any

from quiesce import _accel
from quiesce.dataplane.dbrelay import (
    BackFramer,
    DbClient,
    FrontFramer,
    Session,
    _DbUpstream,
)
from quiesce.dataplane.frontdoor import _Held, feed_tls
from quiesce.dataplane.mysql import ClientFramer, ServerFramer
from quiesce.dataplane.mysql import Session as PySession
from quiesce.dataplane.mysqltls import Splice
from quiesce.dataplane.pgrelay import PgServiceTls, upstream_secured
from quiesce.dataplane.pgrelay import _Held as _HeldUp
from quiesce.dataplane.tcp import TcpClient
from quiesce.logs import access as ts

log = logging.getLogger("quiesce")


def _pure(max_message: int) -> tuple[PySession, ClientFramer, ServerFramer]:
    session = PySession()
    return session, ClientFramer(session, max_message), ServerFramer(session, max_message)


_framers: Callable[[int], tuple[Session, FrontFramer, BackFramer]] = _pure
if _accel.dbfast is not None:  # the same framers with their walk in C
    from quiesce.dataplane.dbfast import mysql_framers

    _framers = mysql_framers


class MysqlClient(DbClient):
    """One client connection of a ``mysql`` service."""

    def framers(self, max_message: int) -> tuple[Session, FrontFramer, BackFramer]:
        return _framers(max_message)


class _MysqlTlsUpstream(_DbUpstream):
    """The server's side of a :class:`MysqlTlsClient` until its connection phase ends: the
    greeting and the authentication's packets rewritten (:class:`Splice`); with its pool's
    ``tls``, an SSL request of the relay's own then TLS (:meth:`secure`)."""

    __slots__ = ("want",)

    def __init__(self, client: TcpClient) -> None:
        super().__init__(client)
        self.want: tuple[ssl.SSLContext, str] | None = None  # the pool's TLS

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        c = self.db
        tls = c.ctx.tls
        if isinstance(tls, PgServiceTls) and c.server is not None:
            self.want = tls.backend(c.server.pool, c.server.host)
        if isinstance(c, MysqlTlsClient):
            c.splice.server_tls = self.want is not None

    def secure(self, wire: bytes) -> None:
        """The relay's SSL request (``wire``'s first 36 bytes), TLS with the pool's context,
        then the rest (the client's handshake response as sent inside TLS)."""
        c = self.db
        want = self.want
        assert want is not None
        raw: Any = self.transport
        raw.write(wire[:36])
        held = _HeldUp(raw)
        held.held.append(wire[36:])
        self.transport = held  # type: ignore[assignment]
        loop = c.ctx.loop
        task = loop.create_task(
            loop.start_tls(
                raw,
                self,
                want[0],
                server_hostname=want[1],
                ssl_handshake_timeout=c.pool.config.connect_timeout if c.pool else None,
            )
        )
        task.add_done_callback(self._secured)

    _secured = upstream_secured

    def data_received(self, data: bytes) -> None:
        c = self.db
        if c.closed:
            return
        if not isinstance(c, MysqlTlsClient):  # plain() ran before the connect set c.up
            _plain_upstream(c, self).data_received(data)
            return
        if c.securing:  # (an ERR: the server gave up waiting) not into the client's handshake
            c.protocol_error("server sent a packet during the client's TLS handshake", ts.SERVER)
            return
        out = c.splice.server(data)
        if isinstance(out, str):
            c.protocol_error(out, ts.SERVER)
            return
        if out:
            super().data_received(out)
        if c.splice.done and not c.closed:
            c.plain()


class MysqlTlsClient(MysqlClient):
    """One client connection of a ``mysql`` service with ``tls``, until its connection phase
    ends (then a :class:`MysqlClient`: :meth:`plain`)."""

    upstream_class = _MysqlTlsUpstream

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.splice = Splice(offer=ctx.tls is not None and ctx.tls.listener is not None)
        self.gone = False  # connection_lost told (by the transport, or by _secured)
        self.securing = False  # the client's TLS handshake runs: its transport is not ours

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        forward, tls, err = self.splice.client(data)
        if err is not None:
            self.protocol_error(err, ts.CLIENT)
            return
        if tls is not None:
            self._start_tls(tls)
            return
        wire = self.splice.wire
        if wire is not None:  # TLS to the server: the response goes after the relay's request
            self.splice.wire = None
            err = self.front.feed(forward)[2]  # (the framer's view)
            up = self.up
            if err is not None or not isinstance(up, _MysqlTlsUpstream):
                self.protocol_error(err or "no server connection", ts.CLIENT)
                return
            self.rx += len(forward)
            up.secure(wire)
            return
        if self.splice.done:
            self.plain()
        if forward:
            DbClient.data_received(self, forward)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.gone:  # (lost before start_tls took the transport, then the task fails)
            self.gone = True
            super().connection_lost(exc)

    def plain(self) -> None:
        """The connection phase is over: from now on a :class:`MysqlClient` with a plain
        upstream, the transports' protocols set again (uvloop binds ``data_received`` when a
        protocol is set), so the command phase costs what it costs on any mysql service."""
        self.__class__ = MysqlClient  # type: ignore[assignment]
        self.transport.set_protocol(self)
        up = self.up
        if isinstance(up, _MysqlTlsUpstream):  # (None: the connect task sets it right after)
            _plain_upstream(self, up)

    def _start_tls(self, first: bytes) -> None:
        """TLS with the service's certificates on the client's transport, ``first`` (the
        bytes after the SSL request: the start of the client's handshake) handed to it."""
        ctx = self.ctx
        tls = ctx.tls
        if tls is None or tls.listener is None:  # a reload took tls off meanwhile
            self.protocol_error("client asked for TLS, which this service has not", ts.CLIENT)
            return
        loop = ctx.loop
        raw = self.transport
        raw.pause_reading()
        held = _Held()
        self.securing = True
        task = loop.create_task(
            loop.start_tls(
                raw,
                held,
                tls.listener.default,
                server_side=True,
                ssl_handshake_timeout=ctx.header_timeout,
            )
        )
        if first:
            loop.call_soon(feed_tls, ctx.name, raw, self, first)
        task.add_done_callback(functools.partial(self._secured, held))

    def _secured(self, held: _Held, task: asyncio.Task[asyncio.Transport | None]) -> None:
        self.securing = False
        exc = None if task.cancelled() else task.exception()
        if task.cancelled() or exc is not None or held.lost is not None or self.closed:
            # the client's transport belongs to the TLS protocol: its end is told here
            self.ctx.stats.tls_failed += 1
            log.debug(
                "service %s: TLS handshake with %s failed: %s",
                self.ctx.name,
                self.peer,
                exc or "closed",
            )
            self.term = self.term or ts.CLIENT + ts.CONNECT
            self.cut()
            self.connection_lost(exc if isinstance(exc, Exception) else None)
            return
        transport = task.result()
        assert transport is not None
        self.transport = transport
        transport.set_protocol(self)
        for data in held.data:
            self.data_received(data)
        if held.eof and not self.eof_received():
            transport.close()


def _plain_upstream(c: DbClient, up: _MysqlTlsUpstream) -> _DbUpstream:
    """``up`` replaced by a plain upstream on the same transport (the command phase's)."""
    plain = _DbUpstream(c)
    plain.transport = up.transport
    c.up = plain
    up.transport.set_protocol(plain)
    return plain


def mysql_client(ctx: Any) -> MysqlClient:
    """A client connection of a ``mysql`` service: a :class:`MysqlTlsClient` when the
    service or one of its pools has ``tls`` (the connection phase rewritten), else a plain
    :class:`MysqlClient`."""
    tls = ctx.tls
    if tls is not None and (tls.listener is not None or tls.pools):
        return MysqlTlsClient(ctx)
    return MysqlClient(ctx)
