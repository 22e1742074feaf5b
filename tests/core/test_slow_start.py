"""Slow start in steps, kept per step and not per pick (issue 21: every pick reweighed every
candidate, and with a factor that changed at every pick the balancing state was rebuilt over
the pool at each one). Sans-IO, on a fake clock."""

from __future__ import annotations

from collections import Counter

import pytest

from quiesce.config.models import Config
from quiesce.core.clock import FakeClock
from quiesce.core.pool import slow_start_factor, slow_start_next
from quiesce.state import poolstate
from quiesce.state.registry import Registry
from quiesce.state.runtime import RAMP_BUDGET, PoolRuntime

T0 = 1_000_000.0


@pytest.mark.parametrize(
    ("period", "elapsed", "factor", "step"),
    [
        (100.0, 0.0, 0.1, 5.0),  # 20 steps of 5 s
        (100.0, 4.99, 0.1, 5.0),
        (100.0, 5.0, 0.145, 10.0),
        (100.0, 50.0, 0.55, 55.0),
        (100.0, 99.0, 0.955, 100.0),
        (10.0, 0.5, 0.1, 1.0),  # a step is at least 1 s: 10 steps
        (10.0, 3.0, 0.37, 4.0),
        (2.5, 2.2, 0.82, 2.5),  # 1 s steps, the last one short
    ],
)
def test_the_ramp_moves_in_steps(period: float, elapsed: float, factor: float, step: float) -> None:
    assert slow_start_factor(T0, T0 + elapsed, period) == pytest.approx(factor)
    assert slow_start_next(T0, T0 + elapsed, period) == pytest.approx(T0 + step)


def test_a_finished_or_absent_ramp_has_no_next_step() -> None:
    assert slow_start_next(T0, T0 + 100.0, 100.0) is None
    assert slow_start_next(None, T0, 100.0) is None
    assert slow_start_next(T0, T0, 0.0) is None
    assert slow_start_factor(T0, T0 + 100.0, 100.0) == 1.0


def ramping_pool(n: int, clock: FakeClock, algorithm: str) -> PoolRuntime:
    """A pool of ``n`` servers without monitors, all eligible (and ramping) from now."""
    raw = {
        "pools": {
            "p": {
                "algorithm": algorithm,
                "slow_start": "100s",
                "servers": [
                    {"name": f"s{i}", "address": f"10.0.{i // 250}.{i % 250}:80"} for i in range(n)
                ],
            }
        }
    }
    return Registry(Config.model_validate(raw), clock=clock).pool("p")


@pytest.mark.parametrize("algorithm", ["round_robin", "weighted_round_robin"])
def test_picks_between_steps_change_no_weight_and_a_step_is_spread_over_picks(
    algorithm: str,
) -> None:
    clock = FakeClock(T0)
    pool = ramping_pool(1000, clock, algorithm)
    members = pool.primaries
    assert {s.effective_weight for s in members} == {0.1}
    gen = members.generation
    for _ in range(50):  # within the first step: nothing to change, whatever the time
        clock.advance(0.05)
        assert pool.pick("10.9.9.9", clock.time()) is not None
    assert members.generation == gen  # before: every candidate reweighed at every pick
    clock.advance(5.0)  # the first step of every server is due
    moved = []
    while members.generation != gen or not moved:
        gen = members.generation
        pool.pick("10.9.9.9", clock.time())
        moved.append(members.generation - gen)
        if len(moved) > 100:
            break
    assert max(moved) <= RAMP_BUDGET  # at most so many weights a pick
    assert sum(moved) == 1000 and len(moved) == 1000 // RAMP_BUDGET + 2  # then none
    assert all(s.effective_weight == pytest.approx(0.145) for s in members)


def test_the_share_follows_the_steps_to_full_weight() -> None:
    clock = FakeClock(T0)
    pool = ramping_pool(2, clock, "weighted_round_robin")
    late = pool.server("s1")
    late.weight = 9  # a weight change places it again: it ramps on its own schedule
    poolstate.place(pool, late, clock.time())
    shares = []
    for _ in range(21):
        got = Counter(pool.pick(None, clock.time()).name for _ in range(1000))  # type: ignore[union-attr]
        shares.append(got["s1"] / 1000)
        clock.advance(5.0)
    assert shares[0] == pytest.approx(0.9, abs=0.01)  # 0.9 against 0.1: both at 10%
    assert shares[-1] == pytest.approx(0.9, abs=0.01)  # both at full weight
    assert all(pool.server(n).effective_weight == w for n, w in (("s0", 1), ("s1", 9)))
