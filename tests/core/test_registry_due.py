"""The registry's heap of drain deadlines and expiries: stale entries compacted, amortised."""

from __future__ import annotations

from quiesce.config import parse_config
from quiesce.core.admin import AdminCommand
from quiesce.core.clock import FakeClock
from quiesce.core.states import Admin, Cause
from quiesce.state.registry import DUE_COMPACT_MIN, Registry, ServerRuntime


def registry(n: int) -> Registry:
    raw = {
        "pools": {
            "big": {"servers": [{"name": f"s{i}", "address": "127.0.0.1:9"} for i in range(n)]}
        }
    }
    return Registry(parse_config(raw), FakeClock())


def drain(reg: Registry, server: ServerRuntime, seconds: float) -> None:
    cmd = AdminCommand(Admin.DRAIN, "alice", "", Cause.API, deadline=reg.clock.time() + seconds)
    reg.admin_command(server, cmd, force_guard=True)


def counting(reg: Registry) -> list[int]:
    calls = [0]
    real = reg._scheduled

    def scheduled(server: ServerRuntime, at: float) -> bool:
        calls[0] += 1
        return real(server, at)

    reg._scheduled = scheduled  # type: ignore[method-assign]
    return calls


def test_a_mass_drain_checks_the_heap_amortised_not_at_every_push() -> None:
    """3,000 servers drained in one go (a reload removing them, busy): the heap's entries
    are looked at O(1) times a push on average. Counting every entry at every push past
    1,024 made it quadratic: ~4 million checks here, 1.6 ms a drain for the second
    thousand."""
    reg = registry(3000)
    calls = counting(reg)
    with reg.deferring():
        for s in list(reg.pools["big"].servers):
            drain(reg, s, 30)
    assert len(reg._due) == 3000
    assert calls[0] < 4 * 3000, calls[0]
    clock = reg.clock
    assert isinstance(clock, FakeClock)
    assert reg.next_due() == clock.time() + 30
    clock.advance(31)
    fired = reg.tick()
    assert len(fired) == 3000
    assert all(s.admin.state is Admin.MAINTENANCE for s in reg.pools["big"].servers)


def test_stale_entries_are_still_compacted() -> None:
    """Records changed again before their time leave stale entries behind: the heap stays
    within a few times its live entries (and DUE_COMPACT_MIN), and what is due still
    fires, once."""
    reg = registry(200)
    servers = list(reg.pools["big"].servers)
    for seconds in range(1, 101):  # 100 new deadlines each: 20,000 pushes, 200 live
        for s in servers:
            drain(reg, s, 1000 + seconds)
        assert len(reg._due) <= 2 * DUE_COMPACT_MIN + 2 * len(servers)
    clock = reg.clock
    assert isinstance(clock, FakeClock)
    assert reg.next_due() == clock.time() + 1100
    clock.advance(1100)
    assert len(reg.tick()) == len(servers)
    assert reg.next_due() is None
