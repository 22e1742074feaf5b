"""The seconds the live series' store ticked (:class:`Ticks`), so that a server the tick did
not look at (nothing of it moved: :class:`quiesce.state.series.SeriesStore`) gets the idle
rows of those seconds when it is next sampled or read (:func:`catch_up`): the rows a tick
that looked at every server every second stored. Sans-IO.

A server's series written up to second ``e - 1`` (its ring's ``_end`` is ``e``) and not
looked at since is idle at every second the store ticked from ``e`` on: its counters, its
connections and its checks are as at its last sample (a server is looked at by every tick
while it is busy, and by the next one once it is busy again or gets a check result:
``PoolTally.moved``). :func:`catch_up` writes those rows run by run, as a tick a second did
(:meth:`quiesce.state.series.Series.idle`, and a run of idle seconds in one add to the ring's
last entry where that is what the seconds one by one would have done).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

KEEP = 2 * 900 + 128
"""Seconds of ticks kept behind the newest (a server idle for longer gets the rows of those
only: older ones are past its ring's 15 minutes, ``SECONDS``, and would not be read)."""


class Ticks:
    """The seconds ticked, as runs ``[starts[i], ends[i])``, oldest first, the last
    ``keep`` seconds of them."""

    __slots__ = ("ends", "keep", "starts")

    def __init__(self, keep: int = KEEP) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.keep = keep

    def add(self, second: int) -> None:
        """``second`` ticked. One at or before the last (the timer early in a second, a
        clock stepped back) takes back the ticks from ``second`` on first, as the rings do
        their rows."""
        starts, ends = self.starts, self.ends
        while ends and ends[-1] > second:
            if starts[-1] >= second:
                starts.pop()
                ends.pop()
            else:
                ends[-1] = second
        if ends and ends[-1] == second:
            ends[-1] = second + 1
        else:
            starts.append(second)
            ends.append(second + 1)
        horizon = second - self.keep
        while len(ends) > 1 and ends[0] <= horizon:
            del starts[0], ends[0]

    def catch_up(self, s: Any, upto: int) -> None:
        """Write the idle rows of the seconds ticked from the series ``s``'s end through
        ``upto`` (included)."""
        end = s._end
        starts, ends = self.starts, self.ends
        if starts and starts[-1] <= end:  # no second missed since: one run (most calls)
            if end <= upto:
                idle_run(s, end, min(ends[-1], upto + 1))
            return
        for i in range(bisect_right(ends, end), len(ends)):
            a, b = max(starts[i], end), min(ends[i], upto + 1)
            if a >= b:
                break
            idle_run(s, a, b)


def idle_run(s: Any, a: int, b: int) -> None:
    """``s.idle(t)`` for each second ``t`` in ``[a, b)``, the seconds its last entry takes in
    one add (:meth:`quiesce.state.ring.Ring._more_n`, what ``idle`` does when it can)."""
    t = a
    while t < b:
        if s._tconn == s.connections:
            n = s._more_n(t, b - t)
            if n:
                t += n
                continue
        s.idle(t)
        t += 1


__all__ = ["KEEP", "Ticks", "idle_run"]
