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
passed on: the client goes on in cleartext or gives up, as its ``sslmode`` says. The relay
speaks cleartext to the server either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from quiesce import _accel
from quiesce.core.events import Event, EventKind
from quiesce.dataplane.dbrelay import FRESH_GRACE, BackFramer, DbClient, FrontFramer, Session
from quiesce.dataplane.frontdoor import FrontDoor
from quiesce.dataplane.pg import (
    GSSENC_REQUEST,
    NO_ENCRYPTION,
    SSL_REQUEST,
    BackendFramer,
    FrontendFramer,
)
from quiesce.dataplane.pg import Session as PySession

__all__ = ["FRESH_GRACE", "PgClient", "PgFrontDoor"]

log = logging.getLogger("quiesce")

_SSL = (8).to_bytes(4, "big") + SSL_REQUEST.to_bytes(4, "big")
_GSSENC = (8).to_bytes(4, "big") + GSSENC_REQUEST.to_bytes(4, "big")
TLS_YES = b"S"  # the answer to an SSLRequest that the relay terminates


def _pure(max_message: int) -> tuple[PySession, FrontendFramer, BackendFramer]:
    session = PySession()
    return session, FrontendFramer(session, max_message), BackendFramer(session, max_message)


_framers: Callable[[int], tuple[Session, FrontFramer, BackFramer]] = _pure
if _accel.dbfast is not None:  # the same framers with their walk in C
    from quiesce.dataplane.dbfast import pg_framers

    _framers = pg_framers


class PgClient(DbClient):
    """One client connection of a ``postgresql`` service."""

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
        ctx = self.ctx
        peer = self._peer()
        log.warning("service %s: closing the connection of %s: %s", ctx.name, peer, reason)
        ctx.stats.protocol_errors += 1
        ctx.registry.emit(
            Event(
                ctx.registry.clock.time(),
                EventKind.PROTOCOL_ERROR,
                reason=reason,
                detail={"service": ctx.name, "client": peer},
            )
        )
        self.transport.abort()
