"""A pool's queue of requests waiting for a server: FIFO, deadlines, HAProxy's queue counters.

Sans-IO: time is an argument, nothing sleeps. The data plane (quiesce.dataplane.waiting)
puts a request here when every eligible server of its pool is at its ``max_connections``
(it waits up to ``queue_timeout``), or when the pool has no eligible server and
``hold_when_empty`` is set (it waits up to that). A freed slot or a server coming back calls
:meth:`PoolQueue.drain`, which offers the head of the queue a server until one cannot be
served; a timer calls :meth:`PoolQueue.expired` at :meth:`PoolQueue.next_deadline`.

Counters, as HAProxy's ``show stat`` means them: ``qcur`` the requests waiting now, ``qmax``
the most ever waiting at once, ``qtime`` the average time in the queue of the last
:data:`QTIME_WINDOW` requests that left it for a server (HAProxy: the last 1024, in ms).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

W = TypeVar("W")

QTIME_WINDOW = 1024


class Waiting(Generic[W]):
    """One request in a queue: who waits (the shell's object), since when, until when, and
    whether it waits for a free slot (``held`` False) or for a server to come back."""

    __slots__ = ("deadline", "held", "since", "waited", "waiter")

    def __init__(self, waiter: W, since: float, deadline: float, held: bool) -> None:
        self.waiter = waiter
        self.since = since
        self.deadline = deadline
        self.held = held
        self.waited = 0.0  # the time it waited, once it left the queue (the access log's Tw)


class PoolQueue(Generic[W]):
    """The FIFO of one pool (a dict keeps the order and removes from the middle in O(1))."""

    __slots__ = (
        "_entries",
        "_recent",
        "_recent_i",
        "_recent_sum",
        "qmax",
        "qtime_max",
        "served",
        "timeouts",
    )

    def __init__(self) -> None:
        self._entries: dict[Waiting[W], None] = {}
        self.qmax = 0
        self.qtime_max = 0.0  # the longest wait of a request that got a server (seconds)
        self.served = 0  # left the queue for a server
        self.timeouts = 0  # left it at their deadline
        self._recent: list[float] = []  # the last QTIME_WINDOW waits, a ring
        self._recent_i = 0
        self._recent_sum = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def qcur(self) -> int:
        return len(self._entries)

    @property
    def qtime(self) -> float:
        """The average wait (seconds) of the last requests that got a server; 0 if none."""
        return self._recent_sum / len(self._recent) if self._recent else 0.0

    def push(self, waiter: W, now: float, timeout: float, held: bool = False) -> Waiting[W]:
        entry = Waiting(waiter, now, now + timeout, held)
        self._entries[entry] = None
        if len(self._entries) > self.qmax:
            self.qmax = len(self._entries)
        return entry

    def remove(self, entry: Waiting[W], now: float) -> bool:
        """Take ``entry`` out (its client went away); False if it was not waiting."""
        if self._entries.pop(entry, False) is not None:
            return False
        entry.waited = now - entry.since
        return True

    def head(self) -> Waiting[W] | None:
        return next(iter(self._entries), None)

    def drain(self, now: float, serve: Callable[[Waiting[W]], bool]) -> int:
        """Offer the head a server, in order, while ``serve`` says it got one (``serve``
        binds it: the slot is taken before the next is offered); returns how many left."""
        n = 0
        entries = self._entries
        while entries:
            entry = next(iter(entries))
            if not serve(entry):
                break
            if entry in entries:
                del entries[entry]
                entry.waited = now - entry.since
                self._record(entry.waited)
            n += 1
        return n

    def expired(self, now: float) -> list[Waiting[W]]:
        """The entries whose deadline has come, in queue order, taken out."""
        out = [e for e in self._entries if e.deadline <= now]
        for e in out:
            del self._entries[e]
            e.waited = now - e.since
        self.timeouts += len(out)
        return out

    def next_deadline(self) -> float | None:
        return min((e.deadline for e in self._entries), default=None)

    def _record(self, wait: float) -> None:
        self.served += 1
        if wait > self.qtime_max:
            self.qtime_max = wait
        recent = self._recent
        if len(recent) < QTIME_WINDOW:
            recent.append(wait)
            self._recent_sum += wait
            return
        i = self._recent_i
        self._recent_sum += wait - recent[i]
        recent[i] = wait
        self._recent_i = (i + 1) % QTIME_WINDOW


__all__ = ["QTIME_WINDOW", "PoolQueue", "Waiting"]
