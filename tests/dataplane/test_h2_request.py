"""A stream's request made from its header list (quiesce.dataplane.h2.request), without an
HTTP/1.1 head written and parsed again: the same request, head and checks as the HTTP/1.1
proxy makes of the head the list would be (the way streams went before, kept here as the
reference), and the refusals (malformed: the stream is reset; past the HTTP/1.1 limits: 414,
431)."""

from __future__ import annotations

import httptools
import pytest

from quiesce.dataplane.h1.exchange import RQ_BODY, RQ_COMPLETE, Request
from quiesce.dataplane.h1.headers import HTTP_FORWARDED, forward_request
from quiesce.dataplane.h2.request import Malformed, TooLarge, stream_request

TLS_FORWARDED = b"X-Forwarded-Proto: https\r\nX-Forwarded-Client-Cert: CN=c\r\n"
Fields = list[tuple[bytes, bytes]]


def http11_head(headers: Fields, end_stream: bool) -> bytes:
    """The HTTP/1.1 head a stream's list was written as before (session.request_head; its
    ``te: trailers`` kept, for the rules' view: the policy drops it from the head)."""
    method = path = host = None
    lines, cookies = [], []
    chunked = not end_stream
    for name, value in headers:
        if name == b":method":
            method = value
        elif name == b":path":
            path = value
        elif name == b":authority" or (name == b"host" and host is None):
            host = value
        elif name == b"cookie":
            cookies.append(value)
        elif name[:1] != b":" and name != b"host":
            chunked = chunked and name != b"content-length"
            lines.append(name + b": " + value)
    assert method is not None and path is not None
    if host is not None:
        lines.insert(0, b"host: " + host)
    if cookies:
        lines.append(b"cookie: " + b"; ".join(cookies))
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    return method + b" " + path + b" HTTP/1.1\r\n" + b"".join(x + b"\r\n" for x in lines) + b"\r\n"


class _Head:
    def __init__(self) -> None:
        self.url = b""
        self.headers: Fields = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))


def via_http11(headers: Fields, end_stream: bool, peer: bytes, fwd: bytes) -> Request:
    """What the HTTP/1.1 proxy makes of that head (httptools and forward_request)."""
    got = _Head()
    parser = httptools.HttpRequestParser(got)
    parser.feed_data(http11_head(headers, end_stream))
    req = Request()
    req.method, req.url = parser.get_method(), got.url
    req.head_only = req.method == b"HEAD"
    req.headers = got.headers
    forward_request(req, got.headers, False, peer, fwd)
    return req


GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/a?b=1")]
POST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/up"), (b"host", b"h")]


@pytest.mark.parametrize(
    ("headers", "end_stream"),
    [
        ([*GET, (b":authority", b"example.com")], True),
        (
            [
                *GET,
                (b":authority", b"example.com"),
                (b"cookie", b"a=1"),
                (b"accept", b"*/*"),
                (b"cookie", b"b=2"),
                (b"te", b"trailers"),
            ],
            True,
        ),
        ([*GET, (b"host", b"h.example:8080"), (b"user-agent", b"x")], True),
        ([*GET, (b":authority", b"a.example"), (b"host", b"a.example")], True),
        (POST, False),  # a body without content-length: chunked
        ([*POST, (b"content-length", b"3")], False),
        ([*POST, (b"content-length", b"0")], True),
        ([*POST, (b"expect", b"100-continue"), (b"content-length", b"5")], False),
        ([*POST, (b"expect", b"something-else")], False),
        ([(b":method", b"OPTIONS"), (b":scheme", b"http"), (b":path", b"*")], True),
        ([(b":method", b"HEAD"), (b":scheme", b"http"), (b":path", b"/")], True),
        # set by the proxy: a client's own replaced (X-Forwarded-For appended to)
        (
            [
                *GET,
                (b"x-forwarded-for", b"1.2.3.4"),
                (b"x-forwarded-for", b"5.6.7.8"),
                (b"x-forwarded-proto", b"gopher"),
                (b"x-forwarded-host", b"evil"),
                (b"x-forwarded-client-cert", b"CN=admin"),
                (b":authority", b"good"),
            ],
            True,
        ),
        # hop-by-hop fields the codec lets through: dropped
        ([*GET, (b"proxy-authorization", b"Basic x"), (b"trailer", b"x"), (b"a", b"b")], True),
    ],
)
@pytest.mark.parametrize("fwd", [HTTP_FORWARDED, TLS_FORWARDED])
def test_the_same_request_as_over_http11(headers: Fields, end_stream: bool, fwd: bytes) -> None:
    want = via_http11(headers, end_stream, b"10.0.0.9", fwd)
    got = stream_request(headers, end_stream, b"10.0.0.9", fwd, 8192, 65536)
    assert got.head == want.head
    for slot in ("method", "url", "host", "cookie", "chunked", "expect", "state", "head_only"):
        assert getattr(got, slot) == getattr(want, slot), slot
    assert not got.http10 and got.keep_alive and got.raw is None
    # the rules' view: the client's fields, the host and the joined cookie (not the
    # transfer-encoding the old head had for a body without length: the proxy's, not theirs)
    want_fields = dict(want.view("10.0.0.9").headers)
    want_fields.pop("transfer-encoding", None)
    assert dict(got.view("10.0.0.9").headers) == want_fields


