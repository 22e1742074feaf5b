"""An L4 connection and its pool's queue (quiesce.dataplane.waiting, quiesce.core.queue).

A relay picks its server when the client connects, with reading from the client paused
until the server's connection is made; a connection that waits in the queue stays so: on
uvloop, which reads once after the accept whatever was asked, the client's first chunk is
read and held (counted in the access log's ``bytes_in``), the rest waits in the kernel.
:func:`admit` is called only when the picked server has a ``max_connections`` or none was
found. When it gets a server the
relay connects as it would have at once; at its deadline the connection is closed (the
access log's ``sQ``, or ``MQ`` when it was held for an empty pool), as a connection with no
eligible server is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from quiesce.core.queue import Waiting
from quiesce.dataplane.waiting import Waiter, at_limit
from quiesce.logs import access as ts

if TYPE_CHECKING:
    import asyncio

    from quiesce.state.runtime import PoolRuntime, ServerRuntime


class Relay(Protocol):
    """What this module uses of dataplane.tcp.TcpClient (which imports this module)."""

    closed: bool
    term: str
    transport: asyncio.Transport
    waiting: Waiting[Any] | None
    ctx: Any  # ServiceContext

    def _pick(
        self, pool: PoolRuntime, exclude: tuple[ServerRuntime, ...]
    ) -> ServerRuntime | None: ...
    def _bind(self, pool: PoolRuntime, server: ServerRuntime) -> None: ...


class Relayed:
    """One waiting L4 connection (the queue's waiter)."""

    __slots__ = ("pool", "relay")

    def __init__(self, relay: Relay, pool: PoolRuntime) -> None:
        self.relay = relay
        self.pool = pool

    def dispatch(self, pool: PoolRuntime) -> bool:
        relay = self.relay
        if relay.closed:
            return True
        server = free_server(relay, pool)
        if server is None:
            return False
        relay._bind(pool, server)
        return True

    def timed_out(self, entry: Waiting[Waiter]) -> None:
        relay = self.relay
        if relay.closed:
            return
        self.pool.conn_errors += 1  # no server took it: the BACKEND's econ, as HAProxy's
        if entry.held:
            relay.ctx.stats.maintenance_pages += 1
        relay.term = (ts.NO_SERVER if entry.held else ts.SERVER_TIMEOUT) + ts.QUEUE
        relay.closed = True
        relay.transport.close()


def free_server(relay: Relay, pool: PoolRuntime) -> ServerRuntime | None:
    return relay._pick(pool, tuple(s for s in pool.candidates if at_limit(s)))


def admit(relay: Relay, pool: PoolRuntime, server: ServerRuntime | None) -> ServerRuntime | None:
    """The server the connection goes to now, or None: it waits in the pool's queue, or it
    was closed (no eligible server and no ``hold_when_empty``)."""
    if server is None:
        hold = pool.config.hold_when_empty
        if hold is None:
            pool.conn_errors += 1  # no server: the BACKEND's econ, as HAProxy's
            relay.ctx.stats.maintenance_pages += 1
            relay.term = ts.NO_SERVER + ts.DONE
            relay.closed = True
            relay.transport.close()
            return None
        _wait(relay, pool, hold, True)
        return None
    if not pool.queue:  # nobody waits ahead of it
        if not at_limit(server):
            return server
        other = free_server(relay, pool)
        if other is not None:
            return other
    _wait(relay, pool, pool.config.queue_timeout, False)
    return None


def _wait(relay: Relay, pool: PoolRuntime, timeout: float, held: bool) -> None:
    relay.waiting = relay.ctx.table.queues.wait(pool, Relayed(relay, pool), timeout, held)


def leave(relay: Relay, server: ServerRuntime | None) -> float:
    """The connection is lost: out of the queue if it was waiting there. Returns the time it
    waited for its server (the access log's queue time; 0 if it did not wait)."""
    entry = relay.waiting
    if entry is None:
        return 0.0
    if server is None:
        w = entry.waiter
        assert isinstance(w, Relayed)
        relay.ctx.table.queues.leave(w.pool, entry)
    return entry.waited


__all__ = ["Relayed", "admit", "free_server", "leave"]
