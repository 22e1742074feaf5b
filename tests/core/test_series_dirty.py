"""The live series' tick looks only at the servers that moved (``PoolTally.moved``: busy
again, a check result; and those busy at the last tick): its rows must be those of a tick
that looks at every server (a second store over the same registry, which does not read the
marks), on random histories of a real registry and connection table (requests that span
seconds, L4 connections, checks, servers added and deleted, missed seconds, a second ticked
twice, a clock stepped back) on a fake clock."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiesce.config import parse_config
from quiesce.config.models import ServerConfig
from quiesce.core.admin import AdminCommand
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import FakeClock
from quiesce.core.states import Admin, Cause, Verdict
from quiesce.dataplane.table import ConnectionTable
from quiesce.state import traffic
from quiesce.state.registry import Registry
from quiesce.state.series import SeriesStore
from quiesce.state.series_ticks import Ticks, idle_run


def registry() -> Registry:
    raw: dict[str, Any] = {
        "healthmonitors": {"hm": {"type": "tcp", "send_interval": 1, "receive_timeout": 0.5}},
        "pools": {
            "web": {
                "healthmonitors": ["hm"],
                "servers": [{"name": f"s{i}", "address": f"127.0.0.1:{i + 1}"} for i in range(6)],
            },
            "tcp": {
                "servers": [{"name": f"t{i}", "address": f"127.0.0.2:{i + 1}"} for i in range(4)]
            },
        },
    }
    return Registry(parse_config(raw), FakeClock(1000.0))


class Conn:
    """A client connection as the table keeps it (never closed here)."""

    layer = 7

    def cut(self, why: str = "") -> None:
        raise AssertionError("not closed here")

    def close_at_boundary(self, force: bool = False) -> bool | None:
        raise AssertionError("not closed here")


def step(rng: random.Random, reg: Registry, table: ConnectionTable, open_: list[Any]) -> None:
    """One thing the data plane or the API does, at random (as the data plane does it: bytes
    and times counted while the server holds the connection)."""
    pool = reg.pools[rng.choice(sorted(reg.pools))]
    servers = list(pool.servers)
    r = rng.random()
    if r < 0.3 and servers:  # a request starts (it may end in a later second)
        s = rng.choice(servers)
        conn = Conn()
        table.request_started(s, conn, None)
        open_.append(("l7", s, conn))
    elif r < 0.55 and open_:  # one ends
        kind, s, conn = open_.pop(rng.randrange(len(open_)))
        t = s.own_traffic or s.new_traffic()
        if kind == "l7":
            rtime = rng.choice((-1.0, rng.uniform(0.0001, 2.0)))
            traffic.account_timed(t, traffic.Traffic(), 10, rng.choice((0, 90)), rtime, rtime)
            table.request_finished(s, conn, rng.choice((200, 200, 404, 503, 0)), rng.random() < 0.5)
        else:
            traffic.account(t, traffic.Traffic(), 5, 5, 0.0, 0.3)
            table.closed(s, conn)
    elif r < 0.62 and servers:  # an L4 connection opens
        s = rng.choice(servers)
        conn = Conn()
        table.opened(s, conn)
        open_.append(("l4", s, conn))
    elif r < 0.7 and open_:  # an open L4 connection's bytes pass (the sweep's fold)
        kind, s, _ = rng.choice(open_)
        if kind == "l4":
            traffic.account(s.own_traffic or s.new_traffic(), traffic.Traffic(), 3, 4, -1.0, 0.0)
    elif r < 0.82 and servers:  # a check result
        s = rng.choice(servers)
        for m in list(s.tracks):
            verdict = rng.choice((Verdict.PASS, Verdict.PASS, Verdict.FAIL))
            at = reg.clock.time() + rng.uniform(-0.5, 0.0)
            reg.record_check(s, CheckResult(m, verdict, Reason.OK, at, rng.uniform(0.0, 0.2)))
    elif r < 0.88:  # a server added (maybe a name deleted before)
        name = f"n{rng.randrange(6)}"
        if not pool.has(name):
            cfg = ServerConfig(name=name, address=f"127.0.0.3:{rng.randrange(1, 9)}")
            reg.add_server(pool.name, cfg, actor="t", cause=Cause.API)
    elif r < 0.94 and servers:  # one deleted once it has no connection
        s = rng.choice(servers)
        if not s.connections and not s.requests_in_flight:
            reg.admin_command(s, AdminCommand(Admin.MAINTENANCE, "t"), force_guard=True)
            reg.remove_server(s, actor="t", cause=Cause.API)


def compare(store: SeriesStore, ref: SeriesStore, reg: Registry) -> None:
    names = [("pool", p) for p in reg.pools] + [
        ("server", f"{p}/{s.name}") for p, pool in reg.pools.items() for s in pool.servers
    ]
    for kind, name in names:
        assert store.window(kind, name, 60) == ref.window(kind, name, 60), (kind, name)


@settings(max_examples=30)
@given(
    seed=st.integers(0, 2**32),
    batch=st.sampled_from((1, 3, 2000)),
    reads=st.booleans(),
)
def test_the_tick_on_marked_servers_stores_the_rows_of_a_tick_on_every_server(
    seed: int, batch: int, reads: bool
) -> None:
    rng = random.Random(seed)
    reg = registry()
    table = ConnectionTable(reg)
    store, ref = SeriesStore(size=60), SeriesStore(size=60)  # store reads the marks
    open_: list[Any] = []
    now = 1000.0
    try:
        for _ in range(40):
            for _ in range(rng.choice((0, 0, 0, 1, 3, 12))):  # idle seconds too
                step(rng, reg, table, open_)
            steps = list(store.ticking(now, reg.pools, {}, batch=batch))
            ref.tick(now, reg.pools, {})
            assert all(b - a == batch for a, b in zip([0, *steps], steps, strict=False))
            if reads or rng.random() < 0.2:  # a read catches up the servers not looked at
                compare(store, ref, reg)
            gap = rng.choice((1.0, 1.0, 1.0, 1.0, 2.0, 7.0, 0.0004, -1.0, 70.0))
            now += gap
            reg.clock.advance(max(0.0, gap))  # type: ignore[attr-defined]
        compare(store, ref, reg)
        assert set(store.series) == set(ref.series)
        for key, series in ref.series.items():
            assert store.series[key].window(store.now, 60) == series.window(ref.now, 60), key
    finally:
        traffic.LATENCY.clear()


def test_an_idle_server_is_not_looked_at() -> None:
    """After the first ticks, a tick looks at the servers marked or busy only (the point)."""
    reg = registry()
    table = ConnectionTable(reg)
    store = SeriesStore(size=60)
    web = reg.pools["web"]
    a, b = web.server("s0"), web.server("s1")
    store.tick(1000.0, reg.pools, {})
    store.tick(1001.0, reg.pools, {})
    conn = Conn()
    table.request_started(a, conn, None)
    assert web.tally.moved == {a}  # the 0-to-busy step marks it
    members = store._pools["web"].members
    store.tick(1002.0, reg.pools, {})
    assert (members["s0"]._end, members["s1"]._end) == (1003, 1001)  # a alone written
    assert store._pools["web"].busy == {a}  # still busy: looked at next time too
    traffic.account_timed(a.own_traffic or a.new_traffic(), traffic.Traffic(), 1, 2, 0.01, 0.01)
    table.request_finished(a, conn, 200, True)
    store.tick(1003.0, reg.pools, {})
    assert members["s0"]._end == 1004
    store.tick(1004.0, reg.pools, {})  # nothing moved: nobody looked at
    assert (members["s0"]._end, members["s1"]._end) == (1004, 1001)
    rows = store.window("server", "web/s0", 3) or []
    assert [(r["t"], r["requests"], r["2xx"], r["connections"]) for r in rows] == [
        (1002, 1, 0, 1),
        (1003, 0, 1, 0),
        (1004, 0, 0, 0),
    ]
    idle = store.window("server", "web/s1", 4) or []  # caught up on reading
    assert [(r["t"], r["requests"], r["connections"]) for r in idle] == [
        (1001, 0, 0),
        (1002, 0, 0),
        (1003, 0, 0),
        (1004, 0, 0),
    ]
    reg.record_check(b, CheckResult("hm", Verdict.FAIL, Reason.OK, 1004.5, 0.25))
    store.tick(1005.0, reg.pools, {})  # b's check
    assert (members["s0"]._end, members["s1"]._end) == (1005, 1006)  # (s0 read above)
    row = (store.window("server", "web/s1", 1) or [])[0]
    assert (row["checks"], row["checks_failed"], row["check_ms"]) == (1, 1, 250.0)
    traffic.LATENCY.clear()


def test_a_second_store_over_the_registry_looks_at_every_server() -> None:
    """The marks have one reader: another store's ticks look at every server (not at an
    empty set of marks the first one took)."""
    reg = registry()
    first, second = SeriesStore(size=60), SeriesStore(size=60)
    first.tick(1000.0, reg.pools, {})
    second.tick(1000.0, reg.pools, {})
    first.tick(1001.0, reg.pools, {})
    second.tick(1001.0, reg.pools, {})
    ends = {s._end for p in second._pools.values() for s in p.members.values()}
    assert ends == {1002}
    ends = {s._end for p in first._pools.values() for s in p.members.values()}
    assert ends == {1001}  # the baseline's: nothing looked at


@pytest.mark.parametrize("k", [0, 5, 32765, 32766, 32767])
def test_a_run_of_idle_seconds_in_one_add_stores_what_one_a_second_does(k: int) -> None:
    """``idle_run`` against ``idle`` a second, around the 32,767 seconds an entry holds."""
    from quiesce.state.series import Series

    one, bulk = Series(900, checks=True), Series(900, checks=True)
    for s in (one, bulk):
        s.idle(100)
        for t in range(101, 101 + k):
            s.idle(t)
    start = 101 + k
    for t in range(start, start + 40000):
        one.idle(t)
    idle_run(bulk, start, start + 40000)
    assert list(one) == list(bulk)
    assert (one._end, one._ext, one._tconn) == (bulk._end, bulk._ext, bulk._tconn)
    assert one.window(one._end - 1, 900) == bulk.window(bulk._end - 1, 900)


def test_ticks_kept_as_runs() -> None:
    ticks = Ticks(keep=100)
    for second in (10, 11, 12, 14, 15, 15, 13, 20):
        ticks.add(second)
    # 15 again: the run to 16 cut to 15 then 15 again; 13: back, 14 and 15 gone
    assert list(zip(ticks.starts, ticks.ends, strict=True)) == [(10, 14), (20, 21)]
    ticks.add(500)
    assert list(zip(ticks.starts, ticks.ends, strict=True)) == [(500, 501)]