def test_bodies_and_their_framing() -> None:
    req = stream_request(POST, False, b"p", HTTP_FORWARDED, 8192, 65536)
    assert req.chunked and req.state is RQ_BODY
    assert req.head.endswith(b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    req = stream_request([*POST, (b"content-length", b"3")], False, b"p", HTTP_FORWARDED, 99, 999)
    assert not req.chunked and req.state is RQ_BODY and b"\r\ncontent-length: 3\r\n" in req.head
    req = stream_request(POST, True, b"p", HTTP_FORWARDED, 8192, 65536)  # END_STREAM: no body
    assert not req.chunked and req.state is RQ_COMPLETE


@pytest.mark.parametrize(
    "headers",
    [
        [(b":method", b"CONNECT"), (b":authority", b"h:443")],  # (the codec lets it through)
        [(b":method", b"GET"), (b":authority", b"h")],  # no :path
        [(b":path", b"/")],  # no :method
        # framing the codec refuses first; refused here too, never forwarded
        [*GET, (b"content-length", b"1"), (b"content-length", b"2")],
        [*GET, (b"content-length", b"1x")],
        [*GET, (b"content-length", b"-1")],
        [*GET, (b"transfer-encoding", b"chunked")],
        [*GET, (b"connection", b"close")],
        [*GET, (b"upgrade", b"websocket")],
        # two Hosts that differ: which one routes? (HTTP/1.1: 400)
        [*GET, (b"host", b"a"), (b"host", b"b")],
    ],
)
def test_malformed_requests_are_refused(headers: Fields) -> None:
    with pytest.raises(Malformed):
        stream_request(headers, False, b"p", HTTP_FORWARDED, 8192, 65536)


def test_the_http11_limits() -> None:
    path = b"/" + b"a" * 99
    stream_request([(b":method", b"GET"), (b":path", path)], True, b"p", HTTP_FORWARDED, 100, 999)
    with pytest.raises(TooLarge) as e:
        stream_request([(b":method", b"GET"), (b":path", path + b"a")], True, b"p", b"", 100, 999)
    assert e.value.status == 414
    big = [*GET, (b"x", b"v" * 993)]  # "x: " + 993 + CRLF = 998 bytes
    stream_request(big, True, b"p", HTTP_FORWARDED, 100, 998)
    with pytest.raises(TooLarge) as e:
        stream_request(big, True, b"p", HTTP_FORWARDED, 100, 997)
    assert e.value.status == 431
    # split cookies count joined, as the HTTP/1.1 head has them
    cookies = [*GET, (b"cookie", b"a=1"), (b"cookie", b"b=2")]  # "cookie: a=1; b=2" CRLF
    stream_request(cookies, True, b"p", HTTP_FORWARDED, 100, 18)
    with pytest.raises(TooLarge):
        stream_request(cookies, True, b"p", HTTP_FORWARDED, 100, 17)
