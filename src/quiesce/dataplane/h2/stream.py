"""One HTTP/2 stream as one HTTP/1.1 exchange: a :class:`Stream` is a
:class:`~quiesce.dataplane.h1.client.ClientConnection` that carries a single request, whose
transport (:class:`StreamTransport`) is its stream on the HTTP/2 connection.

The stream starts its exchange with the request made from its header list
(quiesce.dataplane.h2.request: no HTTP/1.1 head written and parsed again) and passes its DATA
frames on as the request's body, so routing, rules, balancing, persistence, the queue, the
maintenance page, the connection table (per-stream accounting: a server in drain counts the
streams it serves, ``--force`` cuts them), retries, the keep-alive race, timeouts and the
access log are the HTTP/1.1 ones, not a copy. The request goes as keep-alive: a whole
answer takes the exchange's inline keep-alive end, and the stream ends with its answer
(:meth:`StreamTransport._done`). What the exchange answers, as HTTP/1.1 bytes, becomes
HEADERS and DATA frames: a whole Content-Length answer in one write at once, its head read
into a header list by quiesce._h2fast.answer (:func:`answer_fields` without it;
:meth:`StreamTransport._whole`), anything else through httptools (docs/dataplane.md,
"HTTP/2").
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

import httptools

from quiesce import _accel
from quiesce.dataplane.h1.access import answer_cut, phase
from quiesce.dataplane.h1.client import ClientConnection
from quiesce.dataplane.h1.exchange import C_OPEN, R_DONE, R_SENT, RQ_BODY, Request
from quiesce.dataplane.h2.session import HIGH, HOP, Session, response_headers

if TYPE_CHECKING:
    from quiesce.dataplane.context import ServiceContext
    from quiesce.dataplane.proxyproto import Header

CANCEL = 0x8
INTERNAL_ERROR = 0x2


def trailers_only(head: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An empty answer's HTTP/2 fields; for gRPC's trailers-only answer (grpc-status in the
    head) without the ``content-length: 0`` an h2 pool's HTTP/1.1 head had for HTTP/1.1
    clients (quiesce.dataplane.h2client.codec): grpcio would show it as trailing metadata."""
    for name, _ in head:
        if name == b"grpc-status":
            return [f for f in head if f[0] != b"content-length"]
    return head


def answer_fields(data: bytes) -> tuple[list[tuple[bytes, bytes]], int, bytes] | None:
    """The HTTP/2 header list of an HTTP/1.1 answer's head (the exchange's: its fields were
    parsed once already, each a ``name: value`` line), its Content-Length (-1: none) and the
    bytes after the head; None for an interim answer, a chunked one, a Content-Length not a
    number (the parser's then). quiesce._h2fast.answer is its C twin."""
    end = data.find(b"\r\n\r\n")
    if end < 12 or data[:9] != b"HTTP/1.1 ":
        return None
    code = data[9:12]
    if code[0] < 50 or not code.isdigit():  # (< b"2": interim)
        return None
    fields = [(b":status", code)]
    append = fields.append
    hop = HOP
    length = -1
    lines = data[:end].split(b"\r\n")
    del lines[0]
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name:
            return None
        name = name.lower()
        if name in hop:
            if name == b"transfer-encoding":
                return None
            continue
        value = value.strip(b" \t")
        if name == b"content-length":
            if not value.isdigit() or len(value) > 15:
                return None
            length = int(value)
        append((name, value))
    return fields, length, data[end + 4 :]


# quiesce._h2fast's answer, or None (then answer_fields; tests switch it: tests/support/paths)
_fast_answer = None if _accel.h2fast is None else _accel.h2fast.answer


class Carrier(Protocol):
    """The HTTP/2 connection, as its streams see it (quiesce.dataplane.h2.conn, which
    imports this module)."""

    session: Session
    transport: asyncio.Transport
    proxied: Header | None
    fwd: bytes
    peer: str
    peer_b: bytes
    port: int

    def flush_soon(self) -> None: ...
    def ack(self, sid: int, n: int) -> None: ...
    def stream_closed(self, tr: Any, abort: bool) -> None: ...
    def stream_gone(self, st: Stream) -> None: ...


