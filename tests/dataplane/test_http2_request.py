"""A stream's request on the wire (quiesce.dataplane.h2.request: made from the header list,
no HTTP/1.1 head parsed in between): what the server receives (the proxy's forwarding
headers, the client's replaced or appended to, hop-by-hop fields dropped), and the request
smuggling defences the HTTP/1.1 parser gave before, now on the list: a body that does not
match its content-length, two hosts, a path or fields past the HTTP/1.1 limits."""

from __future__ import annotations

import hashlib
import json

import h2.events
import pytest

from tests.dataplane.backend import Backend
from tests.dataplane.conftest import make_config, start_proxy
from tests.support.h2client import RawClient, frame, request

pytestmark = [pytest.mark.loopback, pytest.mark.one_path]

PROTOCOL_ERROR = 1


def body_of(c: RawClient, sid: int) -> bytes:
    return b"".join(
        e.data for e in c.events if isinstance(e, h2.events.DataReceived) and e.stream_id == sid
    )


def status_of(c: RawClient, sid: int) -> bytes:
    (resp,) = [
        e for e in c.events if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid
    ]
    return dict(resp.headers)[b":status"]


def resets(c: RawClient) -> dict[int, int]:
    return {sid: int.from_bytes(p, "big") for kind, sid, p in c.frames() if kind == 3}


async def test_what_the_server_receives(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        fields = [
            (":method", "GET"),
            (":path", "/headers"),
            (":scheme", "http"),
            (":authority", "app.example"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-client-cert", "CN=admin"),
            ("proxy-authorization", "Basic eA=="),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]
        c.h2.send_headers(1, fields, end_stream=True)
        c.flush()
        await c.read_until(lambda: c.ended(1))
        seen = json.loads(body_of(c, 1))
        assert seen["host"] == "app.example"  # :authority
        assert seen["x-forwarded-for"] == "1.2.3.4, 127.0.0.1"
        assert seen["x-forwarded-proto"] == "http"
        assert seen["x-forwarded-host"] == "app.example"
        assert seen["accept"] == "*/*"
        for dropped in ("x-forwarded-client-cert", "proxy-authorization", "te", "connection"):
            assert dropped not in seen
        c.close()


async def post(c: RawClient, sid: int, length: int | None, data: bytes) -> None:
    fields = request("/sink", "POST")
    if length is not None:
        fields.append(("content-length", str(length)))
    c.h2.send_headers(sid, fields)
    c.flush()
    # DATA by hand: h2 itself refuses to send a body that does not match its content-length
    c.send(frame(0, 0x1, sid, data))


@pytest.mark.parametrize(("length", "data"), [(10, b"abc"), (2, b"abc")])
async def test_a_body_not_its_content_length_resets_the_stream(
    backend: Backend, length: int, data: bytes
) -> None:
    """Shorter than it said (the server would take the next request's bytes as the rest of
    it) or longer (the rest would be a request of its own): the stream is reset
    (libnghttp2's check), its server connection is not used again, and the next request on
    the connection is served whole."""
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        await post(c, 1, length, data)
        await c.read_until(lambda: 1 in resets(c))
        assert resets(c) == {1: PROTOCOL_ERROR}
        c.h2.highest_outbound_stream_id = 1
        await post(c, 3, 5, b"hello")
        await c.read_until(lambda: c.ended(3))
        got = json.loads(body_of(c, 3))
        assert got == {"length": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
        assert c.goaway() is None
        c.close()


async def test_a_body_without_content_length_goes_chunked(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        c.h2.send_headers(1, request("/sink", "POST"))
        c.h2.send_data(1, b"abc")
        c.h2.send_data(1, b"defg", end_stream=True)
        c.flush()
        await c.read_until(lambda: c.ended(1))
        got = json.loads(body_of(c, 1))
        assert got == {"length": 7, "sha256": hashlib.sha256(b"abcdefg").hexdigest()}
        assert backend.requests[-1].headers.get("transfer-encoding") == "chunked"
        c.close()


async def test_two_hosts_reset_the_stream(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        block = c.h2.encoder.encode(
            [
                (":method", "GET"),
                (":path", "/"),
                (":scheme", "http"),
                ("host", "a.example"),
                ("host", "b.example"),
            ]
        )
        c.send(frame(1, 0x5, 1, block))
        c.h2.highest_outbound_stream_id = 1
        c.h2.send_headers(3, request("/"), end_stream=True)
        c.flush()
        await c.read_until(lambda: c.ended(3))
        assert resets(c) == {1: PROTOCOL_ERROR}
        assert backend.paths == ["/"]  # only stream 3's
        c.close()


async def test_the_http11_limits_answer_the_stream(backend: Backend) -> None:
    """A :path past max_request_line: 414; fields past max_header_size (within the header
    list the codec allows): 431 (tests/dataplane/test_http2_limits.py). The stream is
    answered, the connection carries on."""
    raw = make_config([backend.address])
    raw["services"]["web"]["max_request_line"] = 256
    async with start_proxy(raw) as p:
        c = await RawClient.open(p.port)
        c.h2.send_headers(1, request("/" + "a" * 256), end_stream=True)
        c.h2.send_headers(3, request("/" + "a" * 255), end_stream=True)
        c.flush()
        await c.read_until(lambda: c.ended(1) and c.ended(3))
        assert status_of(c, 1) == b"414" and status_of(c, 3) == b"200"
        assert backend.paths == ["/" + "a" * 255]
        c.close()
