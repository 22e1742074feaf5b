"""The front door of a TLS listener, and of a TCP service that routes on the ClientHello:
the protocol a connection starts with, until it knows what it is talking to.

Theory of operation
-------------------
A :class:`FrontDoor` reads the connection's first bytes. On a TLS listener
(``services.X.tls``):

* a TLS handshake record (0x16) starts TLS with the listener's context as it is *now*
  (``ctx.tls``: a reload that renews a certificate serves the next handshake, established
  connections carry on), through ``loop.start_tls``. The bytes already read are handed to
  the TLS protocol before it starts: ``start_tls`` swaps the transport's protocol for its
  own and schedules its ``connection_made``; :meth:`FrontDoor._feed`, scheduled behind that
  swap, gives those bytes to the TLS protocol's buffer (the ``BufferedProtocol`` interface
  asyncio's and uvloop's TLS protocols both have) before it reads anything else. Once the
  handshake is done the service's protocol (``ClientConnection``, ``TcpClient``) takes the
  TLS transport; what arrived in between was held by :class:`_Held`;
* anything else is a client speaking cleartext to a TLS port: an HTTP service answers
  ``400 Bad Request`` (as nginx does; a TLS client could not read it) and closes, a TCP
  service closes.

On a TCP service with ``sni`` rules and no ``tls`` (SNI routing without termination, as
HAProxy's ``req.ssl_sni``), the bytes are gathered until the ClientHello is whole
(quiesce.dataplane.clienthello), and the ``TcpClient`` takes the plain transport with the
server name it routes on and every byte read so far. A connection that is not TLS, or a
hello that does not parse, is routed with no name (the service's default pool).

On a listener with ``accept_proxy`` a PROXY header (v1 or v2, quiesce.dataplane.proxyproto)
comes first, before any of that: a connection from outside ``trusted_proxies`` is closed at
once, one whose header is malformed (or is no header: a client speaking straight to the port,
a spoofed line) is closed when it shows, one whose header is not whole within
``client_header_timeout`` is closed then; each with a log line, counted in the service's
``proxy_refused``. The header's client address (a LOCAL or UNKNOWN header: the connection's
own) is handed to the service's protocol as ``proxied``, which takes it for the client's
address everywhere. Without ``tls`` or ``sni`` rules, the protocol takes over right after the
header.

Either way a client must send its first bytes, and a TLS client finish its handshake,
within the service's ``client_header_timeout``. Until the service's protocol takes over, a
connection is not yet counted in the service's connections (its limits count established
connections).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from quiesce.dataplane.clienthello import Hello, NotHello, parse_hello
from quiesce.dataplane.context import ServiceContext
from quiesce.dataplane.h2.conn import Http2Connection
from quiesce.dataplane.proxyproto import Header, ProxyHeaderError
from quiesce.dataplane.proxyproto import read as read_header
from quiesce.dataplane.tls import HTTPS_FORWARDED, client_subject

log = logging.getLogger("quiesce")

_PLAIN_BODY = b"400 Bad Request: a plain HTTP request to an HTTPS port\n"
PLAIN_TO_TLS = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n"
    b"\r\n" % len(_PLAIN_BODY)
) + _PLAIN_BODY


class _Held(asyncio.Protocol):
    """What the TLS transport delivers between the end of the handshake and the service's
    protocol taking it over."""

    __slots__ = ("data", "eof", "lost")

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        return None  # TLS closes after a close_notify whatever the answer (True: a warning)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)


class FrontDoor(asyncio.Protocol):
    """One connection's first bytes; ``make`` builds the service's protocol for it."""

    __slots__ = ("buf", "ctx", "make", "proxied", "proxy_wait", "timer", "transport")

    def __init__(self, ctx: ServiceContext, make: Callable[[], asyncio.Protocol]) -> None:
        self.ctx = ctx
        self.make = make
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buf = b""
        self.timer: asyncio.TimerHandle | None = None
        self.proxy_wait = False  # a PROXY header still to read (accept_proxy)
        self.proxied: Header | None = None  # the one read, with a client address

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        trusted = self.ctx.trusted
        if trusted is not None:
            peer = transport.get_extra_info("peername")
            if not _trusted(peer, trusted):
                self._refuse_proxy(f"not from trusted_proxies: {self._peer()}")
                return
            self.proxy_wait = True
        self.timer = self.ctx.loop.call_later(self.ctx.header_timeout, self._timed_out)

    def _timed_out(self) -> None:
        self.timer = None
        if self.proxy_wait:
            self._refuse_proxy(
                f"no whole PROXY header within client_header_timeout ({self.buf!r:.60})"
            )
            return
        self.transport.abort()

    def _refuse_proxy(self, why: str) -> None:
        self._stop_timer()
        self.proxy_wait = False
        self.ctx.stats.proxy_refused += 1
        log.warning("service %s: connection from %s closed: %s", self.ctx.name, self._peer(), why)
        self.transport.abort()

    def _proxy_header(self, buf: bytes) -> bytes | None:
        """The bytes after the PROXY header, None until it is whole (or when refused)."""
        try:
            header = read_header(buf)
        except ProxyHeaderError as exc:
            self._refuse_proxy(str(exc))
            return None
        if header is None:
            self.buf = buf
            return None
        self.proxy_wait = False
        if header.source is not None:
            self.proxied = header
        return buf[header.consumed :]

    def _app(self) -> asyncio.Protocol:
        app = self.make()
        if self.proxied is not None:
            app.proxied = self.proxied  # type: ignore[attr-defined]
        return app

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        self.buf = b""
        if self.proxy_wait:
            rest = self._proxy_header(buf)
            if rest is None:
                return
            buf = rest
            if not self.ctx.config.sni_routing and (
                self.ctx.tls is None or self.ctx.tls.listener is None
            ):
                self._stop_timer()  # plain: the service's protocol takes it from here
                app = self._app()
                self.transport.set_protocol(app)
                app.connection_made(self.transport)
                if buf:
                    app.data_received(buf)
                return
            if not buf:
                return
        tls = self.ctx.tls
        listener = None if tls is None else tls.listener
        if listener is not None:
            self._stop_timer()
            if buf[0] == 0x16:
                self._start_tls(buf)
            else:
                self._cleartext_to_tls(buf)
            return
        try:
            hello = parse_hello(buf)
        except NotHello as exc:
            log.debug("service %s: no TLS ClientHello to route on (%s)", self.ctx.name, exc)
            hello = Hello(None)
        if hello is None:
            self.buf = buf  # the hello is not whole yet
            return
        self._stop_timer()
        app = self._app()
        app.sni = hello.sni  # type: ignore[attr-defined]
        self.transport.set_protocol(app)
        app.connection_made(self.transport)
        app.data_received(buf)

    def _cleartext_to_tls(self, buf: bytes) -> None:
        log.debug("service %s: cleartext on a TLS port from %s", self.ctx.name, self._peer())
        self.ctx.stats.tls_refused += 1
        if self.ctx.config.protocol == "http" and buf[:1].isalpha():
            self.transport.write(PLAIN_TO_TLS)
        self.transport.close()

    def eof_received(self) -> bool | None:
        if self.proxy_wait:
            self._refuse_proxy(f"closed before its PROXY header was whole ({self.buf!r:.60})")
        return None

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername")
        return str(peer[0]) if peer else "?"

    def _start_tls(self, buf: bytes) -> None:
        ctx = self.ctx
        tls = ctx.tls
        assert tls is not None and tls.listener is not None
        loop = ctx.loop
        transport = self.transport
        transport.pause_reading()
        held = _Held()
        task = loop.create_task(
            loop.start_tls(
                transport,
                held,
                tls.listener.default,
                server_side=True,
                ssl_handshake_timeout=ctx.header_timeout,
            )
        )
        loop.call_soon(self._feed, buf)  # behind start_tls's first step (see the docstring)
        task.add_done_callback(functools.partial(self._handshaken, held))

    def _feed(self, buf: bytes) -> None:
        feed_tls(self.ctx.name, self.transport, self, buf)

    def _handshaken(self, held: _Held, task: asyncio.Task[asyncio.Transport | None]) -> None:
        ctx = self.ctx
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None or held.lost is not None:
            ctx.stats.tls_failed += 1
            log.debug("service %s: TLS handshake with %s failed: %s", ctx.name, self._peer(), exc)
            if not self.transport.is_closing():
                self.transport.abort()
            return
        transport = task.result()
        assert transport is not None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            app: Any = Http2Connection(ctx)  # the client chose HTTP/2 (tls.alpn offers it)
            if self.proxied is not None:
                app.proxied = self.proxied
        else:
            app = self._app()
        tls = ctx.tls
        if hasattr(app, "fwd"):  # an HTTP client connection: says https, and who it is
            fwd = HTTPS_FORWARDED
            if tls is not None and tls.listener is not None and tls.listener.client_subject:
                fwd += client_subject(transport.get_extra_info("peercert")) or b""
            app.fwd = fwd
        transport.set_protocol(app)
        app.connection_made(transport)
        for data in held.data:
            app.data_received(data)
        if held.eof and not app.eof_received():
            transport.close()


def feed_tls(name: str, transport: asyncio.Transport, before: object, buf: bytes) -> None:
    """Hand ``buf`` (read before ``start_tls``) to the TLS protocol ``start_tls`` put on
    ``transport`` in place of ``before`` (see :class:`FrontDoor`'s docstring); also used by
    quiesce.dataplane.mysqlrelay, which starts TLS inside MySQL's handshake."""
    proto: Any = transport.get_protocol()
    if proto is before or not hasattr(proto, "buffer_updated"):
        log.error("service %s: cannot start TLS on this event loop", name)
        transport.abort()
        return
    n = len(buf)
    view = proto.get_buffer(n)
    if len(view) < n:  # smaller buffer than asked: give it the bytes in pieces
        for i in range(0, n, len(view)):
            piece = buf[i : i + len(view)]
            view = proto.get_buffer(len(piece))
            view[: len(piece)] = piece
            proto.buffer_updated(len(piece))
        return
    view[:n] = buf
    proto.buffer_updated(n)


def _trusted(peer: Any, networks: tuple[Any, ...]) -> bool:
    """Is a connection's peer address in one of ``networks`` (an IPv4 address mapped into
    IPv6 counts as the IPv4 one)?"""
    if not isinstance(peer, tuple) or not peer:
        return False
    try:
        addr = ipaddress.ip_address(peer[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    if mapped is not None:
        addr = mapped
    return any(addr in net for net in networks)
