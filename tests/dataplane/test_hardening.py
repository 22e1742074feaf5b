"""Wire-level hardening: upstream head limit, malformed upstream bodies, ambiguous request
framing, the keep-alive close race, shutdown, IPv6 Host. Real back ends, real clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from quiesce.core.states import CloseMode
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import curl, make_config, start_proxy, wait_for
from tests.dataplane.test_http import raw_exchange

pytestmark = pytest.mark.peers

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawBackend:
    """A back end that reads a request head and then runs ``script`` (raw bytes)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sent = 0  # bytes the script wrote (scripts add to it)
        self.closed_by_peer = asyncio.Event()
        self.requests = 0
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.closed_by_peer.set()
        finally:
            writer.transport.abort()


@contextlib.asynccontextmanager
async def raw_backend(script: Script) -> AsyncIterator[RawBackend]:
    rb = RawBackend(script)
    server = await asyncio.start_server(rb._handle, "127.0.0.1", 0)
    rb.port = server.sockets[0].getsockname()[1]
    try:
        yield rb
    finally:
        server.close()


async def status_of(url: str, *args: str) -> bytes:
    r = await curl("-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", *args, url)
    return r.stdout


# 1. the header limit applies to upstream responses -------------------------------------------


async def test_endless_upstream_header_line_is_502_and_closed() -> None:
    """A server that streams one header line forever: 502 at the limit, upstream closed,
    nothing buffered past it (the server could write only a few socket buffers' worth)."""

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nX: ")
        block = b"a" * 65536
        while rb.sent < 1 << 30:
            writer.write(block)
            rb.sent += len(block)
            await writer.drain()

    async with raw_backend(endless) as rb, start_proxy(make_config([rb.address])) as p:
        assert await status_of(p.url + "/") == b"502"
        await asyncio.wait_for(rb.closed_by_peer.wait(), 10)
        assert rb.sent < 32 << 20, rb.sent
        assert p.service.stats.errors == {502: 1}


@pytest.mark.parametrize(("limit", "size", "want"), [(None, 200_000, b"502"), (4096, 8000, b"502")])
async def test_oversized_upstream_header_is_502(limit: int | None, size: int, want: bytes) -> None:
    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * size + b"\r\nContent-Length: 2\r\n\r\nok"
        )
        await writer.drain()
        await reader.read()

    service = {"max_header_size": limit} if limit else None
    async with raw_backend(big) as rb, start_proxy(make_config([rb.address], service=service)) as p:
        assert await status_of(p.url + "/") == want
        assert p.service.stats.errors == {502: 1}


async def test_upstream_header_under_the_limit_passes(backend: Backend) -> None:
    async def fine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # several reads' worth of head (interim 100 first), under 64 KiB in all
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 60_000 + b"\r\nContent-Length: ")
        await writer.drain()
        writer.write(b"100000\r\n\r\n" + b"z" * 100_000)
        await writer.drain()
        await reader.read()

    async with raw_backend(fine) as rb, start_proxy(make_config([rb.address])) as p:
        async with httpx.AsyncClient() as c:
            r = await c.get(p.url + "/")
        assert r.status_code == 200 and len(r.headers["x-big"]) == 60_000
        assert r.content == b"z" * 100_000


async def test_endless_request_header_line_is_431_at_once(backend: Backend) -> None:
    """The same hole on the client side: httptools buffers an unfinished header line
    itself; the proxy answers 431 once the head passes max_request_line + max_header_size."""
    async with start_proxy(make_config([backend.address])) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET / HTTP/1.1\r\nX: ")
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < 1 << 30 and not reader.at_eof() and not len(reader._buffer):
                writer.write(b"a" * 65536)
                sent += 65536
                await writer.drain()
        answer = await asyncio.wait_for(reader.read(100), 10)
        assert answer.startswith(b"HTTP/1.1 431 "), answer
        assert sent < 32 << 20, sent
        writer.close()
        # a big body right behind a small head is not a big head
        async with httpx.AsyncClient() as c:
            r = await c.post(p.url + "/sink", content=b"q" * 3_000_000)
        assert r.status_code == 200 and r.json()["length"] == 3_000_000


# 2. malformed chunked upstream body --------------------------------------------------------


@pytest.mark.parametrize("split", [False, True])
async def test_malformed_chunked_upstream_response_is_502(split: bool) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head)
        if split:  # the head alone first: the proxy holds it until a chunk parses
            await writer.drain()
        writer.write(b"ZZZ\r\nxx\r\n")
        await writer.drain()
        await reader.read()

    async with raw_backend(bad) as rb, start_proxy(make_config([rb.address])) as p:
        r = await curl("-sS", "-i", "--max-time", "20", p.url + "/")
        assert r.code == 0, r.stderr
        assert r.stdout.startswith(b"HTTP/1.1 502 "), r.stdout[:200]
        assert p.service.stats.errors == {502: 1}
        assert p.service.stats.responses == {"5xx": 1}


