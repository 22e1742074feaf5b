"""HealthManager + Registry + real HTTP back ends: the maintenance rules end to end, sync,
the concurrency cap and start-up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from quiesce.config.models import Config, HealthMonitor
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.events import Event, EventKind
from quiesce.core.states import Cause, Oper, Verdict
from quiesce.health import HealthManager
from quiesce.health.probes import StreamProber
from quiesce.state.registry import Registry, ServerRuntime
from tests.health.servers import HttpBackend

pytestmark = pytest.mark.loopback

INTERVAL = 0.15


def http_monitor(**over: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "send_interval": INTERVAL,
        "receive_timeout": 0.1,
        "successful_checks": 2,
        "failed_checks": 2,
        "http_monitor": {"maintenance_code": [503], "maintenance_response": "under construction"},
        **over,
    }


def make_registry(ports: list[int], **monitor: Any) -> Registry:
    config = Config.model_validate(
        {
            "healthmonitors": {"web": http_monitor(**monitor)},
            "pools": {
                "p": {
                    "healthmonitors": ["web"],
                    "servers": [
                        {"name": f"s{i}", "address": f"127.0.0.1:{port}"}
                        for i, port in enumerate(ports)
                    ],
                }
            },
        }
    )
    return Registry(config)


class Watcher:
    """Records oper changes with a snapshot of the server's recent verdicts."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.events: list[tuple[Event, list[CheckResult]]] = []
        self.changed = asyncio.Event()
        registry.listeners.append(self._on)

    def _on(self, event: Event) -> None:
        if event.kind is EventKind.OPER_CHANGE:
            server = self.registry.pool(event.pool or "").server(event.server or "")
            self.events.append((event, list(server.last_checks["web"])))
            self.changed.set()

    async def until(self, server: ServerRuntime, oper: Oper, timeout: float = 3.0) -> Event:
        async with asyncio.timeout(timeout):
            while server.oper is not oper:
                self.changed.clear()
                await self.changed.wait()
        return self.events[-1][0]

    def verdicts_at_last_change(self) -> list[Verdict]:
        return [r.verdict for r in self.events[-1][1]]


@pytest.fixture
async def setup(
    http_backend: HttpBackend,
) -> AsyncIterator[tuple[HttpBackend, Registry, ServerRuntime, Watcher]]:
    registry = make_registry([http_backend.port])
    watcher = Watcher(registry)
    manager = HealthManager(registry)
    manager.start()
    yield http_backend, registry, registry.pool("p").server("s0"), watcher
    await manager.stop()


def trailing(verdicts: list[Verdict], pred: Callable[[Verdict], bool]) -> int:
    n = 0
    for v in reversed(verdicts):
        if not pred(v):
            break
        n += 1
    return n


async def test_up_to_maintenance_at_first_maintenance_reply(setup: Any) -> None:
    backend, _registry, server, watch = setup
    event = await watch.until(server, Oper.UP)
    assert (event.from_, event.to, event.cause) == ("unknown", "up", "health")
    backend.mode = "503"
    event = await watch.until(server, Oper.MAINTENANCE)
    assert watch.verdicts_at_last_change()[-2:] == [Verdict.PASS, Verdict.MAINTENANCE]
    d = event.detail
    assert d["monitor"] == "web"
    assert d["reason"] == "MAINTENANCE_RESPONSE_CODE_MATCH"
    assert d["status_code"] == 503
    assert isinstance(d["latency_ms"], float) and d["latency_ms"] > 0
    assert "503" in str(d["detail"])
    assert event.eligible == 0


async def test_maintenance_string_then_up_at_first_pass(setup: Any) -> None:
    backend, _registry, server, watch = setup
    await watch.until(server, Oper.UP)
    backend.mode = "construction"
    event = await watch.until(server, Oper.MAINTENANCE)
    assert event.detail["reason"] == "MAINTENANCE_PAYLOAD_CONTENT_MATCH"
    backend.mode = "ok"  # successful_checks is 2, but leaving maintenance takes one pass
    event = await watch.until(server, Oper.UP)
    assert watch.verdicts_at_last_change()[-2:] == [Verdict.MAINTENANCE, Verdict.PASS]
    assert event.detail["reason"] == "OK"


