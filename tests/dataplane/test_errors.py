"""Every error answer of the L7 proxy, and that none of them wedges it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.dataplane.backend import Backend
from tests.dataplane.conftest import curl, dead_port, make_config, start_proxy, wait_for
from tests.dataplane.test_http import raw_exchange

pytestmark = pytest.mark.peers


async def still_serving(url: str) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.get(url + "/")
        assert r.status_code == 200


async def test_malformed_request_400_and_close(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        raw = await raw_exchange(p.port, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in raw
        raw = await raw_exchange(p.port, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 400 ")
        # A good request, then a bad one pipelined: the good one is answered first.
        raw = await raw_exchange(p.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBLAH\x00\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 400 " in raw
        assert p.service.stats.errors[400] == 3
        assert backend.requests and len(backend.requests) == 1
        await still_serving(p.url)


async def test_request_line_too_long_414(backend: Backend) -> None:
    raw_cfg = make_config([backend.address], service={"max_request_line": 1024})
    async with start_proxy(raw_cfg) as p:
        r = await curl("-o", "/dev/null", "-w", "%{http_code}", p.url + "/" + "a" * 2000)
        assert r.stdout == b"414"
        r = await curl("-o", "/dev/null", "-w", "%{http_code}", p.url + "/" + "a" * 900)
        assert r.stdout == b"200"


async def test_headers_too_large_431(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:  # default 64 KiB
        big = ["-H", "X-Big: " + "b" * 40000, "-H", "X-Big2: " + "c" * 30000]
        r = await curl("-o", "/dev/null", "-w", "%{http_code}", *big, p.url + "/")
        assert r.stdout == b"431"
        ok = ["-H", "X-Big: " + "b" * 30000]
        r = await curl("-o", "/dev/null", "-w", "%{http_code}", *ok, p.url + "/")
        assert r.stdout == b"200"


async def test_slow_headers_408(backend: Backend) -> None:
    raw_cfg = make_config([backend.address], service={"client_header_timeout": "0.3s"})
    async with start_proxy(raw_cfg) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the end of the head
        data = await asyncio.wait_for(reader.read(), 10)
        assert data.startswith(b"HTTP/1.1 408 ")
        writer.close()
        # A connection that sends nothing is closed without an answer.
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await still_serving(p.url)


async def test_refused_is_retried_on_another_server_else_502(backend: Backend) -> None:
    servers = [f"127.0.0.1:{dead_port()}", backend.address]
    async with start_proxy(make_config(servers)) as p:
        async with httpx.AsyncClient() as c:
            for _ in range(6):
                r = await c.get(p.url + "/")
                assert r.status_code == 200 and r.headers["x-server"] == "a"
        dead = p.registry.pool("web").server("s0")
        assert dead.requests_in_flight == 0 and dead.connections == 0
    async with start_proxy(make_config([f"127.0.0.1:{dead_port()}"] * 1)) as p:
        r2 = await curl("-o", "/dev/null", "-w", "%{http_code}", p.url + "/")
        assert r2.stdout == b"502"
        assert p.service.stats.errors[502] == 1


async def test_malformed_upstream_response_502(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        r = await curl("-o", "/dev/null", "-w", "%{http_code}", p.url + "/malformed")
        assert r.stdout == b"502"
        await still_serving(p.url)


async def test_response_timeout_504(backend: Backend) -> None:
    raw_cfg = make_config([backend.address], pool={"response_timeout": "0.3s"})
    async with start_proxy(raw_cfg) as p:
        r = await curl("-o", "/dev/null", "-w", "%{http_code}", p.url + "/hang")
        assert r.stdout == b"504"
        s = p.registry.pool("web").server("s0")
        assert s.requests_in_flight == 0 and s.responses["5xx"] == 1
        await still_serving(p.url)


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A loopback port whose accept queue is full: connecting to it hangs (SYN dropped)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        for s in fillers:
            s.close()
        lsock.close()


async def test_connect_timeout_504(blackhole: str) -> None:
    raw_cfg = make_config([blackhole], pool={"connect_timeout": "0.3s"})
    async with start_proxy(raw_cfg) as p:
        r = await curl("-o", "/dev/null", "-w", "%{http_code}", p.url + "/", timeout=30)
        assert r.stdout == b"504"


async def test_keep_alive_race_resends_on_a_fresh_connection() -> None:
    async with Backend("racy", drop_reused=True) as b:
        p_cm = start_proxy(make_config([b.address]))
        async with p_cm as p, httpx.AsyncClient() as c:
            for i in range(4):
                r = await c.get(p.url + f"/?n={i}")
                assert r.status_code == 200
                r = await c.put(p.url + "/sink", content=b"y" * 1000)
                assert r.status_code == 200 and r.json()["length"] == 1000
        # Every request after the first on a connection was dropped by the server and
        # resent by the proxy on a new connection (idempotent ones only: test_security.py).
        assert b.connections >= 8


async def test_upstream_reset_mid_response_cuts_only_that_client(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET /size/50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(100000)
        for w in list(backend._writers):
            w.transport.abort()
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await asyncio.wait_for(reader.readexactly(50_000_000), 10)
        writer.close()
        await still_serving(p.url)


async def test_garbage_never_wedges_the_proxy(backend: Backend) -> None:
    import random

    rng = random.Random(7)
    prefixes = [
        b"",
        b"GET / HTTP/1.1\r\n",
        b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    ]
    async with start_proxy(make_config([backend.address])) as p:

        async def one(i: int) -> None:
            data = rng.choice(prefixes) + rng.randbytes(rng.randrange(0, 300))
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(data)
            if i % 2:
                writer.write_eof()
            try:
                await asyncio.wait_for(reader.read(65536), 0.5)
            except (TimeoutError, ConnectionError):
                pass
            writer.transport.abort()

        await asyncio.gather(*(one(i) for i in range(150)))
        await still_serving(p.url)
        s0 = p.registry.pool("web").servers[0]
        await wait_for(lambda: s0.requests_in_flight == 0 and s0.connections == 0)

        await wait_for(lambda: p.service.connections == 0)


async def test_stalled_request_body_408_and_half_sent_body_abandoned(backend: Backend) -> None:
    raw_cfg = make_config([backend.address], service={"client_idle_timeout": "0.4s"})
    async with start_proxy(raw_cfg) as p:
        s0 = p.registry.pool("web").servers[0]
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        data = await asyncio.wait_for(reader.read(), 10)
        assert data.startswith(b"HTTP/1.1 408 ")
        writer.close()
        await wait_for(lambda: s0.requests_in_flight == 0 and s0.connections == 0)
        # A client that half-closes in the middle of a body: the request is abandoned.
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123")
        await wait_for(lambda: s0.requests_in_flight == 1)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        await wait_for(lambda: s0.requests_in_flight == 0 and p.service.connections == 0)
        writer.close()