async def test_malformed_chunk_after_the_head_was_sent_aborts_and_counts() -> None:
    go_on = asyncio.Event()

    async def bad_later(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await go_on.wait()  # the client has the head and the first chunk
        writer.write(b"ZZZ\r\n")
        await writer.drain()
        await reader.read()

    async with raw_backend(bad_later) as rb, start_proxy(make_config([rb.address])) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await asyncio.wait_for(reader.readuntil(b"hello\r\n"), 10)
        go_on.set()
        with contextlib.suppress(ConnectionError):
            rest = await asyncio.wait_for(reader.read(), 10)
            assert b"0\r\n\r\n" not in rest  # never made to look complete
        writer.close()
        await wait_for(lambda: p.service.stats.errors == {502: 1})


# 3. ambiguous request framing ---------------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
AMBIGUOUS = {
    "te-gzip": b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    "te-chunked-gzip": (
        b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
    ),
    "te-chunked-twice": (
        b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "te-and-cl": (
        b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "two-hosts": b"GET / HTTP/1.1\r\nHost: x\r\nHost: evil\r\n\r\n",
    "two-lengths": (
        b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 36\r\n\r\n"
    ),
}


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
async def test_ambiguous_request_framing_is_400_and_nothing_smuggled(
    backend: Backend, case: str
) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        raw = await raw_exchange(p.port, AMBIGUOUS[case] + SMUGGLED)
        assert raw.startswith(b"HTTP/1.1 400 ") and raw.count(b"HTTP/1.1") == 1, raw
        # behind a good request too: that one is answered, the bad one refused
        raw = await raw_exchange(
            p.port, b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + AMBIGUOUS[case] + SMUGGLED
        )
        assert raw.startswith(b"HTTP/1.1 200 ") and raw.count(b"HTTP/1.1 ") == 2, raw
        assert b"HTTP/1.1 400 " in raw
        assert [r.target for r in backend.requests] == ["/first"]
        assert p.service.stats.errors == {400: 2}


async def test_chunked_after_other_codings_is_forwarded_with_them(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        raw = await raw_exchange(
            p.port,
            b"POST /headers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        )
    # h11 (the back end) knows chunked only and refuses the rest: what matters is that the
    # proxy forwarded the codings instead of silently dropping gzip.
    assert raw.startswith(b"HTTP/1.1 ")
    assert not backend.requests or backend.requests[0].headers["transfer-encoding"] == (
        "gzip, chunked"
    )


# 4. closing an idle keep-alive connection while its next request arrives ---------------------


async def _idle_to(p: object, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 ")
    await reader.readuntil(b"\n")  # "hello from X\n"
    return reader, writer


async def test_idle_close_never_resets_a_request_that_reached_the_proxy(
    backends: list[Backend],
) -> None:
    a, b = backends[:2]
    async with start_proxy(make_config([a.address, b.address])) as p:
        servers = p.registry.pool("web").servers
        for i in range(40):
            reader, writer = await _idle_to(p, p.port)
            idle_server = next(s for s in servers if p.table.idle_count(s))
            # The next request is in the proxy's socket, not read yet, when maintenance
            # closes the idle connections of its last server (no await in between).
            writer.write(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            force = i % 4 == 3
            p.table.close(idle_server, CloseMode.ALL if force else CloseMode.AT_BOUNDARY)
            if force:  # --force: cut now, the request is not served
                try:
                    data = await asyncio.wait_for(reader.read(), 10)
                except ConnectionError:
                    data = b""
                writer.close()
                assert not data.startswith(b"HTTP/1.1 200"), data
                continue
            # Without force the idle client connection is only detached from its server: the
            # request is served and the connection stays open for the next one.
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.close()
            assert head.startswith(b"HTTP/1.1 200 "), (i, head)
            assert b"\r\nConnection: close\r\n" not in head
        assert sum(1 for s in (a, b) for r in s.requests if r.target == "/next") == 30


# 5. shutdown closes idle upstream keep-alive connections at once ----------------------------


async def test_shutdown_closes_idle_upstreams_at_once(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        s0 = p.registry.pool("web").servers[0]
        async with httpx.AsyncClient() as c:  # two requests at once: two upstreams
            rs = await asyncio.gather(c.get(p.url + "/slow/0.2"), c.get(p.url + "/slow/0.2"))
            assert [r.status_code for r in rs] == [200, 200]
        assert p.table.idle_upstream_count(s0) == 2
        _, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait_for(lambda: s0.requests_in_flight == 1 and backend.open_connections == 2)
        stopping = asyncio.create_task(p.service.shutdown(2))
        # while the hanging request is still in flight, the idle upstream is gone
        await wait_for(lambda: backend.open_connections == 1 and s0.requests_in_flight == 1)
        assert p.table.idle_upstream_count(s0) == 0
        await asyncio.wait_for(stopping, 10)  # the hanging request is cut after the grace
        writer.close()
        assert p.table.idle_upstream_count(s0) == 0 and p.service.connections == 0


# 6. IPv6 Host reaches the router whole ----------------------------------------------------


async def test_ipv6_host_is_routed(backends: list[Backend]) -> None:
    a, b = backends[:2]
    raw = make_config(
        [a.address],
        extra_pools={"v6": {"servers": [{"name": "x", "address": b.address}]}},
        service={"rules": [{"if": {"host": "[::1]"}, "then": {"pool": "v6"}}]},
    )
    async with start_proxy(raw) as p, httpx.AsyncClient() as c:
        for host in ("[::1]:8080", "[::1]", "[::1]:80"):
            r = await c.get(p.url + "/", headers={"Host": host})
            assert r.text == "hello from b\n", host
        r = await c.get(p.url + "/", headers={"Host": "example.com:8080"})
        assert r.text == "hello from a\n"
