"""The L4 relay: bytes both ways, half-close, no server = closed at once."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from quiesce.core.admin import AdminCommand
from quiesce.core.states import Admin, Cause
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import curl, dead_port, make_config, start_proxy, wait_for

pytestmark = [pytest.mark.peers, pytest.mark.one_path]  # L4: no HTTP head read


class HalfCloseEcho:
    """Reads until EOF, then answers with what it got (reversed) and closes."""

    async def __aenter__(self) -> HalfCloseEcho:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's half-close reaches us
        writer.write(data[::-1])
        await writer.drain()
        writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[HalfCloseEcho]:
    async with HalfCloseEcho() as e:
        yield e


async def test_http_through_the_l4_relay(backends: list[Backend]) -> None:
    async with start_proxy(make_config([b.address for b in backends], protocol="tcp")) as p:
        outs = [(await curl(f"http://127.0.0.1:{p.port}/")).stdout for _ in range(6)]
        assert outs == [b"hello from a\n", b"hello from b\n", b"hello from c\n"] * 2
        assert p.service.stats.connections_total == 6


async def test_half_close_passes_through(echo: HalfCloseEcho) -> None:
    async with start_proxy(make_config([echo.address], protocol="tcp")) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        payload = os.urandom(200_000)
        writer.write(payload)
        writer.write_eof()  # our half-close must reach the server, which then answers
        got = await asyncio.wait_for(reader.read(), 10)
        assert got == payload[::-1]
        writer.close()
        s0 = p.registry.pool("web").servers[0]
        await wait_for(lambda: s0.connections == 0)


async def test_no_server_closes_at_once(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address], protocol="tcp")) as p:
        s0 = p.registry.pool("web").servers[0]
        p.registry.admin_command(s0, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.API))
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert p.service.stats.maintenance_pages == 1


async def test_refused_server_is_skipped_once(backend: Backend) -> None:
    raw = make_config([f"127.0.0.1:{dead_port()}", backend.address], protocol="tcp")
    async with start_proxy(raw) as p:
        for _ in range(3):
            assert (await curl(f"http://127.0.0.1:{p.port}/")).stdout == b"hello from a\n"


async def test_l4_fallback_pool(backends: list[Backend]) -> None:
    a, b = backends[:2]
    raw = make_config(
        [a.address],
        protocol="tcp",
        service={"fallback_pool": "spare"},
        extra_pools={"spare": {"servers": [{"name": "x", "address": b.address}]}},
    )
    async with start_proxy(raw) as p:
        s0 = p.registry.pool("web").servers[0]
        p.registry.admin_command(s0, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.API))
        assert (await curl(f"http://127.0.0.1:{p.port}/")).stdout == b"hello from b\n"
        assert p.service.stats.maintenance_pages == 0
