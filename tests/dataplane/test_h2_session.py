"""The HTTP/2 front end without sockets (quiesce.dataplane.h2.guard and .session): the
guard's buckets on a fake clock, GOAWAY taken out of the byte stream wherever reads split it,
the request head an HTTP/2 header list becomes, flow control with held bytes both ways, and
how the codec's (libnghttp2's) own limits end a connection."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import ngh2
import pytest

from quiesce.dataplane.h2.guard import (
    ENHANCE_YOUR_CALM,
    FRAME_SIZE_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    Broken,
    Calm,
    Guard,
    Limits,
    goaway_frame,
)
from quiesce.dataplane.h2.request import Malformed, stream_request
from quiesce.dataplane.h2.session import HIGH, LOW, Session
from quiesce.dataplane.h2.stream import StreamTransport

pytestmark = pytest.mark.one_path


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


RST = frame(3, 0, 1, b"\0\0\0\x08")
PING = frame(6, 0, 0, b"12345678")


def test_bytes_pass_unchanged_and_resets_are_rate_limited() -> None:
    g = Guard(Limits(reset_burst=10, reset_rate=2.0), now=0.0)
    data = PREFACE + frame(4, 0, 0) + RST * 10
    assert g.feed(data, 0.0) == data
    with pytest.raises(Calm, match="rapid reset"):
        g.feed(RST, 0.0)
    g = Guard(Limits(reset_burst=10, reset_rate=2.0), now=0.0, preface=False)
    g.feed(RST * 10, 0.0)
    assert g.feed(RST * 2, 1.0) == RST * 2  # two a second come back
    with pytest.raises(Calm):
        g.feed(RST, 1.0)


def test_pings_and_settings_share_a_bucket_acks_are_free() -> None:
    g = Guard(Limits(control_burst=5, control_rate=1.0), now=0.0, preface=False)
    g.feed(frame(6, 1, 0, b"12345678") * 50, 0.0)  # PING ACKs
    g.feed(PING * 3 + frame(4, 0, 0) * 2, 0.0)
    with pytest.raises(Calm, match="SETTINGS/PING"):
        g.feed(PING, 0.0)


def test_continuation_flood() -> None:
    g = Guard(Limits(max_block=1000, max_block_frames=4), now=0.0, preface=False)
    g.feed(frame(1, 0, 1, b"x" * 100) + frame(9, 0, 1, b"x" * 100), 0.0)
    g.feed(frame(9, 4, 1, b"x" * 100), 0.0)  # END_HEADERS: the block is done
    g.feed(frame(1, 0, 3, b"x" * 100), 0.0)
    with pytest.raises(Calm, match="CONTINUATION flood"):
        g.feed(frame(9, 0, 3, b"x" * 1000), 0.0)
    g = Guard(Limits(max_block=10**6, max_block_frames=4), now=0.0, preface=False)
    g.feed(frame(1, 0, 1, b"x"), 0.0)
    with pytest.raises(Calm):
        g.feed(frame(9, 0, 1, b"x") * 4, 0.0)


@pytest.mark.parametrize("cut", range(1, 40))
def test_goaway_is_taken_out_wherever_the_reads_split(cut: int) -> None:
    before, after = PING, frame(0, 1, 1, b"body")
    data = before + goaway_frame(7, ENHANCE_YOUR_CALM, b"bye") + after
    g = Guard(Limits(), now=0.0, preface=False)
    out = g.feed(data[:cut], 0.0) + g.feed(data[cut:], 0.0)
    assert out == before + after
    assert g.goaways == [(7, ENHANCE_YOUR_CALM)]


@pytest.mark.parametrize(
    "fields",
    [
        [(b":path", b"/")],
        [(b":method", b"GET")],
        [(b":method", b"GET"), (b":path", b"")],
        [(b":method", b"GET"), (b":path", b"/a b")],
        [(b":method", b"GET"), (b":path", b"/\x7f")],
        [(b":method", b"GET"), (b":path", b"relative")],
        [(b":method", b"GET"), (b":path", b"*")],  # only OPTIONS may ask for * (§8.3.1)
        [(b":method", b"G T"), (b":path", b"/")],
        [(b":method", b"CONNECT"), (b":authority", b"h:443"), (b":path", b"/")],
        [(b":method", b"GET"), (b":path", b"/"), (b":protocol", b"websocket")],
        [(b":method", b"GET"), (b":path", b"/"), (b"x", b"a\r\nb: c")],
        [(b":method", b"GET"), (b":path", b"/"), (b"x", b"a\x00b")],
        [(b":method", b"GET"), (b":path", b"/"), (b"x", b" lead")],
        [(b":method", b"GET"), (b":path", b"/"), (b"X-Up", b"a")],
        [(b":method", b"GET"), (b":path", b"/"), (b"x y", b"a")],
        [(b":method", b"GET"), (b":path", b"/"), (b"connection", b"close")],
        [(b":method", b"GET"), (b":path", b"/"), (b"transfer-encoding", b"chunked")],
        [(b":method", b"GET"), (b":path", b"/"), (b"upgrade", b"h2c")],
        [(b":method", b"GET"), (b":path", b"/"), (b"keep-alive", b"1")],
        [(b":method", b"GET"), (b":path", b"/"), (b"proxy-connection", b"1")],
        [(b":method", b"GET"), (b":path", b"/"), (b"te", b"gzip")],
        [(b":method", b"GET"), (b":path", b"/"), (b"content-length", b"x")],
        [(b":method", b"GET"), (b":path", b"/"), (b":path", b"/admin")],
        [(b":method", b"GET"), (b"x", b"1"), (b":path", b"/")],
    ],
)
def test_the_codec_resets_malformed_requests(fields: list[tuple[bytes, bytes]]) -> None:
    """What libnghttp2 checks before quiesce.dataplane.h2.request sees a list: it resets
    these (RST_STREAM PROTOCOL_ERROR) before any event, so no exchange ever sees one."""
    s = Session(0.0)
    s.receive(PREFACE + frame(4, 0, 0), 0.0)
    s.output()
    scheme = [(b":scheme", b"http"), (b":authority", b"t")]
    block = hpack.Encoder().encode(fields[:1] + scheme + fields[1:])
    assert s.receive(frame(1, 0x5, 1, block), 0.0) == []
    assert s.output()[-13:] == frame(3, 0, 1, PROTOCOL_ERROR.to_bytes(4, "big"))


def test_connect_is_refused_by_the_request() -> None:
    """CONNECT (without :path, as RFC 9113 §8.5 has it) is let through by the codec."""
    with pytest.raises(Malformed, match="CONNECT"):
        stream_request(
            [(b":method", b"CONNECT"), (b":authority", b"h:443")], False, b"p", b"", 99, 999
        )
    s = Session(0.0)
    s.receive(PREFACE + frame(4, 0, 0), 0.0)
    block = hpack.Encoder().encode([(b":method", b"CONNECT"), (b":authority", b"h:443")])
    (event,) = s.receive(frame(1, 0x4, 1, block), 0.0)
    assert isinstance(event, ngh2.RequestReceived)


def pair() -> tuple[Session, h2.connection.H2Connection]:
    s = Session(0.0)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.receive(c.data_to_send(), 0.0)
    c.receive_data(s.output())
    s.receive(c.data_to_send(), 0.0)
    return s, c


def get(c: h2.connection.H2Connection, *sids: int) -> None:
    for sid in sids:
        c.send_headers(
            sid,
            [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "t")],
            True,
        )


def test_data_beyond_the_window_is_held_then_sent() -> None:
    s, c = pair()
    get(c, 1)
    events = s.receive(c.data_to_send(), 0.0)
    assert isinstance(events[0], ngh2.RequestReceived) and events[0].end_stream
    s.headers(1, [(b":status", b"200")], False)
    body = b"x" * (HIGH + 100_000)
    assert s.data(1, body, True) == len(body)  # queued: nothing is sent before output
    got = b""
    for e in c.receive_data(s.output()):
        if isinstance(e, h2.events.DataReceived):
            got += e.data
    assert len(got) == 65535  # the stream's window
    assert s.pump() == []  # still above LOW
    assert s.holding(1) == len(body) - 65535
    c.acknowledge_received_data(65535, 1)
    c.increment_flow_control_window(10**6, 1)
    c.increment_flow_control_window(10**6)
    s.receive(c.data_to_send(), 0.0)
    out = s.output()
    assert s.pump() == [1]  # fell below LOW: its server may be read again
    assert s.holding(1) <= LOW
    ended = False
    for e in c.receive_data(out):
        if isinstance(e, h2.events.DataReceived):
            got += e.data
        ended = ended or isinstance(e, h2.events.StreamEnded)
    assert got == body and ended and not s.held


def test_nothing_is_sent_while_the_socket_is_blocked() -> None:
    s, c = pair()
    get(c, 1)
    s.receive(c.data_to_send(), 0.0)
    s.headers(1, [(b":status", b"200")], False)
    c.receive_data(s.output())
    s.blocked = True
    assert s.data(1, b"abc", True) == 3
    assert s.output() == b""
    assert s.pump() == [] and s.holding(1) == 3
    s.blocked = False
    events = c.receive_data(s.output())
    assert [type(e) for e in events][-1] is h2.events.StreamEnded
    s.pump()
    assert not s.held


def test_held_bytes_that_do_not_move_are_stalled() -> None:
    s, c = pair()
    get(c, 1, 3)
    s.receive(c.data_to_send(), 0.0)
    for sid, n in ((1, 40000), (3, 100000)):
        s.headers(sid, [(b":status", b"200")], False)
        s.data(sid, b"x" * n, True)  # the connection's window (64 KiB) holds 3's back
    c.receive_data(s.output())
    s.pump()
    assert s.holding(1) == 0 and s.holding(3) > 0
    assert s.stalled(0.0, 10.0) == []  # first look
    assert s.stalled(9.0, 10.0) == []
    assert s.stalled(10.0, 10.0) == [3]
    c.acknowledge_received_data(40000, 1)
    c.increment_flow_control_window(1000)
    s.receive(c.data_to_send(), 11.0)
    c.receive_data(s.output())
    s.pump()  # it moved
    assert s.stalled(12.0, 10.0) == []
    assert s.stalled(21.9, 10.0) == []
    assert s.stalled(22.0, 10.0) == [3]


def test_a_request_body_opens_the_windows_only_once_acknowledged() -> None:
    s, c = pair()
    c.send_headers(
        1, [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "t")]
    )
    for _ in range(4):
        c.send_data(1, b"x" * 15000)
    events = s.receive(c.data_to_send(), 0.0)
    assert sum(len(e.data) for e in events if isinstance(e, ngh2.DataReceived)) == 60000
    s.output()
    assert s.h2.stream_local_window_size(1) == 65535 - 60000  # not given back yet
    s.ack(1, 60000)
    updates = [e for e in c.receive_data(s.output()) if isinstance(e, h2.events.WindowUpdated)]
    assert [(e.stream_id, e.delta) for e in updates] == [(1, 60000)]
    # (the connection's 1 MiB window is given back once half of it was used)


def test_the_codecs_limits_end_the_connection_clearly() -> None:
    """A header list past MAX_HEADER_LIST_SIZE that the guard could not see (the block is
    small, the list it decodes to is not: an HPACK bomb) is libnghttp2's DenialOfServiceError,
    a Calm; a protocol error it finds queues its own GOAWAY (``over`` once sent)."""
    s, c = pair()
    c.send_headers(
        1,
        [
            *[(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "t")],
            *[("x-a", "a" * 50000), ("x-b", "a" * 50000)],
        ],
        True,
    )
    data = c.data_to_send()
    assert len(data) < 65536  # (huffman: 'a' is 5 bits)
    with pytest.raises(Calm, match="header list"):
        s.receive(data, 0.0)
    assert s.dead and s.output(True) == b""
    s.reset(1, 8)  # (and nothing else raises)
    s, c = pair()
    s.receive(frame(0, 0, 0, b"x"), 0.0)  # DATA on stream 0: a connection error
    out = s.output()
    assert out[3] == 7 and int.from_bytes(out[13:17], "big") == PROTOCOL_ERROR  # GOAWAY
    assert s.over


def test_a_frame_longer_than_advertised_is_refused_at_its_header() -> None:
    g = Guard(Limits(max_frame=16384), now=0.0, preface=False)
    ok = frame(0, 0, 1, b"x" * 16384)
    assert g.feed(ok, 0.0) == ok  # the largest allowed passes
    # a header announcing 0xFFFFFF bytes: refused before a byte of its payload came
    with pytest.raises(Broken, match="16777215 bytes") as exc:
        g.feed(b"\xff\xff\xff\x00\x00\x00\x00\x00\x01", 0.0)
    assert exc.value.code == FRAME_SIZE_ERROR
    g = Guard(Limits(max_frame=16384), now=0.0, preface=False)
    with pytest.raises(Broken) as exc:  # one byte over, whatever the kind (GOAWAY too)
        g.feed(goaway_frame(0, 0, b"x" * 16377), 0.0)
    assert exc.value.code == FRAME_SIZE_ERROR


@pytest.mark.parametrize("cut", range(len(PREFACE) + 1, len(PREFACE) + 9))
def test_the_first_frame_after_the_preface_must_be_settings(cut: int) -> None:
    g = Guard(Limits(), now=0.0)
    data = PREFACE + frame(4, 0, 0) + PING
    assert g.feed(data[:cut], 0.0) + g.feed(data[cut:], 0.0) == data
    g = Guard(Limits(), now=0.0)
    data = PREFACE + PING
    g.feed(data[:cut], 0.0)
    with pytest.raises(Broken, match="not SETTINGS") as exc:
        g.feed(data[cut:], 0.0)
    assert exc.value.code == PROTOCOL_ERROR
    g = Guard(Limits(), now=0.0)  # not HTTP/2 after the preface (read as a 4.6 MB frame)
    with pytest.raises(Broken) as exc:
        g.feed(PREFACE + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0.0)
    assert exc.value.code == PROTOCOL_ERROR


class FakeConn:
    """What a StreamTransport writes to: a real Session, the stream ends recorded."""

    def __init__(self) -> None:
        self.session, self.client = pair()
        self.closed: list[tuple[int, bool]] = []

    def flush_soon(self) -> None:
        pass

    def stream_closed(self, tr: StreamTransport, abort: bool) -> None:
        self.closed.append((tr.sid, abort))


class FakeStream:
    client_blocked = False


def answer(data: list[bytes], head_only: bool = False) -> tuple[StreamTransport, list[object]]:
    conn = FakeConn()
    get(conn.client, 1)
    conn.session.receive(conn.client.data_to_send(), 0.0)
    tr = StreamTransport(conn, FakeStream(), 1)  # type: ignore[arg-type]
    tr.head_only = head_only
    for chunk in data:
        tr.write(chunk)
    assert conn.closed == [(1, False)]  # the stream ends with its answer
    return tr, conn.client.receive_data(conn.session.output())


def test_a_whole_answer_is_framed_without_a_parser() -> None:
    head = (
        b'HTTP/1.1 200 OK\r\nServer: nginx\r\nETag: "AbC"\r\nConnection: keep-alive\r\n'
        b"Set-Cookie:ID=Xy; Path=/\r\nContent-Length: 5\r\n\r\n"
    )
    tr, events = answer([head + b"hello"])
    assert tr.parser is None
    (resp,) = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert resp.headers == [
        (b":status", b"200"),
        (b"server", b"nginx"),
        (b"etag", b'"AbC"'),  # values as they are, names in lower case
        (b"set-cookie", b"ID=Xy; Path=/"),
        (b"content-length", b"5"),
    ]  # (connection-specific fields dropped)
    assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == b"hello"
    assert isinstance(events[-1], h2.events.StreamEnded)
    tr, events = answer([b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n"])
    assert tr.parser is None and isinstance(events[-1], h2.events.StreamEnded)


@pytest.mark.parametrize(
    "data",
    [
        [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", b"lo"],  # the body in two writes
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
        [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"],
    ],
)
def test_other_answers_go_to_the_parser(data: list[bytes]) -> None:
    tr, events = answer(data)
    assert tr.parser is not None
    (resp,) = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert resp.headers[0] == (b":status", b"200")
    assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == b"hello"
    assert isinstance(events[-1], h2.events.StreamEnded)


def test_a_paused_stream_is_resumed_whatever_its_windows() -> None:
    """A small answer the windows let through is not followed (it goes at the next output);
    one above LOW always is, even in wide-open windows, so a server paused above HIGH is
    resumed by pump once the bytes went."""
    s, c = pair()
    c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 24})
    c.increment_flow_control_window(1 << 24)
    s.receive(c.data_to_send(), 0.0)
    c.receive_data(s.output())
    get(c, 1, 3)
    s.receive(c.data_to_send(), 0.0)
    s.headers(1, [(b":status", b"200")], False)
    assert s.data(1, b"x" * 1000, True) == 1000 and not s.held
    s.headers(3, [(b":status", b"200")], False)
    assert s.data(3, b"x" * (HIGH + 1), True) == HIGH + 1  # (its shell pauses its server)
    assert list(s.held) == [3]
    c.receive_data(s.output())
    assert s.pump() == [3] and not s.held
