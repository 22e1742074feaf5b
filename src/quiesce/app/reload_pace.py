"""A live reload's pace (issue 14): its work in slices of the event loop's time, the cyclic
garbage collector held and the interpreter's switch interval short while it runs. Used by
:mod:`quiesce.app.reload`; the numbers and what they cost are in BENCHMARKS.md ("Live
reload")."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import time
from collections.abc import Awaitable, Callable, Iterator

RELOAD_SLICE = 0.001
"""Seconds of a reload's work (changes applied, servers unpickled, log lines) between two
pauses (:class:`Pacer`). 5 ms slices made the p99 of requests during a reload of 1,000
servers 3-6 times the idle p99 (a request in flight waits out a whole slice, often two).
The budget is the whole turn's: the changes and what the end of their batch does (the pools
settled, the events emitted there); a turn that ran over shortens the next one."""
RELOAD_PAUSE = 3
"""Turns of the event loop it runs alone between two slices of a reload (at least)."""
RELOAD_PAUSE_MAX = 0.002
"""The longest pause of a reload between two slices, however few turns it gave (a loop
saturated by requests: the reload keeps a third of it)."""
RELOAD_IDLE_TURN = 0.00005
"""A turn of the event loop that used less than this of its thread's CPU served nothing (an
empty turn, its epoll call, is ~10-20 µs): after RELOAD_PAUSE turns, the first such turn
ends a pause (nobody is waiting)."""
RELOAD_SWITCH = 0.0005
"""The interpreter's switch interval (``sys.setswitchinterval``) for a whole reload, until its
writes are committed and its log lines written (:meth:`Reloader._written`): the event loop
waits at most that long for the GIL another thread holds (the planning thread, the store's
writer, the process log's; the default 5 ms was a 5 ms stall of every request in flight each
time)."""
RELOAD_WAIT_MAX = 0.02
"""The longest a pacer waits for others' slices once its pause is over (a few ms at most
while each takes its turn; more means a pacer whose task was lost holds the first place)."""
RELOAD_LOG_SLACK = 16
"""Lines left in the process log's queue that count as written (the reload's own are a
thousand; others may keep coming)."""
RELOAD_WRITTEN_MAX = 2.0
"""The longest a reload keeps the short switch interval after its last change, waiting for
its commit and its log lines."""


class Gate:
    """What the pacers of one event loop share (:class:`Pacer`): when the latest slice of
    any of them ended and how long the loop then belongs to requests. Without it, two
    pacers at once (a reload and the live series' tick, which every reload window of a few
    tenths of a second meets at 10,000 servers) ran their slices back to back, one in each
    other's pauses: 2 ms holds, a request in flight waiting out several."""

    __slots__ = ("ready", "rest_for", "rest_from", "step_at")

    def __init__(self) -> None:
        self.rest_from = float("-inf")  # when the latest slice ended (its pause began)
        self.rest_for = 0.0  # the pause it asked for
        self.step_at = float("-inf")  # the latest look at the clock of a pacer at work
        self.ready: list[Pacer] = []  # pacers in a pause, in the order they began it


GATE = Gate()
"""The process's gate: every pacer on the real clock."""


