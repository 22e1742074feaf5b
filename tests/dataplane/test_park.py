"""Parked idle keep-alive connections (quiesce.dataplane.park), driven as a client would.

Every test shortens the parking delay and the sweep (``client_header_timeout`` 0.4 s makes
the sweep run every 0.1 s), lets a real client connection go idle on loopback until the
service reports it parked, and then uses it: nothing a client can observe may differ from
a connection that was never parked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from quiesce.core.admin import AdminCommand
from quiesce.core.states import Admin, Cause
from quiesce.dataplane.park import Parked
from quiesce.frontends.metrics import build_collector_registry, render
from tests.dataplane.backend import Backend, encode_frame, read_frame
from tests.dataplane.conftest import Proxy, make_config, start_proxy, wait_for

pytestmark = pytest.mark.loopback

PARK_AFTER = 0.2
FAST = {"client_header_timeout": "0.4s"}


class Client:
    """A raw loopback socket: what it sends and receives is exactly what is on the wire."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, port: int) -> Client:
        sock = socket.socket()
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def _more(self) -> bytes:
        chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), 10)
        if not chunk:
            raise EOFError
        return chunk

    async def response(self) -> tuple[bytes, bytes]:
        """One response (Content-Length or chunked): (head, body)."""
        while b"\r\n\r\n" not in self.buf:
            self.buf += await self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = next((int(x.split(b":")[1]) for x in lines if x.startswith(b"content-length:")), 0)
        if b"transfer-encoding: chunked" not in lines:
            while len(self.buf) < length:
                self.buf += await self._more()
            body, self.buf = self.buf[:length], self.buf[length:]
            return head, body
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                self.buf += await self._more()
            size_line, _, self.buf = self.buf.partition(b"\r\n")
            size = int(size_line, 16)
            while len(self.buf) < size + 2:
                self.buf += await self._more()
            body += self.buf[:size]
            self.buf = self.buf[size + 2 :]
            if size == 0:
                return head, body

    async def get(self, path: str = "/") -> tuple[bytes, bytes]:
        await self.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return await self.response()

    def still_open(self) -> bool:
        """Nothing came from the proxy: no byte, no FIN, no RST (without waiting)."""
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False  # a byte, or EOF (b"")

    async def closed_by_proxy(self) -> bool:
        """The proxy closed the connection (EOF or reset) within 10 s."""
        try:
            while True:
                await self._more()
        except (EOFError, ConnectionError):
            return True

    def close(self) -> None:
        self.sock.close()


@asynccontextmanager
async def parking_proxy(
    servers: list[str], service: dict[str, Any] | None = None
) -> AsyncIterator[Proxy]:
    async with start_proxy(make_config(servers, service={**FAST, **(service or {})})) as p:
        p.service.park_after = PARK_AFTER
        yield p


async def parked(p: Proxy, n: int) -> None:
    await wait_for(lambda: p.service.parked == n)


async def test_parked_connection_serves_the_next_request(backend: Backend) -> None:
    async with parking_proxy([backend.address]) as p:
        c = await Client.connect(p.port)
        head, body = await c.get()
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello from a\n"
        await parked(p, 1)
        stats = p.service.stats
        # Still one live connection everywhere, and the client saw nothing (no FIN, no RST).
        assert p.service.connections == 1 and stats.connections == 1
        assert stats.connections_total == 1
        assert c.still_open()
        head, body = await c.get()
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello from a\n"
        assert p.service.parked == 0 and stats.connections == 1
        assert stats.connections_total == 1  # the same connection, not a new one
        # ... and it parks again once idle.
        await parked(p, 1)
        assert c.still_open()
        head, _ = await c.get("/status/404")
        assert head.startswith(b"HTTP/1.1 404")
        assert stats.requests == 3 and stats.connections_total == 1
        c.close()
        await wait_for(lambda: p.service.connections == 0)
        assert stats.connections == 0 and stats.parked == 0


