"""Connection limits (issue 12, item 3): a service's ``max_connections`` and the process's
gate (``limits.max_connections``). At a limit the service stops accepting: the next
connection completes its handshake in the kernel and waits in the listen backlog
(``Service.queued`` reads the backlog's length from TCP_INFO), unanswered, until a connection
closes; then it is accepted and its request answered. Nothing is refused or reset, on uvloop
and on asyncio's own loop.

No test sleeps: "not accepted" is observed as the connection sitting in the kernel's backlog
while the proxy answers a request on another connection sent after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
import uvloop

from quiesce.config.models import Config
from quiesce.dataplane import ConnectionTable, Service, start_service
from quiesce.dataplane import service as service_module
from quiesce.dataplane.context import ConnectionGate
from quiesce.dataplane.service import make_context
from quiesce.frontends.metrics import build_collector_registry, render
from quiesce.state.registry import Registry
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import make_config, start_proxy, wait_for
from tests.dataplane.test_park import Client

pytestmark = pytest.mark.loopback

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def run_on(loop_name: str, scenario: Callable[[], Awaitable[None]]) -> None:
    loop = LOOPS[loop_name]()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


async def answered(c: Client) -> bytes:
    head, body = await c.get()
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


async def fill(port: int, n: int) -> list[Client]:
    """n connections, each accepted and answered once (kept open, keep-alive)."""
    clients = []
    for _ in range(n):
        c = await Client.connect(port)
        await answered(c)
        clients.append(c)
    return clients


async def waiting(service: Service, port: int, n: int = 1) -> list[Client]:
    """n connections that connect and send a request while ``service`` is full: each sits
    in the backlog (the kernel completed its handshake), unanswered."""
    before = service.queued
    clients = []
    for _ in range(n):
        c = await Client.connect(port)
        await c.send(GET)
        clients.append(c)
    await wait_for(lambda: service.queued == before + n)
    return clients


def held_back(service: Service, accepted: int, clients: list[Client]) -> None:
    assert service.stats.connections_total == accepted
    assert not service.accepting
    for c in clients:
        assert c.still_open()  # no answer, no FIN, no RST


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_the_connection_past_max_connections_waits_in_the_backlog(loop_name: str) -> None:
    async def scenario() -> None:
        async with (
            Backend("a") as backend,
            start_proxy(make_config([backend.address], service={"max_connections": 3})) as p,
        ):
            clients = await fill(p.port, 3)
            assert p.service.stats.connections == 3 and p.service.max_connections == 3
            (extra,) = await waiting(p.service, p.port)
            await answered(clients[0])  # the proxy ran since the extra request arrived
            held_back(p.service, 3, [extra])
            assert p.service.stats.limit_reached == 1
            # One of the three closes: the waiting connection is accepted and answered.
            clients[1].close()
            head, body = await extra.response()
            assert head.startswith(b"HTTP/1.1 200") and body == b"hello from a\n"
            assert p.service.stats.connections_total == 4 and p.service.queued == 0
            for c in (clients[0], clients[2], extra):
                assert await answered(c) == b"hello from a\n"
            # One below a limit of 3 ended the episode (below_again: max(1, limit // 10)),
            # so being full again is a second one, logged once more.
            assert p.service.stats.connections == 3
            assert p.service.stats.limit_reached == 2
            for c in (clients[0], clients[2], extra):
                c.close()
            await wait_for(lambda: p.service.stats.connections == 0)
            assert p.service.accepting

    run_on(loop_name, scenario)


async def test_an_l4_service_holds_the_connection_past_its_limit(backend: Backend) -> None:
    cfg = make_config([backend.address], protocol="tcp", service={"max_connections": 2})
    async with start_proxy(cfg) as p:
        clients = await fill(p.port, 2)  # HTTP through the relay
        (extra,) = await waiting(p.service, p.port)
        await answered(clients[0])
        held_back(p.service, 2, [extra])
        clients[0].close()
        head, body = await extra.response()
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello from a\n"
        assert p.service.stats.connections_total == 3
        for c in (clients[1], extra):
            c.close()
        await wait_for(lambda: p.service.stats.connections == 0 and p.service.accepting)


async def test_parked_connections_count_and_their_close_lets_the_next_in(
    backend: Backend,
) -> None:
    cfg = make_config(
        [backend.address], service={"max_connections": 2, "client_header_timeout": "0.4s"}
    )
    async with start_proxy(cfg) as p:
        p.service.park_after = 0.2
        clients = await fill(p.port, 2)
        await wait_for(lambda: p.service.parked == 2)
        (extra,) = await waiting(p.service, p.port)
        held_back(p.service, 2, [extra])
        assert p.service.connections == 2
        clients[0].close()  # the parked socket sees the EOF and its record is closed
        head, body = await extra.response()
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello from a\n"
        # a parked connection given back (its next request) is not counted again
        assert await answered(clients[1]) == b"hello from a\n"
        assert p.service.stats.connections == 2 and p.service.stats.connections_total == 3
        for c in (clients[1], extra):
            c.close()
        await wait_for(lambda: p.service.stats.connections == 0)


@contextlib.asynccontextmanager
async def two_services(
    backend: Backend, gate: ConnectionGate, one: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Registry, Service, Service]]:
    raw = make_config([backend.address], service=one)
    raw["services"]["other"] = {"listen": "127.0.0.1:0", "pool": "web"}
    config = Config.model_validate(raw)
    registry = Registry(config)
    table = ConnectionTable(registry)
    a = await start_service("web", config.services["web"], registry, table, gate=gate)
    b = await start_service("other", config.services["other"], registry, table, gate=gate)
    try:
        yield registry, a, b
    finally:
        await a.shutdown(0.5)
        await b.shutdown(0.5)


async def test_the_global_limit_holds_every_service(backend: Backend) -> None:
    gate = ConnectionGate(3)
    async with two_services(backend, gate) as (_, a, b):
        on_a = await fill(a.port, 2)
        on_b = await fill(b.port, 1)
        assert gate.count == 3 and gate.reached == 1 and gate.full
        (wait_a,) = await waiting(a, a.port)
        (wait_b,) = await waiting(b, b.port)
        await answered(on_a[0])
        held_back(a, 2, [wait_a])
        held_back(b, 1, [wait_b])
        answers = {c: asyncio.ensure_future(c.response()) for c in (wait_a, wait_b)}
        on_a[1].close()  # room for one more, on either service
        done, pending = await asyncio.wait(answers.values(), return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1 and gate.count == 3 and a.queued + b.queued == 1
        on_b[0].close()
        for head, _ in await asyncio.gather(*pending, *done):
            assert head.startswith(b"HTTP/1.1 200")
        assert gate.count == 3 and a.queued == b.queued == 0
        for c in (on_a[0], wait_a, wait_b):
            c.close()
        await wait_for(lambda: gate.count == 0)
        assert a.accepting and b.accepting and not gate.full


async def test_a_service_at_its_own_limit_leaves_the_others_alone(backend: Backend) -> None:
    gate = ConnectionGate(100)
    async with two_services(backend, gate, {"max_connections": 1}) as (_, a, b):
        (first,) = await fill(a.port, 1)
        (extra,) = await waiting(a, a.port)
        others = await fill(b.port, 3)  # the other service accepts as usual
        held_back(a, 1, [extra])
        assert b.accepting and gate.count == 4 and gate.reached == 0
        first.close()
        head, _ = await extra.response()
        assert head.startswith(b"HTTP/1.1 200")
        for c in (extra, *others):
            c.close()
        await wait_for(lambda: gate.count == 0)


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_accepting_moves_between_native_counted_and_paused(
    loop_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop's own accept while there is room for two backlogs, one by one closer
    to the limit, nothing at it; and back. No descriptor is left behind by the switches."""
    monkeypatch.setattr(service_module, "BACKLOG", 2)  # native needs room for 2 × 2

    async def scenario() -> None:
        async with (
            Backend("a") as backend,
            start_proxy(
                make_config(
                    [backend.address],
                    pool={"max_idle_per_server": 0},  # no idle upstream left open
                    service={"max_connections": 8},
                )
            ) as p,
        ):
            fds = len(os.listdir("/proc/self/fd"))
            modes = [p.service.accept_mode]
            clients = []
            for _ in range(8):
                clients += await fill(p.port, 1)
                modes.append(p.service.accept_mode)
            assert modes == ["native"] * 5 + ["counted"] * 3 + ["paused"]
            extra = await waiting(p.service, p.port, 2)
            await answered(clients[0])
            held_back(p.service, 8, extra)
            clients.pop(0).close()  # room for one: counted, and paused again at once
            head, _ = await extra[0].response()
            assert head.startswith(b"HTTP/1.1 200")
            assert p.service.accept_mode == "paused" and p.service.queued == 1
            for _ in range(5):  # the last waiting one comes in on the first: 4 open
                clients.pop(0).close()
            await wait_for(lambda: p.service.accept_mode == "native")
            head, _ = await extra[1].response()
            assert head.startswith(b"HTTP/1.1 200")
            for c in clients + extra:
                assert await answered(c) == b"hello from a\n"
                c.close()
            await wait_for(lambda: p.service.stats.connections == 0)
            assert p.service.stats.connections_total == 10
            await wait_for(lambda: len(os.listdir("/proc/self/fd")) <= fds)

    run_on(loop_name, scenario)


