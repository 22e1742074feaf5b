"""The reload's Pacer (issue 14: p99 during a reload): the whole turn metered against the
slice budget, the pause sized to the slice it follows on a busy loop, short on an idle one.
A fake clock and fake turns of the event loop: no sleep, no timing."""

from __future__ import annotations

import asyncio

import pytest

from quiesce.app.reload import (
    RELOAD_PAUSE,
    RELOAD_PAUSE_MAX,
    RELOAD_SLICE,
    Pacer,
)
from quiesce.app.reload_pace import Gate


class Loop:
    """A fake clock and turns of a fake event loop, each taking ``turn_cost`` seconds of
    wall time, and of the loop thread's CPU unless ``cpu_costs`` says otherwise (one a
    turn, then 0: an empty turn)."""

    def __init__(self, turn_cost: float = 0.0, cpu_costs: list[float] | None = None) -> None:
        self.now = 100.0
        self.spent = 10.0
        self.turn_cost = turn_cost
        self.cpu_costs = cpu_costs
        self.turns = 0

    def clock(self) -> float:
        return self.now

    def cpu(self) -> float:
        return self.spent

    async def turn(self) -> None:
        self.turns += 1
        self.now += self.turn_cost
        if self.cpu_costs is None:
            self.spent += self.turn_cost
        elif self.cpu_costs:
            self.spent += self.cpu_costs.pop(0)


def pacer(loop: Loop) -> Pacer:
    return Pacer(clock=loop.clock, turn=loop.turn, cpu=loop.cpu)


def test_work_after_the_last_change_counts_and_shortens_the_next_slice() -> None:
    """A slice of 0.8 ms of changes, then 0.6 ms at the end of its batch (pools settled,
    events delivered: no due() asked there): the slice used 1.4 ms, 0.4 over budget, and
    the next slice gets 0.6 ms."""
    loop = Loop()
    p = pacer(loop)
    loop.now += 0.0008
    assert not p.due()
    loop.now += 0.0006  # the batch's end, outside the loop of changes
    asyncio.run(p.pause())
    assert p.used == pytest.approx(0.0014)
    assert p.debt == pytest.approx(0.0004)
    assert p.until - loop.now == pytest.approx(RELOAD_SLICE - 0.0004)
    loop.now += RELOAD_SLICE - 0.0004
    assert p.due()


def test_a_long_overrun_leaves_the_next_slice_a_quarter_of_the_budget() -> None:
    loop = Loop()
    p = pacer(loop)
    loop.now += 0.010
    asyncio.run(p.pause())
    assert p.until - loop.now == pytest.approx(RELOAD_SLICE / 4)


def test_on_a_busy_loop_the_pause_lasts_as_long_as_the_slice() -> None:
    """Turns that serve requests (0.3 ms each): the pause goes on until it has lasted as
    long as the slice before it (1 ms: 4 turns), so the reload keeps at most half of the
    loop; before, three turns whatever they took (0.9 ms: more than half to the reload)."""
    loop = Loop(turn_cost=0.0003)
    p = pacer(loop)
    loop.now += RELOAD_SLICE
    began = loop.now
    asyncio.run(p.pause())
    assert loop.turns == 4
    assert loop.now - began >= RELOAD_SLICE


def test_the_first_empty_turn_after_the_minimum_ends_the_pause() -> None:
    """Turns that serve requests (0.3 ms of CPU each), then an empty one: the loop has
    nobody waiting, the reload goes on (no spinning until the slice's length has passed;
    on a loaded machine an empty turn can take 50 µs of wall time, not of CPU)."""
    loop = Loop(turn_cost=0.0003, cpu_costs=[0.0003, 0.0003, 0.0003, 0.0003, 0.00002, 0.0003])
    p = pacer(loop)
    loop.now += 0.002
    asyncio.run(p.pause())
    assert loop.turns == 5
    idle = Loop(turn_cost=0.0001, cpu_costs=[0.00002] * 10)  # slow, empty turns
    p = pacer(idle)
    idle.now += RELOAD_SLICE
    asyncio.run(p.pause())
    assert idle.turns == RELOAD_PAUSE


def test_the_pause_never_exceeds_its_maximum() -> None:
    loop = Loop(turn_cost=0.0003)
    p = pacer(loop)
    loop.now += 0.010  # a long slice (a pool added: one change)
    began = loop.now
    asyncio.run(p.pause())
    assert RELOAD_PAUSE_MAX <= loop.now - began < RELOAD_PAUSE_MAX + 0.0003


