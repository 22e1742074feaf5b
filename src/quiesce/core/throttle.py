"""Reports throttled per key (sans-IO: time is an argument): in each window of ``period``
seconds, opened by a key's first report, the first ``burst`` reports pass and the others are
only counted; once the window has ended its count is handed back once, for one summary.

What uses it: the ``protocol_error`` events and log lines of a database service
(quiesce.dataplane.protoerr), which an anonymous client can cause once per connection: one
persisted event each would let anyone reaching the port push the admin audit trail out of the
event log (``state.event_retention``). The metric still counts every one.

The shell calls :meth:`Throttle.admit` for each report; its :class:`Verdict` says whether to
record this one, a count of suppressed reports of an ended window to summarise first, and,
at a window's first suppressed report, when to call :meth:`Throttle.flush` for its summary
(so the last window of a burst is summarised although no report follows).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    record: bool  # record (log, emit) this report
    summary: int  # reports suppressed in the key's window that has ended: summarise them first
    flush_at: float | None  # the window's first suppressed report: call flush() at this time


class Throttle:
    def __init__(self, burst: int, period: float) -> None:
        if burst < 1 or period <= 0:
            raise ValueError("a throttle needs burst >= 1 and period > 0")
        self.burst = burst
        self.period = period
        self._windows: dict[Hashable, _Window] = {}

    def admit(self, key: Hashable, now: float) -> Verdict:
        summary = self.flush(key, now)
        w = self._windows.get(key)
        if w is None:
            w = self._windows[key] = _Window(now)
        if w.passed < self.burst:
            w.passed += 1
            return Verdict(True, summary, None)
        w.suppressed += 1
        flush_at = w.start + self.period if w.suppressed == 1 else None
        return Verdict(False, summary, flush_at)

    def flush(self, key: Hashable, now: float) -> int:
        """If ``key``'s window has ended: forget it and return how many reports it
        suppressed (each handed back once); else 0."""
        w = self._windows.get(key)
        if w is None or now < w.start + self.period:
            return 0
        del self._windows[key]
        return w.suppressed

    def pending(self, key: Hashable) -> int:
        """Reports suppressed so far in ``key``'s current window."""
        w = self._windows.get(key)
        return 0 if w is None else w.suppressed


__all__ = ["Throttle", "Verdict"]
