"""The L7 HTTP/1.1 reverse proxy: two asyncio.Protocol classes around httptools parsers.

Theory of operation
-------------------
A :class:`ClientConnection` parses requests with ``httptools.HttpRequestParser`` and serves
them one at a time, in order. A request whose head arrives while another is being served
(pipelining) is queued and reading from the client pauses, so at most one read's worth of
pipelined data is ever held. Each request is balanced afresh (``pool.pick``) and written to an
:class:`Upstream` — an idle keep-alive connection to the chosen server taken from the
connection table's pool, or a new one.

Bodies are streamed, never collected: a request body chunk goes straight to the upstream
transport (re-chunked when the client sent it chunked), a response body chunk straight to the
client. Back-pressure is the transports' own: when the upstream's write buffer fills
(``pause_writing``) the proxy stops reading the client, and when the client's fills it stops
reading the upstream. Bytes only wait in the proxy while an upstream connection is being
opened (and reading pauses past 256 KiB then).

One timer per client connection enforces the client header timeout (408), the keep-alive idle
timeout and the upstream response timeout (504); it is re-armed lazily — it fires, looks at
the state, and re-arms itself for the next deadline — so a keep-alive request costs no timer
operation. The connect timeout is a ``wait_for`` on the (rare) new upstream connection.

Failures map to one answer each and end only the request (or connection) concerned:
malformed request 400, request line too long 414, header block too large 431, slow header
408, upstream refused or reset before a byte was sent: retried once on another eligible
server, else 502; a reused keep-alive upstream closed under us before any response byte, at
once (the keep-alive race, ``may_resend``): the request is resent on a fresh connection when it
may be sent twice and its body is still held (up to 64 KiB), else 502; malformed upstream
response 502; connect or response timeout 504. Once the
response head has been sent to the client, an upstream failure can only abort the client (a
chunked response's head is held until its first chunk parses, at most one sweep, so a broken
chunk right behind it is still a 502).

Heads are capped while they arrive, both ways (``_feed_capped``): httptools buffers an
unfinished header line itself, so a head may take at most ``max_request_line +
max_header_size`` bytes of a client (else 431) and ``max_header_size`` of a server (else 502).
Ambiguous request framing (a last coding other than chunked, Transfer-Encoding with
Content-Length, two Content-Lengths, two Hosts) is refused with 400 before anything is sent;
``Connection`` never removes Content-Length, Transfer-Encoding or Host (either way), and
nothing a server sends past its response (a body on HEAD, 204 or 304) is passed on: the
connection is closed instead of pooled.
"""

from __future__ import annotations

import asyncio
import fcntl
import sys
import termios
from collections import deque
from typing import TYPE_CHECKING

import httptools

from quiesce import _accel
from quiesce.dataplane.context import ServiceContext
from quiesce.dataplane.pages import Page, error_response, simple_response
from quiesce.rules.decision import Redirect, RequestView, Respond, ServePage, ToPool

if TYPE_CHECKING:
    from quiesce.dataplane.table import ConnectionTable
    from quiesce.state.registry import PoolRuntime, ServerRuntime

# Headers that describe one connection only (RFC 9110 §7.6.1), never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Added by the proxy; a client's own values are replaced (X-Forwarded-For is appended to).
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})
REPLAY_LIMIT = 64 * 1024
# The keep-alive race: a reused idle upstream connection the server closed as we wrote to it
# fails at once, before any response byte. A request is resent then only when it may be sent
# twice (RFC 9110 §9.2.2: an idempotent method, or an Idempotency-Key) and the failure came
# within RACE_WINDOW seconds of the request being written: later, the server may have worked
# on it and died (a crash, not the race), and the client gets a 502.
RACE_WINDOW = 0.5
# A request that must not be sent twice goes on an idle upstream connection only if it has been
# idle for less than this (servers close idle connections after a few seconds: 2 s gunicorn,
# 5 s Apache and Node, 75 s nginx), else on a new one: the race cannot be resent, so it is
# avoided instead.
SAFE_REUSE_IDLE = 1.0
PENDING_LIMIT = 256 * 1024
LINGER = 2.0

# reasons to pause reading from the client
P_PIPELINE = 1
P_UPSTREAM = 2
P_PENDING = 4
P_UPGRADE = 8

_REASONS: dict[int, bytes] = {}

# The C accelerator's common-case head functions (quiesce._httpfast), or None: every message
# they decline (return None for) takes the httptools path below, byte for byte as before.
_fast_request = _accel.httpfast.request if _accel.httpfast is not None else None
_fast_response = _accel.httpfast.response if _accel.httpfast is not None else None

# Header names the proxy acts on, by lower-case name (one dict lookup per header).
_H_DROP, _H_HOST, _H_LENGTH, _H_COOKIE, _H_XFF, _H_TE, _H_CONNECTION, _H_UPGRADE, _H_EXPECT = range(
    9
)
_REQUEST_SPECIAL: dict[bytes, int] = {
    **{name: _H_DROP for name in HOP_BY_HOP | _FORWARDED},
    b"host": _H_HOST,
    b"content-length": _H_LENGTH,
    b"cookie": _H_COOKIE,
    b"x-forwarded-for": _H_XFF,
    b"transfer-encoding": _H_TE,
    b"connection": _H_CONNECTION,
    b"upgrade": _H_UPGRADE,
    b"expect": _H_EXPECT,
}
_RESPONSE_SPECIAL: dict[bytes, int] = {
    **{name: _H_DROP for name in HOP_BY_HOP},
    b"content-length": _H_LENGTH,
    b"transfer-encoding": _H_TE,
    b"connection": _H_CONNECTION,
    b"upgrade": _H_UPGRADE,
}


