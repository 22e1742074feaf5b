"""The pool queue (quiesce.core.queue), sans-IO: a fake clock is the ``now`` argument."""

from __future__ import annotations

import pytest

from quiesce.core.queue import QTIME_WINDOW, PoolQueue


def test_fifo_drain_serves_in_order_until_no_server() -> None:
    q: PoolQueue[str] = PoolQueue()
    for i, name in enumerate("abcd"):
        q.push(name, now=float(i), timeout=10.0)
    slots = 2
    served: list[str] = []

    def serve(entry: object) -> bool:
        nonlocal slots
        if slots == 0:
            return False
        slots -= 1
        served.append(entry.waiter)  # type: ignore[attr-defined]
        return True

    assert q.drain(5.0, serve) == 2
    assert served == ["a", "b"]
    assert q.qcur == 2 and q.qmax == 4
    assert q.qtime == pytest.approx((5.0 + 4.0) / 2) and q.qtime_max == 5.0
    slots = 5
    assert q.drain(6.0, serve) == 2
    assert served == ["a", "b", "c", "d"] and q.qcur == 0 and q.served == 4


def test_deadlines_expire_in_queue_order_and_only_when_due() -> None:
    q: PoolQueue[str] = PoolQueue()
    q.push("slot", now=0.0, timeout=2.0)
    q.push("held", now=0.5, timeout=1.0, held=True)
    q.push("late", now=1.0, timeout=5.0)
    assert q.next_deadline() == 1.5
    assert q.expired(1.49) == []
    [e] = q.expired(1.5)
    assert e.waiter == "held" and e.held
    assert e.waited == 1.0  # a timeout logs the time it waited
    assert [e.waiter for e in q.expired(3.0)] == ["slot"]
    assert q.timeouts == 2 and q.next_deadline() == 6.0
    assert q.qtime == 0.0  # a timeout is not a queue time


def test_remove_a_waiter_that_went_away() -> None:
    q: PoolQueue[str] = PoolQueue()
    a = q.push("a", 0.0, 1.0)
    q.push("b", 0.0, 1.0)
    assert q.remove(a, 0.25) and not q.remove(a, 0.5)
    assert a.waited == 0.25  # the time it waited (the access log's Tw)
    head = q.head()
    assert head is not None and head.waiter == "b"


def test_qtime_is_the_average_of_the_last_window() -> None:
    q: PoolQueue[int] = PoolQueue()
    for i in range(QTIME_WINDOW):
        q.push(i, 0.0, 100.0)
    q.drain(10.0, lambda e: True)  # QTIME_WINDOW waits of 10 s
    for i in range(QTIME_WINDOW):
        q.push(i, 10.0, 100.0)
    q.drain(11.0, lambda e: True)  # as many of 1 s replace them
    assert q.qtime == pytest.approx(1.0)
    assert q.served == 2 * QTIME_WINDOW and q.qmax == QTIME_WINDOW
