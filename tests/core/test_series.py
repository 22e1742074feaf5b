"""Live series (quiesce.state.series): one row a second per server, pool and service, in
fixed-size rings; sampled on a fake clock against fake runtime objects."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from quiesce.state import traffic
from quiesce.state.series import (
    BOUNDS,
    SeriesStore,
    new_histogram,
    quantiles,
    totals,
)


def server(name: str) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        requests_total=0,
        responses={},
        connections=0,
        traffic=traffic.Traffic(),
        bytes_in=0,
        bytes_out=0,
    )


def serve(s: SimpleNamespace, status: int, nin: int, nout: int, rtime: float) -> None:
    """What the data plane does for one request."""
    s.requests_total += 1
    cls = f"{status // 100}xx"
    s.responses[cls] = s.responses.get(cls, 0) + 1
    s.bytes_in += nin
    s.bytes_out += nout
    traffic.account_timed(s.traffic, traffic.Traffic(), nin, nout, rtime, rtime)


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
    assert len(store.series[("server", "web/a")].rows) == 10


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
