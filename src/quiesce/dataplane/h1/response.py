"""The answering half of a client connection: the upstream's events, the proxy's own
answers, the end of an exchange, and closing (the base class of
:class:`~quiesce.dataplane.h1.client.ClientConnection`: the slots of both halves are
declared here, set up by ``ClientConnection.__init__``).
"""

from __future__ import annotations

import asyncio
import fcntl
import sys
import termios
from collections import deque
from typing import TYPE_CHECKING

from quiesce.dataplane.h1 import tunnel
from quiesce.dataplane.h1.access import answer_cut, log_exchange, phase
from quiesce.dataplane.h1.exchange import (
    ANSWERED_OF,
    C_INPUT_DONE,
    C_TUNNEL,
    END_OF,
    HEAD_OF,
    HOLD_OF,
    LINGER_OF,
    R_DONE,
    R_HELD,
    R_SENT,
    RELEASE_OF,
    RQ_COMPLETE,
    STARTED,
    UNSEND_OF,
    ConnState,
    Request,
    ResponseState,
    closes_after,
    keeps_connection,
    may_pool,
)
from quiesce.dataplane.h1.headers import HOP_BY_HOP, forward_response, last_chunk, status_line
from quiesce.dataplane.h1.retry import after_lost, on_status
from quiesce.dataplane.h1.types import P_PIPELINE, P_UPSTREAM
from quiesce.dataplane.pages import Page, error_response, simple_response
from quiesce.logs import access as ts  # the termination states
from quiesce.state.traffic import account, account_timed, bucket, latency_of, new_latency

if TYPE_CHECKING:
    import httptools

    from quiesce.dataplane.context import ServiceContext
    from quiesce.dataplane.h1.upstream import Upstream
    from quiesce.state.registry import PoolRuntime, ServerRuntime

LINGER = 2.0  # seconds a connection closing after an error reads and drops what still comes


