"""One HTTP/2 connection without I/O: the codec's state (libnghttp2, through the sans-IO
``ngh2`` binding), the guard in front of it, the response bytes each stream holds back (flow
control).

Theory of operation
-------------------
:meth:`Session.receive` gives the client's bytes to the :class:`~.guard.Guard` (floods,
GOAWAY) and then to ``ngh2``, and returns its events. What a stream answers goes through
:meth:`Session.headers` and :meth:`Session.data`: ``ngh2`` queues a stream's data and sends
it, when :meth:`output` is called, as far as both windows (the stream's and the connection's)
allow; the rest stays queued until a WINDOW_UPDATE. ``data`` returns what the stream holds
back (not yet sent); above ``HIGH`` its shell stops reading the server (back-pressure towards
the server), and :meth:`pump` (after each ``output``) names the streams that fell to ``LOW``
again. While the socket's own write buffer is full (``blocked``) ``output`` gives nothing: the
data stays queued with its stream, so what the proxy holds for one connection is bounded by
``HIGH`` a stream (plus one read).

The other way, a request body's bytes are acknowledged (WINDOW_UPDATE) only once they went
on to the server's connection unpaused (:meth:`ack`, called by the shell): a slow server
closes the client's window, a stream at a time (padding is acknowledged by ``ngh2`` itself).

A protocol error libnghttp2 finds in the client's bytes either raises (its input is refused:
:class:`~.guard.Calm` past one of its limits, :class:`~.guard.Broken` otherwise; the codec is
unusable after, ``dead``) or queues its own GOAWAY, after which :attr:`over` is true once that
was sent.

A stream's request is made from its header list by quiesce.dataplane.h2.request, and its
answer's HTTP/1.1 head made a header list again by :func:`response_headers` (or
quiesce._h2fast, quiesce.dataplane.h2.stream).
"""

from __future__ import annotations

from ngh2 import (
    Configuration,
    Connection,
    DenialOfServiceError,
    Event,
    NGH2Error,
    Role,
    Setting,
)

from quiesce.dataplane.h2.guard import PROTOCOL_ERROR, Broken, Calm, Guard, Limits

MAX_STREAMS = 100
CONN_WINDOW = 1 << 20  # the connection's receive window (the streams' stay 65,535)
HIGH = 256 * 1024  # a stream's response bytes held back before its server is paused
LOW = 64 * 1024

# Connection-specific fields (RFC 9113 §8.2.2): never sent in HTTP/2.
HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)


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
    """A stream with response bytes not yet sent (the windows were closed)."""

    __slots__ = ("mark", "since", "size")

    def __init__(self, size: int) -> None:
        self.size = size  # held at the last look
        self.mark = -1  # its size at the last stall check
        self.since = 0.0  # when it last moved


