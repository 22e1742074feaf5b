"""Starting and stopping one service (listener): ``start_service`` and :class:`Service`.

Accepting within the connection limits
--------------------------------------
A service owns its listening sockets (bound here, open until :meth:`Service.close`) and
accepts on them in one of three ways, chosen by :meth:`Listener.update` from the room left
under its own ``max_connections`` and the process's (``ConnectionGate``):

* **native** — far from both limits (room for at least twice the listen backlog per
  socket): the event loop's own accept (``loop.create_server(sock=sock.dup())``), in C on
  uvloop. It takes every connection waiting in the backlog at once and counts them only in
  ``connection_made``, which is why it needs that much room;
* **counted** — closer: the service's duplicate of each socket is watched with
  ``add_reader``, and each ready callback accepts at most the room left, counting every
  socket as ``pending`` until its connection is made (``loop.connect_accepted_socket``).
  It costs a Python callback and a ``connect_accepted_socket`` per connection, where native
  accepts in C; it is used only near a limit, so the steady state pays nothing;
* **paused** — no room: nothing accepts. The kernel completes the handshakes and keeps the
  connections in the listen backlog (4096), as HAProxy does at ``maxconn``; they are not
  refused. Leaving native mode closes only the loop's server and its duplicate: the
  listening socket and its backlog stay, as the original descriptor is still open.

As soon as a connection closes (``ServiceContext.lost``) the room is looked at again, and
accepting resumes; native mode comes back (a new ``create_server``) once the room is large
again. A limit being reached and the episode's end (10% below the limit) are logged once
each, not per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import math
import socket
import struct
from collections.abc import Callable
from pathlib import Path

from quiesce.config.addresses import split_address
from quiesce.config.models import ServiceConfig
from quiesce.dataplane.context import (
    NO_LIMIT,
    ConnectionGate,
    ServiceContext,
    ServiceStats,
    below_again,
)
from quiesce.dataplane.frontdoor import FrontDoor
from quiesce.dataplane.h1.client import ClientConnection
from quiesce.dataplane.h2.conn import h2c
from quiesce.dataplane.limits import listen_backlog
from quiesce.dataplane.mysqlrelay import mysql_client
from quiesce.dataplane.pages import Page
from quiesce.dataplane.park import park
from quiesce.dataplane.pgrelay import PgClient, PgFrontDoor, pg_tls
from quiesce.dataplane.table import ConnectionTable
from quiesce.dataplane.tcp import TcpClient
from quiesce.dataplane.tls import service_tls
from quiesce.logs.access import GRACE
from quiesce.rules.decision import Router
from quiesce.state.registry import Registry, ServerRuntime

log = logging.getLogger("quiesce")

BACKLOG = 4096
ACCEPT_BATCH = 128  # connections accepted per ready callback in counted mode
ACCEPT_RETRY = 1.0  # seconds before accepting again after EMFILE & co (asyncio's delay)
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

NATIVE, COUNTED, PAUSED, CLOSED = "native", "counted", "paused", "closed"


def listen_queue(sock: socket.socket) -> int:
    """Connections waiting in a listening TCP socket's backlog (Linux: ``tcpi_unacked`` of
    a listener's TCP_INFO); 0 where that cannot be read."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
        return int(struct.unpack_from("I", info, 24)[0])
    except (OSError, AttributeError, struct.error):
        return 0


