"""``source_ip_hash`` as a multi-probe consistent-hash ring (issue 21): a pick is O(log n),
the ring follows the eligible set's change log, and it stays consistent: a server that
leaves moves only its own clients, one that joins takes clients only for itself, a weight
change moves clients only to or from that server. Sans-IO: no sockets, no sleeping."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiesce.balancing import make_algorithm, source_hash
from quiesce.balancing.source_hash import _ring_of
from quiesce.config.models import Config
from quiesce.core.admin import AdminCommand
from quiesce.core.clock import FakeClock
from quiesce.core.states import Admin, Cause
from quiesce.state.registry import Registry
from tests.balancing.test_large_pools import Counted, Stamped

KEYS = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(3000)]


def afresh(cands: Sequence[Any], keys: list[str]) -> dict[str, Any]:
    """Each key's server from a ring built from scratch over ``cands`` (the reference)."""
    ring, scale = _ring_of(list(cands))
    return {k: ring.nearest(k, scale) for k in keys}


def mapping(cands: list[Counted], keys: list[str] = KEYS) -> dict[str, str]:
    return {k: c.name for k, c in afresh(cands, keys).items()}


@settings(max_examples=20, deadline=None)
@given(
    weights=st.lists(st.integers(1, 5), min_size=2, max_size=40),
    which=st.integers(0, 10**6),
    new_weight=st.integers(0, 8),
)
def test_a_change_moves_only_the_changed_servers_clients(
    weights: list[int], which: int, new_weight: int
) -> None:
    keys = KEYS[:600]
    cands = [Counted(f"s{i}", w) for i, w in enumerate(weights)]
    before = mapping(cands, keys)
    gone = cands[which % len(cands)].name
    # a server goes out: only the keys it had move
    after = mapping([c for c in cands if c.name != gone], keys)
    assert {k for k in keys if before[k] != after[k]} == {k for k in keys if before[k] == gone}
    # one joins: keys move only to it
    joined = mapping([*cands, Counted("new", 2)], keys)
    assert all(joined[k] in (before[k], "new") for k in keys)
    # a weight changes: keys move only to or from that server
    cands[which % len(cands)].weight = new_weight
    reweighed = mapping(cands, keys)
    assert all(gone in (before[k], reweighed[k]) for k in keys if before[k] != reweighed[k])


def test_shares_follow_the_weights() -> None:
    keys = [f"172.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(30_000)]
    cands = [Counted(f"s{i}", 1 + i % 4) for i in range(40)]
    got = Counter(mapping(cands, keys).values())
    total = sum(c.weight for c in cands)
    for c in cands:
        expected = len(keys) * c.weight / total
        assert 0.75 * expected < got[c.name] < 1.25 * expected, (c.name, got[c.name], expected)


def test_a_pick_reads_no_candidate_once_the_ring_is_built() -> None:
    # weighted rendezvous hashing read every candidate's weight on every pick
    cands = Stamped(Counted(f"s{i}", 1 + i % 3) for i in range(2000))
    a = make_algorithm("source_ip_hash")
    a.pick(cands, "192.0.2.1")  # builds the ring
    Counted.reads = 0
    for k in KEYS[:500]:
        a.pick(cands, k)
    assert Counted.reads == 0


def pool_of(n: int) -> tuple[Registry, object]:
    servers = [
        {"name": f"s{i}", "address": f"127.0.0.1:{1000 + i}", "weight": 1 + i % 3} for i in range(n)
    ]
    raw = {"pools": {"web": {"algorithm": "source_ip_hash", "servers": servers}}}
    reg = Registry(Config.model_validate(raw), clock=FakeClock())
    return reg, reg.pool("web")


@settings(max_examples=15, deadline=None)
@given(
    size=st.integers(3, 90),
    changes=st.lists(
        st.tuples(
            st.sampled_from(["weight", "down", "up", "drain"]),
            st.integers(0, 10**6),
            st.integers(0, 5),
        ),
        max_size=12,
    ),
)
def test_the_ring_kept_per_change_equals_one_built_afresh(
    size: int, changes: list[tuple[str, int, int]]
) -> None:
    """Through the registry: after every admin command and weight change, the pool's
    incremental ring answers every key as a ring built from scratch over its candidates."""
    reg, pool = pool_of(size)
    keys = KEYS[:150]

    def check() -> None:
        want = afresh(pool.candidates, keys)  # type: ignore[attr-defined]
        if any(c is None for c in want.values()):
            return  # no weight anywhere: the pool takes turns
        got = {k: pool.pick(k, 0.0) for k in keys}  # type: ignore[attr-defined]
        assert got == want

    check()
    states = {"down": Admin.MAINTENANCE, "up": Admin.ENABLED, "drain": Admin.DRAIN}
    for op, at, w in changes:
        server = pool.server(f"s{at % size}")  # type: ignore[attr-defined]
        if op == "weight":
            reg.set_weight(server, w)
        else:
            reg.admin_command(server, AdminCommand(states[op], actor="t", cause=Cause.API))
        check()


def test_a_burst_that_outruns_the_log_and_a_retry_that_excludes() -> None:
    reg, pool = pool_of(100)
    keys = KEYS[:500]
    before = {k: pool.pick(k, 0.0) for k in keys}  # type: ignore[attr-defined]
    servers = list(pool.servers)  # type: ignore[attr-defined]
    for _ in range(2):  # 400 changes between two picks: more than the log keeps
        for s in servers:
            reg.admin_command(s, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.API))
        for s in servers:
            reg.admin_command(s, AdminCommand(Admin.ENABLED, actor="t", cause=Cause.API))
    reg.set_weight(servers[5], 0)
    want = afresh(pool.candidates, keys)  # type: ignore[attr-defined]
    assert {k: pool.pick(k, 0.0) for k in keys} == want  # type: ignore[attr-defined]
    assert all(want[k] is before[k] for k in keys if before[k] is not servers[5])
    # a retry excluding two servers: the answer of a ring without them
    out = [servers[1], servers[2]]
    rest = afresh([s for s in pool.candidates if s not in out], keys)  # type: ignore[attr-defined]
    assert {k: pool.pick(k, 0.0, exclude=out) for k in keys} == rest  # type: ignore[attr-defined]


def test_the_primaries_ring_is_kept_while_the_backups_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    servers: list[dict[str, Any]] = [
        {"name": f"s{i}", "address": f"127.0.0.1:{1000 + i}", "weight": 1 + i % 3}
        for i in range(100)
    ]
    servers += [
        {"name": f"b{i}", "address": f"127.0.0.1:{2000 + i}", "backup": True} for i in range(3)
    ]
    raw = {"pools": {"web": {"algorithm": "source_ip_hash", "servers": servers}}}
    reg = Registry(Config.model_validate(raw), clock=FakeClock())
    pool = reg.pool("web")
    keys = KEYS[:300]
    before = {k: pool.pick(k, 0.0) for k in keys}
    primaries = [s for s in pool.servers if not s.config.backup]

    def admin(state: Admin) -> None:
        for s in primaries:
            reg.admin_command(s, AdminCommand(state, actor="t", cause=Cause.API))

    admin(Admin.MAINTENANCE)
    assert {pool.pick(k, 0.0).name[0] for k in keys} == {"b"}  # type: ignore[union-attr]
    hashed: list[str] = []
    real = source_hash.positions
    monkeypatch.setattr(
        source_hash, "positions", lambda name, n: hashed.append(name) or real(name, n)
    )
    admin(Admin.ENABLED)
    assert {k: pool.pick(k, 0.0) for k in keys} == before
    assert hashed == []  # the primaries' ring was kept: nothing rebuilt or rehashed
