"""Injectable clocks. Production uses :class:`SystemClock`; tests drive :class:`FakeClock`."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds (persisted times: admin since/expiry/deadline, events)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds (intervals, latencies)."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self._t = start

    def time(self) -> float:
        return self._t

    def monotonic(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        self._t += seconds