class Session:
    """One connection's protocol state (see the module docstring)."""

    __slots__ = ("blocked", "dead", "guard", "h2", "held", "last_id")

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
        config = Configuration(
            auto_window_update=False,  # (ack: a body's bytes once they went on)
            max_inbound_header_list_size=max_header_list,
            # the guard's limits are reached first (it sees every frame before libnghttp2),
            # so the client is told which and the connection's end is logged as ours
            max_continuations=limits.max_block_frames,
        )
        h2 = self.h2 = Connection(Role.SERVER, config)
        h2.initiate_connection(
            {
                Setting.MAX_CONCURRENT_STREAMS: max_streams,
                Setting.MAX_HEADER_LIST_SIZE: max_header_list,
                Setting.MAX_FRAME_SIZE: limits.max_frame,  # (the guard refuses longer)
            }
        )
        h2.set_local_window_size(CONN_WINDOW)
        self.held: dict[int, Out] = {}
        self.blocked = False  # the socket's write buffer is full: send nothing
        self.dead = False  # the codec refused the client's bytes: it is unusable
        self.last_id = 0  # the highest stream the client opened (for GOAWAY; the shell's)

    def receive(self, data: bytes, now: float) -> list[Event]:
        """The codec's events for the client's bytes; raises guard.Calm or guard.Broken
        (then the connection ends with the shell's own GOAWAY)."""
        data = self.guard.feed(data, now)
        if not data:
            return []
        h2 = self.h2
        try:
            h2.receive_data(data)
        except DenialOfServiceError as exc:
            self.dead = True
            raise Calm(str(exc)) from None
        except NGH2Error as exc:
            self.dead = True
            raise Broken(PROTOCOL_ERROR, str(exc)) from None
        return h2.events()

    def output(self, force: bool = False) -> bytes:
        """The frames to write (none while ``blocked``, unless ``force``: the connection's
        last frames)."""
        if self.dead or (self.blocked and not force):
            return b""
        try:
            return self.h2.data_to_send()
        except NGH2Error:  # (after the codec's own end)
            return b""

    @property
    def over(self) -> bool:
        """The codec ended the connection (its GOAWAY was in the last ``output``)."""
        return not self.dead and not self.h2.want_read and not self.h2.want_write

    def headers(self, sid: int, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        try:
            self.h2.send_response(sid, fields, end_stream=end)
        except NGH2Error:
            pass  # the stream is gone (the client reset it)

    def trailers(self, sid: int, fields: list[tuple[bytes, bytes]]) -> None:
        """A response's trailer fields (gRPC's ``grpc-status``): after its queued DATA, they
        end the stream."""
        try:
            self.h2.send_trailers(sid, fields)
        except NGH2Error:
            pass  # the stream is gone (the client reset it)

    def interim(self, sid: int, fields: list[tuple[bytes, bytes]]) -> None:
        """A 1xx answer (100 Continue, 103 Early Hints)."""
        try:
            self.h2.send_informational_response(sid, fields)
        except NGH2Error:
            pass

    def answer(self, sid: int, fields: list[tuple[bytes, bytes]], body: bytes) -> int:
        """A whole answer: its HEADERS and its body (ending the stream); returns the bytes
        the stream holds back, as :meth:`data`."""
        h2 = self.h2
        try:
            h2.send_response(sid, fields)
            h2.send_data(sid, body, end_stream=True)
        except NGH2Error:
            return 0  # the stream is gone (the client reset it)
        size = h2.queued_body_size(sid)
        if (
            size > LOW
            or self.blocked
            or size > h2.stream_remote_window_size(sid)
            or size > h2.remote_window_size
        ):
            self.held[sid] = Out(size)  # (a stream's first bytes: never held before)
        return size

    def data(self, sid: int, data: bytes, end: bool) -> int:
        """Queue ``data`` (and the end of the stream); returns the bytes the stream holds
        back (0: the stream is gone)."""
        h2 = self.h2
        try:
            h2.send_data(sid, data, end_stream=end)
        except NGH2Error:
            return 0
        size = h2.queued_body_size(sid)
        out = self.held.get(sid)
        if out is not None:
            out.size = size
        elif (
            size > LOW  # (above HIGH its server is paused: pump resumes it)
            or self.blocked
            or size > h2.stream_remote_window_size(sid)
            or size > h2.remote_window_size
        ):
            # (not followed: a small answer the windows let through at the next output)
            self.held[sid] = Out(size)
        return size

    def pump(self) -> list[int]:
        """After ``output``: the streams whose held bytes fell from above LOW to LOW or less
        (their servers may be read again); the streams that hold nothing are let go."""
        if self.blocked or not self.held:
            return []
        resumed = []
        queued = self.h2.queued_body_size
        held = self.held
        for sid, out in list(held.items()):
            size = queued(sid)  # (0 for a stream that is gone)
            if out.size > LOW >= size:
                resumed.append(sid)
            if size:
                out.size = size
            else:
                del held[sid]
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
        """``n`` bytes of a request body went on to the server: open the windows again
        (a closed stream's bytes still open the connection's window)."""
        if n and not self.dead:
            try:
                self.h2.acknowledge_received_data(n, sid)
            except (NGH2Error, ValueError):
                pass  # (more than it received: never from the shell)

    def ping(self, opaque: bytes) -> None:
        self.h2.ping(opaque)

    def reset(self, sid: int, code: int) -> None:
        self.held.pop(sid, None)
        if not self.dead:
            try:
                self.h2.reset_stream(sid, code)
            except NGH2Error:
                pass  # closed already
