"""The connection table: exact counts, and close modes that touch only the server named."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from quiesce.core.admin import AdminCommand
from quiesce.core.states import Admin, Cause, CloseMode
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import make_config, start_proxy, wait_for

pytestmark = pytest.mark.loopback


async def open_keepalive(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return reader, writer


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def closed(reader: asyncio.StreamReader) -> bool:
    """Closed by the proxy: at once, or (a request waiting for its response head) after a
    503 with Connection: close (issue 17, item 6)."""
    try:
        data = await asyncio.wait_for(reader.read(), 10)
    except ConnectionError:
        return True
    return data == b"" or (data.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in data)


async def test_counts_busy_idle_and_in_flight(backends: list[Backend]) -> None:
    a, b = backends[:2]
    async with start_proxy(make_config([a.address, b.address])) as p:
        s0, s1 = p.registry.pool("web").servers
        r1, w1 = await open_keepalive(p.port, "/slow/0.5")
        await wait_for(lambda: s0.requests_in_flight == 1)
        assert s0.connections == 1 and s1.connections == 0
        r2, w2 = await open_keepalive(p.port, "/")
        assert (await read_response(r2)).endswith(b"hello from b\n")
        # Answered: idle-to-s1, not counted as a connection of s1.
        assert s1.connections == 0 and p.table.idle_count(s1) == 1
        assert (await read_response(r1)).endswith(b"hello from a\n")
        assert s0.connections == 0 and s0.requests_in_flight == 0
        assert p.table.idle_count(s0) == 1
        assert s0.requests_total == 1 and s0.responses == {"2xx": 1}
        w1.close()
        w2.close()
        await wait_for(lambda: p.table.idle_count(s0) == 0 and p.table.idle_count(s1) == 0)
        assert p.service.connections == 0 or await _zero(p)


async def _zero(p: object) -> bool:
    await wait_for(lambda: p.service.connections == 0)  # type: ignore[attr-defined]
    return True


async def test_close_all_cuts_only_that_server_within_milliseconds(
    backends: list[Backend],
) -> None:
    a, b = backends[:2]
    async with start_proxy(make_config([a.address, b.address])) as p:
        s0, s1 = p.registry.pool("web").servers
        busy_a, wa = await open_keepalive(p.port, "/hang")  # -> a
        busy_b, wb = await open_keepalive(p.port, "/hang")  # -> b
        await wait_for(lambda: s0.connections == 1 and s1.connections == 1)
        idle_a, wia = await open_keepalive(p.port, "/")  # -> a, answered, idle-to-a
        await read_response(idle_a)
        idle_b, wib = await open_keepalive(p.port, "/")  # -> b
        await read_response(idle_b)
        assert p.table.idle_upstream_count(s0) == 1
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        p.table.close(s0, CloseMode.ALL)
        assert await closed(busy_a) and await closed(idle_a)
        assert loop.time() - t0 < 1.0  # milliseconds in practice; generous for shared CI
        assert p.table.idle_upstream_count(s0) == 0
        await wait_for(lambda: s0.connections == 0 and s0.requests_in_flight == 0)
        # b's connections are untouched: the idle one still works, the busy one still waits.
        wib.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(idle_b)).startswith(b"HTTP/1.1 200")
        assert s1.connections == 1 and not busy_b.at_eof()
        for w in (wa, wb, wia, wib):
            w.close()


async def test_maintenance_closes_at_the_request_boundary(backends: list[Backend]) -> None:
    a, b = backends[:2]
    async with start_proxy(make_config([a.address, b.address])) as p:
        s0, _s1 = p.registry.pool("web").servers
        busy, wbusy = await open_keepalive(p.port, "/slow/0.5")  # -> a
        await wait_for(lambda: s0.requests_in_flight == 1)
        other, wother = await open_keepalive(p.port, "/")  # -> b
        await read_response(other)
        idle, widle = await open_keepalive(p.port, "/")  # -> a
        await read_response(idle)
        assert p.table.idle_count(s0) == 1
        # admin maintenance without --force: the registry asks for AT_BOUNDARY.
        p.registry.admin_command(
            s0, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.API, reason="patch")
        )
        # The proxy's idle keep-alive connection to a: closed now. The idle client
        # connection is only detached (closing it could reset a request in flight to us):
        # its next request goes to b.
        assert p.table.idle_upstream_count(s0) == 0 and p.table.idle_count(s0) == 0
        widle.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(idle)).endswith(b"hello from b\n")
        # The in-flight request finishes, with Connection: close, then the connection ends.
        resp = await read_response(busy)
        assert resp.startswith(b"HTTP/1.1 200") and b"Connection: close" in resp
        assert resp.endswith(b"hello from a\n")
        assert await closed(busy)
        assert s0.connections == 0 and s0.requests_in_flight == 0
        # b untouched; new requests go to b only.
        wother.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(other)).endswith(b"hello from b\n")
        async with httpx.AsyncClient() as c:
            assert {(await c.get(p.url + "/")).headers["x-server"] for _ in range(4)} == {"b"}
        for w in (wbusy, wother, widle):
            w.close()


async def test_drain_leaves_connections_alone(backends: list[Backend]) -> None:
    a, b = backends[:2]
    async with start_proxy(make_config([a.address, b.address])) as p:
        s0 = p.registry.pool("web").servers[0]
        idle, widle = await open_keepalive(p.port, "/")  # -> a
        await read_response(idle)
        p.registry.admin_command(s0, AdminCommand(Admin.DRAIN, actor="t", cause=Cause.API))
        # The client's next request on the same connection is balanced to b.
        widle.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(idle)).endswith(b"hello from b\n")
        assert s0.status == "drained"
        widle.close()


@pytest.mark.one_path  # L4
async def test_l4_close_all_and_at_boundary(backends: list[Backend]) -> None:
    a, b = backends[:2]
    async with start_proxy(make_config([a.address, b.address], protocol="tcp")) as p:
        s0, s1 = p.registry.pool("web").servers
        ra, wa = await asyncio.open_connection("127.0.0.1", p.port)  # -> a
        rb, wb = await asyncio.open_connection("127.0.0.1", p.port)  # -> b
        await wait_for(lambda: s0.connections == 1 and s1.connections == 1)
        p.table.close(s0, CloseMode.AT_BOUNDARY)  # L4: left alone
        wa.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(ra)).endswith(b"hello from a\n")
        p.table.close(s0, CloseMode.ALL)
        assert await closed(ra)
        await wait_for(lambda: s0.connections == 0)
        wb.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(rb)).endswith(b"hello from b\n")
        assert s1.connections == 1
        wa.close()
        wb.close()


async def test_shutdown_is_staged(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        busy, wbusy = await open_keepalive(p.port, "/slow/0.3")
        idle, widle = await open_keepalive(p.port, "/")
        await read_response(idle)
        await wait_for(lambda: p.registry.pool("web").servers[0].requests_in_flight == 1)
        await p.service.shutdown(10)
        assert await closed(idle)
        resp = await read_response(busy)  # the in-flight request finished before shutdown
        assert resp.endswith(b"hello from a\n")
        assert p.service.connections == 0
        try:
            await asyncio.open_connection("127.0.0.1", p.port)
            refused = False
        except OSError:
            refused = True
        assert refused
        wbusy.close()
        widle.close()


async def test_idle_keep_alive_drops_its_parser_then_times_out(backend: Backend) -> None:
    raw = make_config([backend.address], service={"client_idle_timeout": "2.5s"})
    async with start_proxy(raw) as p:
        reader, writer = await open_keepalive(p.port, "/")
        await read_response(reader)
        conn = next(iter(p.service._ctx.conns))
        await wait_for(lambda: conn.parser is None)  # type: ignore[attr-defined]
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader)).endswith(b"hello from a\n")
        # then, left alone past the idle timeout, it is closed
        assert await closed(reader)
        writer.close()