async def test_pipelined_requests_and_a_body_after_parking(backend: Backend) -> None:
    async with parking_proxy([backend.address]) as p:
        c = await Client.connect(p.port)
        await c.get()
        await parked(p, 1)
        body = b"x" * 100_000
        # Three requests in one write, the middle one with a body: answered in order.
        await c.send(
            b"GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n"
            + b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
            + b"GET /headers HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        head, _ = await c.response()
        assert head.startswith(b"HTTP/1.1 201")
        head, got = await c.response()
        assert head.startswith(b"HTTP/1.1 200") and json.loads(got)["length"] == len(body)
        head, got = await c.response()
        assert json.loads(got)["x-forwarded-for"] == "127.0.0.1"
        await parked(p, 1)
        # A head, then its body after a pause (the connection is made again on the head).
        await c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        await wait_for(lambda: p.service.parked == 0)
        await c.send(b"hello")
        head, got = await c.response()
        assert head.startswith(b"HTTP/1.1 200") and got == b"hello"
        assert p.service.stats.connections_total == 1
        c.close()


async def test_idle_timeout_closes_a_parked_connection(backend: Backend) -> None:
    async with parking_proxy([backend.address], {"client_idle_timeout": "1s"}) as p:
        c = await Client.connect(p.port)
        await c.get()
        await parked(p, 1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await c.closed_by_proxy()
        assert loop.time() - t0 < 2.0
        await wait_for(lambda: p.service.connections == 0)
        assert p.service.stats.connections == 0 and p.service.parked == 0
        c.close()


async def test_client_eof_and_half_close_of_parked_connections(backend: Backend) -> None:
    async with parking_proxy([backend.address]) as p:
        gone, half = await Client.connect(p.port), await Client.connect(p.port)
        await gone.get()
        await half.get()
        await parked(p, 2)
        gone.close()  # the client closes its idle connection
        await wait_for(lambda: p.service.connections == 1)
        assert p.service.parked == 1
        # A last request and a half-close in one go: answered, then closed.
        await half.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        half.sock.shutdown(socket.SHUT_WR)
        head, body = await half.response()
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello from a\n"
        assert await half.closed_by_proxy()
        await wait_for(lambda: p.service.connections == 0)
        assert p.service.stats.connections == 0 and p.service.parked == 0
        half.close()


async def test_forced_maintenance_closes_parked_connections_of_that_server_only(
    backends: list[Backend],
) -> None:
    a, b = backends[:2]
    async with parking_proxy([a.address, b.address]) as p:
        s0, s1 = p.registry.pool("web").servers
        to_a, to_b = await Client.connect(p.port), await Client.connect(p.port)
        assert (await to_a.get())[1] == b"hello from a\n"
        assert (await to_b.get())[1] == b"hello from b\n"
        await parked(p, 2)
        assert p.table.idle_count(s0) == 1 and p.table.idle_count(s1) == 1
        p.registry.admin_command(
            s0, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.API, force=True)
        )
        assert await to_a.closed_by_proxy()
        await wait_for(lambda: p.service.connections == 1)
        assert p.service.parked == 1 and p.table.idle_count(s0) == 0
        # b's parked connection is untouched and still works.
        assert to_b.still_open()
        assert (await to_b.get())[1] == b"hello from b\n"
        assert p.table.idle_count(s1) == 1
        to_a.close()
        to_b.close()


async def test_maintenance_detaches_parked_connections_without_closing_them(
    backends: list[Backend],
) -> None:
    a, b = backends[:2]
    async with parking_proxy([a.address, b.address]) as p:
        s0, s1 = p.registry.pool("web").servers
        to_a, to_b = await Client.connect(p.port), await Client.connect(p.port)
        await to_a.get()
        await to_b.get()
        await parked(p, 2)
        # Without --force (AT_BOUNDARY): an idle connection is only detached from the server
        # (closing it could reset a request already on its way), parked or not.
        p.registry.admin_command(s0, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.API))
        assert p.table.idle_count(s0) == 0 and p.table.idle_count(s1) == 1
        assert to_a.still_open() and p.service.parked == 2
        assert (await to_a.get())[1] == b"hello from b\n"
        await parked(p, 2)
        assert p.table.idle_count(s1) == 2
        # A later forced close of a (now in maintenance) touches neither.
        p.registry.admin_command(
            s0, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.API, force=True)
        )
        assert to_a.still_open() and to_b.still_open() and p.service.parked == 2
        to_a.close()
        to_b.close()


async def test_drain_and_enable_keep_parked_connections_working(backends: list[Backend]) -> None:
    a, b = backends[:2]
    async with parking_proxy([a.address, b.address]) as p:
        s0, _s1 = p.registry.pool("web").servers
        c = await Client.connect(p.port)
        assert (await c.get())[1] == b"hello from a\n"
        await parked(p, 1)
        p.registry.admin_command(s0, AdminCommand(Admin.DRAIN, actor="t", cause=Cause.API))
        assert c.still_open()
        assert (await c.get())[1] == b"hello from b\n"
        await parked(p, 1)
        p.registry.admin_command(s0, AdminCommand(Admin.ENABLED, actor="t", cause=Cause.API))
        assert c.still_open()
        head, _ = await c.get()
        assert head.startswith(b"HTTP/1.1 200")
        c.close()


async def test_service_shutdown_closes_parked_connections(backend: Backend) -> None:
    async with parking_proxy([backend.address]) as p:
        idle, racing = await Client.connect(p.port), await Client.connect(p.port)
        await idle.get()
        await racing.get()
        await parked(p, 2)
        # ``racing`` sends its next request just as the service shuts down: it is in the
        # socket, unread, when shutdown asks every connection to close (the keep-alive race).
        # It is served, with Connection: close; the idle one is closed at once.
        racing.sock.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await p.service.shutdown(5.0)
        assert loop.time() - t0 < 2.0
        assert await idle.closed_by_proxy()
        head, body = await racing.response()
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
        assert body == b"hello from a\n"
        assert await racing.closed_by_proxy()
        assert p.service.connections == 0 and p.service.stats.connections == 0
        assert p.service.parked == 0
        idle.close()
        racing.close()


