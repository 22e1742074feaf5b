"""Live series (quiesce.state.series): one row a second per server, pool and service, in
fixed-size rings; sampled on a fake clock against fake runtime objects."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from quiesce.core.checks import CheckResult, Reason
from quiesce.core.states import Verdict
from quiesce.state import traffic
from quiesce.state.runtime import Recent
from quiesce.state.series import (
    BOUNDS,
    CHECK_FIELDS,
    Series,
    SeriesStore,
    check_stats,
    new_histogram,
    newest_check,
    pool_snapshot,
    quantiles,
    server_snapshot,
    service_snapshot,
    totals,
)


def server(name: str) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        requests_total=0,
        requests_in_flight=0,
        responses={},
        connections=0,
        traffic=traffic.Traffic(),
        bytes_in=0,
        bytes_out=0,
        last_checks={},
    )


def serve(s: SimpleNamespace, status: int, nin: int, nout: int, rtime: float) -> None:
    """What the data plane does for one request."""
    s.requests_total += 1
    cls = f"{status // 100}xx"
    s.responses[cls] = s.responses.get(cls, 0) + 1
    s.bytes_in += nin
    s.bytes_out += nout
    traffic.account_timed(s.traffic, traffic.Traffic(), nin, nout, rtime, rtime)


CLOCK = [0.0]


def check(s: SimpleNamespace, verdict: Verdict, latency: float, monitor: str = "m") -> None:
    """What the registry keeps of one check result (its monitor's last ten)."""
    CLOCK[0] += 0.001
    result = CheckResult(monitor, verdict, Reason.OK, CLOCK[0], latency)
    s.last_checks.setdefault(monitor, Recent()).append(result)


def world() -> tuple[dict[str, Any], dict[str, Any], SimpleNamespace, SimpleNamespace]:
    a, b = server("a"), server("b")
    pools = {"web": SimpleNamespace(servers=[a, b])}
    stats = SimpleNamespace(
        requests=0,
        responses={},
        errors={},
        bytes_in=0,
        bytes_out=0,
        connections=0,
        connections_total=0,
    )
    return pools, {"www": stats}, a, b


def test_rows_are_per_second_differences_and_the_first_tick_is_the_baseline() -> None:
    pools, services, a, b = world()
    store = SeriesStore(size=60)
    serve(a, 200, 10, 100, 0.001)  # before the first tick: in the baseline, not in a row
    store.tick(1000.2, pools, services)
    for _ in range(3):
        serve(a, 200, 10, 100, 0.001)
    serve(b, 503, 5, 50, 0.2)
    a.connections = 2
    services["www"].requests = 4
    services["www"].connections_total = 3
    services["www"].errors = {502: 1}
    store.tick(1001.1, pools, services)
    rows = store.window("server", "web/a", 3)
    assert rows is not None and [r["t"] for r in rows] == [999, 1000, 1001]
    assert rows[0]["requests"] == 0 and rows[0]["connections"] is None  # no row: reads 0
    assert rows[1]["requests"] == 0  # the baseline's second has no row either
    last = rows[2]
    assert (last["requests"], last["2xx"], last["bytes_in"], last["bytes_out"]) == (3, 3, 30, 300)
    assert last["connections"] == 2 and last["errors"] == 0
    assert last["p50_ms"] is not None and 0.9 <= last["p50_ms"] <= 1.2
    pool = store.window("pool", "web", 1)
    assert pool is not None
    assert (pool[0]["requests"], pool[0]["2xx"], pool[0]["5xx"], pool[0]["errors"]) == (4, 3, 1, 1)
    assert pool[0]["p99_ms"] is not None and pool[0]["p99_ms"] >= 200
    svc = store.window("service", "www", 1)
    assert svc is not None
    assert (svc[0]["requests"], svc[0]["new_connections"], svc[0]["errors"]) == (4, 3, 1)
    assert store.window("server", "web/nope", 5) is None


def test_the_ring_keeps_its_size_and_a_missed_second_reads_zero() -> None:
    pools, services, a, _ = world()
    store = SeriesStore(size=10)
    store.tick(0.0, pools, services)
    for t in range(1, 26):
        if t != 20:  # the timer missed second 20: 21's row holds both seconds' requests
            serve(a, 200, 1, 1, 0.001)
            if t == 19:
                serve(a, 200, 1, 1, 0.001)
            store.tick(float(t), pools, services)
    rows = store.window("server", "web/a", 100)  # asked for more than kept: the ring's 10
    assert rows is not None and [r["t"] for r in rows] == list(range(16, 26))
    assert [r["requests"] for r in rows] == [1, 1, 1, 2, 0, 1, 1, 1, 1, 1]
    ring = store.series[("server", "web/a")]
    assert ring._end - ring._base <= 10 + 64  # the oldest entries dropped (with slack)


def test_window_totals_equal_the_counters_difference_and_a_counter_going_down_counts_zero() -> None:
    pools, services, a, b = world()
    store = SeriesStore()
    store.tick(5.0, pools, services)
    before = a.requests_total + b.requests_total
    for t in range(6, 16):
        for _ in range(t % 4):
            serve(a, 200, 3, 7, 0.01)
            serve(b, 404, 3, 7, 0.01)
        store.tick(float(t), pools, services)
    got = totals(store.window("pool", "web", 10) or [])
    assert got["requests"] == a.requests_total + b.requests_total - before
    assert got["4xx"] == got["requests"] // 2
    # a server deleted: the pool's sums go down, that second counts 0, then on from there
    pools["web"].servers.remove(b)
    store.tick(16.0, pools, services)
    serve(a, 200, 1, 1, 0.001)
    store.tick(17.0, pools, services)
    rows = store.window("pool", "web", 2) or []
    assert [r["requests"] for r in rows] == [0, 1]
    assert ("server", "web/b") not in store.series
    assert b.traffic not in traffic.LATENCY  # its histogram is dropped too


def test_latency_buckets_and_quantiles() -> None:
    counts = new_histogram()
    assert quantiles(counts) == (None, None, None)
    for ms, n in ((1.0, 90), (50.0, 9), (900.0, 1)):
        counts[next(i for i, bound in enumerate(BOUNDS) if bound >= ms / 1000)] += n
    p50, p95, p99 = quantiles(counts)
    step = 2**0.25  # a quantile is its bucket's upper bound: at most a quarter octave above
    assert p50 is not None and 1.0 <= p50 < step and p95 is not None and 50.0 <= p95 < 50 * step
    assert p99 == p95  # the 99th of 100 samples is still a 50 ms one
    # a time above every bound lands in the last bucket instead of failing
    s = server("x")
    traffic.LATENCY[s.traffic] = h = new_histogram()
    try:
        traffic.account_timed(s.traffic, traffic.Traffic(), 0, 0, 10_000.0, 10_000.0)
        traffic.account_timed(s.traffic, traffic.Traffic(), 0, 0, -1.0, 0.0)  # not answered: none
        assert h[-1] == 1 and sum(h) == 1
    finally:
        del traffic.LATENCY[s.traffic]


def test_two_ticks_in_one_second_add_up() -> None:
    """A timer firing a little early ticks twice in one second: nothing is lost."""
    pools, services, a, _ = world()
    store = SeriesStore(size=60)
    store.tick(10.0, pools, services)
    serve(a, 200, 1, 1, 0.001)
    store.tick(11.001, pools, services)
    serve(a, 200, 1, 1, 0.001)
    serve(a, 200, 1, 1, 0.001)
    store.tick(11.9995, pools, services)
    rows = store.window("server", "web/a", 1) or []
    assert [(r["t"], r["requests"], r["bytes_in"]) for r in rows] == [(11, 3, 3)]


# The tick does O(1) for a server whose counters did not move and runs in slices: its rows
# must be those of the plain tick it replaced (a snapshot of every server and pool each
# second), kept here as the reference.


def reference_tick(
    ref: dict[tuple[str, str], Series], now: float, pools: Any, services: Any
) -> None:
    second = int(now)
    seen = set()

    def put(kind: str, name: str, snap: Any) -> None:
        seen.add((kind, name))
        ref.setdefault((kind, name), Series(60, checks=kind == "server")).sample(second, snap)

    for pname, pool in pools.items():
        parts = []
        for s in pool.servers:
            series = ref.get(("server", f"{pname}/{s.name}"))
            since = series.check_at if series is not None and series.src is s else 0.0
            checks = check_stats(s, since)
            hist = traffic.LATENCY.get(s.traffic, NOT_TIMED)
            snap = server_snapshot(s, hist, checks)
            parts.append(server_snapshot(s, hist))
            put("server", f"{pname}/{s.name}", snap)
            ref[("server", f"{pname}/{s.name}")].src = s
            ref[("server", f"{pname}/{s.name}")].check_at = newest_check(s)
        put("pool", pname, pool_snapshot(parts))
    for sname, stats in services.items():
        put("service", sname, service_snapshot(stats, None))
    for key in set(ref) - seen:
        del ref[key]


NOT_TIMED = [0] * (len(BOUNDS) + 1)  # the histogram of a server before its first timed request


def start(s: SimpleNamespace) -> None:
    s.requests_total += 1
    s.requests_in_flight += 1
    s.connections += 1


def finish(s: SimpleNamespace, status: int, rtime: float, nout: int, close: bool) -> None:
    """A response to a request started earlier (maybe in an earlier second): with no bytes
    and its connection kept, only ``requests_in_flight`` and ``traffic.timed`` move."""
    s.requests_in_flight -= 1
    s.connections -= close
    cls = f"{status // 100}xx"
    s.responses[cls] = s.responses.get(cls, 0) + 1
    s.bytes_out += nout
    traffic.account_timed(s.traffic, traffic.Traffic(), 0, nout, rtime, rtime)


def churn(rng: random.Random, pools: dict[str, Any], services: dict[str, Any], n: int) -> None:
    """What the data plane and the API do between two ticks, at random."""
    for _ in range(n):
        pool = pools[rng.choice(sorted(pools))]
        if not pool.servers:
            pool.servers.append(server("a"))
            continue
        s = rng.choice(pool.servers)
        r = rng.random()
        if r < 0.4:
            start(s)
        elif r < 0.8 and s.requests_in_flight:
            status = rng.choice((200, 200, 302, 404, 503, 101))
            rtime = rng.choice((-1.0, rng.uniform(0.0001, 3.0)))  # -1: not timed
            finish(s, status, rtime, rng.choice((0, 50)), rng.random() < 0.5)
        elif r < 0.82:  # a health check's result
            check(s, rng.choice(list(Verdict)), rng.uniform(0.0001, 0.2))
        elif r < 0.85:  # bytes of a tcp connection, no request
            s.bytes_in += 7
            traffic.account(s.traffic, traffic.Traffic(), 7, 0, -1.0, 0.0)
        elif r < 0.9:
            services["www"].requests += 1
        elif r < 0.93:  # deleted
            pool.servers.remove(s)
        elif r < 0.96:  # deleted and added again under its name, or a new one
            if rng.random() < 0.5:
                pool.servers[pool.servers.index(s)] = server(s.name)
            elif (name := f"s{rng.randrange(100)}") not in {x.name for x in pool.servers}:
                pool.servers.append(server(name))
        elif r < 0.97:
            pools.pop(rng.choice(sorted(pools)))
            pools.setdefault("web", SimpleNamespace(servers=[]))
        elif r < 0.98:
            pools[f"p{rng.randrange(5)}"] = SimpleNamespace(servers=[server("a")])


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("batch", [1, 3, 2000])
def test_the_cheap_sliced_tick_stores_the_rows_of_a_full_tick(seed: int, batch: int) -> None:
    rng = random.Random(seed)
    pools, services, _, _ = world()
    pools["api"] = SimpleNamespace(servers=[server(f"s{i}") for i in range(8)])
    store = SeriesStore(size=60)
    ref: dict[tuple[str, str], Series] = {}
    now = 1000.0
    try:
        for _ in range(40):
            churn(rng, pools, services, rng.choice((0, 0, 1, 3, 20)))  # idle seconds too
            steps = list(store.ticking(now, pools, services, batch=batch))
            n = sum(len(p.servers) for p in pools.values())
            # a step after each batch of servers (and of the walk that forgets the histograms
            # of servers gone, when some went)
            assert steps == list(range(batch, batch * len(steps) + 1, batch))
            assert len(steps) >= len(range(batch, n, batch))
            reference_tick(ref, now, pools, services)
            assert set(store.series) == set(ref)
            for (kind, name), series in ref.items():
                assert store.window(kind, name, 60) == series.window(int(now), 60), (kind, name)
            live = {s.traffic for p in pools.values() for s in p.servers}
            assert not set(traffic.LATENCY) - live  # a deleted server's histogram forgotten
            now += rng.choice((0.0004, 0.4, 1.0, 1.0, 1.0, 2.0))  # twice in a second, a miss
    finally:
        traffic.LATENCY.clear()


def test_counters_that_move_between_two_slices_are_not_lost() -> None:
    pools = {"web": SimpleNamespace(servers=[server(f"s{i}") for i in range(10)])}
    store = SeriesStore(size=60)
    store.tick(10.0, pools, {})
    for i, _ in enumerate(store.ticking(11.0, pools, {}, batch=4)):
        for s in pools["web"].servers[i * 4 : i * 4 + 8]:  # 4 done, 4 (or 2) not yet
            serve(s, 200, 1, 1, 0.001)
    store.tick(12.0, pools, {})
    got = totals(store.window("pool", "web", 2) or [])
    assert got["requests"] == sum(s.requests_total for s in pools["web"].servers) == 14
    per_server = sum(totals(store.window("server", f"web/s{i}", 2) or [])["2xx"] for i in range(10))
    assert per_server == 14
    traffic.LATENCY.clear()


def test_a_servers_checks_are_in_its_rows() -> None:
    """Results, failed, maintenance and the slowest latency of the checks reported in each
    second (issue 19, item 1); pools and services have none (null)."""
    pools, services, a, b = world()
    store = SeriesStore(size=60)
    check(a, Verdict.PASS, 0.002)  # before the baseline: not counted
    store.tick(10.0, pools, services)
    check(a, Verdict.PASS, 0.003)
    check(a, Verdict.FAIL, 0.5)
    check(a, Verdict.MAINTENANCE, 0.004, monitor="other")
    store.tick(11.0, pools, services)
    store.tick(12.0, pools, services)  # no check: 0 results
    for _ in range(12):  # more than the ten a monitor keeps: ten counted
        check(b, Verdict.PASS, 0.001)
    store.tick(13.0, pools, services)
    rows = store.window("server", "web/a", 3) or []
    got = [tuple(r[f] for f in CHECK_FIELDS) for r in rows]
    assert got == [(3, 1, 1, 500.0), (0, 0, 0, None), (0, 0, 0, None)]
    assert [r["checks"] for r in store.window("server", "web/b", 3) or []] == [0, 0, 10]
    for kind, name in (("pool", "web"), ("service", "www")):
        assert {r["checks"] for r in store.window(kind, name, 3) or []} == {None}
    # a check in a second with no traffic is not lost to the idle fast path
    check(a, Verdict.FAIL, 0.01)
    store.tick(14.0, pools, services)
    assert (store.window("server", "web/a", 1) or [])[0]["checks_failed"] == 1
    # two ticks in one second add up, the slowest stays
    check(a, Verdict.PASS, 0.02)
    store.tick(15.001, pools, services)
    check(a, Verdict.PASS, 0.01)
    store.tick(15.9, pools, services)
    row = (store.window("server", "web/a", 1) or [])[0]
    assert (row["checks"], row["check_ms"]) == (2, 20.0)
    assert newest_check(a) == CLOCK[0] and newest_check(SimpleNamespace(last_checks={})) == 0.0
    traffic.LATENCY.clear()


def _quantiles_by_walk(counts: list[int]) -> tuple[float | None, ...]:
    """The quantiles as they were first written: a walk of every bucket."""
    total = sum(counts)
    if total <= 0:
        return (None, None, None)
    out: list[float | None] = []
    for q in (0.5, 0.95, 0.99):
        seen = 0
        for i, n in enumerate(counts):
            seen += n
            if seen >= q * total and n:
                bound = BOUNDS[i] if i < len(BOUNDS) else BOUNDS[-1] * 2
                out.append(round(bound * 1000.0, 3))
                break
    return tuple(out)


@pytest.mark.parametrize("seed", range(40))
def test_a_servers_quantiles_and_its_pools_sums_are_those_of_a_walk_of_every_bucket(
    seed: int,
) -> None:
    """The tick's quantiles (C loops over the buckets; for a server, over the buckets that
    moved alone) equal a plain walk of every bucket, and the pool's latency counts are the
    sums of its servers' however often they moved (a server deleted and added again: its
    counts start over)."""
    rng = random.Random(seed)
    counts = [rng.choice((0, 0, 0, 1, 2, 50)) for _ in range(len(BOUNDS) + 1)]
    assert quantiles(counts) == _quantiles_by_walk(counts)
    servers = [server(f"s{i}") for i in range(6)]
    pool = SimpleNamespace(servers=servers)
    store = SeriesStore()
    for second in range(8):
        moved: dict[str, list[int]] = {}
        for s in rng.sample(servers, 3):
            before = list(traffic.LATENCY.get(s.traffic, new_histogram()))
            for _ in range(rng.choice((1, 2, 300))):
                s.requests_total += 1
                rtime = rng.random() ** 4 * 8  # response times over many buckets
                traffic.account_timed(s.traffic, traffic.Traffic(), 1, 1, rtime, rtime)
            after = traffic.LATENCY[s.traffic]
            moved[s.name] = [a - b for a, b in zip(after, before, strict=True)]
        if second == 5:  # one deleted and added again: a new record, counts from 0
            servers[0] = server("s0")
            pool.servers = servers
        store.tick(1000.0 + second, {"p": pool}, {})
        if second == 0:
            continue  # the baseline
        for name, diff in moved.items():
            row = store.window("server", f"p/{name}", 1)[0]
            if not (second == 5 and name == "s0"):
                want = _quantiles_by_walk([max(0, d) for d in diff])
                assert (row["p50_ms"], row["p95_ms"], row["p99_ms"]) == want, (second, name)
        sums = new_histogram()
        for s in servers:
            for i, n in enumerate(traffic.LATENCY.get(s.traffic, new_histogram())):
                sums[i] += n
        assert store._pools["p"].latency == sums


def test_placing_and_forgetting_servers_added_or_gone_is_sliced_too() -> None:
    """After servers came or went (a reload), the pool's order made anew, the series of
    servers gone forgotten and the walk that finds the latency histograms to forget run in
    the tick's slices as well: at 11,000 servers each held the loop 6-20 ms in one go after
    each reload (bench/reload_stall.py --where)."""
    servers = [server(f"s{i}") for i in range(100)]
    for s in servers:
        s.requests_total += 1
        traffic.account_timed(s.traffic, traffic.Traffic(), 1, 1, 0.001, 0.001)
    pools = {"p": SimpleNamespace(servers=servers)}
    store = SeriesStore()
    try:
        # new servers: their rows, their order and the walk of the histograms, in slices
        assert len(list(store.ticking(1000.0, pools, {}, batch=10))) == 9 + 10 + 10
        pools["p"].servers = servers[:50]
        steps = list(store.ticking(1001.0, pools, {}, batch=10))
        # 50 servers, their order, the 50 gone forgotten, the walk of the 50 left: in slices
        assert len(steps) == 4 + 5 + 5 + 5
        assert set(traffic.LATENCY) == {s.traffic for s in servers[:50]}
    finally:
        traffic.LATENCY.clear()
