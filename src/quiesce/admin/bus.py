"""The live event fan-out behind ``AdminService.subscribe()`` (SSE, CLI ``--follow``, dashboard).

Theory of operation
-------------------
The registry emits events synchronously, on the event loop, in the middle of a command or a
health check: a subscriber must never be able to slow that down. Each :class:`Subscription`
therefore has a bounded queue; publishing is an append and a wake-up, never an await. When a
slow subscriber's queue is full the oldest event is dropped and the subscription is marked
*behind*. Every event is in the store before it is published, so a subscription that fell
behind refills itself from the store (by id, after the last event it delivered) and then
carries on with its queue, skipping what it already delivered: a slow reader sees every event,
late, as long as the store's retention still holds them. ``dropped`` counts the events that
had to be re-read from the store.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable

from quiesce.core.events import Event

History = Callable[[int, int], list[Event]]
"""``history(after_id, limit)``: stored events after ``after_id``, oldest first."""

REFILL_CHUNK = 500


class Subscription:
    """An async iterator of live events. ``aclose()`` (or ``close()``) ends it."""

    def __init__(
        self, bus: EventBus, maxlen: int, after_id: int | None, last_id: int | None
    ) -> None:
        self._bus = bus
        self._queue: deque[Event] = deque()
        self._backlog: deque[Event] = deque()
        self._maxlen = maxlen
        self._wake = asyncio.Event()
        self._last_id = after_id if after_id is not None else last_id
        self._behind = after_id is not None
        self._closed = False
        self.dropped = 0

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._backlog:
                e = self._backlog.popleft()
                self._last_id = e.id
                return e
            if self._behind and self._last_id is not None:
                try:
                    rows = self._bus.history(self._last_id, REFILL_CHUNK)
                except Exception:  # the store failed: carry on with what is queued
                    rows = []
                self._behind = len(rows) >= REFILL_CHUNK
                self._backlog.extend(rows)
                continue
            self._behind = False
            if self._queue:
                e = self._queue.popleft()
                if e.id is not None and self._last_id is not None:
                    if e.id <= self._last_id:
                        continue  # already delivered from the store
                    self._last_id = e.id
                return e
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    def push(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._queue) >= self._maxlen:
            self._queue.popleft()
            self.dropped += 1
            self._behind = True
        self._queue.append(event)

    def close(self) -> None:
        self._closed = True
        self._bus.discard(self)
        self._wake.set()

    async def aclose(self) -> None:
        self.close()


class EventBus:
    """Publishes events to every open :class:`Subscription`, never blocking the publisher."""

    def __init__(self, history: History, maxlen: int = 1000) -> None:
        self.history = history
        self.maxlen = maxlen
        self.last_id: int | None = None
        self._subs: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.get_ident()

    def subscribe(self, after_id: int | None = None) -> Subscription:
        sub = Subscription(self, self.maxlen, after_id, self.last_id)
        self._subs.add(sub)
        return sub

    def discard(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, event: Event) -> None:
        if event.id is not None:
            self.last_id = event.id
        if not self._subs:  # its length is cheap; a pass over a WeakSet is not (≈ 10 µs)
            return
        subs = list(self._subs)
        for sub in subs:
            sub.push(event)
        self._wake(subs)

    def close(self) -> None:
        subs = list(self._subs)
        for sub in subs:
            sub._closed = True
        self._subs = weakref.WeakSet()
        self._wake(subs)

    def _wake(self, subs: list[Subscription]) -> None:
        if not subs:
            return
        if self._loop is None or threading.get_ident() == self._thread:
            for sub in subs:
                sub._wake.set()
        else:  # published from a worker thread: wake the readers on their own loop
            for sub in subs:
                self._loop.call_soon_threadsafe(sub._wake.set)


__all__ = ["EventBus", "Subscription"]