class ResponseSide:
    # The slots of a client connection, both halves (ClientConnection sets them up).
    __slots__ = (
        "begin_at",
        "boundary_close",
        "client_blocked",
        "closed",
        "connecting",
        "ctime",
        "ctx",
        "current",
        "deferred_error",
        "error_status",
        "fwd",
        "got_any",
        "half_closed",
        "head_left",
        "head_limit",
        "header_size",
        "headers",
        "heads",
        "idle_since",
        "idle_to",
        "last_rx",
        "loop",
        "out",
        "parser",
        "parsing",
        "paused",
        "peer",
        "peer_b",
        "pool",
        "port",
        "queue",
        "req_at",
        "resp",
        "resp_chunked",
        "resp_close",
        "resp_status",
        "rtime",
        "rx",
        "sent_at",
        "server",
        "set_cookie",
        "settling",
        "state",
        "term",
        "timer",
        "transport",
        "tx",
        "up",
        "up_paused",
        "upgrade_buf",
        "url",
    )

    if TYPE_CHECKING:
        layer: int
        ctx: ServiceContext
        loop: asyncio.AbstractEventLoop
        transport: asyncio.Transport
        parser: httptools.HttpRequestParser | None
        parsing: Request | None
        current: Request | None
        queue: deque[Request] | None
        server: ServerRuntime | None
        pool: PoolRuntime | None
        idle_to: ServerRuntime | None
        up: Upstream | None
        connecting: asyncio.Task[None] | None
        paused: int
        up_paused: bool
        closed: bool
        state: ConnState
        upgrade_buf: list[bytes] | None
        half_closed: int
        boundary_close: bool
        deferred_error: int
        out: list[bytes]
        resp: ResponseState
        resp_status: int
        resp_chunked: bool
        resp_close: bool
        set_cookie: bytes | None
        settling: bool
        timer: asyncio.TimerHandle | None
        begin_at: float
        idle_since: float
        sent_at: float
        last_rx: float
        rx: int
        tx: int
        req_at: float
        rtime: float
        ctime: float
        peer: str
        port: int
        term: str

        def flush(self) -> None: ...
        def pause(self, reason: int) -> None: ...
        def resume(self, reason: int) -> None: ...
        def _start(self, req: Request) -> None: ...
        async def _open(self, server: ServerRuntime) -> None: ...

    # upstream events -----------------------------------------------------------------------

    def response_head(self, up: Upstream) -> None:
        req = self.current
        if req is None:
            return
        status = up.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            up.interim = True
            if not req.http10:
                lines = [status_line(status, up.reason)]
                lines.extend(n + b": " + v for n, v in up.headers if n.lower() not in HOP_BY_HOP)
                lines.append(b"\r\n")
                self.out.append(b"\r\n".join(lines))
            return
        if status == 101 and not req.upgrade:
            # Switching protocols nobody asked for: never a tunnel (as HAProxy: 502).
            self.upstream_failed(up, 502)
            return
        if status >= 400 and on_status(self, status):  # pools.X.retry_on: a status
            return
        ctx = self.ctx
        self.resp_status = status
        sent = self.sent_at
        self.rtime = self.loop.time() - sent if sent >= 0 else 0.0
        up.keep_alive = up.parser.should_keep_alive()
        if status in ctx.status_codes and status != 101:
            # on_response_status: the answer is replaced by the maintenance page; the
            # upstream body is read and dropped so the connection stays reusable.
            up.discard = True
            server = self.server
            if ctx.mark_server and server is not None:
                ctx.registry.mark_passive_maintenance(server, {"status_code": status})
            page = ctx.page
            close = self.closing_after(req)
            self.resp_close = close
            self.resp = HEAD_OF[self.resp]
            self.resp_status = page.status
            ctx.stats.maintenance_pages += 1
            self.out.append(page.response(req.head_only, close, req.http10))
            if up.head_only:
                return
            self._note_framing(up, status, req)
            return
        no_body = req.head_only or status in (204, 304) or status == 101
        hold = False
        lines, up.content_length, up.chunked = forward_response(status, up.reason, up.headers)
        append = lines.append
        if self.set_cookie is not None:
            append(self.set_cookie)
        close = self.closing_after(req)
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
                hold = True
        if status != 101:
            if close:
                append(b"Connection: close")
            elif req.http10:
                append(b"Connection: keep-alive")
        self.resp_close = close
        self.resp = HOLD_OF[HEAD_OF[self.resp]] if hold else HEAD_OF[self.resp]
        append(b"\r\n")
        self.out.append(b"\r\n".join(lines))

    def fast_response(
        self, up: Upstream, status: int, keep_alive: bool, close: bool, out: bytes
    ) -> None:
        """A whole Content-Length response read by the C fast path, head and body, already
        rewritten for the client (what response_head, response_body and upstream_complete
        do for it, at once)."""
        if status >= 400 and on_status(self, status):  # pools.X.retry_on: a status
            return
        self.resp_status = status
        up.keep_alive = keep_alive
        self.resp_close = close
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
            self.transport.write(out)
            self.resp = ANSWERED_OF[self.resp]
            stats = ctx.stats
            stats.count_response(status)
            # bytes and times (bin/bout, rtime/ttime; tx is 0, the response came whole)
            nin = self.rx
            self.rx = 0
            rtime = now - self.sent_at
            t = server.own_traffic or server.new_traffic()  # made by its first request
            account(t, stats.traffic, nin, len(out), rtime, now - self.req_at)
            (latency_of(t) or new_latency(t))[bucket(rtime)] += 1
            access = ctx.access
            if access is not None:
                log_exchange(self, access, req, server, status, nin, len(out), rtime)
            self.current = None
            self.sent_at = -1.0
            self.server = None
            ctx.table.request_finished(server, self, status, True)
            self.idle_to = server
            self.idle_since = now
            return
        sent = self.sent_at
        self.rtime = self.loop.time() - sent if sent >= 0 else 0.0
        self.resp = HEAD_OF[self.resp]
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

    closing_after = closes_after  # does the answer to a request close the connection

    def response_body(self, body: bytes) -> None:
        if self.resp is R_HELD:
            self.resp = RELEASE_OF[R_HELD]
        if self.resp_chunked:
            self.out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self.out.append(body)

    def upstream_complete(self, up: Upstream) -> None:
        if up is not self.up or self.resp is R_DONE:
            return
        req = self.current
        if req is None:
            return
        if self.resp_chunked:
            self.out.append(b"0\r\n\r\n" if up.trailers is None else last_chunk(up.trailers))
        if self.resp is R_HELD:
            self.resp = RELEASE_OF[R_HELD]
        self.up = None
        up.client = None
        if self.up_paused:
            self.up_paused = False
            up.transport.resume_reading()
        if self.paused:
            self.resume(P_UPSTREAM)
        server = self.server
        if server is not None and may_pool(
            up.keep_alive,
            up.close_delimited,
            up.closed,
            req,
            self.boundary_close or self.ctx.closing,
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
        """The server answered 101: from now on both sides are a byte tunnel (logged as the
        exchange that upgraded: the tunnel's bytes are not in its access-log entry)."""
        if up is self.up:
            access, req = self.ctx.access, self.current
            if access is not None and req is not None:
                nout = self.tx + sum(map(len, self.out)) + len(rest)
                log_exchange(self, access, req, self.server, 101, self.rx, nout, self.rtime)
            tunnel.start(self, up, rest)

    def upstream_failed(self, up: Upstream, status: int) -> None:
        """Malformed response (502) or response timeout (504)."""
        if up is not self.up:
            return
        self.up = None
        up.client = None
        up.abort()
        up.server.resp_errors += 1  # eresp (a retried one is wretr)
        who = ts.SERVER_TIMEOUT if status == 504 else ts.SERVER
        if self.resp is R_SENT or (up.discard and self.resp in STARTED):
            # Part of the response is with the client already: it cannot be told otherwise.
            self.ctx.stats.count_error(status)
            self.term = who + ts.DATA
            self.cut()
            return
        self._unsend()
        self.term = who + ts.HEADERS
        self._fail(status)

    def _unsend(self) -> None:
        """Forget a response head that was parsed but never written to the client."""
        self.out = []
        self.resp = UNSEND_OF[self.resp]
        self.resp_chunked = False

    def upstream_lost(self, up: Upstream) -> None:
        if up is not self.up:
            return
        self.up = None
        if self.state is C_TUNNEL:
            self._close()
            return
        req = self.current
        if req is None or self.resp is R_DONE:
            return
        if self.resp in STARTED:
            up.server.resp_errors += 1  # eresp: the response was cut short
            up.server.srv_aborts += 1  # srv_abrt: a data transfer the server aborted
            if self.resp is R_SENT or up.discard:
                self.term = ts.SERVER + ts.DATA
                self.cut()  # the response was cut short: so is the client's
                return
            self._unsend()  # nothing of it reached the client: it gets a 502 below
        elif after_lost(self, req, up):  # the keep-alive race's resend, or a retry
            return
        else:
            up.server.resp_errors += 1  # eresp: closed before a byte of response
        self.term = ts.SERVER + ts.HEADERS
        self._fail(502)

    # answers of our own ----------------------------------------------------------------------

    def _serve_page(self, page: Page) -> None:
        req = self.current
        assert req is not None
        ctx = self.ctx
        ctx.stats.maintenance_pages += 1
        close = self.closing_after(req)
        self.resp_close = close
        self.resp = HEAD_OF[self.resp]
        self.resp_status = page.status
        data = page.response(req.head_only, close, req.http10)
        self.tx += len(data)
        self.transport.write(data)
        self._response_done()

    def _respond(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...]) -> None:
        req = self.current
        assert req is not None
        close = self.closing_after(req)
        self.resp_close = close
        self.resp = HEAD_OF[self.resp]
        self.resp_status = status
        data = simple_response(
            status, body, headers, head_only=req.head_only, close=close, http10=req.http10
        )
        self.tx += len(data)
        self.transport.write(data)
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
        if not self.term:
            self.term = ts.SERVER + ts.HEADERS
        self.resp_close = True
        self.resp = HEAD_OF[self.resp]
        self.resp_status = status
        data = error_response(status, close=True, head_only=req.head_only)
        self.tx += len(data)
        self.transport.write(data)
        self._response_done()

    def _client_error(self, status: int) -> None:
        """A request we cannot read (400, 408, 414, 431, 405): answer and close."""
        cur = self.current
        who = ts.CLIENT_TIMEOUT if status == 408 else ts.PROXY
        data = error_response(status)
        if cur is not None and self.resp is not R_DONE:
            if cur.complete:
                # An earlier request is still being served: answer it first, then this.
                self.deferred_error = status
                self.pause(P_PIPELINE)
                return
            # The body of the request being served is broken (or stalled): it can never
            # complete, so neither can its exchange with the server.
            started = self.resp in STARTED
            self.term = who + (ts.DATA if started else ts.REQUEST)
            if not started:
                self.tx += len(data)  # written below, logged and counted by _abandon
            self._abandon(self.resp_status if started else status)
            if started:
                self.cut()
                return
        else:
            self.term = who + ts.REQUEST
            self.tx += len(data)
            access = self.ctx.access
            if cur is None and access is not None:
                # a request head that could not be read: logged without method or path
                log_exchange(self, access, None, None, status, self.rx, self.tx)
        self.ctx.stats.count_error(status)
        self.ctx.stats.count_response(status)
        self.transport.write(data)
        self._linger()

    def _abandon(self, status: int = -1) -> None:
        """Drop the current request: its upstream connection and its place on the server
        (logged with ``status``, -1: none was sent)."""
        access = self.ctx.access
        req = self.current
        if access is not None and req is not None:
            if not self.term:
                self.term = ts.CLIENT + ts.REQUEST
            log_exchange(self, access, req, self.server, status, self.rx, self.tx, self.rtime)
        up = self.up
        if up is not None:
            self.up = None
            up.client = None
            up.abort()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        server = self.server
        self.rtime = -1.0
        self.fold(server)
        if server is not None:
            self.server = None
            self.ctx.table.request_finished(server, self, 0, False)
        self.current = None

    def _linger(self) -> None:
        """Close after our answer without resetting it away: stop writing, read and drop
        what the client still sends for a moment, then close."""
        if self.closed:
            return
        self.state = LINGER_OF[self.state]
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
        self.resp = END_OF[self.resp]
        req = self.current
        if req is None:
            return
        if req.state is RQ_COMPLETE or self.resp_close:
            self._after_response()

    def _after_response(self) -> None:
        req = self.current
        if req is None:
            return
        ctx = self.ctx
        status = self.resp_status
        ctx.stats.count_response(status)
        done = self.state is C_INPUT_DONE and not self.queue  # the client sends no more
        keep = keeps_connection(req, self.resp_close, self.closed, done)
        server = self.server
        self.current = None
        self.sent_at = -1.0
        # the exchange's client bytes, and its times when the server answered (what fold
        # does, inline: one call per request)
        nin = self.rx
        nout = self.tx
        self.rx = self.tx = 0
        rtime = self.rtime
        ttime = 0.0
        if rtime >= 0.0:
            self.rtime = -1.0
            ttime = self.loop.time() - self.req_at
        traffic = None if server is None else server.own_traffic or server.new_traffic()
        account_timed(traffic, ctx.stats.traffic, nin, nout, rtime, ttime)
        access = ctx.access
        if access is not None:
            log_exchange(self, access, req, server, status, nin, nout, rtime)
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

    def fold(self, server: ServerRuntime | None, rtime: float = -1.0, ttime: float = 0.0) -> None:
        """Count the client bytes read and written since the last request ended for the
        service and, when there is one, ``server`` (HAProxy's bin/bout), with the request's
        response and total times when ``rtime`` >= 0 (quiesce.state.traffic)."""
        nin = self.rx
        nout = self.tx
        if nin or nout or rtime >= 0.0:
            self.rx = self.tx = 0
            traffic = None if server is None else server.own_traffic or server.new_traffic()
            account_timed(traffic, self.ctx.stats.traffic, nin, nout, rtime, ttime)

    # closing (the connection table and service shutdown call these) ------------------------

    def cut(self, why: str = "") -> None:
        """Abort now: the client connection and its upstream connection. ``why`` (a drain
        deadline, ``--force``, the grace period: quiesce.logs.access) is logged; a request
        whose response has not started is answered ``503`` with ``Connection: close`` and
        ``Retry-After`` instead of being cut (docs/dataplane.md)."""
        if self.closed:
            return
        if why:
            req = self.current
            if req is not None and self.state is not C_TUNNEL and self.resp not in (R_SENT, R_DONE):
                answer_cut(self, req, why)
                return
            if not self.term:
                self.term = why + phase(self)
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
