"""The I/O shell of the pools' queues (the logic is quiesce.core.queue, sans-IO).

A request waits in its pool's queue when every eligible server is at its
``servers[].max_connections`` (up to ``pools.X.queue_timeout``), or when the pool has no
eligible server and ``pools.X.hold_when_empty`` is set (up to that). Two things wake it,
neither by polling:

* a slot frees: the connection table calls :meth:`Queues.slot_freed` when a server with a
  limit finishes a request (L7) or a relay (L4); the head of the queue is offered a server
  at once (it takes the slot before anything else can);
* the pool changes: every registry event about a pool with requests waiting (a server back
  from maintenance, up again, added, its limit raised) schedules a drain for the next loop
  turn, once the registry has settled the pool.

One timer per pool, at the queue's next deadline, answers those whose time is up.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from quiesce.core.events import Event
from quiesce.core.queue import Waiting

if TYPE_CHECKING:
    from quiesce.state.registry import Registry
    from quiesce.state.runtime import PoolRuntime, ServerRuntime


class Waiter(Protocol):
    """A request waiting in a queue (an L7 client connection, quiesce.dataplane.h1.queued)."""

    def dispatch(self, pool: PoolRuntime) -> bool:
        """Take a server of ``pool`` with a free slot, if there is one (True), and go on."""

    def timed_out(self, entry: Waiting[Waiter]) -> None:
        """Its deadline came with no server: answer it."""


def at_limit(server: ServerRuntime) -> bool:
    limit = server.config.max_connections
    return limit is not None and server.connections >= limit


class Queues:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.timers: dict[PoolRuntime, asyncio.TimerHandle] = {}
        self.scheduled: set[PoolRuntime] = set()
        registry.listeners.append(self._event)

    def wait(
        self, pool: PoolRuntime, waiter: Waiter, timeout: float, held: bool
    ) -> Waiting[Waiter]:
        loop = asyncio.get_running_loop()
        entry: Waiting[Waiter] = pool.queue.push(waiter, loop.time(), timeout, held)
        self._arm(pool, loop)
        return entry

    def leave(self, pool: PoolRuntime, entry: Waiting[Waiter]) -> None:
        """``entry``'s client went away."""
        if pool.queue.remove(entry, asyncio.get_running_loop().time()) and not pool.queue:
            self._disarm(pool)

    def slot_freed(self, server: ServerRuntime) -> None:
        pool = self.registry.pools.get(server.pool)
        if pool is not None and pool.queue:
            self.drain(pool)

    def drain(self, pool: PoolRuntime) -> None:
        self.scheduled.discard(pool)
        loop = asyncio.get_running_loop()
        pool.queue.drain(loop.time(), lambda e: e.waiter.dispatch(pool))
        if not pool.queue:
            self._disarm(pool)

    def _event(self, event: Event) -> None:
        name = event.pool
        if name is None:
            return
        pool = self.registry.pools.get(name)
        if pool is None or not pool.queue or pool in self.scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no data plane running (a command-line tool's registry)
        self.scheduled.add(pool)
        loop.call_soon(self.drain, pool)

    def _arm(self, pool: PoolRuntime, loop: asyncio.AbstractEventLoop) -> None:
        due = pool.queue.next_deadline()
        timer = self.timers.get(pool)
        if timer is not None:
            if due is not None and timer.when() <= due:
                return
            timer.cancel()
        if due is not None:
            self.timers[pool] = loop.call_at(due, self._expire, pool)

    def _disarm(self, pool: PoolRuntime) -> None:
        timer = self.timers.pop(pool, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, pool: PoolRuntime) -> None:
        self.timers.pop(pool, None)
        loop = asyncio.get_running_loop()
        for entry in pool.queue.expired(loop.time()):
            entry.waiter.timed_out(entry)
        self._arm(pool, loop)


__all__ = ["Queues", "Waiter", "at_limit"]
