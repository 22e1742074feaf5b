"""Schedule arithmetic (sans-IO) and the monitor-type list."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from quiesce.health import MONITOR_TYPES
from quiesce.health.schedule import (
    FIRST_RATE,
    TICK,
    Schedule,
    first_offset,
    interleave,
    next_due,
    wake_time,
)


def test_first_check_at_its_offset_and_phase_kept() -> None:
    s = Schedule(start=100.0, interval=10.0, phase=7.5, first=0.25)
    assert s.first_due == pytest.approx(100.25)
    assert s.second_due == pytest.approx(117.5)
    assert Schedule(start=5.0, interval=10.0, phase=7.5).first_due == 5.0  # no offset given


def test_first_checks_of_a_small_pool_all_due_in_the_first_tick() -> None:
    """A pool of 20 (FIRST_RATE's budget a 10 ms tick): every first check due at once, not
    spread over a second or an interval: a server is unknown, without traffic, until then."""
    assert FIRST_RATE * TICK == 20
    offsets = [first_offset(i, 20, 60.0) for i in range(20)]
    assert offsets[0] == 0.0
    assert max(wake_time(o) for o in offsets) == pytest.approx(TICK)
    assert offsets == sorted(offsets)


def test_first_checks_at_first_rate_while_they_fit_in_the_interval() -> None:
    # 2,000 pairs: one every 0.5 ms, the last one 1 s after the start
    assert first_offset(1, 2000, 60.0) == pytest.approx(1 / FIRST_RATE)
    assert first_offset(1999, 2000, 60.0) == pytest.approx(1999 / FIRST_RATE)
    # 100,000 of 60 s: 50 s at FIRST_RATE (the steady state is 1,667 a second)
    assert first_offset(99_999, 100_000, 60.0) == pytest.approx(99_999 / FIRST_RATE)
    # a 20-check-a-tick budget in every tick: counted on the grid
    ticks = Counter(wake_time(first_offset(i, 100_000, 60.0)) for i in range(100_000))
    assert max(ticks.values()) <= FIRST_RATE * TICK + 1  # +1: rounding onto the grid


def test_first_checks_squeezed_into_the_interval_never_later() -> None:
    """More pairs than FIRST_RATE runs in an interval: spread over the whole interval, as
    HAProxy spreads its first checks over the check interval (inter * srvpos / nbcheck)."""
    n = 100_000
    offsets = [first_offset(i, n, 10.0) for i in range(n)]
    assert offsets[-1] < 10.0
    assert offsets[-1] == pytest.approx(10.0 * (n - 1) / n)
    steps = [b - a for a, b in pairwise(offsets)]
    assert min(steps) == pytest.approx(max(steps)) == pytest.approx(10.0 / n)  # evenly
    assert first_offset(3, 4, 0.002) == pytest.approx(0.0015)  # a 2 ms interval: inside it


def test_first_offset_refuses_bad_input() -> None:
    for bad in [(-1, 5, 1.0), (5, 5, 1.0), (0, 0, 1.0)]:
        with pytest.raises(ValueError, match="out of range"):
            first_offset(*bad)
    with pytest.raises(ValueError, match="positive"):
        first_offset(0, 1, 0.0)
    with pytest.raises(ValueError, match="positive"):
        first_offset(0, 1, 1.0, rate=0.0)


def test_interleave_every_pools_first_pair_first() -> None:
    groups = ["a", "a", "a", "a", "b", "c", "c"]
    order = interleave(groups)
    assert [groups[i] for i in order] == ["a", "b", "c", "a", "c", "a", "a"]
    assert order == [0, 4, 5, 1, 6, 2, 3]  # a pool's pairs keep their order
    assert interleave(["b", "a", "b"]) == [0, 1, 2]
    assert interleave([]) == []
    # a pool of 3 among 100 pools of 1,000: its last first check within 2 ms at FIRST_RATE
    many = [f"p{i // 1000}" for i in range(100_000)] + ["small"] * 3
    order = interleave(many)
    last = max(k for k, i in enumerate(order) if many[i] == "small")
    assert first_offset(last, len(many), 60.0) < 0.2


def test_next_due_fixed_rate_and_skip_after_stall() -> None:
    assert next_due(10.0, 1.0, 10.3) == (11.0, 0)
    assert next_due(10.0, 1.0, 11.0) == (11.0, 0)
    assert next_due(10.0, 1.0, 13.5) == (14.0, 3)


def test_monitor_types() -> None:
    by_type = {t["type"]: t for t in MONITOR_TYPES}
    assert set(by_type) == {
        "icmp",
        "tcp",
        "tcp_half_open",
        "udp",
        "http",
        "https",
        "postgresql",
        "mysql",
        "grpc",
    }
    assert [t for t, v in by_type.items() if v["node_compatible"]] == ["icmp"]
    assert all(v["pool_compatible"] for v in by_type.values())
    assert all(isinstance(v["description"], str) and v["description"] for v in by_type.values())


def test_wake_time_rounds_up_to_the_tick() -> None:
    assert TICK == 0.010
    assert wake_time(1.000) == pytest.approx(1.000)
    assert wake_time(1.0001) == pytest.approx(1.010)
    assert wake_time(1.0099) == pytest.approx(1.010)
    assert wake_time(1.0049, tick=0.005) == pytest.approx(1.005)
    assert 0 <= wake_time(123.4567) - 123.4567 < TICK
