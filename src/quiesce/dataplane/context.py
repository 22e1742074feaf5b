"""What every connection of one service shares: config, pools, pages, limits, counters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from quiesce.dataplane.pages import Page

if TYPE_CHECKING:
    from quiesce.config.models import ServiceConfig
    from quiesce.dataplane.table import ConnectionTable
    from quiesce.registry import PoolRuntime, Registry
    from quiesce.rules.decision import Router


# status -> its class key, in one lookup ("other" for anything else)
_CLASS_OF = {status: f"{status // 100}xx" for status in range(100, 600)}


@dataclass(slots=True)
class ServiceStats:
    """Per-service counters (read by the admin API and metrics).

    ``requests``: L7 requests received (L4: connections accepted); ``maintenance_pages``:
    maintenance-page responses (L4: connections refused because no server was available);
    ``responses``: responses sent to clients by class (``"2xx"``…), including pages and
    errors the proxy generated itself; ``errors``: proxy-generated error statuses
    (400, 408, 414, 431, 502, 504) by code; ``connections``: live client connections;
    ``connections_total``: accepted since start; ``parked``: live L7 connections idle long
    enough to be parked (see quiesce.dataplane.park; counted in ``connections`` too).
    """

    requests: int = 0
    maintenance_pages: int = 0
    connections: int = 0
    connections_total: int = 0
    parked: int = 0
    responses: dict[str, int] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)

    def count_response(self, status: int) -> None:
        key = _CLASS_OF.get(status, "other")
        responses = self.responses
        responses[key] = responses.get(key, 0) + 1

    def count_error(self, status: int) -> None:
        self.errors[status] = self.errors.get(status, 0) + 1


class ServiceConnection(Protocol):
    def cut(self) -> None: ...

    def close_at_boundary(self, force: bool = False) -> None: ...

    def check(self, now: float) -> None: ...


class StickyTable:
    """source_ip persistence: client address -> (server name, expiry), per pool."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, float]] = {}
        self._writes = 0

    def get(self, ip: str, now: float) -> str | None:
        entry = self._entries.get(ip)
        if entry is None:
            return None
        if entry[1] < now:
            del self._entries[ip]
            return None
        return entry[0]

    def put(self, ip: str, server: str, now: float, timeout: float) -> None:
        self._entries[ip] = (server, now + timeout)
        self._writes += 1
        if self._writes >= 10_000:
            self._writes = 0
            self.purge(now)

    def purge(self, now: float) -> None:
        for k in [k for k, v in self._entries.items() if v[1] < now]:
            del self._entries[k]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(slots=True, eq=False)
class ServiceContext:
    name: str
    config: ServiceConfig
    registry: Registry
    table: ConnectionTable
    pool: PoolRuntime
    fallback: PoolRuntime | None
    page: Page
    pages: dict[str, Page]
    router: Router | None
    loop: asyncio.AbstractEventLoop
    stats: ServiceStats = field(default_factory=ServiceStats)
    conns: set[ServiceConnection] = field(default_factory=set)
    closing: bool = False
    drained: asyncio.Event | None = None  # set when closing and the last connection ends
    max_header_size: int = 65536
    max_request_line: int = 8192
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    body_timeout: float = 300.0  # the whole request body (math.inf: no limit)
    status_codes: frozenset[int] = frozenset()
    mark_server: bool = False
    sweep_interval: float = 1.0
    # An idle keep-alive L7 connection is parked after this long (quiesce.dataplane.park);
    # math.inf: never. Not a config key: tests shorten it.
    park_after: float = 0.5
    sweeper: asyncio.TimerHandle | None = None

    # One sweep per service enforces every connection's timeouts (header 408, keep-alive
    # idle, upstream response 504) instead of a timer per connection: an idle connection
    # costs no timer, a request no timer operation. Deadlines fire up to one interval late;
    # the interval is a quarter of the shortest timeout (at most 1 s).

    def watch(self) -> None:
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(self.sweep_interval, self.sweep)

    def sweep(self) -> None:
        self.sweeper = None
        if not self.conns:
            return
        now = self.loop.time()
        for conn in list(self.conns):
            conn.check(now)
        if self.conns:
            self.sweeper = self.loop.call_later(self.sweep_interval, self.sweep)

    def stop_sweep(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
