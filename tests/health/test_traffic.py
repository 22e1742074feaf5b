"""End to end under steady client traffic: proxy (data plane) + HealthManager + registry +
two real back ends. A back end that starts answering its maintenance code leaves service on the
first check that sees the code and gets no request dispatched after that; a slow request already
running on it completes; when it answers 200 again it is back on the first check that sees it
and gets traffic again. The assertions are orderings (which check, which request), not wall
clock: the interval between checks is the scheduler's, tested in test_schedule.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from quiesce.config.models import Config
from quiesce.core.states import Oper
from quiesce.dataplane import ConnectionTable, start_service
from quiesce.health import HealthManager
from quiesce.state.registry import Registry

pytestmark = pytest.mark.loopback

INTERVAL = 0.3
SLOW = 1.0


class App:
    """A keep-alive HTTP/1.1 back end: ``/health`` answers :attr:`health`, ``/slow`` takes
    :data:`SLOW` seconds, anything else answers at once. Records when requests arrive."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.health = 200
        self.checks: list[int] = []  # the status each /health check got
        self.arrivals: list[float] = []
        self.slow_started = asyncio.Event()
        self.slow_done: list[float] = []
        self.port = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0]
                path = line.split(b" ")[1]
                status, body = 200, self.name.encode()
                if path == b"/health":
                    status = self.health
                    self.checks.append(status)
                    body = b"down for maintenance" if status == 503 else b"ok"
                elif path == b"/slow":
                    self.slow_started.set()
                    await asyncio.sleep(SLOW)
                    self.slow_done.append(loop.time())
                else:
                    self.arrivals.append(loop.time())
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
                )
                await writer.drain()
                if line.endswith(b"HTTP/1.0"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> App:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def apps() -> AsyncIterator[tuple[App, App]]:
    a, b = await App("A").start(), await App("B").start()
    yield a, b
    await a.stop()
    await b.stop()


async def test_maintenance_code_under_traffic(apps: tuple[App, App]) -> None:
    a, b = apps
    loop = asyncio.get_running_loop()
    config = Config.model_validate(
        {
            "healthmonitors": {
                "hm": {
                    "type": "http",
                    "send_interval": INTERVAL,
                    "receive_timeout": 0.2,
                    "http_monitor": {
                        "http_request": "GET /health HTTP/1.0",
                        "maintenance_code": [503],
                    },
                }
            },
            "pools": {
                "p": {
                    "healthmonitors": ["hm"],
                    "servers": [
                        {"name": "A", "address": f"127.0.0.1:{a.port}"},
                        {"name": "B", "address": f"127.0.0.1:{b.port}"},
                    ],
                }
            },
            "services": {"web": {"listen": "127.0.0.1:0", "pool": "p"}},
        }
    )
    registry = Registry(config)
    table = ConnectionTable(registry)
    registry.close_handlers.append(table.close)
    service = await start_service("web", config.services["web"], registry, table)
    manager = HealthManager(registry)
    manager.start()
    server_a = registry.pool("p").server("A")
    server_b = registry.pool("p").server("B")
    # At each change of A's state, as the registry makes it: (state, checks A answered so far,
    # requests dispatched to A so far).
    changes: list[tuple[Oper, int, int]] = []

    def on_event(_: object) -> None:
        if not changes or changes[-1][0] is not server_a.oper:
            changes.append((server_a.oper, len(a.checks), server_a.requests_total))

    registry.listeners.append(on_event)
    base = f"http://127.0.0.1:{service.port}"
    statuses: list[int] = []
    stop = asyncio.Event()

    async def traffic(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            r = await client.get(f"{base}/")
            statuses.append(r.status_code)

    async def until(pred: object, timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():  # type: ignore[operator]
                await asyncio.sleep(0.005)

    workers: list[asyncio.Task[None]] = []
    async with httpx.AsyncClient(timeout=5.0) as client:
        try:
            await until(lambda: all(s.oper is Oper.UP for s in registry.servers()))
            workers = [asyncio.create_task(traffic(client)) for _ in range(4)]
            await until(lambda: len(a.arrivals) > 5 and len(b.arrivals) > 5)

            # a slow request in flight on A (round robin: keep starting them until A has one)
            slow: list[asyncio.Task[httpx.Response]] = []
            async with asyncio.timeout(3.0):
                while not a.slow_started.is_set():
                    slow.append(asyncio.create_task(client.get(f"{base}/slow")))
                    await asyncio.sleep(0.02)

            a.health = 503
            await until(lambda: server_a.oper is Oper.MAINTENANCE, INTERVAL + 1.0)
            t_maint = loop.time()
            state, checks, dispatched = changes[-1]
            assert state is Oper.MAINTENANCE
            assert a.checks[checks - 1] == 503 and a.checks[: checks - 1].count(503) == 0, a.checks
            b_before = server_b.requests_total
            await asyncio.sleep(INTERVAL * 2)  # observe traffic while A is in maintenance
            late = server_a.requests_total - dispatched
            assert late == 0, f"{late} requests dispatched to A after it answered 503"
            assert server_b.requests_total > b_before  # traffic kept flowing, to B

            responses = await asyncio.gather(*slow)
            assert all(r.status_code == 200 for r in responses)
            assert b"A" in [r.content for r in responses]  # the slow one on A completed
            assert a.slow_done and a.slow_done[0] > t_maint  # ... after A left service

            a.health = 200
            sent_503 = len(a.checks)
            before = len(a.arrivals)
            await until(lambda: len(a.arrivals) > before, INTERVAL + 1.0)
            assert server_a.oper is Oper.UP
            state, checks, _ = next(c for c in changes if c[1] > sent_503)
            assert state is Oper.UP and checks == sent_503 + 1, (changes, a.checks)
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
            await manager.stop()
            await service.shutdown(1.0)
    assert statuses and set(statuses) == {200}, "a request was lost"
