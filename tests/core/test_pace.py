"""ThreadPace (quiesce.core.pace): a helper thread's burst rests as long as it worked, every
``work`` seconds; a piece of work after an idle gap starts a new burst. Fake clock and
sleep: no timing."""

from __future__ import annotations

from quiesce.core.pace import IDLE, ThreadPace


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_a_burst_rests_after_each_slice_of_work() -> None:
    c = Clock()
    pace = ThreadPace(c.time, c.sleep, work=0.001, rest=0.001)
    pace.begin()
    for _ in range(39):  # 39 pieces of 0.1 ms: 3.9 ms of work
        c.now += 0.0001
        pace.step()
    assert len(c.slept) == 3  # after each full ms of work
    assert pace.rests == 3 and set(c.slept) == {0.001}


def test_short_bursts_do_not_rest_and_an_idle_gap_starts_a_new_one() -> None:
    c = Clock()
    pace = ThreadPace(c.time, c.sleep, work=0.001, rest=0.001)
    for _ in range(20):  # a line now and then: 0.2 ms each, with gaps longer than IDLE
        c.now += 2 * IDLE
        pace.touch()
        c.now += 0.0002
        pace.step()
    assert c.slept == []
    for _ in range(18):  # 18 more lines, no gap: with the last one above, 3.8 ms of work
        pace.touch()
        c.now += 0.0002
        pace.step()
    assert len(c.slept) == 3
