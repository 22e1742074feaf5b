"""The upstream side of the L7 proxy: one connection to a server, one request at a time.

An :class:`Upstream` parses its server's responses (the C fast path for a whole common one,
else httptools) and hands what it reads to the client connection it serves (``client``, a
:class:`~quiesce.dataplane.h1.types.ClientSide`). Between requests it waits in the
connection table's keep-alive pool (quiesce.dataplane.pool); a response that completes
while its read is still being parsed is pooled only once the whole read was parsed, and
never when the server sent anything behind it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

from quiesce.dataplane.h1 import codec, tunnel
from quiesce.dataplane.h1.codec import feed_capped
from quiesce.dataplane.h1.exchange import R_HELD, R_NONE, closes_after
from quiesce.dataplane.h1.types import P_UPSTREAM, ClientSide, UpstreamHome

if TYPE_CHECKING:
    from quiesce.state.registry import ServerRuntime

# quiesce._httpfast's function, or None (tests switch it: quiesce.dataplane.http)
_fast_response = codec.fast_response

MAX_TRAILERS = 64  # trailer fields kept of a response (more are dropped)


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
        "trailers",
        "transport",
        "tunnel",
    )

    def __init__(self, server: ServerRuntime, table: UpstreamHome) -> None:
        self.server = server
        self.table = table
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: ClientSide | None = None
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
        self.trailers: list[tuple[bytes, bytes]] | None = None  # a chunked body's trailers
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
            c.tx += len(data)
            c.transport.write(data)
            return
        self.got_byte = True
        fast = _fast_response
        if fast is not None and self.head_left == self.head_limit and not self.head_only:
            req = c.current
            if req is not None and c.resp is R_NONE:
                close = closes_after(c, req)  # c.closing_after(req), one call
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
                feed_capped(self, self.parser, data)
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
        if c.out and c.resp is not R_HELD:
            c.flush()

    def _settle(self, c: ClientSide) -> None:
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
                return tunnel.half_close(c, c.transport, 2)
            if self.close_delimited and not self.interim:
                c.upstream_complete(self)
            if c.out and c.resp is not R_HELD:
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
        if self.head_left >= 0:
            self.headers.append((name, value))
        elif self.trailers is None:  # after the head: a chunked body's trailer section
            self.trailers = [(name, value)]
        elif len(self.trailers) < MAX_TRAILERS:
            self.trailers.append((name, value))

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
