"""The client side of the L7 proxy: one client connection, reading its requests and sending
each to a server (what comes back is :mod:`quiesce.dataplane.h1.response`, the mixin that
answers). The theory of operation is in the package's docstring (quiesce.dataplane.h1).
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from typing import TYPE_CHECKING

import httptools

from quiesce.core.retry import CONNECT_FAILURE, RESPONSE_TIMEOUT
from quiesce.dataplane.h1 import codec, queued, retry, tunnel, upgrades
from quiesce.dataplane.h1.access import log_exchange, phase
from quiesce.dataplane.h1.codec import HeadTooLarge, feed_capped
from quiesce.dataplane.h1.connect import open_upstream
from quiesce.dataplane.h1.exchange import (
    BODY_END_OF,
    C_LINGERING,
    C_OPEN,
    C_TUNNEL,
    CLIENT_EOF_OF,
    IDEMPOTENT,
    R_DONE,
    R_HELD,
    R_NONE,
    R_SENT,
    RELEASE_OF,
    REPLAY_LIMIT,
    RQ_BODY,
    RQ_COMPLETE,
    WRITE_OF,
    Request,
    resendable,
)
from quiesce.dataplane.h1.headers import HTTP_FORWARDED, WireError, forward_request
from quiesce.dataplane.h1.response import ResponseSide
from quiesce.dataplane.h1.types import P_PENDING, P_PIPELINE, P_UPGRADE, P_UPSTREAM
from quiesce.dataplane.h1.upstream import Upstream
from quiesce.dataplane.persistence import pick_by_cookie, pick_by_source
from quiesce.dataplane.proxyproto import Header
from quiesce.logs import access as ts  # the termination states
from quiesce.rules.decision import Redirect, Respond, ServePage, ToPool

if TYPE_CHECKING:
    from quiesce.dataplane.context import ServiceContext
    from quiesce.state.registry import PoolRuntime, ServerRuntime

# quiesce._httpfast's function, or None (tests switch it: quiesce.dataplane.http)
_fast_request = codec.fast_request

# Request body bytes held while an upstream connection is being opened, before reading pauses.
PENDING_LIMIT = 256 * 1024
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 3.4 (h2c by prior knowledge)

_NO_HEADERS: list[tuple[bytes, bytes]] = []  # never appended to: on_message_begin makes a list


class ClientConnection(ResponseSide, asyncio.Protocol):
    """One client connection of an L7 service."""

    layer = 7
    __slots__ = ("h2c_head", "proxied")  # the rest declared by ResponseSide, for both halves
    h2c_head: bytes  # an Upgrade: h2c request's head made plain, until read again (upgrades)

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer = ""
        self.peer_b = b""
        # the lines after X-Forwarded-For (https, a client certificate: set by the front door
        # of a TLS listener, quiesce.dataplane.frontdoor)
        self.fwd = HTTP_FORWARDED
        self.port = 0
        self.proxied: Header | None = None  # accept_proxy: the header read (frontdoor)
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
        self.state = C_OPEN  # exchange.ConnState: open, input done, tunnel, lingering
        self.closed = False  # the transport (the other axis: closed in whatever state)
        self.upgrade_buf: list[bytes] | None = None
        self.half_closed = 0  # tunnel: 1 client EOF seen, 2 upstream EOF seen
        self.boundary_close = False
        self.deferred_error = 0
        self.error_status = 0
        # response bytes collected while one upstream read is parsed, written at once
        self.out: list[bytes] = []
        # response state
        self.resp = R_NONE  # the exchange's response state (quiesce.dataplane.h1.exchange)
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
        # traffic (HAProxy's bin/bout, rtime/ttime): client bytes read and written since
        # the last request ended, when the current request arrived, its response time
        self.rx = 0
        self.tx = 0
        self.req_at = 0.0
        self.rtime = -1.0
        # access log (quiesce.dataplane.h1.access): this request's new upstream connection's
        # connect time (-1: none made), and its termination state when it did not complete
        self.ctime = -1.0
        self.term = ""

    # asyncio.Protocol ------------------------------------------------------------------

    def take_transport(self, transport: asyncio.BaseTransport) -> None:
        """The transport, and the client's address from it (also for a revived parked
        connection, see quiesce.dataplane.park)."""
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") if not self.proxied else self.proxied.source
        self.peer = sys.intern(peer[0]) if peer else ""  # one string per client address
        self.peer_b = self.peer.encode()
        self.port = peer[1] if peer else 0

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
        self.rx += len(data)
        state = self.state
        if state is C_TUNNEL:
            up = self.up
            if up is not None:
                up.transport.write(data)
            return
        if state is C_LINGERING or self.closed:  # lingering: read and dropped
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
            r = fast(data, self.peer_b, ctx.max_request_line, ctx.max_header_size, self.fwd)
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
                feed_capped(self, parser, data)
        except httptools.HttpParserUpgrade as exc:
            upgrades.stopped(self, data[exc.args[0] :])
        except (httptools.HttpParserError, WireError) as exc:
            if self.closed:
                return
            # HTTP/2 by prior knowledge (quiesce.dataplane.h2): the preface, whole in this read
            # or the end of it (httptools took the first ``k`` bytes as a request head still
            # coming, as it takes any, within the header timeout; it says PRI once the preface
            # is whole, so those bytes were the preface's and nothing else)
            k = self.rx - len(data)
            if (
                self.heads == 0
                and 0 <= k < 24
                and data[: 24 - k] == H2_PREFACE[k:]  # the preface, not a request named PRI
                and (k == 0 or "PRI" in str(exc))
            ):
                h2c = self.ctx.h2c
                if h2c is not None and h2c(self, H2_PREFACE[:k] + data if k else data):
                    return
            status = self.error_status or (431 if isinstance(exc, HeadTooLarge) else 400)
            if isinstance(exc, WireError):
                status = exc.status
            self._client_error(status)

    def eof_received(self) -> bool | None:
        state = self.state
        if state is C_TUNNEL:
            up = self.up
            return up is not None and tunnel.half_close(self, up.transport, 1)
        req = self.current
        if req is not None and state is C_OPEN:
            if req.waiting is not None and self.server is None:
                # Still in its pool's queue: it leaves it, unsent (``CQ``), as HAProxy's
                # ``option abortonclose`` aborts a queued request whose client closed.
                return False
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
            self.state = CLIENT_EOF_OF[state]
            # TLS closes after the client's close_notify whatever the answer (True: a warning)
            return self.transport.can_write_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ctx = self.ctx
        self.uncount()
        req = queued.leave(self, self.current)  # (out of its pool's queue if it waited there)
        access = ctx.access
        if access is not None and req is not None and self.state is not C_TUNNEL:
            # in flight: the client went away (or the connection was cut, term says why)
            if not self.term:
                self.term = ts.CLIENT + phase(self)
            sent = self.resp is R_SENT or self.resp is R_DONE
            status = self.resp_status if sent else -1
            log_exchange(self, access, req, self.server, status, self.rx, self.tx, self.rtime)
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
            if self.state is C_TUNNEL:
                up.close()
            else:
                up.abort()
        table = ctx.table
        server = self.server
        self.fold(server)  # what was read or written since the last request ended
        if server is not None:
            self.server = None
            if self.state is C_TUNNEL:
                table.closed(server, self)
            else:
                table.request_finished(server, self, 0, False)
        if self.idle_to is not None:
            table.forget_idle(self.idle_to, self)
            self.idle_to = None
        if ctx.closing and not ctx.conns and ctx.drained is not None:
            ctx.drained.set()

    def uncount(self) -> None:
        """No longer one of the service's connections (an HTTP/2 stream never was one:
        quiesce.dataplane.h2.stream)."""
        ctx = self.ctx
        ctx.conns.discard(self)
        ctx.stats.connections -= 1
        ctx.lost()

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
            self.resp = WRITE_OF[self.resp]  # interim (1xx) answers leave it NONE
            data = out[0] if len(out) == 1 else b"".join(out)
            self.tx += len(data)
            self.transport.write(data)

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

    # timeouts (called by the service's sweep, see ServiceContext.sweep) --------------------

    def check(self, now: float) -> None:
        """Enforce the header, idle and response timeouts; park a keep-alive connection idle
        for ``ctx.park_after`` (see quiesce.dataplane.park), or, when it cannot be parked,
        drop its parser (made again on the next byte: an idle connection is worth less
        memory without it)."""
        state = self.state
        if self.closed or state is C_TUNNEL or state is C_LINGERING:
            if state is C_TUNNEL:
                self.fold(self.server)  # a long tunnel's bytes show as they pass
            return
        if self.resp is R_HELD:
            # A chunked response head held for its first chunk: not longer than a sweep.
            self.resp = RELEASE_OF[R_HELD]
            if self.out:
                self.flush()
        ctx = self.ctx
        cur = self.current
        if cur is not None:
            # The client stopped sending its request body, or sends it so slowly that the whole
            # of it takes longer than client_body_timeout. Neither fires while reading is
            # paused (the server is not keeping up: not the client's fault).
            if (
                cur.state is RQ_BODY
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
                and self.resp is R_NONE
                and pool is not None
                and up is not None
                and now - self.sent_at >= pool.config.response_timeout
                and not retry.again(self, RESPONSE_TIMEOUT)  # pools.X.retry_on
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
            park = ctx.park
            if park is None or not park(self):  # parked: a socket and a small record are left
                self.parser = None

    def parkable(self) -> bool:
        """Is this connection idle between requests with nothing at all in progress: no
        request being received, served, queued or answered, no upstream connection, no
        tunnel, no close pending, nothing unsent, and not TLS: parking keeps the socket
        only, and a TLS connection's state is in the process (quiesce.dataplane.park
        asks)."""
        return not (
            self.closed
            or self.current is not None
            or self.queue
            or self.parsing is not None
            or self.begin_at >= 0
            or self.paused
            or self.out
            or self.resp is R_HELD
            or self.up is not None
            or self.connecting is not None
            or self.upgrade_buf is not None
            or self.state is not C_OPEN  # input done, tunnel, lingering
            or self.boundary_close
            or self.deferred_error
            or self.timer is not None
            or self.server is not None
            or self.fwd is not HTTP_FORWARDED  # a TLS connection
        )

    # httptools request callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.closed:
            raise WireError(0)
        self.url = b""
        self.headers = []
        self.header_size = 0
        if self.current is None:
            self.begin_at = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.ctx.max_request_line:
            self.error_status = 414
            raise WireError(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_size += len(name) + len(value) + 4
        if self.header_size > self.ctx.max_header_size:
            self.error_status = 431
            raise WireError(431)
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_left = -1
        self.heads += 1
        if self.closed:
            raise WireError(0)
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
            raise WireError(405)
        upgrade = parser.should_upgrade()
        if upgrade and upgrades.hold(self, req, headers):
            return  # Upgrade: h2c alone: read again as plain HTTP/1.1 (upgrades.stopped)
        req.upgrade = upgrade
        forward_request(req, headers, upgrade, self.peer_b, self.fwd)
        if req.state is RQ_BODY:
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
        req.state = RQ_COMPLETE  # no body
        req.raw = data
        self._start(req)

    def on_body(self, body: bytes) -> None:
        req = self.parsing
        if req is None or not body:
            return
        if req is self.current and self.up is not None:
            self._send_body(req, body)
        elif req is self.current and (self.resp is R_DONE or not (self.server or req.waiting)):
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
        if req is None or req.state is RQ_COMPLETE:
            return
        req.state = BODY_END_OF[req.state]
        if req is not self.current:
            return
        if self.up is not None:
            if req.chunked:
                self.up.transport.write(b"0\r\n\r\n")
            self._request_sent()
        elif self.resp is R_DONE:
            self._after_response()

    # serving a request -------------------------------------------------------------------------

    def _start(self, req: Request) -> None:
        ctx = self.ctx
        self.current = req
        self.resp = R_NONE  # a new exchange
        self.resp_status = 0
        self.resp_chunked = False
        self.resp_close = False
        self.set_cookie = None
        self.sent_at = -1.0
        self.req_at = self.last_rx
        self.ctime = -1.0
        self.term = ""
        ctx.stats.requests += 1
        pool = ctx.pool
        if ctx.router is not None:
            decision = ctx.router.route(req.view(self.peer))
            if isinstance(decision, ToPool):
                target = ctx.registry.pools.get(decision.pool)
                if target is None:
                    self.term = ts.NO_SERVER + ts.DONE
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
        if server is None or server.config.max_connections is not None:
            server = queued.admit(self, pool, server, req)  # the maintenance page, or it waits
            if server is None:
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
        if persistence.type == "cookie":
            server, set_cookie = pick_by_cookie(
                pool, persistence, req.cookie, self.peer, now, exclude
            )
            if set_cookie is not None:
                self.set_cookie = set_cookie
            return server
        table = self.ctx.table.sticky_table(pool.name)
        return pick_by_source(pool, persistence, table, self.peer, now, self.loop.time(), exclude)

    def _bind(self, pool: PoolRuntime, server: ServerRuntime) -> None:
        self.pool = pool
        self.server = server
        self.ctx.table.request_started(server, self, self.idle_to)
        self.idle_to = None

    def _upstream(self, taken: Upstream | None = None) -> None:
        """An idle connection to the server (``taken`` from its pool already, or the next
        one) that the request may go on (quiesce.dataplane.pool), else a new one."""
        server = self.server
        req = self.current
        assert server is not None and req is not None
        pool = self.pool
        limit = pool.config.max_idle_per_server if pool is not None else 0
        may_resend = req.method in IDEMPOTENT or resendable(req)
        up: Upstream | None = self.ctx.table.take_for(
            server, may_resend, self.loop.time(), limit, taken
        )
        if up is not None:
            self._attach(up, reused=True)
            return
        self.connecting = self.loop.create_task(self._open(server))

    async def _open(self, server: ServerRuntime) -> None:
        await open_upstream(self, server)  # quiesce.dataplane.h1.connect

    def _connect_refused(self, server: ServerRuntime, status: int = 502) -> None:
        """Refused or reset before any byte of the request was sent: sent again as the
        pool's retries allow (by default once, on another eligible server), else ``status``
        (502; 503 from an h2 server that takes no stream)."""
        if self.current is None or self.closed or retry.again(self, CONNECT_FAILURE):
            return
        server.conn_errors += 1  # econ: failed for good (a retried one is wretr)
        self.term = ts.SERVER + ts.CONNECT
        self._fail(status)

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
        # server may have closed it meanwhile (the keep-alive race), and then we resend;
        # on a new one when the pool may retry it after it reached the server.
        keep = reused or (req.body_since > 0.0 and retry.keeps_body(self, req))
        req.replay = list(req.pending) if keep else None
        if req.expect and req.state is RQ_BODY and not req.pending and not req.http10:
            req.expect = False
            self.tx += 25
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
        if req.state is RQ_COMPLETE:
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
