"""The asyncio protocol of one HTTP/2 client connection: bytes to the session, its events to
the streams, the session's frames to the socket, and the connection's end by GOAWAY.

Theory of operation
-------------------
A connection starts HTTP/2 by ALPN ``h2`` on a TLS listener (quiesce.dataplane.frontdoor) or,
on a cleartext one, by opening with the connection preface (:func:`h2c`: the HTTP/1.1
protocol that read it hands the connection over). It is one of the service's connections;
its streams (:class:`~quiesce.dataplane.h2.stream.Stream`) are not, they are what the
connection table counts per server.

Frames are written once a loop turn (:meth:`flush_soon`), whatever number of streams wrote.

A connection ends by GOAWAY (RFC 9113 §6.8), never by a bare close while a stream may be on
its way:

* shutdown, the end of an upgrade's grace, reload of a service that goes away
  (:meth:`close_at_boundary`): a first GOAWAY with the highest stream id and a PING; when the
  PING's answer comes (or after ``GOAWAY_WAIT``), a second GOAWAY with the last stream the
  client had opened by then. What is in flight finishes; a stream opened after the second is
  refused (REFUSED_STREAM: the client knows it was not processed and retries it elsewhere);
  once no stream is left the connection closes;
* ``client_idle_timeout`` with no stream open: GOAWAY with the last stream id, then close;
* the client's own GOAWAY: its streams finish, then the connection closes;
* a client past a limit (quiesce.dataplane.h2.guard) or breaking the protocol: GOAWAY
  ENHANCE_YOUR_CALM, FRAME_SIZE_ERROR or PROTOCOL_ERROR, then the connection is closed.

After its last GOAWAY, the connection shuts its writing side (TCP) and waits up to ``LINGER``
for the client to close, reading and dropping, so the GOAWAY is not lost to a reset.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

from ngh2 import DataReceived, PingAcknowledged, RequestReceived, StreamReset, TrailersReceived

from quiesce.dataplane.h1.headers import HTTP_FORWARDED
from quiesce.dataplane.h2.guard import (
    ENHANCE_YOUR_CALM,
    MAX_STREAM_ID,
    Broken,
    Calm,
    goaway_frame,
)
from quiesce.dataplane.h2.request import Malformed, TooLarge, stream_request
from quiesce.dataplane.h2.session import Session
from quiesce.dataplane.h2.stream import Stream
from quiesce.logs import access as ts

if TYPE_CHECKING:
    from quiesce.dataplane.context import ServiceContext
    from quiesce.dataplane.proxyproto import Header

log = logging.getLogger("quiesce")

GOAWAY_WAIT = 1.0  # seconds the second GOAWAY waits for the PING's answer at most
LINGER = 2.0
REFUSED_STREAM = 0x7
CANCEL = 0x8
PROTOCOL_ERROR = 0x1
_PING = b"quiesce!"


class Http2Connection(asyncio.Protocol):
    """One HTTP/2 client connection of an L7 service."""

    layer = 7
    multiplexed = True  # GOAWAY makes closing it safe at any time (service.shutdown)

    __slots__ = (
        "closed",
        "ctx",
        "final",
        "flushing",
        "fwd",
        "goaway_at",
        "idle_since",
        "leaving",
        "loop",
        "peer",
        "peer_b",
        "port",
        "proxied",
        "session",
        "shut",
        "streams",
        "timer",
        "transport",
    )

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.fwd = HTTP_FORWARDED
        self.proxied: Header | None = None
        self.peer = ""
        self.peer_b = b""
        self.port = 0
        self.session = Session(
            self.loop.time(), max_header_list=ctx.max_header_size + ctx.max_request_line
        )
        self.streams: dict[int, Stream] = {}
        self.leaving: list[Stream] = []  # streams whose exchange closed, to end next turn
        self.closed = False
        self.flushing = False
        self.idle_since = 0.0
        # GOAWAY: -1 none sent; else the last stream id it named (MAX_STREAM_ID: the first of
        # two); ``final``: the last GOAWAY went, close once no stream is left
        self.goaway_at = -1
        self.final = False
        self.shut = False  # the last frame went: what still comes is dropped
        self.timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A TLS connection whose client chose ``h2`` (counted as a new connection)."""
        ctx = self.ctx
        ctx.conns.add(self)
        ctx.stats.connections += 1
        ctx.stats.connections_total += 1
        ctx.opened()
        self._begin(transport)
        if ctx.closing:
            self.close_at_boundary(True)

    def _begin(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") if not self.proxied else self.proxied.source
        self.peer = sys.intern(peer[0]) if peer else ""
        self.peer_b = self.peer.encode()  # (its streams take the three: Stream.take_transport)
        self.port = peer[1] if peer else 0
        self.idle_since = self.loop.time()
        self.ctx.watch()
        self.flush_soon()  # our SETTINGS

    def data_received(self, data: bytes) -> None:
        if self.closed or self.shut:
            return
        now = self.loop.time()
        session = self.session
        try:
            events = session.receive(data, now)
        except Calm as exc:
            log.warning(
                "service %s: HTTP/2 client %s: %s: GOAWAY ENHANCE_YOUR_CALM",
                self.ctx.name,
                self.peer,
                exc,
            )
            self._end(ENHANCE_YOUR_CALM, str(exc).encode()[:64])
            return
        except Broken as exc:
            log.info("service %s: HTTP/2 client %s: %s", self.ctx.name, self.peer, exc)
            self._end(exc.code, str(exc).encode()[:64])
            return
        if events:
            self._dispatch(events)
        if session.guard.goaways:
            session.guard.goaways.clear()
            self._peer_goaway()
        self.flush_soon()

    def _dispatch(self, events: list[Any]) -> None:
        streams = self.streams
        session = self.session
        reset: set[int] | tuple[()] | None = None
        for e in events:
            kind = type(e)
            if kind is RequestReceived:
                sid = e.stream_id
                if sid > session.last_id:
                    session.last_id = sid
                if reset is None:  # streams the client reset in the same read: never begun
                    reset = (
                        {x.stream_id for x in events if type(x) is StreamReset}
                        if StreamReset in set(map(type, events))  # (rare: a scan in C first)
                        else ()
                    )
                if sid not in reset:
                    self._request(sid, e.headers, e.end_stream)
            elif kind is DataReceived:
                sid = e.stream_id
                st = streams.get(sid)
                data = e.data
                n = len(data)  # (padding: acknowledged by ngh2)
                if st is None:
                    session.ack(sid, n)
                    continue
                if n and st.parsing is not None:
                    st.body(data)
                if e.end_stream:
                    st.body_end()
                tr = st.transport
                if tr.reading and not st.closed:  # type: ignore[attr-defined]
                    session.ack(sid, n)
                else:
                    tr.unacked += n  # type: ignore[attr-defined]
            elif kind is TrailersReceived:  # (the end of the body; trailers are not passed on)
                st = streams.get(e.stream_id)
                if st is not None:
                    st.body_end()
            elif kind is StreamReset:
                st = streams.get(e.stream_id)
                session.forget(e.stream_id)
                if st is not None and not st.transport.is_closing():
                    st.transport.closing = True  # type: ignore[attr-defined]
                    st.connection_lost(None)  # the client went away (logged as such)
            elif kind is PingAcknowledged and self.goaway_at == MAX_STREAM_ID:
                self._final_goaway()
            # (WINDOW_UPDATE and SETTINGS: the flush after this read sends what they allow;
            # GOAWAY: the guard takes it out)

    def _request(self, sid: int, headers: Any, ended: bool) -> None:
        session = self.session
        ctx = self.ctx
        if self.final or self.closed:
            session.reset(sid, REFUSED_STREAM)  # after our last GOAWAY: not processed
            return
        try:
            req = stream_request(
                headers, ended, self.peer_b, self.fwd, ctx.max_request_line, ctx.max_header_size
            )
        except Malformed as exc:
            log.debug("service %s: HTTP/2 stream %d refused: %s", ctx.name, sid, exc)
            session.reset(sid, PROTOCOL_ERROR)
            return
        except TooLarge as exc:  # (answered as over HTTP/1.1: 414, 431)
            st = Stream(ctx, self, sid)
            self.streams[sid] = st
            st._client_error(exc.status)
            return
        st = Stream(ctx, self, sid)
        self.streams[sid] = st
        st.start(req)

    # what streams call ------------------------------------------------------------------

    def flush_soon(self) -> None:
        if not self.flushing and not self.closed:
            self.flushing = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flushing = False
        if self.closed or self.shut:
            return
        session = self.session
        data = session.output()
        if data:
            self.transport.write(data)
            if session.held:
                self._pump()
            if session.over:  # the codec's GOAWAY went (a protocol error it found)
                self._end(-1)
                return
        if self.final and not self.streams:
            self._shut()

    def ack(self, sid: int, n: int) -> None:
        self.session.ack(sid, n)
        self.flush_soon()

    def stream_closed(self, tr: Any, abort: bool) -> None:
        """A stream's exchange closed its transport (``abort``: before its answer was
        whole): reset it if need be; the stream leaves in connection_lost, one turn later."""
        if abort:
            self.session.reset(tr.sid, CANCEL)
            self.flush_soon()
        st = tr.stream
        if st is None:
            return  # (gone already: a reset, the client's loss)
        leaving = self.leaving
        leaving.append(st)
        if len(leaving) == 1:  # (one callback a turn for all the streams that ended in it)
            self.loop.call_soon(self._leave)

    def _leave(self) -> None:
        leaving = self.leaving
        self.leaving = []
        for st in leaving:
            st.connection_lost(None)

    def stream_gone(self, st: Stream) -> None:
        if self.streams.get(st.sid) is st:
            del self.streams[st.sid]
            if not self.streams:
                self.idle_since = self.loop.time()
                if self.final:
                    self.flush_soon()

    def _pump(self) -> None:
        for sid in self.session.pump():
            st = self.streams.get(sid)
            if st is not None and st.client_blocked:
                st.resume_writing()

    def pause_writing(self) -> None:
        self.session.blocked = True  # the streams keep their bytes (and pause at HIGH)

    def resume_writing(self) -> None:
        self.session.blocked = False
        self.flush_soon()

    # ending ---------------------------------------------------------------------------

    def close_at_boundary(self, force: bool = False) -> None:
        """GOAWAY: in-flight streams finish, new ones are refused, then the connection closes
        (``force``: the last GOAWAY at once, without the PING's round trip)."""
        if self.closed or self.final or self.shut:
            return
        if force:
            self._final_goaway()
            return
        if self.goaway_at < 0:
            self.goaway_at = MAX_STREAM_ID
            self.transport.write(self.session.output() + goaway_frame(MAX_STREAM_ID))
            self.session.ping(_PING)
            self.flush_soon()
            self.timer = self.loop.call_later(GOAWAY_WAIT, self._final_goaway)

    def _final_goaway(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.closed or self.final or self.shut:
            return
        self.final = True
        self.goaway_at = self.session.last_id
        self.transport.write(self.session.output(True) + goaway_frame(self.goaway_at))
        if not self.streams:
            self._shut()

    def _peer_goaway(self) -> None:
        """The client said GOAWAY: no new stream will come; close when the last ends."""
        if not self.final:
            self.final = True
            self.goaway_at = self.session.last_id
        if not self.streams:
            self._shut()

    def _end(self, code: int, debug: bytes = b"") -> None:
        """A client past a limit (``code``) or breaking the protocol (-1: the codec wrote
        the GOAWAY): its streams are cut, the GOAWAY sent, the connection closed."""
        if self.closed or self.shut:
            return
        self.final = True
        for st in list(self.streams.values()):
            st.cut(ts.PROXY, answer=False)  # (RST_STREAMs before the GOAWAY: it is the last)
        out = self.session.output(True)
        if code >= 0:
            out += goaway_frame(self.session.last_id, code, debug)
        self.transport.write(out)
        self._shut()

    def _shut(self) -> None:
        """After the last GOAWAY: shut writing, read and drop for LINGER, then close."""
        if self.closed or self.shut:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.shut = True
        out = self.session.output(True)
        if out:
            self.transport.write(out)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.timer = self.loop.call_later(LINGER, self._close)
        else:
            self._close()

    def _close(self) -> None:
        self.timer = None
        if not self.closed:
            self.closed = True
            self.transport.close()

    def eof_received(self) -> bool | None:
        if self.streams and not self.final:
            self._peer_goaway()  # half-closed: answer what is in flight
            # (TLS closes after the client's close_notify whatever the answer: True warns)
            return self.transport.can_write_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for st in list(self.streams.values()):
            st.transport.closing = True  # type: ignore[attr-defined]
            st.connection_lost(None)
        self.streams.clear()
        ctx = self.ctx
        ctx.conns.discard(self)
        ctx.stats.connections -= 1
        ctx.lost()
        if ctx.closing and not ctx.conns and ctx.drained is not None:
            ctx.drained.set()

    def cut(self, why: str = "") -> None:
        """Abort now: every stream (RST_STREAM, logged with ``why``) and the connection."""
        if self.closed:
            return
        for st in list(self.streams.values()):
            st.cut(why, answer=False)  # (no answer could reach the client)
        self.closed = True
        self.transport.abort()

    def check(self, now: float) -> None:
        """The streams' timeouts (408, 504), and a stream whose answer has not moved for
        ``client_idle_timeout`` (the client keeps its window at zero) is reset;
        ``client_idle_timeout`` with no stream open: GOAWAY and close."""
        if self.closed:
            return
        for st in list(self.streams.values()):
            st.check(now)
        stalled = self.session.stalled(now, self.ctx.idle_timeout) if self.session.held else ()
        if stalled:
            # one line for the connection, not one a stream (a client holding 100 streams at
            # a zero window wrote 100 lines each client_idle_timeout)
            shown = ", ".join(map(str, stalled[:10])) + (", ..." if len(stalled) > 10 else "")
            log.info(
                "service %s: HTTP/2 client %s: %d stream(s) stalled, reset: %s",
                self.ctx.name,
                self.peer,
                len(stalled),
                shown,
            )
        for sid in stalled:
            # a stream the client stopped reading (zero window) for client_idle_timeout:
            # reset, its server connection freed
            stalled_stream = self.streams.get(sid)
            if stalled_stream is not None:
                stalled_stream.cut(ts.CLIENT_TIMEOUT)
            else:
                self.session.reset(sid, CANCEL)
                self.flush_soon()
        if not self.streams and not self.final and now - self.idle_since >= self.ctx.idle_timeout:
            self._final_goaway()


def h2c(conn: Any, data: bytes) -> bool:
    """Take over a cleartext HTTP/1.1 connection (``conn``, a ClientConnection) that opened
    with the HTTP/2 connection preface (``data``: every byte read so far); False on TLS
    (there ALPN decides)."""
    transport = conn.transport
    if transport.get_extra_info("ssl_object") is not None:
        return False
    ctx = conn.ctx
    h2 = Http2Connection(ctx)
    h2.proxied = conn.proxied
    h2.fwd = conn.fwd
    conn.closed = True  # (it counted the connection: the count passes to h2)
    ctx.conns.discard(conn)
    ctx.conns.add(h2)
    transport.set_protocol(h2)
    h2._begin(transport)
    h2.data_received(data)
    return True
