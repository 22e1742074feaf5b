"""What every connection of one service shares: config, pools, pages, limits, counters."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from quiesce.dataplane.pages import Page
from quiesce.dataplane.protoerr import protocol_error_throttle
from quiesce.state.traffic import Traffic

if TYPE_CHECKING:
    from ipaddress import IPv4Network, IPv6Network

    from quiesce.config.models import ServiceConfig
    from quiesce.dataplane.table import ConnectionTable
    from quiesce.dataplane.tls import ServiceTls
    from quiesce.logs import AccessLog
    from quiesce.rules.decision import Router
    from quiesce.state.registry import PoolRuntime, Registry


log = logging.getLogger("quiesce")

# status -> its class key, in one lookup ("other" for anything else)
_CLASS_OF = {status: f"{status // 100}xx" for status in range(100, 600)}

NO_LIMIT = sys.maxsize


@dataclass(slots=True)
class ServiceStats:
    """Per-service counters (read by the admin API and metrics).

    ``requests``: L7 requests received (L4: connections accepted); ``maintenance_pages``:
    maintenance-page responses (L4: connections refused because no server was available);
    ``responses``: responses sent to clients by class (``"2xx"``…), including pages and
    errors the proxy generated itself; ``errors``: proxy-generated error statuses
    (400, 408, 414, 431, 502, 504) by code; ``connections``: live client connections;
    ``connections_total``: accepted since start; ``parked``: live L7 connections idle long
    enough to be parked (see quiesce.dataplane.park; counted in ``connections`` too);
    ``limit_reached``: times the service stopped accepting because its ``max_connections``
    was reached; ``tls_failed``: TLS handshakes that failed or timed out, ``tls_refused``:
    connections that spoke cleartext to a TLS listener (quiesce.dataplane.frontdoor);
    ``protocol_errors``: connections of a ``postgresql`` service closed because a side broke
    the protocol's framing (quiesce.dataplane.pgrelay); ``proxy_refused``: connections an
    ``accept_proxy`` listener closed (not from ``trusted_proxies``, or a malformed, spoofed
    or incomplete PROXY header; quiesce.dataplane.frontdoor).
    """

    requests: int = 0
    maintenance_pages: int = 0
    connections: int = 0
    connections_total: int = 0
    parked: int = 0
    limit_reached: int = 0
    tls_failed: int = 0
    tls_refused: int = 0
    protocol_errors: int = 0
    proxy_refused: int = 0
    responses: dict[str, int] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
    # bytes read from and written to the clients (HAProxy's FRONTEND bin/bout), a
    # quiesce.state.traffic record: L7 counted when a request ends (a tunnel, an L4 relay:
    # at each sweep and at the end)
    traffic: Any = field(default_factory=Traffic)

    @property
    def bytes_in(self) -> int:
        return int(self.traffic.bytes_in)

    @property
    def bytes_out(self) -> int:
        return int(self.traffic.bytes_out)

    def count_response(self, status: int) -> None:
        key = _CLASS_OF.get(status, "other")
        responses = self.responses
        responses[key] = responses.get(key, 0) + 1

    def count_error(self, status: int) -> None:
        self.errors[status] = self.errors.get(status, 0) + 1


class Accepting(Protocol):
    """What a :class:`ConnectionGate` drives: a service's accepting (dataplane.service)."""

    native_room: int

    def update(self) -> None: ...

    @property
    def slow(self) -> bool: ...