class Pacer:
    """A reload's work in slices of RELOAD_SLICE seconds, each followed by a pause: turns
    of the event loop without reload work. One turn (``sleep(0)``) was not enough: a
    request needs several turns (read, connect, write, read; a waiter woken by a timer
    two), and with a slice in every turn it met several. A timed pause (``sleep(5 ms)``)
    was tried too: on a loaded machine each pause took far longer and a reload of 1,000
    servers took seconds more; turns cost nothing when there is nothing to serve.

    The whole turn is metered: a slice is timed from the end of the pause before it to
    the start of the pause after it, so what runs after the last change (the end of an
    ``admin.batch()``: pools settled, their events delivered) counts; a slice that ran
    over its budget shortens the next (never below a quarter of it). The pause gives the
    loop at least RELOAD_PAUSE turns, then more while each turn serves something (used at
    least RELOAD_IDLE_TURN of the loop thread's CPU), until the pause has lasted as long
    as the slice before it (the reload keeps at most half of a busy loop), never more than
    RELOAD_PAUSE_MAX. The first turn that serves nothing after the minimum ends it: the
    loop has nobody waiting, and turning it further would only burn CPU (a pause timed by
    the wall clock alone spun on a loaded machine, where an empty turn can take 50 µs of
    wall time: +0.2 s of CPU a 1,000-server reload). The pacers of a loop share a
    :class:`Gate`: a pause is counted from the latest slice of any of them, so another
    pacer's slice run during it starts the pause anew (the loop turns again before this
    one's next slice). ``clock``, ``cpu``, ``turn`` and ``gate`` are for tests (fake
    clocks: a pacer on a clock of its own has a gate of its own unless given one)."""

    __slots__ = ("began", "clock", "cpu", "debt", "gate", "turn", "until", "used")

    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        turn: Callable[[], Awaitable[None]] | None = None,
        cpu: Callable[[], float] | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.clock = clock or _now
        self.cpu = cpu or _cpu
        self.turn = turn or _one_turn
        self.gate = gate or (GATE if clock is None else Gate())
        self.debt = 0.0  # how far the last slice ran over its budget
        self.used = 0.0  # how long the last slice took
        self.began = self.clock()
        self.until = self.began + RELOAD_SLICE
        if self.began < self.gate.rest_from + self.gate.rest_for:
            self.until = self.began  # another pacer's pause: this one's first tick waits too

    def due(self) -> bool:
        now = self.gate.step_at = self.clock()
        return now >= self.until

    async def pause(self) -> None:
        clock, cpu = self.clock, self.cpu
        now = clock()
        self.used = now - self.began
        self.debt = max(0.0, now - self.until)
        gate = self.gate  # the loop is the requests' until the later of two rests' ends
        end = max(gate.rest_from + gate.rest_for, now + min(self.used, RELOAD_PAUSE_MAX))
        gate.rest_from, gate.rest_for = now, end - now
        paused = seen = now
        spent, turns = cpu(), 0
        ready = gate.ready
        ready.append(self)  # in the order the pauses began: the longest waiting goes first
        try:
            while True:
                await self.turn()
                now, was = clock(), spent
                spent = cpu()
                turns += 1
                latest = max(gate.rest_from, gate.step_at)
                if latest > seen:  # another pacer worked in that turn: the pause anew
                    seen, turns = latest, 1
                elapsed = now - seen
                if not (
                    elapsed >= RELOAD_PAUSE_MAX  # a saturated loop: the reload keeps a third
                    or (
                        turns >= RELOAD_PAUSE
                        and (spent - was < RELOAD_IDLE_TURN or elapsed >= gate.rest_for)
                    )
                ):
                    continue
                if ready[0] is self or now - paused >= RELOAD_WAIT_MAX:
                    break  # (else another pacer has waited longer: its slice first)
        finally:
            if self in ready:
                ready.remove(self)
        self.began = gate.step_at = now
        self.until = now + max(RELOAD_SLICE - self.debt, RELOAD_SLICE / 4)

    async def tick(self) -> None:
        """A pause if this slice is over."""
        now = self.gate.step_at = self.clock()
        if now >= self.until:
            await self.pause()


def _now() -> float:
    return time.perf_counter()


def _cpu() -> float:
    return time.thread_time()


async def _one_turn() -> None:
    await asyncio.sleep(0)


@contextlib.contextmanager
def cyclic_gc_held() -> Iterator[None]:
    """The cyclic garbage collector off for a reload, and what the reload built frozen at
    its end (``gc.freeze()``, as start-up does): unpickling a file of ten thousand servers
    made a full collection run in the middle of a reload, 100-230 ms of the event loop
    (every object of the process walked, nothing collected). Frozen, the new configuration
    and servers are not walked by later collections either. The cost: cyclic garbage a
    reload made before the freeze is kept (reference counting still frees the rest, the
    old configuration included). A refused reload re-enables the collector, nothing
    frozen."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    except BaseException:
        gc.enable()
        raise
    gc.freeze()
    gc.enable()


@contextlib.contextmanager
def short_switches() -> Iterator[None]:
    """The interpreter's switch interval at RELOAD_SWITCH for the block (a thread's pure
    Python work holds the GIL until the waiting event loop has asked for that long), the
    one before restored at its end (reloads are serialised: no two blocks overlap)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, RELOAD_SWITCH))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


__all__ = [
    "GATE",
    "RELOAD_IDLE_TURN",
    "RELOAD_LOG_SLACK",
    "RELOAD_PAUSE",
    "RELOAD_PAUSE_MAX",
    "RELOAD_SLICE",
    "RELOAD_SWITCH",
    "RELOAD_WAIT_MAX",
    "RELOAD_WRITTEN_MAX",
    "Gate",
    "Pacer",
    "cyclic_gc_held",
    "short_switches",
]
