"""The balancing algorithms, sans-IO: no sockets, no sleeping."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from quiesce.balancing import ALGORITHMS, make_algorithm
from quiesce.config.models import Config
from quiesce.core.admin import AdminCommand
from quiesce.core.clock import FakeClock
from quiesce.core.states import Admin, Cause
from quiesce.state.registry import Registry


@dataclass
class S:
    name: str
    weight: float = 1
    factor: float = 1.0
    active: int = 0

    @property
    def effective_weight(self) -> float:
        return self.weight * self.factor


def spread(algo: str, servers: list[S], n: int, key: str | None = None) -> Counter[str]:
    a = make_algorithm(algo)
    out: Counter[str] = Counter()
    for _ in range(n):
        c = a.pick(servers, key)
        assert c is not None
        out[c.name] += 1
    return out


def test_registry_names_every_config_algorithm() -> None:
    assert set(ALGORITHMS) == {
        "round_robin",
        "weighted_round_robin",
        "least_connections",
        "source_ip_hash",
    }
    with pytest.raises(ValueError, match="unknown balancing algorithm"):
        make_algorithm("random")


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_empty_candidates_pick_none(algo: str) -> None:
    assert make_algorithm(algo).pick([], "1.2.3.4") is None


def test_round_robin_is_exact_and_ignores_configured_weights() -> None:
    servers = [S("a", 1), S("b", 5), S("c", 2)]
    a = make_algorithm("round_robin")
    seq = [a.pick(servers, None).name for _ in range(9)]  # type: ignore[union-attr]
    assert seq == ["a", "b", "c"] * 3


def test_round_robin_honours_slow_start_and_weight_zero() -> None:
    servers = [S("a"), S("b", factor=0.25), S("c", weight=0)]
    got = spread("round_robin", servers, 1000)
    assert got["c"] == 0
    assert got["b"] == 200 and got["a"] == 800


def test_weighted_round_robin_is_smooth_and_within_one_percent() -> None:
    servers = [S("a", 5), S("b", 1), S("c", 1)]
    a = make_algorithm("weighted_round_robin")
    first = [a.pick(servers, None).name for _ in range(7)]  # type: ignore[union-attr]
    assert first == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's documented sequence
    got = spread("weighted_round_robin", [S("x", 3), S("y", 7), S("z", 10)], 20000)
    for name, share in (("x", 0.15), ("y", 0.35), ("z", 0.5)):
        assert abs(got[name] / 20000 - share) < 0.01


def test_weighted_round_robin_weight_zero_never_picked_unless_alone() -> None:
    assert spread("weighted_round_robin", [S("a", 0), S("b", 2)], 50) == {"b": 50}
    assert sum(spread("weighted_round_robin", [S("a", 0), S("b", 0)], 10).values()) == 10


def test_least_connections_prefers_the_idle_server() -> None:
    servers = [S("busy", active=5), S("idle", active=0), S("mid", active=2)]
    assert spread("least_connections", servers, 20) == {"idle": 20}


def test_least_connections_is_weighted_and_ties_follow_weights() -> None:
    # 3 connections on weight 4 is less loaded than 1 on weight 1.
    got = spread("least_connections", [S("big", 4, active=3), S("small", 1, active=1)], 5)
    assert got == {"big": 5}
    got = spread("least_connections", [S("a"), S("b"), S("c")], 30)
    assert got == {"a": 10, "b": 10, "c": 10}
    got = spread("least_connections", [S("a", 3), S("b", 1)], 400)
    assert got == {"a": 300, "b": 100}


def test_source_hash_is_stable_and_consistent() -> None:
    servers = [S(f"s{i}") for i in range(5)]
    keys = [f"10.0.{i // 256}.{i % 256}" for i in range(4000)]
    a = make_algorithm("source_ip_hash")
    before = {k: a.pick(servers, k).name for k in keys}  # type: ignore[union-attr]
    again = {k: a.pick(servers, k).name for k in keys}  # type: ignore[union-attr]
    assert before == again
    shares = Counter(before.values())
    assert all(600 < v < 1000 for v in shares.values()), shares
    # Remove s2: only the keys that were on s2 move.
    fewer = [s for s in servers if s.name != "s2"]
    after = {k: a.pick(fewer, k).name for k in keys}  # type: ignore[union-attr]
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == "s2"}
    # Adding it back restores the original mapping exactly.
    assert {k: a.pick(servers, k).name for k in keys} == before  # type: ignore[union-attr]


def test_source_hash_weights_and_slow_start() -> None:
    keys = [f"192.168.{i // 256}.{i % 256}" for i in range(20000)]
    a = make_algorithm("source_ip_hash")
    servers = [S("a", 1), S("b", 3)]
    got = Counter(a.pick(servers, k).name for k in keys)  # type: ignore[union-attr]
    # a ring of 2 points per unit of weight: shares within a few percent (rendezvous
    # hashing, O(n) per pick, was exact up to the keys' own spread)
    assert abs(got["b"] / 20000 - 0.75) < 0.04
    ramp = [S("a"), S("b", factor=0.1)]
    got = Counter(a.pick(ramp, k).name for k in keys)  # type: ignore[union-attr]
    assert 0.05 < got["b"] / 20000 < 0.15


CONFIG = {
    "pools": {
        "web": {
            "algorithm": "weighted_round_robin",
            "servers": [
                {"name": "a", "address": "127.0.0.1:1", "weight": 2},
                {"name": "b", "address": "127.0.0.1:2", "weight": 1},
                {"name": "bk", "address": "127.0.0.1:3", "backup": True},
            ],
        }
    }
}


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_algorithm_through_the_pool_honours_backups(algo: str) -> None:
    raw = {"pools": {"web": {**CONFIG["pools"]["web"], "algorithm": algo}}}
    reg = Registry(Config.model_validate(raw), clock=FakeClock())
    pool = reg.pool("web")
    picks = {pool.pick(f"10.0.0.{i}", 0.0).name for i in range(60)}  # type: ignore[union-attr]
    assert picks == {"a", "b"}
    for name in ("a", "b"):
        reg.admin_command(
            pool.server(name), AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.API)
        )
    picks = {pool.pick(f"10.0.0.{i}", 0.0).name for i in range(20)}  # type: ignore[union-attr]
    assert picks == {"bk"}


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_algorithm_ramps_slow_start(algo: str) -> None:
    clock = FakeClock()
    raw = {
        "pools": {
            "web": {
                "algorithm": algo,
                "slow_start": "100s",
                "servers": [
                    {"name": "a", "address": "127.0.0.1:1"},
                    {"name": "b", "address": "127.0.0.1:2"},
                ],
            }
        }
    }
    reg = Registry(Config.model_validate(raw), clock=clock)
    pool = reg.pool("web")
    b = pool.server("b")
    reg.admin_command(b, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.API))
    clock.advance(200)
    reg.admin_command(b, AdminCommand(Admin.ENABLED, actor="t", cause=Cause.API))
    now = clock.time()
    n = 4000
    got = Counter(pool.pick(f"10.1.{i // 256}.{i % 256}", now).name for i in range(n))  # type: ignore[union-attr]
    # b starts at 10% of its weight: a share around 1/11 (least_connections sees no load, so
    # it follows weights alone).
    assert 0.04 < got["b"] / n < 0.15, got
    later = now + 100
    got = Counter(pool.pick(f"10.1.{i // 256}.{i % 256}", later).name for i in range(n))  # type: ignore[union-attr]
    assert 0.4 < got["b"] / n < 0.6, got
