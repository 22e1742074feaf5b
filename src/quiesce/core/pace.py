"""A background thread's burst of work in slices (issue 14: p99 during a live reload). The
process's helper threads (the state store's writer committing a reload's thousands of rows,
the process log's writer formatting a line per change) held the GIL and a core while the
event loop's thread waited for them: CPython hands the GIL over only at the switch interval,
and a thread that releases it at every SQLite step takes it back at once (a convoy), so
requests in flight waited 5-18 ms at the end of every reload of 1,000 servers
(BENCHMARKS.md, "Live reload: the threads' bursts paced"). :class:`ThreadPace` makes such a
thread rest, after each ``work`` seconds of a burst, as long as ``rest``: the loop's thread
runs alone meanwhile. Sans-IO: the clock and the sleep are given."""

from __future__ import annotations

from collections.abc import Callable

WORK = 0.001
"""Seconds a helper thread works before it rests."""
REST = 0.001
"""Seconds it rests then (the event loop keeps at least half of the GIL through a burst)."""
IDLE = 0.002
"""A gap this long between two pieces of work: the burst ended (the thread had rested)."""


class ThreadPace:
    """``step()`` after each piece of work: a rest once the burst has worked ``work``
    seconds since its start or its last rest. ``begin()`` starts a burst (the writer's
    transaction); ``touch()`` starts one when the last piece of work is ``IDLE`` old (the
    log's queue, whose bursts have no edge of their own)."""

    __slots__ = ("began", "clock", "last", "rest", "rests", "sleep", "work")

    def __init__(
        self,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        work: float = WORK,
        rest: float = REST,
    ) -> None:
        self.clock, self.sleep = clock, sleep
        self.work, self.rest = work, rest
        self.began = self.last = clock()
        self.rests = 0  # (for tests and benches)

    def begin(self) -> None:
        self.began = self.last = self.clock()

    def touch(self) -> None:
        now = self.clock()
        if now - self.last >= IDLE:
            self.began = now
        self.last = now

    def step(self) -> None:
        now = self.clock()
        self.last = now
        if now - self.began >= self.work:
            self.sleep(self.rest)
            self.rests += 1
            self.began = self.last = self.clock()


__all__ = ["IDLE", "REST", "WORK", "ThreadPace"]
