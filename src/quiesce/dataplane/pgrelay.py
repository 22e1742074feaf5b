"""The ``protocol: postgresql`` relay: the database relay shell (quiesce.dataplane.dbrelay)
with PostgreSQL's framing (quiesce.dataplane.pg).

Maintenance without ``--force`` ends an idle session at once and any other right after the
``ReadyForQuery('I')`` that ends its transaction, with the ``ErrorResponse`` PostgreSQL sends
itself on an administrator's shutdown (FATAL 57P01) and a ``Terminate`` to the server.

TLS: on a service with ``tls`` (certificates, as for any listener), :class:`PgFrontDoor`
reads the connection's first message: an ``SSLRequest`` is answered ``S`` and TLS is
terminated with the service's certificates (``FrontDoor``'s start), then the session is a
``PgClient`` on the TLS transport, followed as any other (its transaction boundary seen); a
cleartext start-up goes straight to the ``PgClient``. Bytes after an ``SSLRequest`` that
came before the ``S`` was sent are refused (they would be read as if encrypted: CVE-2021-23214).
Without ``tls``, an ``SSLRequest`` (or ``GSSENCRequest``) is answered ``N`` by the relay and not
passed on: the client goes on in cleartext or gives up, as its ``sslmode`` says.

To the server: cleartext, or with ``pools.X.tls`` TLS after an ``SSLRequest`` of the relay's
own (:class:`_PgTlsUpstream`: the server must answer ``S``; the client's bytes are held until
the handshake is done, then the session is followed inside TLS as in cleartext). A server
that answers ``N`` (no TLS configured) closes that connection with a ``protocol_error``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from quiesce import _accel
from quiesce.dataplane.dbrelay import (
    FRESH_GRACE,
    BackFramer,
    DbClient,
    FrontFramer,
    Session,
    _DbUpstream,
)
from quiesce.dataplane.frontdoor import FrontDoor
from quiesce.dataplane.pg import (
    GSSENC_REQUEST,
    NO_ENCRYPTION,
    SSL_REQUEST,
    BackendFramer,
    FrontendFramer,
)
from quiesce.dataplane.pg import Session as PySession
from quiesce.dataplane.protoerr import report as report_protocol_error
from quiesce.dataplane.tcp import TcpClient
from quiesce.dataplane.tls import ServiceTls
from quiesce.logs import access as ts

__all__ = ["FRESH_GRACE", "PgClient", "PgFrontDoor", "PgServiceTls", "pg_tls"]

log = logging.getLogger("quiesce")

_SSL = (8).to_bytes(4, "big") + SSL_REQUEST.to_bytes(4, "big")
_GSSENC = (8).to_bytes(4, "big") + GSSENC_REQUEST.to_bytes(4, "big")
TLS_YES = b"S"  # the answer to an SSLRequest that the relay terminates
_PLUS = b"SCRAM-SHA-256-PLUS\0"  # SCRAM with channel binding (taken out of a TLS server's offer)


def _pure(max_message: int) -> tuple[PySession, FrontendFramer, BackendFramer]:
    session = PySession()
    return session, FrontendFramer(session, max_message), BackendFramer(session, max_message)


_framers: Callable[[int], tuple[Session, FrontFramer, BackFramer]] = _pure
if _accel.dbfast is not None:  # the same framers with their walk in C
    from quiesce.dataplane.dbfast import pg_framers

    _framers = pg_framers


@dataclass(slots=True, eq=False)
class PgServiceTls(ServiceTls):
    """A postgresql service's TLS: a pool's ``tls`` starts after an ``SSLRequest``
    (:class:`_PgTlsUpstream`), not with the connection (``upstream`` gives no keywords)."""

    def upstream(self, pool: str, host: str) -> dict[str, Any]:
        return {}

    def backend(self, pool: str, host: str) -> tuple[ssl.SSLContext, str] | None:
        found = self.pools.get(pool)
        if found is None:
            return None
        ctx, sni = found
        return ctx, sni or host


def pg_tls(tls: ServiceTls | None) -> PgServiceTls | None:
    """A postgresql service's TLS (its pools' ``tls`` after an ``SSLRequest``)."""
    return None if tls is None else PgServiceTls(tls.listener, tls.pools)


class _Held:
    """The server's transport while the relay's SSLRequest is answered and TLS starts: what
    the client sends meanwhile is held (written once TLS is up), the rest goes to the socket."""

    __slots__ = ("closing", "held", "raw")

    def __init__(self, raw: asyncio.Transport) -> None:
        self.raw = raw
        self.held: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.held.append(bytes(data))

    def writelines(self, lines: Iterable[bytes]) -> None:
        self.held.extend(bytes(line) for line in lines)

    def close(self) -> None:
        self.closing = True
        self.raw.close()

    def abort(self) -> None:
        self.closing = True
        self.raw.abort()

    def is_closing(self) -> bool:
        return self.closing or self.raw.is_closing()

    def pause_reading(self) -> None:
        self.raw.pause_reading()

    def resume_reading(self) -> None:
        self.raw.resume_reading()

    def can_write_eof(self) -> bool:
        return False  # a client's EOF meanwhile: the session ends when the client closes

    def write_eof(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.raw.get_extra_info(name, default)


def upstream_secured(up: Any, task: asyncio.Task[asyncio.Transport | None]) -> None:
    """The relay's TLS to a server is up (or failed): what the client sent meanwhile is
    written to it, or the connection is cut with a log line (postgresql and mysql upstreams,
    their transport a :class:`_Held` until then)."""
    c = up.db
    held = up.transport
    assert isinstance(held, _Held)
    exc = None if task.cancelled() else task.exception()
    if task.cancelled() or exc is not None or held.closing:
        if not c.closed:
            log.warning(
                "service %s: TLS to server %s failed: %s",
                c.ctx.name,
                "none" if c.server is None else f"{c.server.pool}/{c.server.name}",
                exc or "cancelled",
            )
            c.term = ts.SERVER + ts.CONNECT
            c.cut()
        held.raw.abort()
        return
    transport = task.result()
    assert transport is not None
    up.transport = transport
    if held.held:
        transport.writelines(held.held)


class _PgTlsUpstream(_DbUpstream):
    """The connection to a server of a pool with ``tls``: an ``SSLRequest`` first, TLS once
    the server answers ``S``, then as :class:`_DbUpstream`."""

    __slots__ = ("auth", "want")

    def __init__(self, client: TcpClient) -> None:
        super().__init__(client)
        self.want: tuple[ssl.SSLContext, str] | None = None  # until the server answers
        self.auth = True  # until the authentication ends: SCRAM-SHA-256-PLUS taken out

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        c = self.db
        tls = c.ctx.tls
        server = c.server
        found = None
        if isinstance(tls, PgServiceTls) and server is not None:
            found = tls.backend(server.pool, server.host)
        if found is None:
            super().connection_made(transport)
            return
        raw: Any = transport  # (uvloop's transports are not asyncio.Transport subclasses)
        raw.write(_SSL)
        self.want = found
        self.transport = _Held(raw)  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        want = self.want
        if want is None:
            if self.auth:
                data = self._no_channel_binding(data)
            super().data_received(data)
            return
        c = self.db
        self.want = None
        if data != TLS_YES:
            what = "no TLS" if data[:1] == NO_ENCRYPTION else f"{data[:16]!r}"
            c.protocol_error(f"server answered the relay's SSLRequest with {what}", ts.SERVER)
            return
        held = self.transport
        assert isinstance(held, _Held)
        loop = c.ctx.loop
        task = loop.create_task(
            loop.start_tls(
                held.raw,
                self,
                want[0],
                server_hostname=want[1],
                ssl_handshake_timeout=c.pool.config.connect_timeout if c.pool else None,
            )
        )
        task.add_done_callback(self._secured)

    def _no_channel_binding(self, data: bytes) -> bytes:
        """The server's SASL offer without ``SCRAM-SHA-256-PLUS``: SCRAM's channel binding
        binds the client's TLS to the server's, which cannot span the relay (libpq refuses
        a PLUS offer on a connection without TLS, and the binding would not match on one
        with). Whole messages of the read are walked until the authentication ends
        (AuthenticationOk, an ErrorResponse, or a ReadyForQuery)."""
        pos, n, out = 0, len(data), []
        while n - pos >= 5:
            t = data[pos]
            length = int.from_bytes(data[pos + 1 : pos + 5], "big")
            end = pos + 1 + length
            if length < 4 or end > n:  # a message split by the read: left as it is
                self.auth = length >= 4 and length <= 8192
                break
            if t == 0x52 and length >= 8:  # R: Authentication*
                code = int.from_bytes(data[pos + 5 : pos + 9], "big")
                if code == 0:  # AuthenticationOk
                    self.auth = False
                elif code == 10:  # AuthenticationSASL: its mechanisms
                    body = data[pos + 9 : end].replace(_PLUS, b"")
                    out.append(data[:pos])
                    out.append(b"R" + (len(body) + 8).to_bytes(4, "big") + data[pos + 5 : pos + 9])
                    out.append(body)
                    data, n, pos = data[end:], n - end, 0
                    continue
            elif t in (0x45, 0x5A):  # ErrorResponse, ReadyForQuery
                self.auth = False
            pos = end
        if not out:
            return data
        out.append(data)
        return b"".join(out)

    _secured = upstream_secured


class PgClient(DbClient):
    """One client connection of a ``postgresql`` service."""

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        tls = ctx.tls
        if isinstance(tls, PgServiceTls) and tls.pools:  # a pool speaks TLS to its servers
            self.upstream_class = _PgTlsUpstream

    def framers(self, max_message: int) -> tuple[Session, FrontFramer, BackFramer]:
        return _framers(max_message)


class PgFrontDoor(FrontDoor):
    """The first bytes of a connection to a ``postgresql`` service with ``tls``: an
    ``SSLRequest`` is answered ``S`` and TLS started with the service's certificates (the
    ``PgClient`` then takes the TLS transport); a ``GSSENCRequest`` is answered ``N`` (the
    client may ask for TLS next); anything else is the ``PgClient``'s from the first byte."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        self.buf = b""
        while buf[:8] == _GSSENC:
            self.transport.write(NO_ENCRYPTION)
            buf = buf[8:]
        if len(buf) < 8 and (_SSL.startswith(buf) or _GSSENC.startswith(buf)):
            self.buf = buf  # not whole yet, and it may be one
            return
        self._stop_timer()
        tls = self.ctx.tls
        if buf[:8] != _SSL or tls is None or tls.listener is None:
            # cleartext (a start-up, a CancelRequest, or not PostgreSQL), or tls taken off by
            # a reload since this listener started: the PgClient's framer answers 'N'
            app = self._app()
            self.transport.set_protocol(app)
            app.connection_made(self.transport)
            app.data_received(buf)
            return
        if len(buf) > 8:
            self._refuse(f"client sent {len(buf) - 8} bytes after its SSLRequest, before TLS")
            return
        self.transport.write(TLS_YES)
        self._start_tls(b"")

    def _refuse(self, reason: str) -> None:
        # counted; logged and recorded unless throttled (quiesce.dataplane.protoerr, F4)
        report_protocol_error(self.ctx, ts.CLIENT, reason, self._peer(), None, relayed=False)
        self.transport.abort()
