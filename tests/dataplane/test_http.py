"""The L7 proxy with real clients (curl, httpx, raw sockets) against real back ends."""

from __future__ import annotations

import asyncio
import base64
import json
import os

import httpx
import pytest

from tests.dataplane.backend import Backend, encode_frame, read_frame
from tests.dataplane.conftest import curl, make_config, start_proxy

pytestmark = pytest.mark.peers


async def raw_exchange(port: int, data: bytes, until: bytes | None = None) -> bytes:
    """Send ``data``, read until the proxy closes (or ``until`` is seen)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    buf = b""
    try:
        while until is None or until not in buf:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                break
            buf += chunk
    finally:
        writer.close()
    return buf


async def test_keep_alive_both_sides(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        async with httpx.AsyncClient() as c:
            for _ in range(20):
                r = await c.get(p.url + "/")
                assert r.status_code == 200 and r.text == "hello from a\n"
        # One client connection, and the proxy reused one upstream connection for all 20.
        assert p.service.stats.connections_total == 1
        assert backend.connections == 1
        assert p.service.stats.requests == 20
        s = p.registry.pool("web").server("s0")
        assert s.requests_total == 20 and s.responses["2xx"] == 20
        assert s.requests_in_flight == 0 and s.connections == 0


async def test_forwarded_headers_and_hop_by_hop(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        r = await curl(
            p.url + "/headers",
            "-H",
            "X-Forwarded-For: 10.9.9.9",
            "-H",
            "Connection: keep-alive, X-Secret",
            "-H",
            "X-Secret: drop-me",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "TE: trailers",
            "-H",
            "Proxy-Authorization: Basic eA==",
            "-H",
            "Host: shop.example",
        )
        seen = json.loads(r.stdout)
        assert seen["x-forwarded-for"] == "10.9.9.9, 127.0.0.1"
        assert seen["x-forwarded-proto"] == "http"
        assert seen["x-forwarded-host"] == "shop.example"
        assert seen["host"] == "shop.example"
        for gone in ("x-secret", "keep-alive", "te", "proxy-authorization"):
            assert gone not in seen
        assert seen.get("connection", "") in ("", "keep-alive")


async def test_http10_client(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        r = await curl("-0", "-i", p.url + "/")
        assert r.stdout.startswith(b"HTTP/1.1 200")
        assert r.stdout.endswith(b"hello from a\n")
        # A chunked upstream answer reaches an HTTP/1.0 client de-chunked, ended by close.
        r = await curl("-0", "-i", p.url + "/chunked/100000")
        head, _, body = r.stdout.partition(b"\r\n\r\n")
        assert b"chunked" not in head.lower()
        assert len(body) == 100000
        raw = await raw_exchange(p.port, b"GET / HTTP/1.0\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200") and b"Connection: close" in raw
        # HTTP/1.0 keep-alive is honoured when asked for.
        raw = await raw_exchange(
            p.port,
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            until=b"hello from a\n",
        )
        assert b"Connection: keep-alive" in raw


async def test_head_204_304_have_no_body(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        req = (
            b"HEAD /size/5000 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /status/304 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        raw = await raw_exchange(p.port, req)
        parts = raw.split(b"HTTP/1.1 ")
        assert [x[:3] for x in parts[1:]] == [b"200", b"204", b"304", b"200"]
        assert b"Content-Length: 5000\r\n\r\n" in parts[1] and parts[1].endswith(b"\r\n\r\n")
        assert parts[2].endswith(b"\r\n\r\n") and parts[3].endswith(b"\r\n\r\n")
        assert parts[4].endswith(b"hello from a\n")
        # HEAD did not cost the upstream connection: all four went over one.
        assert backend.connections == 1


async def test_pipelined_requests_answered_in_order(backends: list[Backend]) -> None:
    async with start_proxy(make_config([b.address for b in backends])) as p:
        paths = ["/slow/0.2", "/", "/size/10", "/slow/0.05", "/headers", "/status/404"]
        data = b"".join(f"GET {x} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for x in paths)
        data += b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        raw = await raw_exchange(p.port, data)
        statuses = [x[:3] for x in raw.split(b"HTTP/1.1 ")[1:]]
        assert statuses == [b"200"] * 5 + [b"404", b"200"]
        # Round robin across three back ends, in request order.
        order = [b.name for r in range(3) for b in backends if len(b.requests) > r]
        assert sorted(order) == ["a", "a", "a", "b", "b", "c", "c"]


async def test_chunked_request_and_response(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        payload = os.urandom(300_000)
        r = await curl(
            p.url + "/echo",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "@-",
            stdin=payload,
        )
        assert r.code == 0 and r.stdout == payload
        r = await curl("-i", "--raw", p.url + "/chunked/70000")
        assert b"transfer-encoding: chunked" in r.stdout.lower()
        r = await curl(p.url + "/chunked/70000")
        assert len(r.stdout) == 70000


async def test_close_delimited_response_is_rechunked_for_http11(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p, httpx.AsyncClient() as c:
        r = await c.get(p.url + "/close/200000")
        assert r.headers["transfer-encoding"] == "chunked"
        assert len(r.content) == 200000
        r = await c.get(p.url + "/")  # the client connection stays usable
        assert r.status_code == 200


async def test_expect_100_continue(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        body = b"x" * 5000
        r = await curl(
            "-v",
            p.url + "/sink",
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "30",
            "--data-binary",
            "@-",
            stdin=body,
        )
        assert r.code == 0
        assert b"HTTP/1.1 100 Continue" in r.stderr
        assert json.loads(r.stdout)["length"] == 5000


async def test_websocket_echo_through_the_proxy(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        key = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
            + key
            + b"\r\n\r\n"
            # A first frame right behind the handshake, in the same packet.
            + encode_frame(0x1, b"early", mask=True)
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101")
        assert b"upgrade: websocket" in head.lower()
        buf = bytearray()
        assert await read_frame(reader, buf) == (0x1, b"early")
        server = p.registry.pool("web").server("s0")
        assert server.connections == 1  # the tunnel is busy on its server
        for msg in (b"hello", b"x" * 70000):
            writer.write(encode_frame(0x2, msg, mask=True))
            assert await asyncio.wait_for(read_frame(reader, buf), 10) == (0x2, msg)
        writer.write(encode_frame(0x8, b"", mask=True))
        assert await asyncio.wait_for(read_frame(reader, buf), 10) == (0x8, b"")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await asyncio.wait_for(_until(lambda: server.connections == 0), 10)


async def _until(pred: object) -> None:
    while not pred():  # type: ignore[operator]
        await asyncio.sleep(0.01)


async def test_round_robin_exact_through_the_proxy(backends: list[Backend]) -> None:
    async with start_proxy(make_config([b.address for b in backends])) as p:
        async with httpx.AsyncClient() as c:
            names = [(await c.get(p.url + "/")).headers["x-server"] for _ in range(30)]
        assert names == ["a", "b", "c"] * 10


async def test_weighted_within_one_percent_through_the_proxy(backends: list[Backend]) -> None:
    servers = [
        {"name": b.name, "address": b.address, "weight": w}
        for b, w in zip(backends, (1, 3, 6), strict=True)
    ]
    raw = make_config(servers, pool={"algorithm": "weighted_round_robin"})
    async with start_proxy(raw) as p:
        async with httpx.AsyncClient() as c:
            n = 1000
            for _ in range(n):
                await c.get(p.url + "/")
        for b, share in zip(backends, (0.1, 0.3, 0.6), strict=True):
            assert abs(len(b.requests) / n - share) <= 0.01


async def test_least_connections_prefers_the_idle_server(backends: list[Backend]) -> None:
    a, b = backends[:2]
    raw = make_config([a.address, b.address], pool={"algorithm": "least_connections"})
    async with start_proxy(raw) as p, httpx.AsyncClient(timeout=30) as c:
        slow = asyncio.create_task(c.get(p.url + "/slow/1"))
        s0 = p.registry.pool("web").server("s0")
        s1 = p.registry.pool("web").server("s1")
        await _until(lambda: s0.requests_in_flight + s1.requests_in_flight == 1)
        busy = "a" if s0.requests_in_flight else "b"
        names = [(await c.get(p.url + "/")).headers["x-server"] for _ in range(10)]
        assert busy not in names
        assert (await slow).status_code == 200


async def test_source_ip_hash_is_stable(backends: list[Backend]) -> None:
    raw = make_config([b.address for b in backends], pool={"algorithm": "source_ip_hash"})
    async with start_proxy(raw) as p:
        async with httpx.AsyncClient() as c:
            names = {(await c.get(p.url + "/")).headers["x-server"] for _ in range(15)}
        assert len(names) == 1


async def test_client_half_close_after_requests_still_gets_answers(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(
            b"GET /slow/0.1 HTTP/1.1\r\nHost: x\r\n\r\nGET /size/5 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 10)
        assert data.count(b"HTTP/1.1 200") == 2
        assert data.endswith(b"xxxxx")
        writer.close()