async def test_down_to_maintenance_at_once(setup: Any) -> None:
    backend, _registry, server, watch = setup
    backend.mode = "500"
    event = await watch.until(server, Oper.DOWN)
    assert event.detail["reason"] == "RESPONSE_CODE_MISMATCH"
    backend.mode = "503"
    await watch.until(server, Oper.MAINTENANCE)
    assert watch.verdicts_at_last_change()[-2:] == [Verdict.FAIL, Verdict.MAINTENANCE]


async def test_maintenance_to_down_after_failed_checks(setup: Any) -> None:
    backend, _registry, server, watch = setup
    backend.mode = "503"
    await watch.until(server, Oper.MAINTENANCE)
    backend.mode = "500"
    event = await watch.until(server, Oper.DOWN)
    verdicts = watch.verdicts_at_last_change()
    assert trailing(verdicts, lambda v: v is Verdict.FAIL) == 2  # failed_checks
    assert verdicts[-3] is Verdict.MAINTENANCE
    assert (event.from_, event.to) == ("maintenance", "down")


async def test_down_to_up_needs_successful_checks(setup: Any) -> None:
    backend, _registry, server, watch = setup
    backend.mode = "close"
    event = await watch.until(server, Oper.DOWN)
    assert event.detail["reason"] == "MALFORMED_RESPONSE"
    backend.mode = "ok"
    await watch.until(server, Oper.UP)
    verdicts = watch.verdicts_at_last_change()
    assert trailing(verdicts, lambda v: v is Verdict.PASS) == 2


async def test_connection_refused_event(closed_port: int) -> None:
    registry = make_registry([closed_port])
    watch = Watcher(registry)
    manager = HealthManager(registry)
    manager.start()
    try:
        server = registry.pool("p").server("s0")
        event = await watch.until(server, Oper.DOWN)
        assert event.detail["reason"] == "CONNECTION_REFUSED"
        assert event.detail["monitor"] == "web"
        assert len(server.last_checks["web"]) >= 1
    finally:
        await manager.stop()


async def test_startup_leaves_unknown_within_about_one_interval() -> None:
    backends = [await HttpBackend().start() for _ in range(20)]
    registry = make_registry([b.port for b in backends], send_interval=0.5, receive_timeout=0.2)
    manager = HealthManager(registry)
    # Checks each server had when it left UNKNOWN. When the first check is due (within the
    # first interval, spread) is Schedule's arithmetic, tested in test_schedule.py; here, in
    # order rather than against the wall clock: each server leaves UNKNOWN on its first check.
    checks_at_start: dict[str, int] = {}

    def on_event(_: object) -> None:
        for s in registry.servers():
            if s.oper is not Oper.UNKNOWN and s.name not in checks_at_start:
                checks_at_start[s.name] = sum(len(c) for c in s.last_checks.values())

    registry.listeners.append(on_event)
    manager.start()
    try:
        async with asyncio.timeout(3.0):
            while any(s.oper is Oper.UNKNOWN for s in registry.servers()):
                await asyncio.sleep(0.02)
        assert set(checks_at_start.values()) == {1}, checks_at_start
        assert all(s.oper is Oper.UP for s in registry.servers())
        # history kept, bounded to 10 per monitor
        await asyncio.sleep(0)
    finally:
        await manager.stop()
        for b in backends:
            await b.stop()


async def test_last_ten_results_kept(setup: Any) -> None:
    _backend, _registry, server, _watch = setup
    async with asyncio.timeout(5.0):
        while len(server.last_checks["web"]) < 10 or server.last_checks["web"][0].at == 0:
            await asyncio.sleep(INTERVAL)
        first = server.last_checks["web"][0]
        while server.last_checks["web"][0] == first:
            await asyncio.sleep(INTERVAL / 3)
    assert len(server.last_checks["web"]) == 10
    assert all(r.latency > 0 for r in server.last_checks["web"])