class Listener:
    """One service's accepting, within its own and the process's connection limits (see the
    module's docstring)."""

    def __init__(
        self,
        ctx: ServiceContext,
        socks: list[socket.socket],
        factory: Callable[[], asyncio.Protocol],
        backlog: int = BACKLOG,
    ) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.socks = socks  # the listening sockets: open until close()
        self.readers = [s.dup() for s in socks]  # counted mode accepts on these
        self.factory = factory
        self.backlog = backlog
        self.native_room = 2 * listen_backlog(backlog) * len(socks)
        self.mode = PAUSED
        self.servers: list[asyncio.Server] = []
        self.reading = False
        self.switching: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[object]] = set()
        self.retry: asyncio.TimerHandle | None = None
        self.full = False  # in an episode of this service's own limit
        limit = ctx.max_connections
        ctx.native_below = NO_LIMIT if limit == NO_LIMIT else limit - self.native_room

    @property
    def slow(self) -> bool:
        return self.mode != NATIVE or self.full or self.switching is not None

    @property
    def accepting(self) -> bool:
        return self.mode in (NATIVE, COUNTED)

    @property
    def queued(self) -> int:
        """Connections waiting in the kernel's listen backlog."""
        return sum(listen_queue(s) for s in self.socks)

    async def start(self) -> None:
        self.ctx.gate.add(self)  # looks at the room: native mode starts a task
        if self.switching is not None:
            await asyncio.shield(self.switching)

    def room(self) -> int:
        ctx = self.ctx
        gate = ctx.gate
        return min(
            gate.limit - gate.count - gate.pending,
            ctx.max_connections - ctx.stats.connections - ctx.pending,
        )

    def update(self) -> None:
        if self.mode == CLOSED:
            return
        ctx = self.ctx
        gate = ctx.gate
        limit = ctx.max_connections
        if not self.full and ctx.stats.connections >= limit:
            self.full = True
            ctx.stats.limit_reached += 1
            log.warning(
                "service %s: connection limit reached: %d client connections "
                "(max_connections): new connections wait in the listen backlog",
                ctx.name,
                limit,
            )
        elif self.full and ctx.stats.connections <= limit - below_again(limit):
            self.full = False
            log.info(
                "service %s: accepting connections again: %d of %d client connections open",
                ctx.name,
                ctx.stats.connections,
                limit,
            )
        room_g = gate.limit - gate.count - gate.pending
        room_s = limit - ctx.stats.connections - ctx.pending
        if room_g >= gate.limit - gate.native_below and room_s >= self.native_room:
            self._native()
        elif room_g > 0 and room_s > 0:
            self._counted()
        else:
            self._pause()

    # the three modes ---------------------------------------------------------------------

    def _native(self) -> None:
        if self.mode == NATIVE or self.switching is not None:
            return
        self.switching = self.loop.create_task(self._serve())

    async def _serve(self) -> None:
        servers: list[asyncio.Server] = []
        dups: list[socket.socket] = []
        try:
            for sock in self.socks:
                dups.append(sock.dup())
                servers.append(
                    await self.loop.create_server(self.factory, sock=dups[-1], backlog=self.backlog)
                )
        except BaseException:
            # cancelled (the listener closed meanwhile: App.stop closes services one by one
            # and the room each gives back switches another to native) or failed: the dups
            # are closed here, not left to the garbage collector
            for server in servers:
                server.close()
            for dup in dups:
                dup.close()
            raise
        finally:
            self.switching = None
        if self.mode == CLOSED:
            for server in servers:
                server.close()
            return
        self._close_servers()
        self.servers = servers
        self._stop_reading()
        self.mode = NATIVE
        self.ctx.gate.update()  # the room may have shrunk while the servers were made

    def _counted(self) -> None:
        self._close_servers()
        self.mode = COUNTED
        if not self.reading and self.retry is None:
            self.reading = True
            for i, reader in enumerate(self.readers):
                self.loop.add_reader(reader.fileno(), self._accept, i)

    def _pause(self) -> None:
        self._close_servers()
        self._stop_reading()
        self.mode = PAUSED

    def _close_servers(self) -> None:
        servers, self.servers = self.servers, []
        for server in servers:
            server.close()  # the server's duplicate only: the socket and its backlog stay

    def _stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            for reader in self.readers:
                self.loop.remove_reader(reader.fileno())

    # counted accepting ---------------------------------------------------------------------

    def _accept(self, i: int) -> None:
        ctx = self.ctx
        gate = ctx.gate
        reader = self.readers[i]
        room = min(self.room(), ACCEPT_BATCH)
        loop = self.loop
        for _ in range(room):
            try:
                sock, _ = reader.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    raise
                log.error(
                    "service %s: cannot accept (%s); trying again in %gs",
                    ctx.name,
                    exc.strerror,
                    ACCEPT_RETRY,
                )
                self._stop_reading()
                self.retry = loop.call_later(ACCEPT_RETRY, self._retried)
                return
            sock.setblocking(False)
            ctx.pending += 1
            gate.pending += 1
            task = loop.create_task(loop.connect_accepted_socket(self.factory, sock))
            self.tasks.add(task)
            task.add_done_callback(functools.partial(self._settled, sock))
        gate.update()  # the room is gone (or this batch was full): pause, or carry on

    def _settled(self, sock: socket.socket, task: asyncio.Task[object]) -> None:
        self.tasks.discard(task)
        ctx = self.ctx
        ctx.pending -= 1
        ctx.gate.pending -= 1
        if task.cancelled() or task.exception() is not None:
            sock.close()  # never made (a transport that was made detached it already)
        ctx.gate.update()

    def _retried(self) -> None:
        self.retry = None
        self.ctx.gate.update()

    def close(self) -> None:
        """Stop accepting and close the listening sockets (what waits in the backlog is
        refused, as when any listener closes)."""
        if self.mode == CLOSED:
            return
        self._pause()
        self.mode = CLOSED
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        if self.switching is not None:
            self.switching.cancel()
        self.ctx.gate.remove(self)
        for sock in (*self.readers, *self.socks):
            sock.close()