async def test_many_parked_connections_and_the_counts(backend: Backend) -> None:
    async with parking_proxy([backend.address]) as p:
        clients = [await Client.connect(p.port) for _ in range(50)]
        for c in clients:
            await c.get()
        await parked(p, 50)
        assert p.service.stats.connections == 50 and p.service.connections == 50
        for c in clients[::2]:
            assert (await c.get())[1] == b"hello from a\n"
        for c in clients[1::2]:
            c.close()
        await wait_for(lambda: p.service.connections == 25)
        await parked(p, 25)
        assert p.service.stats.connections == 25
        assert p.service.stats.connections_total == 50
        for c in clients[::2]:
            assert c.still_open()
            c.close()
        await wait_for(lambda: p.service.connections == 0)
        assert p.service.parked == 0


async def test_a_websocket_tunnel_is_never_parked(backend: Backend) -> None:
    async with parking_proxy([backend.address]) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        key = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101")
        # A plain keep-alive connection opened after it parks: sweeps ran past the delay.
        c = await Client.connect(p.port)
        await c.get()
        await parked(p, 1)
        assert p.service.connections == 2
        buf = bytearray()
        writer.write(encode_frame(0x2, b"still here", mask=True))
        assert await asyncio.wait_for(read_frame(reader, buf), 10) == (0x2, b"still here")
        writer.close()
        c.close()


def test_parking_on_asyncio_s_own_loop() -> None:
    """The fallback loop (no uvloop): its transports give their sockets up the same way."""

    async def scenario() -> None:
        async with Backend("a") as backend, parking_proxy([backend.address]) as p:
            c = await Client.connect(p.port)
            await c.get()
            await parked(p, 1)
            assert c.still_open() and p.service.connections == 1
            await c.send(
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            assert (await c.response())[1] == b"hello from a\n"
            assert (await c.response())[0].startswith(b"HTTP/1.1 204")
            await parked(p, 1)
            c.close()
            await wait_for(lambda: p.service.connections == 0)
            assert p.service.parked == 0

    loop = asyncio.new_event_loop()
    assert "uvloop" not in type(loop).__module__
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


async def test_closes_that_arrive_while_a_connection_is_given_back_apply_to_it(
    backend: Backend,
) -> None:
    async with parking_proxy([backend.address]) as p:
        s0 = p.registry.pool("web").server("s0")
        served, cut = await Client.connect(p.port), await Client.connect(p.port)
        await served.get()
        await cut.get()
        await parked(p, 2)
        records = [r for r in p.service._ctx.conns if isinstance(r, Parked)]
        assert len(records) == 2
        # Both send a request; before the loop looks at them, each record is asked to close
        # (as shutdown does): with a request waiting, it gives the socket back to the loop,
        # and a cut (shutdown's end, or a forced close) then lands while that is under way.
        served.sock.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        cut.sock.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        ports = {r: _peer_port(r) for r in records}
        for r in records:
            r.close_at_boundary()
        cut_port = cut.sock.getsockname()[1]
        next(r for r in records if ports[r] == cut_port).cut()
        assert p.service.connections == 2  # nothing is counted twice or lost meanwhile
        head, body = await served.response()
        assert b"connection: close" in head.lower() and body == b"hello from a\n"
        assert await served.closed_by_proxy()
        assert await cut.closed_by_proxy()
        await wait_for(lambda: p.service.connections == 0)
        assert p.service.stats.connections == 0 and p.service.parked == 0
        assert p.table.idle_count(s0) == 0
        served.close()
        cut.close()


def _peer_port(record: Parked) -> int:
    s = socket.socket(fileno=os.dup(record.fd))
    try:
        return int(s.getpeername()[1])
    finally:
        s.close()


async def test_metrics_count_parked_connections(backend: Backend) -> None:
    async with parking_proxy([backend.address]) as p:
        app = SimpleNamespace(registry=p.registry, services={"web": p.service})
        reg = build_collector_registry(app)
        clients = [await Client.connect(p.port) for _ in range(3)]
        for c in clients:
            await c.get()
        await parked(p, 3)
        text = render(reg)[0].decode()
        assert 'quiesce_service_connections{service="web"} 3.0' in text
        assert 'quiesce_service_parked_connections{service="web"} 3.0' in text
        assert 'quiesce_service_connections_accepted_total{service="web"} 3.0' in text
        for c in clients:
            await c.get()
        text = render(reg)[0].decode()
        assert 'quiesce_service_parked_connections{service="web"} 0.0' in text
        await parked(p, 3)
        text = render(reg)[0].decode()
        assert 'quiesce_service_connections{service="web"} 3.0' in text
        assert 'quiesce_service_connections_accepted_total{service="web"} 3.0' in text
        for c in clients:
            c.close()