async def test_concurrency_cap(http_backend: HttpBackend) -> None:
    """8 servers that never answer, a cap of 3: never more than 3 probes outstanding, and
    the others still get their turn (every server goes down)."""
    http_backend.mode = "hang"
    registry = make_registry([http_backend.port] * 8, send_interval=0.3, receive_timeout=0.2)
    manager = HealthManager(registry, max_concurrency=3)
    manager.start()
    prober = manager.prober("http")
    real_start = prober.start
    active = peak = 0

    def counting_start(target: Any, monitor: Any, name: str, on_done: Any) -> Any:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)

        def done(result: CheckResult) -> None:
            nonlocal active
            active -= 1
            on_done(result)

        return real_start(target, monitor, name, done)

    # The C engine path starts a tick's checks in one batch and reports to each job's on_done.
    assert isinstance(prober, StreamProber)
    real_batch = prober.start_batch
    wrapped: set[int] = set()

    def counting_batch(batch: list[Any]) -> None:
        nonlocal active, peak
        for job, _ in batch:
            if id(job) not in wrapped:
                wrapped.add(id(job))
                original = job.on_done

                def done(result: CheckResult, original: Any = original) -> None:
                    nonlocal active
                    active -= 1
                    original(result)

                job.on_done = done
        active += len(batch)
        peak = max(peak, active)
        real_batch(batch)

    prober.start = counting_start  # type: ignore[method-assign]
    prober.start_batch = counting_batch  # type: ignore[method-assign]
    try:
        async with asyncio.timeout(5.0):
            while manager.stats.completed < 16:
                await asyncio.sleep(0.05)
    finally:
        await manager.stop()
    assert peak == 3
    assert all(s.oper is Oper.DOWN for s in registry.servers())


async def test_sync_attach_detach_and_edit(http_backend: HttpBackend) -> None:
    registry = make_registry([http_backend.port])
    manager = HealthManager(registry)
    manager.start()
    server = registry.pool("p").server("s0")
    try:
        assert manager.pairs == [("p/s0", "web")]
        tcp = HealthMonitor(type="tcp", send_interval=INTERVAL, receive_timeout=0.1)
        registry.put_monitor("tcp", tcp, actor="test", cause=Cause.API)
        registry.set_pool_monitors("p", ["web", "tcp"], actor="test", cause=Cause.API)
        manager.sync()
        assert sorted(manager.pairs) == [("p/s0", "tcp"), ("p/s0", "web")]
        async with asyncio.timeout(3.0):
            while not server.last_checks["tcp"]:
                await asyncio.sleep(0.02)
        assert server.last_checks["tcp"][-1].reason is Reason.OK

        # edit: the new definition applies at the next check
        edited = HealthMonitor.model_validate(
            http_monitor(http_monitor={"http_response_code": ["5xx"]})
        )
        registry.put_monitor("web", edited, actor="test", cause=Cause.API)
        manager.sync()
        async with asyncio.timeout(3.0):
            while not (
                server.last_checks["web"]
                and server.last_checks["web"][-1].reason is Reason.RESPONSE_CODE_MISMATCH
            ):
                await asyncio.sleep(0.02)

        registry.set_pool_monitors("p", ["tcp"], actor="test", cause=Cause.API)
        manager.sync()
        assert manager.pairs == [("p/s0", "tcp")]
        registry.set_pool_monitors("p", [], actor="test", cause=Cause.API)
        manager.sync()
        assert manager.pairs == []
        assert server.oper is Oper.UNMONITORED
    finally:
        await manager.stop()


async def test_edit_applies_at_next_check_without_sync(http_backend: HttpBackend) -> None:
    registry = make_registry([http_backend.port])
    manager = HealthManager(registry)
    manager.start()
    server = registry.pool("p").server("s0")
    try:
        async with asyncio.timeout(3.0):
            while server.oper is not Oper.UP:
                await asyncio.sleep(0.02)
        registry.monitors["web"] = HealthMonitor.model_validate(
            http_monitor(http_monitor={"http_response": "not there"})
        )
        async with asyncio.timeout(3.0):
            while server.oper is not Oper.DOWN:
                await asyncio.sleep(0.02)
        assert server.last_checks["web"][-1].reason is Reason.PAYLOAD_CONTENT_MISMATCH
    finally:
        await manager.stop()