async def test_the_limit_and_its_end_are_logged_once(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quiesce")
    async with start_proxy(make_config([backend.address], service={"max_connections": 20})) as p:
        clients = await fill(p.port, 20)
        extra = await waiting(p.service, p.port, 3)
        for c in extra:  # one leaves, one waiting comes in: still at the limit
            clients.pop(0).close()
            head, _ = await c.response()
            assert head.startswith(b"HTTP/1.1 200")
        clients += extra
        reached = [r for r in caplog.records if "connection limit reached" in r.getMessage()]
        assert len(reached) == 1 and "service web" in reached[0].getMessage()
        assert not [r for r in caplog.records if "connections again" in r.getMessage()]
        for _ in range(2):  # 18 of 20: 10% below the limit, the episode is over
            clients.pop(0).close()
        await wait_for(lambda: p.service.stats.connections == 18)
        again = [r for r in caplog.records if "accepting connections again" in r.getMessage()]
        assert len(again) == 1
        assert p.service.stats.limit_reached == 1
        for c in clients:
            c.close()


async def test_metrics_show_the_limits_and_the_backlog(backend: Backend) -> None:
    gate = ConnectionGate(50)
    async with two_services(backend, gate, {"max_connections": 1}) as (registry, a, b):
        (first,) = await fill(a.port, 1)
        (extra,) = await waiting(a, a.port)
        app = SimpleNamespace(registry=registry, services={"web": a, "other": b}, gate=gate)
        text = render(build_collector_registry(app))[0].decode()
        assert "quiesce_connections 1.0" in text
        assert "quiesce_connections_max 50.0" in text
        assert "quiesce_connections_limit_reached_total 0.0" in text
        assert 'quiesce_service_connections_max{service="web"} 1.0' in text
        assert 'quiesce_service_connections_max{service="other"}' not in text
        assert 'quiesce_service_connections_limit_reached_total{service="web"} 1.0' in text
        assert 'quiesce_service_accepting{service="web"} 0.0' in text
        assert 'quiesce_service_accepting{service="other"} 1.0' in text
        assert 'quiesce_service_listen_queue{service="web"} 1.0' in text
        first.close()
        await extra.response()
        extra.close()


def test_the_body_timeout_reaches_the_service_context() -> None:
    for value, expected in (("5m", 300.0), ("2m", 120.0), (None, math.inf)):
        raw = make_config(["127.0.0.1:1"], service={"client_body_timeout": value})
        config = Config.model_validate(raw)
        registry = Registry(config)
        loop = asyncio.new_event_loop()
        try:
            ctx = make_context(
                "web", config.services["web"], registry, ConnectionTable(registry), loop
            )
        finally:
            loop.close()
        assert ctx.body_timeout == expected
    default = Config.model_validate(make_config(["127.0.0.1:1"])).services["web"]
    assert default.client_body_timeout == 300.0