def test_on_an_idle_loop_the_pause_is_its_few_turns() -> None:
    """Turns that serve nothing (no time on the clock): RELOAD_PAUSE of them, and the next
    slice starts (no spinning for a millisecond when nobody waits)."""
    loop = Loop(turn_cost=0.0)
    p = pacer(loop)
    loop.now += RELOAD_SLICE
    asyncio.run(p.pause())
    assert loop.turns == RELOAD_PAUSE
    assert p.until - loop.now == pytest.approx(RELOAD_SLICE)


def test_tick_pauses_only_once_the_slice_is_over() -> None:
    loop = Loop()
    p = pacer(loop)
    asyncio.run(p.tick())
    assert loop.turns == 0
    loop.now += RELOAD_SLICE
    asyncio.run(p.tick())
    assert loop.turns == RELOAD_PAUSE


def test_the_live_series_tick_gives_the_loop_turns_every_slice() -> None:
    """The live series' tick (a second's rows of 10,000 servers: 10-100 ms of CPU) runs in
    the pacer's slices, so no request waits out more than about one: here each batch of
    servers costs 0.3 ms of the fake clock, and the loop turns after every ~1 ms of them
    (it turned once per 1,000 servers, 10-20 ms each at 10,000 busy servers)."""
    from quiesce.app.series import BATCH, SeriesTimer

    loop = Loop(turn_cost=0.0001)
    timer = SeriesTimer(dict, dict)
    slices: list[int] = [0]  # batches run between two pauses

    def ticking(now: float):  # type: ignore[no-untyped-def]
        for k in range(40):  # 40 batches of BATCH servers, 0.3 ms each
            if loop.turns:  # a pause ran since the last batch
                slices.append(0)
                loop.turns = 0
            loop.now += 0.0003
            slices[-1] += 1
            yield (k + 1) * BATCH

    timer.ticking = ticking  # type: ignore[method-assign]
    asyncio.run(timer.paced(1000.0, pacer(loop)))
    assert sum(slices) == 40
    assert max(slices) <= 4 and min(slices[:-1]) >= 3, slices  # ~1 ms (3-4 batches) a slice


def test_two_pacers_share_the_loop_without_running_their_slices_back_to_back() -> None:
    """A reload and the live series' tick at once: each pacer's slice is followed by turns
    of the loop, never by the other's slice (their slices ran in each other's pauses: the
    loop held 2 ms between two turns). The turns yield to the real event loop, so the two
    coroutines interleave; the clock is fake (0.25 ms a step of work, 0.1 ms a turn)."""
    loop = Loop()
    log: list[str] = []

    async def turn() -> None:
        loop.now += 0.0001
        loop.spent += 0.0001  # a busy loop: every turn serves something
        log.append("t")
        await asyncio.sleep(0)

    gate = Gate()

    async def work(name: str) -> None:
        p = Pacer(clock=loop.clock, turn=turn, cpu=loop.cpu, gate=gate)
        for _ in range(40):
            loop.now += 0.00025
            loop.spent += 0.00025
            log.append(name)
            await p.tick()

    async def both() -> None:
        await asyncio.gather(work("a"), work("b"))

    asyncio.run(both())
    # the work a request in flight may wait out: steps between two runs of RELOAD_PAUSE turns
    segments = "".join(log).replace("t" * RELOAD_PAUSE, "|").split("|")
    held = max(len(seg.replace("t", "")) for seg in segments)
    assert held <= 6, "".join(log)  # one slice (4-5 steps) and the other's first step at most
    assert log.count("a") == log.count("b") == 40


def test_a_pacer_lost_at_the_head_of_the_gate_does_not_hold_the_others() -> None:
    """A pacer whose task is gone without ending its pause (its place first in line kept)
    stops no other pacer for more than RELOAD_WAIT_MAX."""
    from quiesce.app.reload_pace import RELOAD_WAIT_MAX

    loop = Loop(turn_cost=0.0001)
    gate = Gate()
    gate.ready.append(Pacer(clock=loop.clock, gate=gate))  # first in line, never turning
    p = Pacer(clock=loop.clock, turn=loop.turn, cpu=loop.cpu, gate=gate)
    loop.now += 0.001
    began = loop.now
    asyncio.run(p.pause())
    assert RELOAD_WAIT_MAX <= loop.now - began < RELOAD_WAIT_MAX + 0.001
    assert p not in gate.ready