class StreamTransport:
    """The transport a :class:`Stream` writes its HTTP/1.1 answer to: parsed into frames on
    its HTTP/2 stream; reading paused holds back the stream's WINDOW_UPDATEs."""

    __slots__ = (
        "body",
        "closing",
        "conn",
        "ended",
        "fields",
        "head_only",
        "interim",
        "parser",
        "reading",
        "sid",
        "stream",
        "trailers",
        "unacked",
    )

    def __init__(self, conn: Carrier, stream: Stream, sid: int) -> None:
        self.conn = conn
        self.stream: Stream | None = stream  # (None once the stream is gone: no cycle)
        self.sid = sid
        # made when the answer does not come whole in one write (most do: _whole); its
        # state (fields, body, interim, trailers) is set with it, never read before
        self.parser: httptools.HttpResponseParser | None = None
        self.head_only = False
        self.ended = False  # the response's end was handed to the session
        self.closing = False
        self.reading = True
        self.unacked = 0  # request body bytes not acknowledged while reading is paused

    # what ClientConnection calls ------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closing or self.ended:
            return
        parser = self.parser
        if parser is None:
            if self._whole(data):
                return
            parser = self.parser = httptools.HttpResponseParser(self)
            self.fields: list[tuple[bytes, bytes]] = []
            self.body: list[bytes] = []
            self.interim = False
            # a chunked answer's trailer fields (gRPC's grpc-status); None while a head is read
            self.trailers: list[tuple[bytes, bytes]] | None = None
        try:
            parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()  # (never: the exchange writes well-formed HTTP/1.1)
            return
        if self.body and not self.closing:
            body = self.body
            self.body = []
            self._send(body[0] if len(body) == 1 else b"".join(body), False)

    def _whole(self, data: bytes) -> bool:
        """A whole final answer with its Content-Length body in one write (the exchange's
        usual write: head and body at once), framed without a parser; False (nothing done)
        for anything else: an interim answer, a chunked or partial one."""
        fast = _fast_answer
        got = fast(data) if fast is not None else answer_fields(data)
        if got is None:
            return False
        fields, length, body = got
        code = fields[0][1]
        empty = self.head_only or length == 0 or code == b"204" or code == b"304"
        if not empty and length != len(body):
            return False
        if length == 0:
            fields = trailers_only(fields)
        conn = self.conn
        if empty:
            conn.session.headers(self.sid, fields, True)
        elif conn.session.answer(self.sid, fields, body) > HIGH:
            st = self.stream
            if st is not None and not st.client_blocked:
                st.pause_writing()  # stop reading the server
        conn.flush_soon()
        # (_done, inline)
        self.ended = True
        if not self.closing:
            self.closing = True
            conn.stream_closed(self, False)
        return True

    def writelines(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.conn.stream_closed(self, not self.ended)

    def abort(self) -> None:
        if not self.closing:
            self.closing = True
            self.conn.stream_closed(self, True)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        if self.unacked:
            n = self.unacked
            self.unacked = 0
            self.conn.ack(self.sid, n)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return None  # not the stream's alone (close_at_boundary must not peek it)
        return self.conn.transport.get_extra_info(name, default)

    # httptools callbacks (the exchange's answer) ----------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.trailers is None:
            self.fields.append((name, value))
        else:  # after the head: the trailer section (last_chunk left out what is not one)
            self.trailers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()  # type: ignore[union-attr]
        fields = self.fields
        self.fields = []
        session = self.conn.session
        if status < 200:
            self.interim = True
            session.interim(self.sid, response_headers(status, fields))
        else:
            self.interim = False
            # Content-Length: 0 ends the stream with its HEADERS (gRPC's trailers-only answer
            # comes so from an h2 pool: quiesce.dataplane.h2client.codec)
            end = (
                self.head_only
                or status == 204
                or status == 304
                or (b"Content-Length", b"0") in fields
                or (b"content-length", b"0") in fields
            )
            head = response_headers(status, fields)
            session.headers(self.sid, trailers_only(head) if end else head, end)
            if end:
                self._done()
            else:
                self.trailers = []
        self.conn.flush_soon()

    def on_body(self, body: bytes) -> None:
        if not self.ended:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if not self.ended:
            body = self.body
            self.body = []
            trailers = self.trailers
            if trailers:
                self._send(b"".join(body), False)
                self.conn.session.trailers(self.sid, trailers)  # (after the DATA: ngh2)
            else:
                self._send(b"".join(body), True)
            self._done()

    def _done(self) -> None:
        """The answer's end: the stream ends with it, next turn (the exchange was asked for
        keep-alive: by then it is idle, or it closed the transport itself, a no-op then)."""
        self.ended = True
        if not self.closing:
            self.closing = True
            self.conn.stream_closed(self, False)

    def _send(self, data: bytes, end: bool) -> None:
        conn = self.conn
        held = conn.session.data(self.sid, data, end)
        st = self.stream
        if held > HIGH and st is not None and not st.client_blocked:
            st.pause_writing()  # stop reading the server
        conn.flush_soon()


class Stream(ClientConnection):
    """One stream's exchange (see the module docstring); never one of the service's
    connections (its HTTP/2 connection is)."""

    __slots__ = ("conn", "gone", "sid")

    def __init__(self, ctx: ServiceContext, conn: Carrier, sid: int) -> None:
        super().__init__(ctx)
        self.parser = None  # (never a head to parse: start() has its request; no cycle)
        self.conn = conn
        self.sid = sid
        self.gone = False  # connection_lost ran (it may be asked twice: a reset, the end)
        self.proxied = conn.proxied
        self.fwd = conn.fwd
        # (take_transport, inline: the client's address is its connection's)
        self.transport = StreamTransport(conn, self, sid)  # type: ignore[assignment]
        self.peer = conn.peer
        self.peer_b = conn.peer_b
        self.port = conn.port

    def take_transport(self, transport: asyncio.BaseTransport) -> None:
        """The client's address is its connection's (no getpeername a stream)."""
        self.transport = transport  # type: ignore[assignment]
        conn = self.conn
        self.peer = conn.peer
        self.peer_b = conn.peer_b
        self.port = conn.port

    def start(self, req: Request) -> None:
        """Serve the stream's request (quiesce.dataplane.h2.request): what the HTTP/1.1
        parser's head callbacks do for a head, without one."""
        self.transport.head_only = req.head_only  # type: ignore[attr-defined]
        self.heads = 1
        self.begin_at = -1.0
        self.got_any = True
        self.req_at = self.last_rx = now = self.loop.time()
        if req.state is RQ_BODY:
            req.body_since = now
            self.parsing = req  # its DATA frames: body()
            self.head_left = -1
        self._start(req)

    def body(self, data: bytes) -> None:
        """A DATA frame's bytes (the request's body, as the parser's on_body has them)."""
        if not self.closed:
            self.rx += len(data)
            self.last_rx = self.loop.time()
            self.on_body(data)

    def body_end(self) -> None:
        """END_STREAM: the request's body is whole (the parser's on_message_complete)."""
        if self.parsing is not None and not self.closed:
            self.on_message_complete()

    def uncount(self) -> None:
        pass  # never counted

    def connection_lost(self, exc: Exception | None) -> None:
        if self.gone:
            return
        self.gone = True
        if (
            self.current is None
            and self.up is None
            and self.server is None
            and self.connecting is None
            and self.timer is None
            and self.state is C_OPEN
        ):
            # answered (the usual end: nothing in flight, nothing to log or to let go of),
            # what ClientConnection.connection_lost comes to then
            self.closed = True
            if self.rx or self.tx:
                self.fold(None)
            idle = self.idle_to
            if idle is not None:
                self.idle_to = None
                self.ctx.table.forget_idle(idle, self)
        else:
            super().connection_lost(exc)
        self.conn.stream_gone(self)
        # The stream and its transport referred to each other: without the cycle both are
        # freed now by their counts, not left for the cyclic GC (issue 16: ~5 µs a request).
        self.transport.stream = None  # type: ignore[attr-defined]

    def _linger(self) -> None:
        self._close()  # nothing to read and drop: the stream ends

    def check(self, now: float) -> None:
        if self.current is not None and not self.closed:
            super().check(now)

    def parkable(self) -> bool:
        return False

    def close_at_boundary(self, force: bool = False) -> None:
        """The server is being drained: this stream ends with its response (which it does
        anyway); one with no request yet ends now."""
        if self.closed:
            return
        if self.current is None:
            self._close()
            return
        self.boundary_close = True

    def cut(self, why: str = "", answer: bool = True) -> None:
        """``--force``, a drain deadline (``why``, logged ``KH``, ``DH``...): a request whose
        response has not started is answered ``503`` with ``retry-after`` and END_STREAM, as
        over HTTP/1.1 (access.answer_cut); one whose response is under way is reset
        (RST_STREAM CANCEL), its server connection aborted. The HTTP/2 connection and its
        other streams go on. ``answer`` False: the connection itself is going (reset)."""
        if self.closed:
            return
        req = self.current
        if (
            answer
            and why
            and req is not None
            and self.resp is not R_SENT
            and self.resp is not R_DONE
        ):
            answer_cut(self, req, why)
            return
        if why and not self.term:
            self.term = why + phase(self)
        self.closed = True
        up = self.up
        if up is not None:
            self.up = None
            up.client = None  # (its loss is no server abort: the term stays ``why``)
            up.abort()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self.transport.abort()
