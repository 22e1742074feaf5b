"""When checks run: jittered phases, a prompt first check, no bunching after a stall.

Theory of operation
-------------------
Each (server, monitor) pair gets a random *phase* in ``[0, send_interval)`` so that ten
thousand checks with the same interval are spread evenly over it instead of firing together:
from the second check on, checks run at ``start + phase + k * send_interval``, a fixed rate
that does not drift with check latency.

The first check must not wait long (a server is ``unknown`` and gets no traffic until its
first verdict), nor may 100,000 of them come as one burst (issue 21: their results, state
changes and events then pile up faster than they are written, and what they leave keeps
memory resident). The pairs started together (at start-up, a reload, a monitor edit) are
numbered in the order the manager gives them (every pool's first pair, then every pool's
second...), and the ``index``-th of ``count`` runs :func:`first_offset` seconds after the
start: :data:`FIRST_RATE` first checks a second, so a small pool's all start in the first
tick and a few thousand within a second or two (before: each at a random moment of the first
second, whatever their number). Only when ``count`` would take longer than the interval at
that rate are they squeezed into it: HAProxy spreads its first checks over the smallest
check interval at start-up (``start_checks``: ``inter * srvpos / nbcheck``, bounded by
``max-spread-checks``), a whole interval whatever their number.

If the loop stalls for more than an interval, the missed slots are skipped rather than run
back to back (:func:`next_due`), and the caller counts them.

Pure arithmetic on floats: the scheduler feeds it ``clock.monotonic()``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

FIRST_RATE = 2000.0
"""First checks a second at most (20 a 10 ms tick), while they fit in their interval at that
rate: 20 pairs start in the first tick, 2,000 within a second, 100,000 of a 60 s interval
take 50 s (the steady state then runs 100,000 / 60 = 1,667 checks a second anyway). See
:func:`first_offset`."""

TICK = 0.010
"""Wake-ups are rounded up to this grid, so that checks due within the same 10 ms start in
one event-loop iteration (one batch for the C check engine), for at most 10 ms of lateness.
Each wake-up costs ≈ 70–90 µs of CPU on the benchmark machine whatever it does, so the grid
sets a floor on CPU: 5 ms ticks cut the CPU per check by about a third against one wake-up
per check, and 10 ms ticks (HAProxy's wake-up rate when it checks 10,000 servers a second)
a further 5–14% against 5 ms, for lateness p50 ≈ 5 ms instead of ≈ 3 (BENCHMARKS.md)."""


def wake_time(due: float, tick: float = TICK) -> float:
    """When to wake up for a check due at ``due``: the next tick boundary at or after it."""
    return math.ceil(due / tick) * tick


def first_offset(index: int, count: int, interval: float, rate: float = FIRST_RATE) -> float:
    """Seconds after the start at which the ``index``-th (from 0) of ``count`` pairs started
    together runs its first check: one every ``1 / rate`` s, so a small pool's are all due at
    once; closer together only when ``count`` of them would not fit in ``interval`` that
    way (never later than one interval: the steady state's own rate). Deterministic: the
    manager numbers the pairs."""
    if not 0 <= index < count:
        raise ValueError(f"index {index} out of range for {count} pairs")
    if interval <= 0 or rate <= 0:
        raise ValueError("interval and rate must be positive")
    return index * min(1.0 / rate, interval / count)


def interleave(groups: Sequence[Hashable]) -> list[int]:
    """The order in which pairs started together get their first check: ``groups[i]`` is
    the i-th pair's pool, the pairs of a pool consecutive or not; every pool's first pair,
    then every pool's second, and so on (the pools in order of first appearance; in a pool,
    its pairs' order). A small pool is thus checked at the start even among 100,000 pairs."""
    seen: dict[Hashable, int] = {}
    ranks = []
    for group in groups:
        rank = seen.get(group, 0)
        seen[group] = rank + 1
        ranks.append(rank)
    return sorted(range(len(ranks)), key=ranks.__getitem__)  # stable: the given order kept


@dataclass(frozen=True, slots=True)
class Schedule:
    start: float
    interval: float
    phase: float  # in [0, interval)
    first: float = 0.0  # first_offset(): the first check's delay after start, <= interval

    @property
    def first_due(self) -> float:
        return self.start + self.first

    @property
    def second_due(self) -> float:
        return self.start + self.phase + self.interval


def next_due(due: float, interval: float, now: float) -> tuple[float, int]:
    """The slot after ``due``, and how many slots were skipped because ``now`` is already
    past them (a stall longer than an interval)."""
    nxt = due + interval
    if nxt >= now:
        return nxt, 0
    missed = math.ceil((now - nxt) / interval)
    return nxt + missed * interval, missed


__all__ = [
    "FIRST_RATE",
    "TICK",
    "Schedule",
    "first_offset",
    "interleave",
    "next_due",
    "wake_time",
]
