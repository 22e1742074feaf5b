"""HTTP/2 to a pool's servers (``pools.X.protocol: h2``): one multiplexed connection per
server (a :class:`Link`, on the sans-IO ``ngh2`` codec, libnghttp2), and the
:class:`~quiesce.dataplane.h2client.channel.Channel` each HTTP/1.1 exchange writes its
request to (its constants, ``MAX_RESENDS``, ``RESEND_LIMIT``, ``HIGH``, are there).

Theory of operation
-------------------
The L7 proxy serves every request, HTTP/1.1 or an HTTP/2 front-end stream, through the same
exchange machine, which speaks HTTP/1.1 to an :class:`~quiesce.dataplane.h1.upstream.
Upstream` protocol. For an h2 pool that protocol's transport is a :class:`Channel`: what the
exchange writes (request head, body, chunked or not) is parsed (httptools) into HEADERS and
DATA on a new stream of the server's link, and what the stream answers is written back to
the Upstream as HTTP/1.1 bytes (quiesce.dataplane.h2client.codec), trailers as a chunked
body's trailer section. So balancing, rules, the queue, the maintenance page, the connection
table's per-request accounting (a server in drain finishes its streams, ``--force`` cuts
them: RST_STREAM CANCEL to the server), timeouts, retries and the access log are the
HTTP/1.1 ones. A channel carries one request at a time and goes back to the connection
table's keep-alive pool after its response, as an HTTP/1.1 connection does (not on a link
going away: closed): a pooled channel costs nothing on the server, nor opens a connection.

A link is opened by the first request to its server (concurrent first requests wait for the
same one: quiesce.dataplane.h2client.links) and closes (GOAWAY NO_ERROR) when it has no
channel left, idle or busy. It is given up when the server says GOAWAY, on a protocol error
(GOAWAY, every stream lost), or when the connection is lost.

A stream the server refused (REFUSED_STREAM, or above its GOAWAY's last stream id: not
processed, RFC 9113 §8.7), or one libnghttp2 still held unsent at the GOAWAY, is sent again
on the server's live or next link, whatever its method, when its whole request is still held
(up to ``RESEND_LIMIT`` of body; ``MAX_RESENDS`` times, a GOAWAY after progress not counted):
a server restarting gracefully, or nginx ending a connection at its ``keepalive_requests``,
loses no call. The link's end after a GOAWAY fails only the streams still unanswered; a
channel between requests is closed (``Channel.retire``: its Upstream leaves the keep-alive
pool at once) or, held by an exchange, has its next request refused there. Any other loss is
the exchange's, as over HTTP/1.1: a lost connection before any response byte (the
keep-alive race's resend, ``pools.X.retries``) or after (the client's stream is reset, its
HTTP/1.1 connection closed).

A link sends no stream before the server's first SETTINGS (its limits) have come. Past its
MAX_CONCURRENT_STREAMS libnghttp2 holds new streams; at 0 the link takes none (links.py).

Flow control: the response windows are acknowledged as the client side reads them (a
paused Upstream holds its stream's WINDOW_UPDATEs back); request bodies are queued by
libnghttp2 and the client is paused above ``HIGH`` bytes queued on a stream.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from ngh2 import (
    Configuration,
    Connection,
    ConnectionClosed,
    DataReceived,
    GoAwayReceived,
    InformationalResponseReceived,
    NGH2Error,
    ResponseReceived,
    Role,
    Setting,
    SettingsReceived,
    StreamClosed,
    StreamReset,
    StreamUnavailableError,
    TrailersReceived,
    WindowUpdated,
)

from quiesce.dataplane.h2client import codec
from quiesce.dataplane.h2client.channel import CANCEL, Channel, Home
from quiesce.state.runtime import NO_COUNTS

if TYPE_CHECKING:
    from quiesce.state.registry import ServerRuntime

log = logging.getLogger("quiesce")

MAX_STREAMS = 0x3  # SETTINGS_MAX_CONCURRENT_STREAMS
REFUSED_STREAM = 0x7
STREAM_WINDOW = 1 << 20  # a stream's receive window (INITIAL_WINDOW_SIZE we announce)
CONNECTION_WINDOW = 16 << 20
LOW = 64 * 1024  # queued request body below which a paused client resumes (HIGH: pauses)


class LinkHome(Home, Protocol):
    """Where a link belongs (quiesce.dataplane.h2client.links.Links, importing this)."""

    def forget(self, link: Link) -> None: ...
    def starved(self, link: Link) -> None: ...


class Link(asyncio.Protocol):
    """One HTTP/2 connection to a server, carrying the streams of its channels."""

    def __init__(
        self,
        server: ServerRuntime,
        home: LinkHome,
        scheme: bytes,
        kw: dict[str, Any],
        timeout: float,
    ) -> None:
        self.server = server
        self.home = home
        self.scheme = scheme
        self.kw = kw  # how it was opened (pools.X.tls), for the next one
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.h2 = Connection(Role.CLIENT, Configuration(auto_window_update=False))
        self.channels: set[Channel] = set()
        self.streams: dict[int, Channel] = {}
        self.going = False  # GOAWAY sent or received: no new stream
        self.closed = False
        self.no_h2 = False  # a TLS server that did not choose h2 by ALPN
        self.starved = False  # the server said SETTINGS_MAX_CONCURRENT_STREAMS 0 (Links)
        self.flushing = False
        self.blocked = False
        self.paused: set[Channel] = set()
        # the server's first SETTINGS came (its limits known: no stream is sent before)
        self.ready: asyncio.Future[None] = self.loop.create_future()

    # asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            self.closed = self.no_h2 = True  # not one byte of HTTP/2 to it (Links._open)
            return
        h2 = self.h2
        h2.initiate_connection({Setting.ENABLE_PUSH: 0, Setting.INITIAL_WINDOW_SIZE: STREAM_WINDOW})
        h2.set_local_window_size(CONNECTION_WINDOW)
        self.transport.write(h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        h2 = self.h2
        try:
            h2.receive_data(data)
            events: list[Any] = h2.events()
        except NGH2Error as exc:
            log.warning(
                "pool %s: server %s sent bad HTTP/2 (%s): connection closed",
                self.server.pool,
                self.server.name,
                exc,
            )
            self._fail()
            return
        if events:
            self._dispatch(events)
        self.flush_soon()

    def _dispatch(self, events: list[Any]) -> None:
        h2 = self.h2
        touched: list[Channel] = []
        streams = self.streams
        goaway = None  # handled once the read's events are (libnghttp2's state is theirs)
        no_streams = False  # SETTINGS_MAX_CONCURRENT_STREAMS 0: the same
        for e in events:
            kind = type(e)
            if kind is DataReceived:
                ch = streams.get(e.stream_id)
                n = len(e.data)
                if n and (ch is None or ch.reading):
                    try:
                        h2.acknowledge_received_data(n, e.stream_id)
                    except NGH2Error:
                        pass  # over (a GOAWAY, then its last stream's end in this read)
                if ch is None:
                    continue
                ch.data(e.data, e.end_stream)
                if n and not ch.reading:
                    ch.unacked += n
                touched.append(ch)
                if e.end_stream:
                    streams.pop(e.stream_id, None)
            elif kind is ResponseReceived or kind is InformationalResponseReceived:
                ch = streams.get(e.stream_id)
                if ch is not None:
                    end = kind is ResponseReceived and e.end_stream
                    ch.response(e.headers, end, kind is InformationalResponseReceived)
                    touched.append(ch)
                    if end:
                        streams.pop(e.stream_id, None)
            elif kind is TrailersReceived:
                ch = streams.pop(e.stream_id, None)
                if ch is not None:
                    ch.trailers(e.headers)
                    touched.append(ch)
            elif kind is StreamReset or kind is StreamClosed:
                ch = streams.pop(e.stream_id, None)
                if ch is not None and not ch.ended:
                    if not ch.got and e.error_code == REFUSED_STREAM:
                        ch.refused()
                        continue
                    log.info(
                        "pool %s: server %s: stream %d ended with code %d",
                        self.server.pool,
                        self.server.name,
                        e.stream_id,
                        e.error_code,
                    )
                    ch.lost()
            elif kind is WindowUpdated:
                self._unpause()
            elif kind is SettingsReceived:
                if not self.ready.done():
                    self.ready.set_result(None)
                if e.settings.get(MAX_STREAMS) == 0:
                    no_streams = True
            elif kind is GoAwayReceived:
                self.going = True
                self.home.forget(self)
                goaway = e
            elif kind is ConnectionClosed:
                for ch in touched:  # the answers that came with it first (a GOAWAY's last)
                    if not ch.closing:
                        ch.deliver()
                if goaway is not None:
                    self._goaway(goaway.last_stream_id, goaway.error_code)
                self._fail()
                return
        for ch in touched:
            if not ch.closing:
                ch.deliver()
        if goaway is not None:
            self._goaway(goaway.last_stream_id, goaway.error_code)
        elif no_streams and not self.going:
            self.home.starved(self)

    def eof_received(self) -> bool | None:
        return False

    def _not_ready(self) -> None:
        ready = self.ready
        if not ready.done():
            ready.set_exception(ConnectionResetError("the server did not speak HTTP/2"))
            ready.exception()  # (retrieved: Links._open may be gone, by a timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._not_ready()
        self.closed = True
        self.going = True
        self.home.forget(self)
        self._end_channels()

    def pause_writing(self) -> None:
        self.blocked = True
        for ch in self.streams.values():
            if not ch.paused:
                ch.paused = True
                ch.proto.pause_writing()
                self.paused.add(ch)

    def resume_writing(self) -> None:
        self.blocked = False
        self._unpause()

    # what channels call --------------------------------------------------------------------

    def usable(self) -> bool:
        return not self.going and not self.closed

    def unsent(self) -> list[int]:
        """The streams libnghttp2 still holds unsent (behind the server's
        MAX_CONCURRENT_STREAMS): only those have no window yet."""
        h2 = self.h2
        out = []
        for sid in self.streams:
            try:
                h2.stream_remote_window_size(sid)
            except StreamUnavailableError:
                out.append(sid)
            except NGH2Error:
                pass
        return out

    def request(self, ch: Channel, head: list[tuple[bytes, bytes]], end: bool) -> int:
        """Open a stream for ``ch``'s request (-1: this link takes no new stream)."""
        if not self.usable():
            return -1
        try:
            sid = self.h2.send_request(head, end_stream=end)
        except NGH2Error:
            return -1
        self.streams[sid] = ch
        self.flush_soon()
        return sid

    def send_data(self, sid: int, data: bytes, end: bool) -> None:
        try:
            if data:
                self.h2.send_data(sid, data, end_stream=end)
            elif end:
                self.h2.end_stream(sid)
        except NGH2Error:
            ch = self.streams.pop(sid, None)
            if ch is not None:
                ch.lost()
            return

    def reset(self, sid: int, code: int) -> None:
        if not self.closed:
            try:
                self.h2.reset_stream(sid, code)
            except NGH2Error:
                pass
            self.flush_soon()

    def ack(self, sid: int, n: int) -> None:
        try:
            self.h2.acknowledge_received_data(n, sid)
        except NGH2Error:
            return
        self.flush_soon()

    def channel_gone(self, ch: Channel) -> None:
        self.channels.discard(ch)
        self.paused.discard(ch)
        if not self.channels and not self.closed:
            self.close()

    def count_grpc(self, ch: Channel, value: bytes) -> None:
        """A call's grpc-status: counted for the server, noted for the access log."""
        code = codec.grpc_code(value)
        assert code is not None
        counts = self.server.grpc_statuses
        if counts is NO_COUNTS:  # its first: counts of its own (issue 21)
            counts = self.server.grpc_statuses = {}
        counts[code] = counts.get(code, 0) + 1
        client = ch.proto.client
        req = None if client is None else client.current
        if req is not None:
            req.grpc = code

    def flush_soon(self) -> None:
        if not self.flushing and not self.closed:
            self.flushing = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flushing = False
        if self.closed:
            return
        h2 = self.h2
        data = h2.data_to_send()
        if data:
            self.transport.write(data)
            events = h2.events()  # (a stream libnghttp2 reset as it wrote: StreamClosed)
            if events:
                self._dispatch(events)
                if self.closed:
                    return
                self.flush_soon()
            if not h2.want_read and not h2.want_write:
                # libnghttp2 ended the connection: its GOAWAY went (a protocol error)
                log.warning(
                    "pool %s: server %s broke HTTP/2: connection closed",
                    self.server.pool,
                    self.server.name,
                )
                self._fail()
                return
        if self.paused and not self.blocked:
            self._unpause()

    def _unpause(self) -> None:
        if self.blocked or not self.paused:
            return
        h2 = self.h2
        for ch in list(self.paused):
            if not ch.sid or h2.queued_body_size(ch.sid) <= LOW:
                self.paused.discard(ch)
                ch.paused = False
                ch.proto.resume_writing()

    # ending ----------------------------------------------------------------------------------

    def close(self) -> None:
        """No channel left: GOAWAY NO_ERROR, then close."""
        if self.closed:
            return
        self.going = True
        self.home.forget(self)
        try:
            self.h2.send_goaway(0)
            data = self.h2.data_to_send()
        except NGH2Error:
            data = b""
        self.closed = True
        if data:
            self.transport.write(data)
        self.transport.close()

    def _goaway(self, last: int, code: int) -> None:
        """The server said GOAWAY: streams above ``last`` were not processed (RFC 9113 §6.8)
        and the ones libnghttp2 still held unsent (behind the server's stream limit) never
        left: both go on a new link whatever their method (not counted against
        ``MAX_RESENDS`` when the server processed some, ``last`` > 0); the others finish
        here; no new stream; idle channels close. One ``info`` line says how many moved.
        (Called after the other events of its read: libnghttp2 reports a stream's end after
        a GOAWAY that came behind it, and a stream it has closed looks unsent.)"""
        streams = self.streams
        above = [s for s in streams if s > last]
        held = [s for s in self.unsent() if s <= last]  # (a GOAWAY 2^31-1 first, say)
        for sid in held:
            self.reset(sid, CANCEL)  # (its HEADERS, held by libnghttp2, never leave)
        if above or held or code:
            log.info(
                "pool %s: server %s: GOAWAY (code %d, last stream %d): %d requests it did "
                "not process go on a new connection, %d in flight finish",
                self.server.pool,
                self.server.name,
                code,
                last,
                len(above) + len(held),
                len(streams) - len(above) - len(held),
            )
        for sid in above + held:
            ch = streams.pop(sid)
            if ch.got:
                ch.lost()
            else:
                ch.refused(counted=last == 0)
        for ch in list(self.channels):
            if ch.idle():
                ch.retire()  # never taken again

    def _fail(self) -> None:
        """A protocol error (ours to say, in the GOAWAY libnghttp2 queued) or the server's
        end: every stream is lost, the connection closed."""
        if self.closed:
            return
        self._not_ready()
        self.going = True
        self.home.forget(self)
        try:
            data = self.h2.data_to_send()
        except NGH2Error:
            data = b""
        if data:
            self.transport.write(data)
        self.closed = True
        self._end_channels()
        self.transport.close()

    def _end_channels(self) -> None:
        """The connection is over: a stream still under way is lost (a server's abort); a
        channel between requests is not (its answer came whole): closed if idle, else its
        next request is refused here and goes on a new link."""
        for ch in list(self.channels):
            if ch.sid:
                ch.lost()
            elif ch.idle():
                ch.retire()
        self.streams.clear()
