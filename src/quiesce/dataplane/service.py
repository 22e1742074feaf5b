"""Starting and stopping one service (listener): ``start_service`` and :class:`Service`."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from quiesce.config.addresses import split_address
from quiesce.config.models import ServiceConfig
from quiesce.dataplane.context import ServiceContext, ServiceStats
from quiesce.dataplane.http import ClientConnection
from quiesce.dataplane.pages import Page
from quiesce.dataplane.table import ConnectionTable
from quiesce.dataplane.tcp import TcpClient
from quiesce.registry import Registry, ServerRuntime
from quiesce.rules.decision import Router


class Service:
    """A listening service. ``stats`` holds its counters (see :class:`ServiceStats`)."""

    def __init__(self, name: str, ctx: ServiceContext, server: asyncio.Server) -> None:
        self.name = name
        self._ctx = ctx
        self._server = server
        sock = server.sockets[0]
        self.port: int = sock.getsockname()[1]
        self.host: str = sock.getsockname()[0]

    @property
    def stats(self) -> ServiceStats:
        return self._ctx.stats

    @property
    def config(self) -> ServiceConfig:
        return self._ctx.config

    @property
    def connections(self) -> int:
        """Live client connections of this service."""
        return len(self._ctx.conns)

    @property
    def parked(self) -> int:
        """Of :attr:`connections`, the idle keep-alive ones that are parked (see
        quiesce.dataplane.park)."""
        return self._ctx.stats.parked

    @property
    def park_after(self) -> float:
        """Seconds a keep-alive connection idles before it is parked (``math.inf``: never)."""
        return self._ctx.park_after

    @park_after.setter
    def park_after(self, seconds: float) -> None:
        self._ctx.park_after = seconds

    async def close(self) -> None:
        """Stop accepting new connections (existing ones carry on)."""
        self._server.close()
        await asyncio.sleep(0)

    async def shutdown(self, grace: float) -> None:
        """uvicorn's staged shutdown: stop accepting, close idle keep-alive connections and
        ask busy ones to close after their in-flight response, wait for them up to
        ``grace`` seconds, then cut what is left (L4 relays get the whole grace period)."""
        ctx = self._ctx
        ctx.closing = True
        self._server.close()
        ctx.drained = asyncio.Event()
        for conn in list(ctx.conns):
            conn.close_at_boundary()
        # Idle upstream keep-alive connections serve nobody now (busy ones are not pooled
        # again while closing): close them at once, not after the grace period.
        ctx.table.close_idle_upstreams(self._servers())
        if ctx.conns:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.drained.wait(), grace)
        for conn in list(ctx.conns):
            conn.cut()
        ctx.stop_sweep()
        ctx.table.close_idle_upstreams(self._servers())
        await asyncio.sleep(0)

    def _servers(self) -> list[ServerRuntime]:
        ctx = self._ctx
        if ctx.router is not None:
            pools = list(ctx.registry.pools.values())
        else:
            pools = [p for p in (ctx.pool, ctx.fallback) if p is not None]
        return [s for p in pools for s in p.servers]


def make_context(
    name: str,
    config: ServiceConfig,
    registry: Registry,
    table: ConnectionTable,
    loop: asyncio.AbstractEventLoop,
    *,
    router: Router | None = None,
    base_dir: Path = Path("."),
) -> ServiceContext:
    """What one service's connections share, from its config (pages read into memory now:
    a missing page file fails here). start_service uses it; so do the benchmarks and tests
    that drive the protocol classes without sockets."""
    pool = registry.pool(config.pool)
    fallback = registry.pool(config.fallback_pool) if config.fallback_pool else None
    page = Page.load(config.maintenance_page, base_dir)
    pages = {n: Page.load(p, base_dir) for n, p in registry.config.pages.items()}
    ors = config.on_response_status
    ctx = ServiceContext(
        name=name,
        config=config,
        registry=registry,
        table=table,
        pool=pool,
        fallback=fallback,
        page=page,
        pages=pages,
        router=router if config.protocol == "http" else None,
        loop=loop,
        max_header_size=config.max_header_size,
        max_request_line=config.max_request_line,
        header_timeout=config.client_header_timeout,
        idle_timeout=config.client_idle_timeout,
        status_codes=frozenset(ors.codes) if ors else frozenset(),
        mark_server=bool(ors and ors.mark_server == "maintenance"),
    )
    timeouts = [config.client_header_timeout, config.client_idle_timeout]
    for p in registry.pools.values():
        timeouts.append(p.config.response_timeout)
    ctx.sweep_interval = min(1.0, max(0.02, min(timeouts) / 4))
    return ctx


async def start_service(
    name: str,
    config: ServiceConfig,
    registry: Registry,
    table: ConnectionTable,
    *,
    router: Router | None = None,
    base_dir: Path = Path("."),
) -> Service:
    """Bind ``config.listen`` (port 0 allowed) and serve: ``protocol: http`` is the L7 proxy,
    ``tcp`` the L4 relay. Maintenance pages (the service's and every named page) are read
    into memory now; a missing page file fails here, not on the first outage."""
    loop = asyncio.get_running_loop()
    ctx = make_context(name, config, registry, table, loop, router=router, base_dir=base_dir)
    host, port = split_address(config.listen)
    if config.protocol == "http":
        server = await loop.create_server(
            lambda: ClientConnection(ctx), host or None, port, backlog=4096, reuse_address=True
        )
    else:
        server = await loop.create_server(
            lambda: TcpClient(ctx), host or None, port, backlog=4096, reuse_address=True
        )
    for sock in server.sockets:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Service(name, ctx, server)