async def test_stop_is_clean_and_sync_before_start_is_a_no_op(http_backend: HttpBackend) -> None:
    registry = make_registry([http_backend.port])
    manager = HealthManager(registry)
    manager.sync()
    assert manager.pairs == []
    manager.start()
    await manager.stop()
    assert manager.pairs == []
    completed = manager.stats.completed
    await asyncio.sleep(INTERVAL * 2)
    assert manager.stats.completed == completed


async def test_fake_clock_stamps_results_but_slots_follow_the_loop(
    http_backend: HttpBackend,
) -> None:
    from quiesce.core.clock import FakeClock

    clock = FakeClock(start=5000.0)
    registry = make_registry([http_backend.port])
    manager = HealthManager(registry, clock)
    manager.start()
    server = registry.pool("p").server("s0")
    try:
        async with asyncio.timeout(3.0):
            while len(server.last_checks["web"]) < 3:
                await asyncio.sleep(0.02)
        assert all(r.at == 5000.0 and r.latency == 0.0 for r in server.last_checks["web"])
    finally:
        await manager.stop()


async def test_monitor_port_overrides_the_server_port(
    http_backend: HttpBackend, closed_port: int
) -> None:
    registry = make_registry([closed_port], monitor_port=http_backend.port)
    manager = HealthManager(registry)
    manager.start()
    server = registry.pool("p").server("s0")
    try:
        async with asyncio.timeout(3.0):
            while server.oper is not Oper.UP:
                await asyncio.sleep(0.02)
        assert http_backend.requests >= 1
    finally:
        await manager.stop()


async def test_host_name_and_ipv6_servers(http_backend: HttpBackend) -> None:
    """A host name goes through the asyncio path (resolution), an IPv6 literal through the
    fast path with an AF_INET6 socket."""
    import socket

    v6 = None
    if socket.has_ipv6:
        try:
            v6 = await asyncio.start_server(http_backend._handle, "::1", 0)
        except OSError:
            v6 = None
    servers = [{"name": "byname", "address": f"localhost:{http_backend.port}"}]
    if v6 is not None:
        servers.append({"name": "v6", "address": f"[::1]:{v6.sockets[0].getsockname()[1]}"})
    config = Config.model_validate(
        {
            "healthmonitors": {"web": http_monitor()},
            "pools": {"p": {"healthmonitors": ["web"], "servers": servers}},
        }
    )
    registry = Registry(config)
    manager = HealthManager(registry)
    manager.start()
    try:
        async with asyncio.timeout(3.0):
            while not all(s.oper is Oper.UP for s in registry.servers()):
                await asyncio.sleep(0.02)
    finally:
        await manager.stop()
        if v6 is not None:
            v6.close()
            await v6.wait_closed()


@pytest.mark.root
@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="needs root / CAP_NET_RAW")
async def test_node_icmp_monitor_beside_pool_monitor(http_backend: HttpBackend) -> None:
    config = Config.model_validate(
        {
            "healthmonitors": {
                "web": http_monitor(),
                "ping": {"type": "icmp", "send_interval": INTERVAL, "receive_timeout": 0.1},
            },
            "pools": {
                "p": {
                    "healthmonitors": ["web"],
                    "servers": [
                        {
                            "name": "s0",
                            "address": f"127.0.0.1:{http_backend.port}",
                            "healthmonitors": ["ping"],
                        }
                    ],
                }
            },
        }
    )
    registry = Registry(config)
    manager = HealthManager(registry)
    manager.start()
    server = registry.pool("p").server("s0")
    try:
        assert sorted(manager.pairs) == [("p/s0", "ping"), ("p/s0", "web")]
        async with asyncio.timeout(3.0):
            while server.oper is not Oper.UP:
                await asyncio.sleep(0.02)
        assert server.last_checks["ping"][-1].detail == "echo reply"
    finally:
        await manager.stop()
