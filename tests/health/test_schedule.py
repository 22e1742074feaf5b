"""Schedule arithmetic (sans-IO) and the monitor-type list."""

from __future__ import annotations

import pytest

from quiesce.health import MONITOR_TYPES
from quiesce.health.schedule import FIRST_SPREAD, TICK, Schedule, next_due, wake_time


def test_first_check_within_first_spread_and_phases_kept() -> None:
    s = Schedule(start=100.0, interval=10.0, phase=7.5)
    assert s.first_due == pytest.approx(100.0 + 7.5 * FIRST_SPREAD / 10.0)
    assert s.second_due == pytest.approx(117.5)
    short = Schedule(start=0.0, interval=0.2, phase=0.1)
    assert short.first_due == pytest.approx(0.1)  # intervals under FIRST_SPREAD: unchanged


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
