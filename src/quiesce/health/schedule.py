"""When checks run: jittered phases, a prompt first check, no bunching after a stall.

Theory of operation
-------------------
Each (server, monitor) pair gets a random *phase* in ``[0, send_interval)`` so that ten
thousand checks with the same interval are spread evenly over it instead of firing together.
The first check, though, must not wait up to a whole interval (a server is ``unknown`` and gets
no traffic until its first verdict), so it runs at the phase scaled into the first
:data:`FIRST_SPREAD` seconds; from the second check on, checks run at
``start + phase + k * send_interval``, a fixed rate that does not drift with check latency.

If the loop stalls for more than an interval, the missed slots are skipped rather than run
back to back (:func:`next_due`), and the caller counts them.

Pure arithmetic on floats: the scheduler feeds it ``clock.monotonic()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FIRST_SPREAD = 1.0
"""Seconds over which first checks are spread at start-up (or after an edit)."""

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


@dataclass(frozen=True, slots=True)
class Schedule:
    start: float
    interval: float
    phase: float  # in [0, interval)

    @property
    def first_due(self) -> float:
        spread = min(self.interval, FIRST_SPREAD)
        return self.start + self.phase * (spread / self.interval)

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


__all__ = ["FIRST_SPREAD", "TICK", "Schedule", "next_due", "wake_time"]