def below_again(limit: int) -> int:
    """A limit episode ends (logged once) when the count is this far below the limit."""
    return max(1, limit // 10)


class ConnectionGate:
    """The process's client connections, every service's together, against the global
    ``limits.max_connections`` (quiesce.dataplane.limits derives it). One per process; a
    service started without one gets its own, unlimited.

    ``count`` is live client connections (L7, L4, parked ones included), kept by
    :meth:`ServiceContext.opened` / :meth:`ServiceContext.lost`; ``pending`` the sockets
    accepted one by one near a limit whose connection is not made yet. ``native_below``: the
    count from which a listener can no longer use the event loop's own accept (it takes a
    whole backlog at once) and must count each accept. ``slow``: some listener is not on the
    event loop's accept or some limit episode is open, so every close looks again.
    """

    __slots__ = (
        "cause",
        "count",
        "full",
        "limit",
        "listeners",
        "native_below",
        "pending",
        "reached",
        "slow",
    )

    def __init__(self, limit: int | None = None) -> None:
        self.limit = NO_LIMIT if limit is None else limit
        self.count = 0
        self.pending = 0
        self.reached = 0  # times the global limit was reached (episodes)
        self.full = False  # in an episode: the limit was reached, not yet below_again
        self.listeners: list[Accepting] = []
        self.native_below = self.limit
        self.slow = False
        self.cause = "limits.max_connections"  # what sets the limit (Budget.cause)

    def add(self, listener: Accepting) -> None:
        self.listeners.append(listener)
        self._room_changed()

    def remove(self, listener: Accepting) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)
        self._room_changed()

    def _room_changed(self) -> None:
        if self.limit == NO_LIMIT:
            self.native_below = NO_LIMIT
        else:
            self.native_below = self.limit - sum(x.native_room for x in self.listeners)
        self.update()

    def update(self) -> None:
        """Every listener looks at its room again; the global episode is logged."""
        for listener in self.listeners:
            listener.update()
        count, limit = self.count, self.limit
        if not self.full and count >= limit:
            self.full = True
            self.reached += 1
            log.warning(
                "connection limit reached: %d client connections (%s): "
                "new connections wait in the listen backlog until one closes",
                limit,
                self.cause,
            )
        elif self.full and count <= limit - below_again(limit):
            self.full = False
            log.info("accepting connections again: %d of %d client connections open", count, limit)
        self.slow = self.full or any(x.slow for x in self.listeners)


class ServiceConnection(Protocol):
    def cut(self, why: str = "") -> None: ...

    def close_at_boundary(self, force: bool = False) -> bool | None: ...

    def check(self, now: float) -> None: ...


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
    conns: set[ServiceConnection] = field(default_factory=set, repr=False)
    protocol_errors: Any = field(default_factory=protocol_error_throttle, repr=False)  # protoerr
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
    # Parks an idle connection, returns whether it did (quiesce.dataplane.park.park, set by
    # make_context; None: never park). A hook, so the L7 protocol needs no import of park.
    park: Callable[[Any], bool] | None = None
    # Takes a cleartext connection that opened with the HTTP/2 preface over to HTTP/2
    # (quiesce.dataplane.h2.conn.h2c, set by make_context for an http service; returns
    # whether it did). A hook, so the HTTP/1.1 protocol needs no import of the h2 package.
    h2c: Callable[[Any, bytes], bool] | None = None
    sweeper: asyncio.TimerHandle | None = None
    # Connection limits (quiesce.dataplane.service accepts within them): the process's gate,
    # this service's max_connections (NO_LIMIT: none), the count from which its listener
    # must count each accept, and its sockets accepted one by one, not made yet.
    gate: ConnectionGate = field(default_factory=ConnectionGate, repr=False)
    max_connections: int = NO_LIMIT
    native_below: int = NO_LIMIT
    pending: int = 0
    # TLS on the listener and to TLS pools (quiesce.dataplane.tls); None: neither
    tls: ServiceTls | None = None
    # the access log (quiesce.logs), None when off for this service or for all
    access: AccessLog | None = None
    # accept_proxy: the networks allowed to send a PROXY header (None: accept_proxy off)
    trusted: tuple[IPv4Network | IPv6Network, ...] | None = None

    # Counting connections: once per connection, never per request. ``opened`` is called
    # by connection_made of a new client connection (not of a parked one given back: its
    # record kept its place), ``lost`` when a client connection ends (connection_lost, or a
    # parked one closed). Far from every limit each is an add and one or two compares.

    def opened(self) -> None:
        gate = self.gate
        gate.count += 1
        if gate.count >= gate.native_below or self.stats.connections >= self.native_below:
            gate.update()

    def lost(self) -> None:
        gate = self.gate
        gate.count -= 1
        if gate.slow:
            gate.update()

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