class Service:
    """A listening service. ``stats`` holds its counters (see :class:`ServiceStats`)."""

    def __init__(self, name: str, ctx: ServiceContext, listener: Listener) -> None:
        self.name = name
        self._ctx = ctx
        self._listener = listener
        sock = listener.socks[0]
        self.port: int = sock.getsockname()[1]
        self.host: str = sock.getsockname()[0]

    @property
    def stats(self) -> ServiceStats:
        return self._ctx.stats

    @property
    def config(self) -> ServiceConfig:
        return self._ctx.config

    @property
    def router(self) -> Router | None:
        """Its rules and monitor URI, compiled (None: none), with their hit counts."""
        return self._ctx.router

    @property
    def connections(self) -> int:
        """Live client connections of this service."""
        return len(self._ctx.conns)

    @property
    def max_connections(self) -> int | None:
        """This service's own limit (None: only the global one)."""
        limit = self._ctx.max_connections
        return None if limit == NO_LIMIT else limit

    @property
    def accepting(self) -> bool:
        """False while a connection limit keeps new connections in the listen backlog."""
        return self._listener.accepting

    @property
    def queued(self) -> int:
        """Connections waiting in the kernel's listen backlog (Linux; 0 elsewhere)."""
        return self._listener.queued

    @property
    def accept_mode(self) -> str:
        """``native``, ``counted`` or ``paused`` (``closed`` after :meth:`close`)."""
        return self._listener.mode

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
        self._listener.close()
        await asyncio.sleep(0)

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets (open until :meth:`close`): what an upgrade hands over to
        the new process (quiesce.frontends.runtime_socket.takeover)."""
        return list(self._listener.socks)

    async def shutdown(self, grace: float, *, keep_idle: bool = False) -> None:
        """uvicorn's staged shutdown: stop accepting, close idle keep-alive connections and
        ask busy ones to close after their in-flight response, wait for them up to
        ``grace`` seconds, then cut what is left (L4 relays get the whole grace period).

        ``keep_idle`` (the old process of an upgrade, whose listening sockets another
        process now accepts on): no idle keep-alive connection is closed while the grace
        lasts, since closing one races with the request its client may be sending. Each is
        closed at a safe point instead: its next request is served with ``Connection:
        close`` (every response says so while the service is closing). Connections the loop
        accepted just before the listener closed are let in first and served the same way.
        What is still idle at the end of the grace is closed, the rest cut."""
        ctx = self._ctx
        if keep_idle:
            self._listener.close()
            # A connection accepted by the loop is made one turn later (uvloop), or by a
            # task in counted mode: made while closing it would be closed unanswered.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            tasks = set(self._listener.tasks)
            if tasks:
                await asyncio.wait(tasks, timeout=1.0)
        ctx.closing = True
        self._listener.close()
        ctx.drained = asyncio.Event()
        for conn in list(ctx.conns):
            # (an HTTP/2 connection closes by GOAWAY, safe at any time: an upgrade too)
            if not keep_idle or getattr(conn, "multiplexed", False):
                conn.close_at_boundary()
        # Idle upstream keep-alive connections serve nobody now (busy ones are not pooled
        # again while closing): close them at once, not after the grace period.
        ctx.table.close_idle_upstreams(self._servers())
        if ctx.conns:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.drained.wait(), grace)
        if keep_idle:
            for conn in list(ctx.conns):
                conn.close_at_boundary(True)  # idle ones: closed now (a FIN, not a reset)
        for conn in list(ctx.conns):
            conn.cut(GRACE)
        ctx.stop_sweep()
        ctx.table.close_idle_upstreams(self._servers())
        await asyncio.sleep(0)

    def reconfigure(self, fresh: ServiceContext) -> None:
        """A reload: take the config-derived parts of ``fresh`` (a context made by
        :func:`make_context` from the new config: pools, router, pages read from disk,
        timeouts, limits). Requests read them from the context as they start, so every new
        request uses them at once; one in flight finishes as it began."""
        ctx = self._ctx
        carry = getattr(fresh.router, "carry_counts", None)
        if carry is not None and ctx.router is not None:
            carry(ctx.router)  # the rules' hit counts (GET /api/v1/services) go on
        for name in _RELOADED:
            setattr(ctx, name, getattr(fresh, name))
        limit = ctx.max_connections
        ctx.native_below = NO_LIMIT if limit == NO_LIMIT else limit - self._listener.native_room
        self._listener.update()

    def _servers(self) -> list[ServerRuntime]:
        ctx = self._ctx
        if ctx.router is not None:
            pools = list(ctx.registry.pools.values())
        else:
            pools = [p for p in (ctx.pool, ctx.fallback) if p is not None]
        return [s for p in pools for s in p.servers]


_RELOADED = (
    "config",
    "pool",
    "fallback",
    "page",
    "pages",
    "router",
    "max_header_size",
    "max_request_line",
    "header_timeout",
    "idle_timeout",
    "body_timeout",
    "status_codes",
    "mark_server",
    "sweep_interval",
    "max_connections",
    "access",
    "tls",
    "trusted",
)
"""What :meth:`Service.reconfigure` takes from a new context: everything make_context derives
from the config, nothing that counts or holds connections."""


async def bind_listen(listen: str) -> list[socket.socket]:
    """The listening sockets of a service's ``listen`` address, bound now (a reload binds a
    new service's before it changes anything, so a busy port changes nothing)."""
    host, port = split_address(listen)
    return await _bind(asyncio.get_running_loop(), host, port, BACKLOG)


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
        router=router if config.protocol != "tcp" or config.sni_routing else None,
        loop=loop,
        max_header_size=config.max_header_size,
        max_request_line=config.max_request_line,
        header_timeout=config.client_header_timeout,
        idle_timeout=config.client_idle_timeout,
        body_timeout=math.inf if config.client_body_timeout is None else config.client_body_timeout,
        status_codes=frozenset(ors.codes) if ors else frozenset(),
        mark_server=bool(ors and ors.mark_server == "maintenance"),
        max_connections=NO_LIMIT if config.max_connections is None else config.max_connections,
        park=park,
        h2c=h2c if config.protocol == "http" else None,  # HTTP/2 by prior knowledge
        access=table.access_log if config.access_log else None,
        # certificates and CAs read now (at each reload too): quiesce.dataplane.tls
        tls=pg_tls(service_tls(config, registry.config.pools, base_dir))
        if config.protocol in ("postgresql", "mysql")  # a pool's TLS after an SSL request
        else service_tls(config, registry.config.pools, base_dir),
        trusted=config.trusted_networks() if config.accept_proxy else None,
    )
    timeouts = [config.client_header_timeout, config.client_idle_timeout]
    if config.client_body_timeout is not None:
        timeouts.append(config.client_body_timeout)
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
    gate: ConnectionGate | None = None,
    socks: list[socket.socket] | None = None,
) -> Service:
    """Bind ``config.listen`` (port 0 allowed) and serve: ``protocol: http`` is the L7 proxy,
    ``tcp`` the L4 relay. Maintenance pages (the service's and every named page) are read
    into memory now; a missing page file fails here, not on the first outage. ``gate``: the
    process's global connection limit (the App passes one for all services; without it
    only the service's own ``max_connections`` applies). ``socks``: listening sockets
    already bound (handed over by the process this one upgrades), used instead of binding
    ``config.listen``."""
    loop = asyncio.get_running_loop()
    ctx = make_context(name, config, registry, table, loop, router=router, base_dir=base_dir)
    if gate is not None:
        ctx.gate = gate
    host, port = split_address(config.listen)
    if socks is None:
        socks = await _bind(loop, host, port, BACKLOG)
    else:
        for sock in socks:
            sock.setblocking(False)
    factory: Callable[[], asyncio.Protocol]
    if config.protocol == "http":
        factory = functools.partial(ClientConnection, ctx)
    elif config.protocol == "postgresql":  # the relay following the framing (pgrelay)
        factory = functools.partial(PgClient, ctx)
    elif config.protocol == "mysql":  # the same shell with MySQL's framing (mysqlrelay)
        # with tls (the service's, a pool's): TLS inside the handshake (mysqlrelay)
        factory = functools.partial(mysql_client, ctx)
    else:
        factory = functools.partial(TcpClient, ctx)
    if config.protocol == "postgresql" and config.tls is not None:
        # TLS after an SSLRequest answered 'S' (quiesce.dataplane.pgrelay)
        factory = functools.partial(PgFrontDoor, ctx, factory)
    elif config.protocol == "mysql":
        pass  # TLS inside MySQL's handshake (MysqlTlsClient); no sni rules, no accept_proxy
    elif config.tls is not None or config.sni_routing or config.accept_proxy:
        # TLS, routing on the ClientHello, a PROXY header: the first bytes decide
        # (quiesce.dataplane.frontdoor)
        factory = functools.partial(FrontDoor, ctx, factory)
    listener = Listener(ctx, socks, factory, BACKLOG)
    try:
        await listener.start()
    except BaseException:
        listener.close()
        raise
    return Service(name, ctx, listener)


async def _bind(
    loop: asyncio.AbstractEventLoop, host: str, port: int, backlog: int
) -> list[socket.socket]:
    """The listening sockets of ``host:port``, as ``loop.create_server`` binds them (one per
    address the host resolves to, SO_REUSEADDR, IPv6 sockets V6ONLY), non-blocking, with
    TCP_NODELAY (inherited by accepted connections)."""
    infos = await loop.getaddrinfo(
        host or None,
        port,
        family=socket.AF_UNSPEC,
        type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {addr!r}: "
                    f"{(exc.strerror or str(exc)).lower()}",
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    if not socks:
        raise OSError(f"{host}:{port} resolves to no address")
    return socks
