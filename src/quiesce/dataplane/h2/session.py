"""One HTTP/2 connection without I/O: the ``h2`` library's state, the guard in front of it,
the response bytes each stream may send (flow control), and the translation of a request's
header list into the HTTP/1.1 head the exchange machine reads.

Theory of operation
-------------------
:meth:`Session.receive` gives the client's bytes to the :class:`~.guard.Guard` (floods,
GOAWAY) and then to ``h2``, and returns ``h2``'s events. What a stream answers goes through
:meth:`Session.headers` and :meth:`Session.data`: a stream's data is sent as far as both
windows (the stream's and the connection's) allow and the rest is kept in the stream's
:class:`Out` until a WINDOW_UPDATE (:meth:`Session.pump`). ``data`` returns what the stream
holds back; above ``HIGH`` its shell stops reading the server (back-pressure towards the
server), and :meth:`pump` names the streams that fell to ``LOW`` again. While the socket's
own write buffer is full (``blocked``) nothing is sent: the data stays with its stream, so
what the proxy holds for one connection is bounded by ``HIGH`` a stream (plus one read).

The other way, a request body's bytes are acknowledged (WINDOW_UPDATE) only once they went
on to the server's connection unpaused (:meth:`ack`, called by the shell): a slow server
closes the client's window, a stream at a time.

:func:`request_head` turns a request's header list into an HTTP/1.1 head
(``Connection: close``: the exchange ends with its stream), refusing what RFC 9113 §8.1.1
calls malformed (a stream error, PROTOCOL_ERROR).
"""

from __future__ import annotations

import re
from collections import deque

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import Event
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings

from quiesce.dataplane.h2.guard import Guard, Limits

MAX_STREAMS = 100
CONN_WINDOW = 1 << 20  # the connection's receive window (the streams' stay 65,535)
HIGH = 256 * 1024  # a stream's response bytes held back before its server is paused
LOW = 64 * 1024

# Connection-specific fields (RFC 9113 §8.2.2): never sent in HTTP/2.
HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_PATH = re.compile(rb"[\x00-\x20\x7f]")
_PSEUDO = {b":method": 1, b":path": 2, b":authority": 4, b":scheme": 8}  # (:protocol: no)


class Malformed(Exception):
    """A request RFC 9113 §8.1.1 calls malformed: its stream is reset (PROTOCOL_ERROR)."""


def request_head(headers: list[tuple[bytes, bytes]], end_stream: bool) -> tuple[bytes, bool]:
    """The HTTP/1.1 head of a request's header list, and whether its body is sent chunked
    (a body without content-length: the stream's DATA frames become chunks)."""
    method = path = authority = host = length = None
    lines: list[bytes] = []
    cookies: list[bytes] = []
    names: list[bytes] = []
    values: list[bytes] = []
    pseudo = 0
    for name, value in headers:
        values.append(value)
        if name[:1] == b":":
            bit = _PSEUDO.get(name, 0)
            if names or not bit or pseudo & bit:
                raise Malformed(f"pseudo-header {name!r} unknown, repeated or after a field")
            pseudo |= bit
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue
        names.append(name)
        if name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            host = value
        elif name in HOP:
            if name != b"te" or value != b"trailers":
                raise Malformed(f"connection-specific field {name!r}")
        else:
            if name == b"content-length":
                length = value
            lines.append(name + b": " + value)
    if method is None or not path or _TOKEN.fullmatch(method) is None:
        raise Malformed("no :method or :path")
    if method == b"CONNECT":
        raise Malformed("CONNECT is not supported")
    if _BAD_PATH.search(path) or (path[:1] != b"/" and path != b"*"):
        raise Malformed("bad :path")
    if path == b"*" and method != b"OPTIONS":
        raise Malformed(":path * with a method other than OPTIONS")  # RFC 9113 §8.3.1
    if _BAD_VALUE.search(b"".join(values)) or _BAD_NAME.search(b"".join(names)):
        raise Malformed("a forbidden character in a field")
    host = authority if authority is not None else host
    if host is not None:
        lines.insert(0, b"host: " + host)
    if cookies:
        lines.append(b"cookie: " + b"; ".join(cookies))  # RFC 9113 §8.2.3
    chunked = not end_stream and length is None
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    lines.append(b"connection: close")
    return method + b" " + path + b" HTTP/1.1\r\n" + b"\r\n".join(lines) + b"\r\n\r\n", chunked


