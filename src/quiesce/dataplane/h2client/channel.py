"""The transport of one HTTP/1.1 exchange's :class:`~quiesce.dataplane.h1.upstream.Upstream`
to an h2 pool's server (:class:`Channel`): what the exchange writes becomes a stream of the
server's link (quiesce.dataplane.h2client.link, which imports this module: ``Carrier`` is
what a channel needs of it), what the stream answers HTTP/1.1 bytes for the Upstream. The
link module's docstring has the theory of operation (resends, flow control)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import httptools
from ngh2 import Connection

from quiesce.dataplane.h2client import codec

PROTOCOL_ERROR = 0x1
CANCEL = 0x8
RESEND_LIMIT = 64 * 1024  # request body held for a resend of a refused stream
MAX_RESENDS = 3  # times a refused stream is sent again
HIGH = 256 * 1024  # request body bytes queued on a stream before the client is paused

Proto = Any  # the h1 Upstream (this package does not import the HTTP/1.1 layer back)


class Home(Protocol):
    """Where a refused stream is sent again (quiesce.dataplane.h2client.links.Links)."""

    def resend(self, ch: Channel) -> None: ...


class Carrier(Protocol):
    """What a channel needs of its link (quiesce.dataplane.h2client.link.Link)."""

    h2: Connection
    loop: asyncio.AbstractEventLoop
    scheme: bytes
    transport: asyncio.Transport
    channels: set[Channel]
    paused: set[Channel]
    streams: dict[int, Channel]
    going: bool
    closed: bool

    @property
    def home(self) -> Home: ...
    def request(self, ch: Channel, head: list[tuple[bytes, bytes]], end: bool) -> int: ...
    def send_data(self, sid: int, data: bytes, end: bool) -> None: ...
    def reset(self, sid: int, code: int) -> None: ...
    def ack(self, sid: int, n: int) -> None: ...
    def channel_gone(self, ch: Channel) -> None: ...
    def count_grpc(self, ch: Channel, value: bytes) -> None: ...
    def flush_soon(self) -> None: ...
    def close(self) -> None: ...


class Channel:
    """The transport of one :class:`~quiesce.dataplane.h1.upstream.Upstream` of an h2 pool:
    one request at a time, each on a new stream of ``link``."""

    __slots__ = (
        "chunked",
        "closing",
        "ended",
        "fields",
        "got",
        "head",
        "head_only",
        "link",
        "method",
        "moving",
        "out",
        "parser",
        "paused",
        "proto",
        "reading",
        "req",
        "req_end",
        "resends",
        "sent",
        "sid",
        "unacked",
        "unprocessed",
        "url",
    )

    def __init__(self, link: Carrier, proto: Proto) -> None:
        self.link = link
        self.proto = proto
        self.parser = httptools.HttpRequestParser(self)
        self.sid = 0  # the stream of the request under way (0: none)
        # the request was refused unprocessed and could not be sent again to its server: to
        # the exchange, a refused connect (retried on another server: h1.retry.after_lost)
        self.unprocessed = False
        self.head: list[tuple[bytes, bytes]] | None = None  # a request head not yet sent
        self.fields: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.method = b""
        self.head_only = False
        self.got = False  # the stream answered something (its response has begun)
        self.chunked = False  # the response's body is chunked for the Upstream
        self.ended = False  # the response ended (END_STREAM)
        self.out: list[bytes] = []  # HTTP/1.1 bytes for the Upstream, given once a read
        self.closing = False
        self.reading = True
        self.paused = False  # the client was paused: too much request body queued
        self.unacked = 0
        # the request under way, held for a resend while the server may refuse its stream:
        # its header list, its body as sent (None: past RESEND_LIMIT), whether it ended
        self.req: list[tuple[bytes, bytes]] = []
        self.sent: list[bytes] | None = None
        self.req_end = False
        self.moving = False  # being resent: on its way to a (new) link
        self.resends = 0

    # what the Upstream and the exchange call (an asyncio.Transport's methods) -------------

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # (sent as a plain request: no extended CONNECT to h2 servers)
        except httptools.HttpParserError:
            self.abort()
            return
        if self.head is not None:
            self._open(False)  # its body follows
        link = self.link
        if self.sid and not self.paused and link.h2.queued_body_size(self.sid) > HIGH:
            self.paused = True
            self.proto.pause_writing()
        link.flush_soon()

    def writelines(self, data: list[bytes] | tuple[bytes, ...]) -> None:
        self.write(b"".join(data))

    def close(self) -> None:
        self._gone(False)

    def abort(self) -> None:
        self._gone(True)

    def _gone(self, abort: bool) -> None:
        if self.closing:
            return
        self.closing = True
        link = self.link
        if self.sid:
            if not self.ended or abort:
                link.reset(self.sid, CANCEL)
            link.streams.pop(self.sid, None)
            self.sid = 0
        link.channel_gone(self)
        link.loop.call_soon(self.proto.connection_lost, None)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        if self.unacked:
            n = self.unacked
            self.unacked = 0
            if self.sid:
                self.link.ack(self.sid, n)

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return None  # the link's, not this channel's
        return self.link.transport.get_extra_info(name, default)

    def set_protocol(self, protocol: Any) -> None:
        self.proto = protocol

    def get_protocol(self) -> Any:
        return self.proto

    # httptools callbacks: the request the exchange wrote ---------------------------------

    def on_message_begin(self) -> None:
        self.fields = []
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.method = self.parser.get_method()
        self.head_only = self.method == b"HEAD"
        self.head = codec.request_headers(self.method, self.url, self.fields, self.link.scheme)
        self.fields = []

    def on_body(self, body: bytes) -> None:
        if self.head is not None:
            self._open(False)
        sent = self.sent
        if self.moving:
            assert sent is not None
            sent.append(body)  # (sent once the stream is open again)
            return
        if self.sid:
            self.link.send_data(self.sid, body, False)
            if sent is not None:
                sent.append(body)
                if len(sent) > 64 or sum(map(len, sent)) > RESEND_LIMIT:
                    self.sent = None

    def on_message_complete(self) -> None:
        if self.head is not None:
            self._open(True)
            return
        self.req_end = True
        if self.sid and not self.moving:
            self.link.send_data(self.sid, b"", True)

    def _open(self, end: bool) -> None:
        head = self.head
        assert head is not None
        self.head = None
        self.got = self.ended = self.unprocessed = False
        self.resends = 0
        self.req = head
        self.sent = []
        self.req_end = end
        sid = self.link.request(self, head, end)
        if sid < 0:  # the link is going away or gone: the request never left
            self.refused()
            return
        self.sid = sid

    def refused(self, counted: bool = True) -> None:
        """The server refused the stream (REFUSED_STREAM, or above its GOAWAY's last stream
        id: RFC 9113 §8.7, not processed), or it never left: sent again on the server's live
        link (or a new one), up to ``MAX_RESENDS`` times (``counted``: not when its link's
        server made progress before its GOAWAY, nor for one libnghttp2 never sent) when the
        whole request is still held; else, to the exchange, a connection lost before any
        byte (the keep-alive race's resend, the pool's retries). (A server may refuse again:
        it may count a stream until its handler is done, after the answer that told us the
        stream ended.)"""
        if self.closing:
            return
        link = self.link
        self.sid = 0
        if self.sent is None or self.resends >= MAX_RESENDS:
            self.unprocessed = True
            link.loop.call_soon(self.lost)
            return
        if counted:
            self.resends += 1
        self.moving = True
        link.channels.discard(self)
        link.paused.discard(self)
        link.home.resend(self)
        if not link.channels and link.going and not link.closed:
            link.close()  # (a usable one is where the resend goes)

    def moved(self, link: Carrier) -> None:
        """Resent on ``link`` (Links.resend): the request from its start."""
        self.moving = False
        self.link = link
        link.channels.add(self)
        sent = self.sent or []
        sid = link.request(self, self.req, self.req_end and not sent)
        if sid < 0:
            self.refused()
            return
        self.sid = sid
        for i, body in enumerate(sent):
            link.send_data(sid, body, self.req_end and i == len(sent) - 1)

    # the stream's events (the link calls) --------------------------------------------------

    def response(self, headers: tuple[tuple[bytes, bytes], ...], end: bool, interim: bool) -> None:
        try:
            _, head, chunked, grpc = codec.response_head(headers, end, self.head_only)
        except ValueError:
            self.link.reset(self.sid, PROTOCOL_ERROR)
            self.lost()
            return
        if not interim:
            self.got = True
            self.chunked = chunked
        self.out.append(head)
        if grpc is not None and end:
            self.link.count_grpc(self, grpc)
        if end:
            self.ended = True

    def data(self, data: bytes, end: bool) -> None:
        if self.chunked:
            if data:
                self.out.append(codec.chunk(data))
            if end:
                self.out.append(codec.LAST_CHUNK)
        elif data:
            self.out.append(data)
        if end:
            self.ended = True

    def trailers(self, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        section, grpc = codec.trailer_section(headers)
        if self.chunked:
            self.out.append(section)
        if grpc is not None:
            self.link.count_grpc(self, grpc)
        self.ended = True

    def deliver(self) -> None:
        """Give the Upstream what this read brought (one call: its fast path can take a
        whole small response)."""
        out = self.out
        if not out:
            return
        self.out = []
        if self.ended:
            self.sid = 0  # the stream is over: the next request opens another
            if self.link.going:  # (GOAWAY, no stream left: closed once idle, not pooled)
                self.link.loop.call_soon(self._drop)
        self.proto.data_received(out[0] if len(out) == 1 else b"".join(out))

    def _drop(self) -> None:
        if self.idle():
            self.retire()  # (unless taken meanwhile: refused there, it went to a new link)

    def idle(self) -> bool:
        """In the keep-alive pool: it carried a request and no exchange holds it. (A new
        channel has no exchange until the one that asked for it writes, a turn later: on a
        link gone away by then, its request is refused there and goes on a new link.)"""
        return not self.sid and bool(self.req) and self.proto.client is None

    def retire(self) -> None:
        """An idle channel its link closes (going away): its Upstream learns it now, not a
        turn later, so it leaves the keep-alive pool at once (a request that took it in
        between wrote to a closed channel: 502 or 504)."""
        if self.closing:
            return
        self.closing = True
        self.link.channel_gone(self)
        self.proto.connection_lost(None)

    def lost(self) -> None:
        """The stream (or the link) ended before its response did: to the exchange, a lost
        connection (``got``: after response bytes; else before any, the keep-alive race's
        resend or the pool's retries)."""
        if self.closing:
            return
        self.deliver()
        self.moving = False
        self.closing = True
        self.sid = 0
        self.link.channel_gone(self)
        self.proto.connection_lost(None)