_PLAIN_CONNECTION = frozenset(
    {b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade"}
)


# Connection options that are not removed with the header they name: the framing and routing
# headers. The proxy frames every message it forwards itself (RFC 9112 §6) and must send Host
# (RFC 9110 §7.2), so a ``Connection: Content-Length`` cannot take them away; dropping one
# while forwarding the body would let the next hop read the body as another message
# (request smuggling). As HAProxy and nginx: the header is kept, the option ignored.
_NEVER_HOP_BY_HOP = frozenset(
    {b"", b"keep-alive", b"close", b"upgrade", b"content-length", b"transfer-encoding", b"host"}
)


def _connection_tokens(value: bytes, extra: list[bytes] | None) -> list[bytes] | None:
    """Header names listed in Connection (beyond keep-alive/close/upgrade): hop-by-hop too,
    except the framing and routing headers (``_NEVER_HOP_BY_HOP``)."""
    if value in _PLAIN_CONNECTION:
        return extra
    for tok in value.lower().split(b","):
        tok = tok.strip(b" \t")
        if tok not in _NEVER_HOP_BY_HOP:
            extra = extra or []
            extra.append(tok)
    return extra


_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def _status_line(status: int, reason: bytes) -> bytes:
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        line = b"HTTP/1.1 %d %s" % (status, reason or _reason(status))
        if len(_STATUS_LINES) < 512:  # reasons come from servers: keep the cache bounded
            _STATUS_LINES[(status, reason)] = line
    return line


def _reason(status: int) -> bytes:
    r = _REASONS.get(status)
    if r is None:
        from quiesce.dataplane.pages import reason_phrase

        r = _REASONS[status] = reason_phrase(status)
    return r


class _ClientError(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _HeadTooLarge(httptools.HttpParserError):
    pass


class Request:
    __slots__ = (
        "body_since",
        "chunked",
        "complete",
        "cookie",
        "expect",
        "head",
        "head_only",
        "headers",
        "host",
        "http10",
        "keep_alive",
        "method",
        "path",
        "pending",
        "pending_size",
        "raw",
        "replay",
        "retried",
        "upgrade",
        "url",
    )

    def __init__(self) -> None:
        self.body_since = 0.0  # loop time its head was read (requests with a body)
        self.complete = False
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.replay: list[bytes] | None = None
        self.retried = False
        self.cookie: bytes | None = None
        self.host: bytes | None = None
        self.upgrade = False
        self.expect = False
        self.chunked = False
        self.head = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.url = b""
        self.http10 = False
        self.keep_alive = True
        self.head_only = False
        self.raw: bytes | None = None  # the head as received, when the C fast path read it

    def view(self, source: str) -> RequestView:
        headers: dict[str, str] = {}
        fields = self.headers if self.raw is None else _raw_headers(self.raw)
        for raw_name, raw_value in fields:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        cookies: dict[str, str] = {}
        cookie_header = headers.get("cookie")
        if cookie_header:
            for part in cookie_header.split(";"):
                k, sep, v = part.strip().partition("=")
                if sep:
                    cookies.setdefault(k, v)
        url = self.url.decode("latin-1")
        path = url.split("?", 1)[0]
        if path.startswith(("http://", "https://")):
            rest = path.split("://", 1)[1]
            path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        host = headers.get("host")
        if self.raw is None and self.host is not None:
            # the Host the request is forwarded with (an absolute-form target's authority)
            host = headers["host"] = self.host.decode("latin-1")
        return RequestView(
            method=self.method.decode("latin-1"),
            path=path,
            host=host,  # raw: the router normalises case, port and IPv6 brackets
            headers=headers,
            cookies=cookies,
            source=source,
        )


_AUTHORITY_CHARS = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:[]"
)


def _authority(url: bytes) -> bytes | None:
    """The authority of an absolute-form ``http``/``https`` request target; None when there is
    none, it carries userinfo (RFC 9110 §4.2.4: treated as an error) or a byte no host has."""
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    end = len(rest)
    for delim in b"/?#":
        i = rest.find(bytes((delim,)))
        if 0 <= i < end:
            end = i
    authority = rest[:end]
    if not authority or not _AUTHORITY_CHARS.issuperset(authority):
        return None
    return authority


def _raw_headers(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of a head the C fast path accepted (so well-formed: CRLF lines,
    ``name:`` and a value without trailing whitespace)."""
    fields = []
    for line in raw.split(b"\r\n")[1:-2]:
        name, _, value = line.partition(b":")
        fields.append((name, value.lstrip(b" \t")))
    return fields


def _feed_capped(
    conn: Upstream | ClientConnection,
    parser: httptools.HttpResponseParser | httptools.HttpRequestParser,
    data: bytes,
) -> None:
    """Feed ``data`` that goes past the head-size limit (``conn.head_left`` bytes): the head
    must end within it, else HttpParserError. httptools buffers an unfinished header line
    itself, without bound (and quadratically): only this limit keeps it small. Rare path:
    only a read that crosses the limit comes here."""
    base = 0
    while True:
        left = conn.head_left
        rest = len(data) - base
        if left < 0 or rest <= left:
            if left >= 0:
                conn.head_left = left - rest
            try:
                parser.feed_data(data[base:] if base else data)
            except httptools.HttpParserUpgrade as exc:
                raise httptools.HttpParserUpgrade(base + exc.args[0]) from None
            return
        heads = conn.heads
        try:
            parser.feed_data(data[base : base + left])
        except httptools.HttpParserUpgrade as exc:
            raise httptools.HttpParserUpgrade(base + exc.args[0]) from None
        if conn.heads == heads:
            raise _HeadTooLarge("message head larger than the limit")
        if conn.closed:
            return
        base += left


def resendable(req: Request) -> bool:
    """May ``req`` be sent to a server a second time (RFC 9110 §9.2.2)? An idempotent method,
    or a request that carries an ``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key)."""
    if req.method in IDEMPOTENT:
        return True
    fields = req.headers if req.raw is None else _raw_headers(req.raw)
    return any(name.lower() == b"idempotency-key" for name, _ in fields)


def may_resend(req: Request, reused: bool, got_byte: bool, sent_for: float) -> bool:
    """The keep-alive race, told from a server that took the request and died: resend only a
    request written to a *reused* connection that failed before any response byte, within
    ``RACE_WINDOW`` of being written (``sent_for`` seconds ago; negative: its body is still
    being sent), whose whole body is still held, and that may be sent twice."""
    return (
        reused
        and not got_byte
        and req.replay is not None
        and sent_for <= RACE_WINDOW
        and resendable(req)
    )


def _cookie_value(header: bytes, name: bytes) -> bytes | None:
    for part in header.split(b";"):
        k, sep, v = part.strip().partition(b"=")
        if sep and k == name:
            return v.strip()
    return None


class Upstream(asyncio.Protocol):
    """One connection to a server; carries one request at a time for a ClientConnection."""

    __slots__ = (
        "chunked",
        "client",
        "close_delimited",
        "closed",
        "content_length",
        "discard",
        "feeding",
        "got_byte",
        "head_left",
        "head_limit",
        "head_only",
        "headers",
        "heads",
        "idle_since",
        "interim",
        "junk",
        "keep_alive",
        "parser",
        "pool_limit",
        "reason",
        "reused",
        "server",
        "switching",
        "table",
        "transport",
        "tunnel",
    )

    def __init__(self, server: ServerRuntime, table: ConnectionTable) -> None:
        self.server = server
        self.table = table
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: ClientConnection | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.tunnel = False
        self.head_limit = 65536  # the service's max_header_size, set by _attach
        self.heads = 0  # response heads parsed (interim ones included)
        self.idle_since = 0.0  # put in the idle pool at (loop time)
        # A response completed while its read is being parsed is pooled only once the whole
        # read was parsed (``pool_limit`` >= 0 until then), and not at all when bytes came
        # after it (``junk``): a body on a HEAD, 204 or 304 response, or anything else a
        # server sends past its answer, must never become the next request's response.
        self.feeding = False
        self.pool_limit = -1
        self.junk = False
        self._reset(False)

    def _reset(self, head_only: bool) -> None:
        self.head_only = head_only
        self.head_left = self.head_limit  # head bytes still allowed; -1: head complete
        self.got_byte = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.interim = False
        self.switching = False
        self.keep_alive = False
        self.discard = False
        self.close_delimited = False
        self.chunked = False
        self.content_length: bytes | None = None

    # asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        c = self.client
        if c is None:
            self.close()  # an idle connection has nothing to say: it is closing
            return
        if self.tunnel:
            c.transport.write(data)
            return
        self.got_byte = True
        fast = _fast_response
        if fast is not None and self.head_left == self.head_limit and not self.head_only:
            req = c.current
            if req is not None and not c.resp_started:
                close = c._closing_after(req)
                extra = b"" if c.set_cookie is None else c.set_cookie + b"\r\n"
                if close:
                    extra += b"Connection: close\r\n"
                elif req.http10:
                    extra += b"Connection: keep-alive\r\n"
                r = fast(data, self.head_limit, extra)
                if r is not None and r[0] not in c.ctx.status_codes:
                    self.heads += 1
                    c.fast_response(self, r[0], r[1], close, r[2])
                    return
        self.feeding = True
        try:
            left = self.head_left
            if left < 0:
                self.parser.feed_data(data)
            elif len(data) <= left:
                self.head_left = left - len(data)
                self.parser.feed_data(data)
            else:
                _feed_capped(self, self.parser, data)
        except httptools.HttpParserUpgrade as exc:
            if self.client is c:
                c.upstream_upgraded(self, data[exc.args[0] :])
        except httptools.HttpParserError:
            if self.client is c:
                c.upstream_failed(self, 502)
            else:
                self.junk = True  # garbage after the response
        self.feeding = False
        if self.pool_limit >= 0 or self.junk:
            self._settle(c)
        if c.out and not c.holding:
            c.flush()

    def _settle(self, c: ClientConnection) -> None:
        """After a read that completed the response: pool the connection, unless the server
        sent more than its response (then it is closed: whatever it is, it answers nothing)."""
        limit = self.pool_limit
        self.pool_limit = -1
        if self.client is not None:
            return
        if self.junk or limit < 0 or not self.table.put_upstream(self.server, self, limit):
            self.close()
        else:
            self.idle_since = c.loop.time()

    def eof_received(self) -> bool | None:
        c = self.client
        if c is not None:
            if self.tunnel:
                if c.transport.can_write_eof():
                    c.transport.write_eof()
                    c.half_closed |= 2
                    return c.half_closed != 3
                return False
            if self.close_delimited and not self.interim:
                c.upstream_complete(self)
            if c.out and not c.holding:
                c.flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        c = self.client
        if c is not None:
            self.client = None
            c.upstream_lost(self)
        else:
            self.table.drop_upstream(self.server, self)

    def pause_writing(self) -> None:
        c = self.client
        if c is not None:
            c.pause(P_UPSTREAM)

    def resume_writing(self) -> None:
        c = self.client
        if c is not None:
            c.resume(P_UPSTREAM)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # httptools callbacks -----------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_left = -1
        self.heads += 1
        c = self.client
        if c is not None:
            c.response_head(self)
            if self.head_only and not self.interim and self.client is c:
                # llhttp cannot be told a HEAD response has no body: finish it here and give
                # the connection a fresh parser for its next response.
                self.parser = httptools.HttpResponseParser(self)
                c.upstream_complete(self)

    def on_message_begin(self) -> None:
        if self.client is None:
            self.junk = True  # a second message behind the response

    def on_body(self, body: bytes) -> None:
        c = self.client
        if c is None:
            self.junk = True  # a body after the response ended (HEAD: after its head)
        elif not self.discard:
            c.response_body(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self._reset(self.head_only)
            return
        c = self.client
        if c is not None and not self.switching:
            c.upstream_complete(self)


_NO_HEADERS: list[tuple[bytes, bytes]] = []  # never appended to: on_message_begin makes a list


class ClientConnection(asyncio.Protocol):
    """One client connection of an L7 service."""

    layer = 7
    __slots__ = (
        "begin_at",
        "boundary_close",
        "client_blocked",
        "client_eof",
        "closed",
        "connecting",
        "ctx",
        "current",
        "deferred_error",
        "error_status",
        "got_any",
        "half_closed",
        "head_left",
        "head_limit",
        "header_size",
        "headers",
        "heads",
        "holding",
        "idle_since",
        "idle_to",
        "last_rx",
        "lingering",
        "loop",
        "out",
        "parser",
        "parsing",
        "paused",
        "peer",
        "peer_b",
        "pool",
        "queue",
        "resp_chunked",
        "resp_close",
        "resp_done",
        "resp_sent",
        "resp_started",
        "resp_status",
        "sent_at",
        "server",
        "set_cookie",
        "settling",
        "timer",
        "transport",
        "tunnel",
        "up",
        "up_paused",
        "upgrade_buf",
        "url",
    )

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer = ""
        self.peer_b = b""
        # made on the first request the C fast path declines (most never need one)
        self.parser: httptools.HttpRequestParser | None = (
            None if _fast_request is not None else httptools.HttpRequestParser(self)
        )
        self.parsing: Request | None = None
        self.current: Request | None = None
        self.queue: deque[Request] | None = None  # pipelined requests, made when needed
        self.server: ServerRuntime | None = None
        self.pool: PoolRuntime | None = None
        self.idle_to: ServerRuntime | None = None
        self.up: Upstream | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.paused = 0
        self.up_paused = False
        self.client_blocked = False  # our writes to the client are above its high-water mark
        self.client_eof = False  # the client shut its side: answer what it sent, then close
        self.closed = False
        self.lingering = False
        self.tunnel = False
        self.upgrade_buf: list[bytes] | None = None
        self.half_closed = 0  # tunnel: 1 client EOF seen, 2 upstream EOF seen
        self.boundary_close = False
        self.deferred_error = 0
        self.error_status = 0
        # response bytes collected while one upstream read is parsed, written at once
        self.out: list[bytes] = []
        # response state
        self.resp_started = False
        self.resp_sent = False  # a byte of the current response was written to the client
        self.holding = False  # a chunked response head waits for its first body bytes
        self.resp_done = False
        self.resp_status = 0
        self.resp_chunked = False
        self.resp_close = False
        self.set_cookie: bytes | None = None
        self.settling = False  # the last response's upstream is pooled after its read
        # parse state
        # bytes a request head may still take (request line + header block); -1: in a body
        self.head_limit = ctx.max_request_line + ctx.max_header_size
        self.head_left = self.head_limit
        self.heads = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = _NO_HEADERS
        self.header_size = 0
        # timer state
        self.timer: asyncio.TimerHandle | None = None  # lingering close only
        self.begin_at = -1.0  # a request head is being received since
        self.idle_since = 0.0
        self.sent_at = -1.0  # waiting for a response head since
        self.got_any = False
        self.last_rx = 0.0

    # asyncio.Protocol ------------------------------------------------------------------

    def take_transport(self, transport: asyncio.BaseTransport) -> None:
        """The transport, and the client's address from it (also for a revived parked
        connection, see quiesce.dataplane.park)."""
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = sys.intern(peer[0]) if peer else ""  # one string per client address
        self.peer_b = self.peer.encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.take_transport(transport)
        ctx = self.ctx
        ctx.conns.add(self)
        ctx.stats.connections += 1
        ctx.stats.connections_total += 1
        ctx.opened()
        now = self.loop.time()
        self.idle_since = now
        # A new connection must send its first request head within the header timeout.
        self.begin_at = now
        ctx.watch()
        if ctx.closing:
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            up = self.up
            if up is not None:
                up.transport.write(data)
            return
        if self.lingering or self.closed:
            return
        if self.upgrade_buf is not None:
            self.upgrade_buf.append(data)
            self.pause(P_UPGRADE)
            return
        self.got_any = True
        self.last_rx = self.loop.time()
        fast = _fast_request
        if fast is not None and self.current is None and self.head_left == self.head_limit:
            ctx = self.ctx
            r = fast(data, self.peer_b, ctx.max_request_line, ctx.max_header_size)
            if r is not None:
                self._fast_start(r, data)
                return
        parser = self.parser
        if parser is None:
            parser = self.parser = httptools.HttpRequestParser(self)
        try:
            left = self.head_left
            if left < 0:
                parser.feed_data(data)
            elif len(data) <= left:
                self.head_left = left - len(data)
                parser.feed_data(data)
            else:
                _feed_capped(self, parser, data)
        except httptools.HttpParserUpgrade as exc:
            if not self.closed:
                rest = data[exc.args[0] :]
                self.upgrade_buf = [rest] if rest else []
                self.pause(P_UPGRADE)
                if self.tunnel:  # the 101 came back already
                    self._flush_upgrade_buf()
        except (httptools.HttpParserError, _ClientError) as exc:
            if self.closed:
                return
            status = self.error_status or (431 if isinstance(exc, _HeadTooLarge) else 400)
            if isinstance(exc, _ClientError):
                status = exc.status
            self._client_error(status)

    def eof_received(self) -> bool | None:
        if self.tunnel:
            up = self.up
            if up is not None and up.transport.can_write_eof():
                up.transport.write_eof()
                self.half_closed |= 1
                return self.half_closed != 3
            return False
        if self.current is not None and not self.lingering:
            # The client half-closed after its requests (``curl -T``, some scripts): answer
            # the complete ones, then close. A request cut short can never complete.
            partial = self.parsing
            if partial is not None and partial is not self.current:
                if self.queue and partial in self.queue:
                    self.queue.remove(partial)
                self.parsing = None
            elif partial is not None:
                self._abandon()
                return False
            self.client_eof = True
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ctx = self.ctx
        ctx.conns.discard(self)
        ctx.stats.connections -= 1
        ctx.lost()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        up = self.up
        if up is not None:
            self.up = None
            up.client = None
            if self.tunnel:
                up.close()
            else:
                up.abort()
        table = ctx.table
        server = self.server
        if server is not None:
            self.server = None
            if self.tunnel:
                table.closed(server, self)
            else:
                table.request_finished(server, self, 0, False)
        if self.idle_to is not None:
            table.forget_idle(self.idle_to, self)
            self.idle_to = None
        if ctx.closing and not ctx.conns and ctx.drained is not None:
            ctx.drained.set()

    def pause_writing(self) -> None:
        self.client_blocked = True
        up = self.up
        if up is not None and not self.up_paused:
            self.up_paused = True
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client_blocked = False
        up = self.up
        if up is not None and self.up_paused:
            self.up_paused = False
            up.transport.resume_reading()

    def flush(self) -> None:
        out = self.out
        self.out = []
        if not self.closed:
            self.resp_sent = self.resp_started  # interim (1xx) answers do not count
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    # flow control ------------------------------------------------------------------------

    def pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    # closing (the connection table and service shutdown call these) ------------------------

    def cut(self) -> None:
        """Abort now: the client connection and its upstream connection."""
        if self.closed:
            return
        self.closed = True
        up = self.up
        if up is not None:
            up.abort()
        self.transport.abort()

    def close_at_boundary(self, force: bool = False) -> None:
        """Close after the in-flight response; an idle connection closes now. A connection
        in the middle of receiving a new request head is left to finish it (that request is
        balanced to whichever server is eligible now), and so is an idle one whose next
        request is already in its socket, unread (the keep-alive race: closing would reset
        a request that reached us): it is served with ``Connection: close``. ``force``
        (``CloseMode.ALL``): an idle connection closes now, unread bytes or not."""
        if self.closed:
            return
        idle = self.current is None and not self.queue and self.begin_at < 0
        if idle and (force or not self._unread()):
            self._close()
            return
        self.boundary_close = True

    def _unread(self) -> bool:
        """Bytes from the client wait in the socket, not yet read (FIONREAD)."""
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            n = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except (OSError, ValueError):
            return False
        return int.from_bytes(n, sys.byteorder) > 0

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    # timeouts (called by the service's sweep, see ServiceContext.sweep) --------------------

    def check(self, now: float) -> None:
        """Enforce the header, idle and response timeouts; park a keep-alive connection idle
        for ``ctx.park_after`` (see quiesce.dataplane.park), or, when it cannot be parked,
        drop its parser (made again on the next byte: an idle connection is worth less
        memory without it)."""
        if self.closed or self.tunnel or self.lingering:
            return
        if self.holding:
            # A chunked response head held for its first chunk: not longer than a sweep.
            self.holding = False
            if self.out:
                self.flush()
        ctx = self.ctx
        cur = self.current
        if cur is not None:
            # The client stopped sending its request body, or sends it so slowly that the whole
            # of it takes longer than client_body_timeout. Neither fires while reading is
            # paused (the server is not keeping up: not the client's fault).
            if (
                not cur.complete
                and self.parsing is cur
                and not self.paused
                and (
                    now - self.last_rx >= ctx.idle_timeout
                    or now - cur.body_since >= ctx.body_timeout
                )
            ):
                self._client_error(408)
                return
            pool = self.pool
            up = self.up
            if (
                self.sent_at >= 0
                and not self.resp_started
                and pool is not None
                and up is not None
                and now - self.sent_at >= pool.config.response_timeout
            ):
                self.upstream_failed(up, 504)
            return
        if self.begin_at >= 0:
            if now - self.begin_at >= ctx.header_timeout:
                if self.got_any:
                    self._client_error(408)
                else:
                    self._close()
        elif now - self.idle_since >= ctx.idle_timeout:
            self._close()
        elif not self.queue and now - self.idle_since >= ctx.park_after:
            from quiesce.dataplane.park import park

            if not park(self):  # parked: its socket and a small record are all that is left
                self.parser = None

    # httptools request callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.closed:
            raise _ClientError(0)
        self.url = b""
        self.headers = []
        self.header_size = 0
        if self.current is None:
            self.begin_at = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.ctx.max_request_line:
            self.error_status = 414
            raise _ClientError(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_size += len(name) + len(value) + 4
        if self.header_size > self.ctx.max_header_size:
            self.error_status = 431
            raise _ClientError(431)
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_left = -1
        self.heads += 1
        if self.closed:
            raise _ClientError(0)
        self.begin_at = -1.0
        req = Request()
        parser = self.parser
        assert parser is not None
        method = parser.get_method()
        req.method = method
        req.url = self.url
        req.http10 = parser.get_http_version() == "1.0"
        req.keep_alive = parser.should_keep_alive()
        req.head_only = method == b"HEAD"
        req.headers = headers = self.headers
        self.headers = _NO_HEADERS
        self.url = b""
        if method == b"CONNECT":
            self.error_status = 405
            raise _ClientError(405)
        upgrade = parser.should_upgrade()
        req.upgrade = upgrade
        out = [method + b" " + req.url + b" HTTP/1.1"]
        append = out.append
        xff: bytes | None = None
        conn_extra: list[bytes] | None = None
        upgrade_value = b""
        host: bytes | None = None
        length: bytes | None = None
        te: bytes | None = None
        special = _REQUEST_SPECIAL
        for name, value in headers:
            code = special.get(name.lower())
            if code is None:
                append(name + b": " + value)
            elif code == _H_HOST:
                if host is not None:
                    raise _ClientError(400)  # two Hosts: which one routes? (RFC 9112 §3.2)
                host = value
                append(name + b": " + value)
            elif code == _H_LENGTH:
                if length is not None and length.strip() != value.strip():
                    raise _ClientError(400)
                length = value
                append(name + b": " + value)
            elif code == _H_COOKIE:
                req.cookie = value if req.cookie is None else req.cookie + b"; " + value
                append(name + b": " + value)
            elif code == _H_XFF:
                xff = value if xff is None else xff + b", " + value
            elif code == _H_TE:
                te = value if te is None else te + b", " + value
            elif code == _H_CONNECTION:
                conn_extra = _connection_tokens(value, conn_extra)
            elif code == _H_UPGRADE:
                upgrade_value = value
            elif code == _H_EXPECT:
                if value.lower() == b"100-continue":
                    # Answered by the proxy once a server is connected (not forwarded):
                    # back ends that ignore Expect would otherwise leave the client waiting.
                    req.expect = True
                else:
                    append(name + b": " + value)
            # else: hop-by-hop or set by us (_H_DROP)
        if conn_extra:
            drop = set(conn_extra)
            out = [out[0]] + [h for h in out[1:] if h.split(b":", 1)[0].lower() not in drop]
            append = out.append
        if req.url[:1] != b"/" and req.url != b"*":
            # absolute-form (RFC 9112 §3.2.2): the target's authority is the Host, whatever
            # Host said, for the rules and the server alike (as HAProxy does).
            authority = _authority(req.url)
            if authority is None:
                raise _ClientError(400)
            out = [out[0]] + [h for h in out[1:] if h.split(b":", 1)[0].lower() != b"host"]
            append = out.append
            append(b"Host: " + authority)
            host = authority
        req.host = host
        peer = self.peer_b
        append(b"X-Forwarded-For: " + (xff + b", " + peer if xff else peer))
        append(b"X-Forwarded-Proto: http")
        if host is not None:
            append(b"X-Forwarded-Host: " + host)
        if te is not None:
            # Ambiguous framing is refused, as HAProxy does (RFC 9112 §6.1, §6.3): the last
            # coding must be chunked, once, and Content-Length must not come along.
            if te == b"chunked" or te == b"Chunked":
                append(b"Transfer-Encoding: chunked")
            else:
                codings = [c.strip().lower() for c in te.split(b",")]
                if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
                    raise _ClientError(400)
                append(b"Transfer-Encoding: " + b", ".join(codings))
            if length is not None:
                raise _ClientError(400)
            req.chunked = True
        if upgrade:
            append(b"Connection: upgrade")
            append(b"Upgrade: " + upgrade_value)
        out.append(b"\r\n")
        req.head = b"\r\n".join(out)
        if not req.chunked and (length is None or length.strip() == b"0"):
            req.complete = True  # no body: complete already, for every decision below
        else:
            req.body_since = self.loop.time()
        self.parsing = req
        if self.current is None:
            self._start(req)
        else:
            if self.queue is None:
                self.queue = deque()
            self.queue.append(req)
            self.pause(P_PIPELINE)

    def _fast_start(
        self,
        r: tuple[bytes, bytes, bool, bool, bytes | None, bytes | None, bytes],
        data: bytes,
    ) -> None:
        """A whole bodyless request head read by the C fast path (what on_message_begin,
        on_url, on_header and on_headers_complete do for it, at once)."""
        self.heads += 1
        self.begin_at = -1.0
        req = Request()
        req.method, req.url, req.http10, req.keep_alive, req.host, req.cookie, req.head = r
        req.head_only = req.method == b"HEAD"
        req.complete = True
        req.raw = data
        self._start(req)

    def on_body(self, body: bytes) -> None:
        req = self.parsing
        if req is None or not body:
            return
        if req is self.current and self.up is not None:
            self._send_body(req, body)
        elif req is self.current and (self.resp_done or self.server is None):
            return  # answered without a server (page, rule, error): the body is discarded
        else:
            req.pending.append(body)
            req.pending_size += len(body)
            if req.pending_size > PENDING_LIMIT:
                self.pause(P_PENDING)

    def on_message_complete(self) -> None:
        self.head_left = self.head_limit  # what follows is the next request's head
        req = self.parsing
        self.parsing = None
        if req is None or req.complete:
            return
        req.complete = True
        if req is not self.current:
            return
        if self.up is not None:
            if req.chunked:
                self.up.transport.write(b"0\r\n\r\n")
            self._request_sent()
        elif self.resp_done:
            self._after_response()

    # serving a request -------------------------------------------------------------------------

    def _start(self, req: Request) -> None:
        ctx = self.ctx
        self.current = req
        self.resp_started = False
        self.resp_sent = False
        self.holding = False
        self.resp_done = False
        self.resp_status = 0
        self.resp_chunked = False
        self.resp_close = False
        self.set_cookie = None
        self.sent_at = -1.0
        ctx.stats.requests += 1
        pool = ctx.pool
        if ctx.router is not None:
            decision = ctx.router.route(req.view(self.peer))
            if isinstance(decision, ToPool):
                target = ctx.registry.pools.get(decision.pool)
                if target is None:
                    self._serve_page(ctx.page)
                    return
                pool = target
            elif isinstance(decision, ServePage):
                page = ctx.page if decision.page is None else ctx.pages.get(decision.page)
                self._serve_page(page or ctx.page)
                return
            elif isinstance(decision, Respond):
                self._respond(decision.status, decision.body, decision.headers)
                return
            elif isinstance(decision, Redirect):
                self._respond(decision.status, b"", (("Location", decision.location),))
                return
        server = self._pick(pool, req, ())
        if server is None and ctx.fallback is not None and pool is ctx.pool:
            pool = ctx.fallback
            server = self._pick(pool, req, ())
        if server is None:
            self._serve_page(ctx.page)
            return
        # _bind and the first step of _upstream, inline (every request passes here)
        self.pool = pool
        self.server = server
        table = ctx.table
        table.request_started(server, self, self.idle_to)
        self.idle_to = None
        up = table.take_upstream(server)
        if up is not None and not up.closed and req.method in IDEMPOTENT:
            self._attach(up, reused=True)
        else:
            self._upstream(up)

    def _pick(
        self, pool: PoolRuntime, req: Request, exclude: tuple[ServerRuntime, ...]
    ) -> ServerRuntime | None:
        persistence = pool.config.persistence
        if persistence is None:
            now = self.ctx.registry.clock.time() if pool.config.slow_start > 0 else 0.0
            return pool.pick(self.peer, now, exclude)
        now = self.ctx.registry.clock.time()
        sticky: str | None = None
        if persistence.type == "cookie":
            token = None
            if req.cookie is not None:
                token = _cookie_value(req.cookie, persistence.cookie_name.encode())
            if token is not None:
                sticky = pool.from_sticky_token(token.decode("latin-1"))
            server = pool.pick(self.peer, now, exclude, sticky)
            if server is not None and server.name != sticky:
                self.set_cookie = (
                    b"Set-Cookie: "
                    + persistence.cookie_name.encode()
                    + b"="
                    + pool.sticky_token(server).encode()
                    + b"; Path=/; HttpOnly"
                )
            return server
        table = self.ctx.table.sticky_table(pool.name)
        mono = self.loop.time()
        sticky = table.get(self.peer, mono)
        server = pool.pick(self.peer, now, exclude, sticky)
        if server is not None:
            table.put(self.peer, server.name, mono, persistence.timeout)
        return server

    def _bind(self, pool: PoolRuntime, server: ServerRuntime) -> None:
        self.pool = pool
        self.server = server
        self.ctx.table.request_started(server, self, self.idle_to)
        self.idle_to = None

    def _upstream(self, taken: Upstream | None = None) -> None:
        """An idle connection to the server (``taken`` from its pool already, or the next
        one), else a new one. A request that must not be sent twice (``resendable``) takes an
        idle connection only if it has been idle for less than ``SAFE_REUSE_IDLE``."""
        server = self.server
        req = self.current
        assert server is not None and req is not None
        table = self.ctx.table
        while True:
            up = taken if taken is not None else table.take_upstream(server)
            taken = None
            if up is None:
                break
            if up.closed:
                continue
            if (
                req.method in IDEMPOTENT
                or self.loop.time() - up.idle_since < SAFE_REUSE_IDLE
                or resendable(req)
            ):
                self._attach(up, reused=True)
                return
            # Older ones (the pool is LIFO) have been idle longer still: keep them for
            # requests that may be resent, and open a new connection for this one.
            pool = self.pool
            if pool is None or not table.put_upstream(server, up, pool.config.max_idle_per_server):
                up.close()
            break
        self.connecting = self.loop.create_task(self._open(server))

    async def _open(self, server: ServerRuntime) -> None:
        pool = self.pool
        assert pool is not None
        try:
            _, up = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: Upstream(server, self.ctx.table), server.host, server.port
                ),
                pool.config.connect_timeout,
            )
        except TimeoutError:
            self.connecting = None
            self._fail(504)
            return
        except OSError:
            self.connecting = None
            self._connect_refused(server)
            return
        self.connecting = None
        if self.closed or self.server is not server:
            up.close()
            return
        self._attach(up, reused=False)

    def _connect_refused(self, server: ServerRuntime) -> None:
        """Refused or reset before any byte of the request was sent: once on another
        eligible server, else 502."""
        req = self.current
        pool = self.pool
        if req is None or pool is None or self.closed:
            return
        if not req.retried:
            req.retried = True
            other = self._pick(pool, req, (server,))
            if other is not None:
                self.ctx.table.request_finished(server, self, 0, False)
                self.server = None
                self._bind(pool, other)
                self._upstream()
                return
        self._fail(502)

    def _attach(self, up: Upstream, reused: bool) -> None:
        req = self.current
        assert req is not None
        self.up = up
        up.client = self
        up.reused = reused
        up.head_limit = self.ctx.max_header_size
        up._reset(req.head_only)
        if self.client_blocked:
            # The client is not reading what we already wrote: nothing more from upstream.
            self.up_paused = True
            up.transport.pause_reading()
        if self.paused:
            self.resume(P_UPSTREAM)
        t = up.transport
        # On a reused connection, hold what we send until the first response byte: the
        # server may have closed it meanwhile (the keep-alive race), and then we resend.
        req.replay = list(req.pending) if reused else None
        if req.expect and not req.complete and not req.pending and not req.http10:
            req.expect = False
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if req.host is None:
            # HTTP/1.0 without Host: HTTP/1.1 upstream requires one; name the server.
            t.write(req.head[:-2] + b"Host: " + up.server.address.encode() + b"\r\n\r\n")
        else:
            t.write(req.head)
        if req.pending:
            pending = req.pending
            req.pending = []
            req.pending_size = 0
            if req.chunked:
                for chunk in pending:
                    t.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                t.writelines(pending)
            self.resume(P_PENDING)
        if req.complete:
            if req.chunked:
                t.write(b"0\r\n\r\n")
            self.sent_at = self.loop.time()
        if req.replay and sum(map(len, req.replay)) > REPLAY_LIMIT:
            req.replay = None

    def _send_body(self, req: Request, body: bytes) -> None:
        t = self.up.transport  # type: ignore[union-attr]
        if req.chunked:
            t.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
        else:
            t.write(body)
        replay = req.replay
        if replay is not None:
            replay.append(body)
            if len(replay) > 64 or sum(map(len, replay)) > REPLAY_LIMIT:
                req.replay = None

    def _request_sent(self) -> None:
        self.sent_at = self.loop.time()

    # upstream events -----------------------------------------------------------------------

    def response_head(self, up: Upstream) -> None:
        req = self.current
        if req is None:
            return
        status = up.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            up.interim = True
            if not req.http10:
                lines = [_status_line(status, up.reason)]
                lines.extend(n + b": " + v for n, v in up.headers if n.lower() not in HOP_BY_HOP)
                lines.append(b"\r\n")
                self.out.append(b"\r\n".join(lines))
            return
        if status == 101 and not req.upgrade:
            # Switching protocols nobody asked for: never a tunnel (as HAProxy: 502).
            self.upstream_failed(up, 502)
            return
        ctx = self.ctx
        self.resp_status = status
        up.keep_alive = up.parser.should_keep_alive()
        if status in ctx.status_codes and status != 101:
            # on_response_status: the answer is replaced by the maintenance page; the
            # upstream body is read and dropped so the connection stays reusable.
            up.discard = True
            server = self.server
            if ctx.mark_server and server is not None:
                ctx.registry.mark_passive_maintenance(server, {"status_code": status})
            page = ctx.page
            close = self._closing_after(req)
            self.resp_close = close
            self.resp_started = True
            self.resp_status = page.status
            ctx.stats.maintenance_pages += 1
            self.out.append(page.response(req.head_only, close, req.http10))
            if up.head_only:
                return
            self._note_framing(up, status, req)
            return
        no_body = req.head_only or status in (204, 304) or status == 101
        lines = [_status_line(status, up.reason)]
        append = lines.append
        conn_extra: list[bytes] | None = None
        special = _RESPONSE_SPECIAL
        for name, value in up.headers:
            code = special.get(name.lower())
            if code is None:
                append(name + b": " + value)
            elif code == _H_LENGTH:
                up.content_length = value
                append(name + b": " + value)
            elif code == _H_TE:
                up.chunked = b"chunked" in value.lower()
            elif code == _H_CONNECTION:
                conn_extra = _connection_tokens(value, conn_extra)
            elif code == _H_UPGRADE and status == 101:
                append(b"Upgrade: " + value)
        if conn_extra:
            drop = set(conn_extra)
            lines = [lines[0]] + [h for h in lines[1:] if h.split(b":", 1)[0].lower() not in drop]
            append = lines.append
        if self.set_cookie is not None:
            append(self.set_cookie)
        close = self._closing_after(req)
        if status == 101:
            append(b"Connection: upgrade")
            up.switching = True
        elif not no_body and up.content_length is None:
            if req.http10:
                close = True  # an HTTP/1.0 client reads to the end of the connection
            else:
                self.resp_chunked = True
                append(b"Transfer-Encoding: chunked")
            if not up.chunked:
                up.close_delimited = True
            else:
                # Hold the head until the first chunk parses: a malformed chunked body can
                # still be answered 502 (the sweep releases a head held longer than that).
                self.holding = True
        if status != 101:
            if close:
                append(b"Connection: close")
            elif req.http10:
                append(b"Connection: keep-alive")
        self.resp_close = close
        self.resp_started = True
        append(b"\r\n")
        self.out.append(b"\r\n".join(lines))

    def fast_response(
        self, up: Upstream, status: int, keep_alive: bool, close: bool, out: bytes
    ) -> None:
        """A whole Content-Length response read by the C fast path, head and body, already
        rewritten for the client (what response_head, response_body and upstream_complete
        do for it, at once)."""
        self.resp_status = status
        up.keep_alive = keep_alive
        self.resp_close = close
        self.resp_started = True
        server = self.server
        req = self.current
        if (
            keep_alive
            and not close
            and server is not None
            and req is not None
            and not self.out
            and not self.paused
            and not self.up_paused
            and not self.queue
            and not self.deferred_error
            and not self.closed
            and not up.closed
        ):
            # The usual end of a keep-alive exchange, at once: what upstream_complete, flush,
            # _response_done and _after_response do in this case (``not close`` says the
            # request is complete, the client stays and nothing is closing).
            ctx = self.ctx
            self.up = None
            up.client = None
            pool = self.pool
            limit = pool.config.max_idle_per_server if pool is not None else 0
            now = self.loop.time()
            if ctx.table.put_upstream(server, up, limit):
                up.idle_since = now
            else:
                up.close()
            self.resp_sent = True
            self.transport.write(out)
            self.resp_done = True
            ctx.stats.count_response(status)
            self.current = None
            self.sent_at = -1.0
            self.server = None
            ctx.table.request_finished(server, self, status, True)
            self.idle_to = server
            self.idle_since = now
            return
        self.out.append(out)
        self.upstream_complete(up)

    def _note_framing(self, up: Upstream, status: int, req: Request) -> None:
        for name, value in up.headers:
            ln = name.lower()
            if ln == b"transfer-encoding":
                up.chunked = b"chunked" in value.lower()
            elif ln == b"content-length":
                up.content_length = value
        if (
            up.content_length is None
            and not up.chunked
            and status not in (204, 304)
            and not req.head_only
        ):
            up.close_delimited = True

    def _closing_after(self, req: Request) -> bool:
        return (
            self.boundary_close
            or (self.client_eof and not self.queue)
            or not req.keep_alive
            or self.ctx.closing
            or req.upgrade
            or not req.complete
        )

    def response_body(self, body: bytes) -> None:
        self.holding = False
        if self.resp_chunked:
            self.out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self.out.append(body)

    def upstream_complete(self, up: Upstream) -> None:
        if up is not self.up or self.resp_done:
            return
        req = self.current
        if req is None:
            return
        if self.resp_chunked:
            self.out.append(b"0\r\n\r\n")
        self.holding = False
        self.up = None
        up.client = None
        if self.up_paused:
            self.up_paused = False
            up.transport.resume_reading()
        if self.paused:
            self.resume(P_UPSTREAM)
        server = self.server
        if (
            up.keep_alive
            and not up.close_delimited
            and not up.closed
            and req.complete
            and not self.boundary_close
            and server is not None
            and not self.ctx.closing
        ):
            pool = self.pool
            limit = pool.config.max_idle_per_server if pool is not None else 0
            if up.feeding:
                up.pool_limit = limit  # pooled once the rest of this read is parsed
                self.settling = True
            elif self.ctx.table.put_upstream(server, up, limit):
                up.idle_since = self.loop.time()
            else:
                up.close()
        else:
            up.close()
        if self.out:
            self.flush()
        self._response_done()

    def upstream_upgraded(self, up: Upstream, rest: bytes) -> None:
        """The server answered 101: from now on both sides are a byte tunnel."""
        if up is not self.up:
            return
        server = self.server
        if self.resp_status != 101 or server is None:
            self.upstream_failed(up, 502)
            return
        if rest:
            self.out.append(rest)
        if self.out:
            self.flush()
        self.tunnel = True
        up.tunnel = True
        table = self.ctx.table
        table.request_finished(server, self, 101, False)
        table.hold(server, self)
        self.ctx.stats.count_response(101)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.upgrade_buf is not None:
            self._flush_upgrade_buf()

    def _flush_upgrade_buf(self) -> None:
        buf = self.upgrade_buf or []
        self.upgrade_buf = None
        up = self.up
        if up is not None:
            for chunk in buf:
                up.transport.write(chunk)
        self.resume(P_UPGRADE)

    def upstream_failed(self, up: Upstream, status: int) -> None:
        """Malformed response (502) or response timeout (504)."""
        if up is not self.up:
            return
        self.up = None
        up.client = None
        up.abort()
        if self.resp_started and (self.resp_sent or up.discard):
            # Part of the response is with the client already: it cannot be told otherwise.
            self.ctx.stats.count_error(status)
            self.cut()
            return
        self._unsend()
        self._fail(status)

    def _unsend(self) -> None:
        """Forget a response head that was parsed but never written to the client."""
        self.out = []
        self.holding = False
        self.resp_started = False
        self.resp_chunked = False

    def upstream_lost(self, up: Upstream) -> None:
        if up is not self.up:
            return
        self.up = None
        if self.tunnel:
            self._close()
            return
        req = self.current
        if req is None or self.resp_done:
            return
        if self.resp_started:
            if self.resp_sent or up.discard:
                self.cut()  # the response was cut short: so is the client's
                return
            self._unsend()  # nothing of it reached the client: it gets a 502 below
        elif not self.closed and may_resend(
            req,
            up.reused,
            up.got_byte,
            self.loop.time() - self.sent_at if self.sent_at >= 0 else -1.0,
        ):
            # The keep-alive race: the server closed this idle connection as we reused it.
            # Nothing came back at once, we still hold the whole request and it may be sent
            # twice: resend it on a fresh connection to the same server.
            assert req.replay is not None  # may_resend says so
            req.pending = req.replay + req.pending
            req.pending_size = sum(map(len, req.pending))
            req.replay = None
            self.sent_at = -1.0
            server = self.server
            assert server is not None
            self.connecting = self.loop.create_task(self._open(server))
            return
        self._fail(502)

    # answers of our own ----------------------------------------------------------------------

    def _serve_page(self, page: Page) -> None:
        req = self.current
        assert req is not None
        ctx = self.ctx
        ctx.stats.maintenance_pages += 1
        close = self._closing_after(req)
        self.resp_close = close
        self.resp_started = True
        self.resp_status = page.status
        self.transport.write(page.response(req.head_only, close, req.http10))
        self._response_done()

    def _respond(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...]) -> None:
        req = self.current
        assert req is not None
        close = self._closing_after(req)
        self.resp_close = close
        self.resp_started = True
        self.resp_status = status
        self.transport.write(
            simple_response(
                status, body, headers, head_only=req.head_only, close=close, http10=req.http10
            )
        )
        self._response_done()

    def _fail(self, status: int) -> None:
        """The proxy's own error answer to the current request (502, 504)."""
        req = self.current
        if req is None or self.closed:
            return
        up = self.up
        if up is not None:
            self.up = None
            up.client = None
            up.abort()
        self.ctx.stats.count_error(status)
        self.resp_close = True
        self.resp_started = True
        self.resp_status = status
        self.transport.write(error_response(status, close=True, head_only=req.head_only))
        self._response_done()

    def _client_error(self, status: int) -> None:
        """A request we cannot read (400, 408, 414, 431, 405): answer and close."""
        cur = self.current
        if cur is not None and not self.resp_done:
            if cur.complete:
                # An earlier request is still being served: answer it first, then this.
                self.deferred_error = status
                self.pause(P_PIPELINE)
                return
            # The body of the request being served is broken (or stalled): it can never
            # complete, so neither can its exchange with the server.
            self._abandon()
            if self.resp_started:
                self.cut()
                return
        self.ctx.stats.count_error(status)
        self.ctx.stats.count_response(status)
        self.transport.write(error_response(status))
        self._linger()

    def _abandon(self) -> None:
        """Drop the current request: its upstream connection and its place on the server."""
        up = self.up
        if up is not None:
            self.up = None
            up.client = None
            up.abort()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        server = self.server
        if server is not None:
            self.server = None
            self.ctx.table.request_finished(server, self, 0, False)
        self.current = None

    def _linger(self) -> None:
        """Close after our answer without resetting it away: stop writing, read and drop
        what the client still sends for a moment, then close."""
        if self.closed:
            return
        self.lingering = True
        self.paused = 0
        try:
            self.transport.resume_reading()
        except Exception:
            pass
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(LINGER, self._close)

    # finishing a request ----------------------------------------------------------------------

    def _response_done(self) -> None:
        self.resp_done = True
        req = self.current
        if req is None:
            return
        if req.complete or self.resp_close:
            self._after_response()

    def _after_response(self) -> None:
        req = self.current
        if req is None:
            return
        ctx = self.ctx
        status = self.resp_status
        ctx.stats.count_response(status)
        keep = (
            not self.resp_close
            and req.complete
            and not self.closed
            and not (self.client_eof and not self.queue)
        )
        server = self.server
        self.current = None
        self.sent_at = -1.0
        if server is not None:
            self.server = None
            ctx.table.request_finished(server, self, status, keep)
            if keep:
                self.idle_to = server
        if not keep:
            if not req.complete:
                self._linger()
            else:
                self._close()
            return
        if self.deferred_error:
            status = self.deferred_error
            self.deferred_error = 0
            self._client_error(status)
            return
        self.idle_since = self.loop.time()
        if self.queue:
            if self.settling:
                # Its upstream connection goes back to the pool once the rest of the read
                # that ended this response is parsed: the next request may take it then.
                self.settling = False
                self.loop.call_soon(self._next_queued)
            else:
                self._next_queued()
        elif self.paused:
            self.resume(P_PIPELINE)
        self.settling = False

    def _next_queued(self) -> None:
        queue = self.queue
        if self.closed or self.current is not None or not queue:
            return
        nxt = queue.popleft()
        if not queue:
            self.resume(P_PIPELINE)
        self._start(nxt)