def response_headers(status: int, fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An HTTP/1.1 response head's fields for HTTP/2: names in lower case, the
    connection-specific ones dropped."""
    out = [(b":status", b"%d" % status)]
    for name, value in fields:
        name = name.lower()
        if name not in HOP:
            out.append((name, value))
    return out


class Out:
    """A stream's response bytes not yet sent (the windows were closed)."""

    __slots__ = ("chunks", "end", "mark", "since", "size")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.end = False
        self.mark = -1  # its size at the last look (stalled)
        self.since = 0.0  # when it last moved


class Session:
    """One connection's protocol state (see the module docstring)."""

    __slots__ = ("blocked", "guard", "h2", "held", "last_id")

    def __init__(
        self,
        now: float,
        *,
        limits: Limits | None = None,
        max_header_list: int = 65536,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        limits = limits or Limits(max_block=max_header_list)
        self.guard = Guard(limits, now)
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            # request_head checks what a request may hold (RFC 9113 §8.2, §8.3.1) and joins
            # cookies; response_headers makes the answers right: h2's own passes both ways,
            # a third of its time per request, are left out
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        h2 = self.h2 = H2Connection(config)
        h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list,
                SettingCodes.MAX_FRAME_SIZE: limits.max_frame,  # (the guard refuses longer)
                SettingCodes.ENABLE_PUSH: 0,
            },
        )
        # h2 moves its HPACK decoder's limit to a new MAX_HEADER_LIST_SIZE only when the
        # client acknowledges a change; initial values are no change, so it would keep its
        # 65,536 default while announcing ours: set it to what is announced
        h2.decoder.max_header_list_size = max_header_list
        h2.initiate_connection()
        h2.increment_flow_control_window(CONN_WINDOW - 65535)
        self.held: dict[int, Out] = {}
        self.blocked = False  # the socket's write buffer is full: send nothing
        self.last_id = 0  # the highest stream the client opened (for GOAWAY)

    def receive(self, data: bytes, now: float) -> list[Event]:
        """``h2``'s events for the client's bytes; raises guard.Calm, guard.Broken or h2's
        ProtocolError (then ``output`` holds h2's GOAWAY)."""
        data = self.guard.feed(data, now)
        if not data:
            return []
        events = self.h2.receive_data(data)
        self.last_id = self.h2.highest_inbound_stream_id
        return events

    def output(self) -> bytes:
        return self.h2.data_to_send()

    def headers(self, sid: int, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        self.h2.send_headers(sid, fields, end_stream=end)

    def data(self, sid: int, data: bytes, end: bool) -> int:
        """Send ``data`` (and the end of the stream) as far as the windows allow; returns the
        bytes the stream holds back."""
        out = self.held.get(sid)
        if out is None:
            if not self.blocked:
                sent = self._send(sid, data, end)
                if sent < 0 or sent == len(data):
                    return 0  # all sent (with the end when ``end``), or the stream is gone
                data = data[sent:]
            out = self.held[sid] = Out()
        if data:
            out.chunks.append(data)
            out.size += len(data)
        out.end = out.end or end
        return out.size

    def _send(self, sid: int, data: bytes, end: bool) -> int:
        """Send what the windows allow of ``data``, ending the stream with its last byte
        when ``end``; the bytes sent (-1: the stream is closed)."""
        h2 = self.h2
        try:
            window = h2.local_flow_control_window(sid)
        except StreamClosedError:
            return -1
        n = len(data)
        if n <= window and n <= h2.max_outbound_frame_size:
            if n or end:
                h2.send_data(sid, data, end_stream=end)
            return n
        size = h2.max_outbound_frame_size
        sent = 0
        view = memoryview(data)
        while sent < n and window > 0:
            take = min(window, size, n - sent)
            last = end and sent + take == n
            h2.send_data(sid, bytes(view[sent : sent + take]), end_stream=last)
            sent += take
            window -= take
        return sent

    def pump(self) -> list[int]:
        """Send what the streams hold as far as the windows now allow; the streams whose
        held bytes fell to LOW (their servers may be read again)."""
        if self.blocked or not self.held:
            return []
        resumed = []
        for sid, out in list(self.held.items()):
            before = out.size
            chunks = out.chunks
            while chunks:
                chunk = chunks[0]
                last = out.end and len(chunks) == 1
                sent = self._send(sid, chunk, last)
                if sent < 0:  # the stream is gone: so is what it held
                    chunks.clear()
                    out.size = 0
                    out.end = False
                    break
                out.size -= sent
                if sent < len(chunk):
                    chunks[0] = chunk[sent:]
                    break
                chunks.popleft()
                if last:
                    out.end = False  # sent with the last chunk
            if not chunks and out.end:
                self._send(sid, b"", True)
                out.end = False
            if not chunks:
                del self.held[sid]
            if before > LOW >= out.size:
                resumed.append(sid)
        return resumed

    def stalled(self, now: float, limit: float) -> list[int]:
        """The streams whose held bytes have not moved for ``limit`` seconds (a client that
        keeps a window at zero, or does not read its socket): looked at every sweep."""
        out = []
        for sid, held in self.held.items():
            if held.size != held.mark:
                held.mark = held.size
                held.since = now
            elif now - held.since >= limit:
                out.append(sid)
        return out

    def holding(self, sid: int) -> int:
        out = self.held.get(sid)
        return 0 if out is None else out.size

    def forget(self, sid: int) -> None:
        self.held.pop(sid, None)

    def ack(self, sid: int, n: int) -> None:
        """``n`` bytes of a request body went on to the server: open the windows again."""
        if n:  # (a closed stream's bytes still open the connection's window)
            self.h2.acknowledge_received_data(n, sid)

    def reset(self, sid: int, code: int) -> None:
        self.held.pop(sid, None)
        try:
            self.h2.reset_stream(sid, code)
        except ProtocolError:
            pass  # closed already (its end was sent, the client reset it, or h2's GOAWAY went)
