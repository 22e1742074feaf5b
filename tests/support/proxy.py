"""The L7/L4 proxy in-process, for tests: a registry, a connection table and one service
started from a config mapping, listening on 127.0.0.1, port 0::

    from tests.support.proxy import make_config, start_proxy
    async with start_proxy(make_config([backend.address]), service="web") as p:
        p.url, p.port, p.registry, p.table, p.service

:func:`make_config` makes the mapping: a pool ``web`` of the given servers (``s0``, ``s1``, …)
and a service ``web`` in front of it; ``pool``, ``service``, ``extra_pools`` and ``pages`` add
to it. :func:`start_proxy` compiles the service's own rules unless given a ``router``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quiesce.config.models import Config
from quiesce.core.clock import Clock
from quiesce.dataplane import ConnectionTable, Service, start_service
from quiesce.logs import open_access_log
from quiesce.rules import compile_router
from quiesce.rules.decision import Router
from quiesce.state.registry import Registry


@dataclass
class Proxy:
    registry: Registry
    table: ConnectionTable
    service: Service

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"


def make_config(
    servers: Sequence[str | dict[str, Any]],
    *,
    protocol: str = "http",
    pool: dict[str, Any] | None = None,
    service: dict[str, Any] | None = None,
    extra_pools: dict[str, Any] | None = None,
    pages: dict[str, Any] | None = None,
) -> dict[str, Any]:
    members = []
    for i, s in enumerate(servers):
        members.append({"name": f"s{i}", "address": s} if isinstance(s, str) else s)
    cfg: dict[str, Any] = {
        "pools": {"web": {"servers": members, **(pool or {})}, **(extra_pools or {})},
        "services": {
            "web": {"listen": "127.0.0.1:0", "protocol": protocol, "pool": "web", **(service or {})}
        },
    }
    if pages:
        cfg["pages"] = pages
    return cfg


@contextlib.asynccontextmanager
async def start_proxy(
    raw: dict[str, Any],
    service: str = "web",
    *,
    router: Router | None = None,
    base_dir: Path = Path("."),
    clock: Clock | None = None,
) -> AsyncIterator[Proxy]:
    config = Config.model_validate(raw)
    registry = Registry(config, clock=clock)
    table = ConnectionTable(registry)
    # logging.access of the mapping, opened as quiesce run does (closed, so written, at the end)
    table.access_log = open_access_log(config.logging, base_dir, asyncio.get_running_loop())
    registry.close_handlers.append(table.close)
    if router is None:  # the service's own rules, compiled as the application does
        router = compile_router(service, config.services[service], registry)
    svc = await start_service(
        service,
        config.services[service],
        registry,
        table,
        router=router,
        base_dir=base_dir,
    )
    try:
        yield Proxy(registry, table, svc)
    finally:
        await svc.shutdown(0.5)
        if table.access_log is not None:
            table.access_log.close()
