"""Memory per configured server (issue 21: at most 2 KiB per server for the whole process).
The registry's share is measured with tracemalloc, deterministic allocation sizes, no
timing: a pool of 2,000 servers under one monitor."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from quiesce.config import parse_config
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.states import Verdict
from quiesce.health.manager import HealthManager
from quiesce.health.probes import fast
from quiesce.health.probes.stream import StreamProber
from quiesce.state.recent import LAST_CHECKS
from quiesce.state.registry import Registry
from quiesce.state.runtime import NO_COUNTS
from quiesce.state.series import SeriesStore
from quiesce.state.traffic import NO_TRAFFIC

SERVERS = 2000


def raw() -> dict[str, Any]:
    servers = [{"name": f"s{i}", "address": f"127.0.0.1:{1000 + i}"} for i in range(SERVERS)]
    return {
        "healthmonitors": {"m": {"type": "tcp", "send_interval": 60}},
        "pools": {"p": {"healthmonitors": ["m"], "servers": servers}},
    }


T = TypeVar("T")


def per_server(make: Callable[[], T]) -> tuple[T, float]:
    """What ``make`` returns, and the bytes it left allocated per server."""
    tracemalloc.start()
    try:
        made = make()
        gc.collect()  # and the free lists: a freed tuple kept for reuse is not the server's
        return made, tracemalloc.get_traced_memory()[0] / SERVERS
    finally:
        tracemalloc.stop()


def test_the_parsed_config_keeps_a_server_in_under_400_bytes() -> None:
    data = raw()
    config, size = per_server(lambda: parse_config(data))
    assert len(config.pools["p"].servers) == SERVERS
    # 635 bytes with a set of the keys given per server; one set per combination: 420; one
    # empty monitor list for the servers without monitors of their own: 362
    assert size < 400, size


def tick(store: SeriesStore, pools: dict[str, Any]) -> SeriesStore:
    for t in range(100):  # 100 s of 1 s rows
        store.tick(1000.0 + t, pools, {})
    return store


def test_an_idle_servers_live_series_takes_under_400_bytes() -> None:
    registry = Registry(parse_config(raw()))
    store, size = per_server(lambda: tick(SeriesStore(), registry.pools))
    assert len(store.window("server", "p/s7", 100) or []) == 100
    # 16,648 bytes with a slot and a stamp a second for 900 s and a latency histogram per
    # server; runs of idle seconds and no histogram before the first timed request: 500;
    # a server's series kept in its pool's members only (no key of its own): 334 alone,
    # 422 after the other tests here (tracemalloc counts the dicts' growth as it comes);
    # the second after the last row one int for all rings: 299
    assert size < 400, size


def test_the_registry_keeps_a_server_in_under_470_bytes() -> None:
    config = parse_config(raw())  # the parsed config is not counted: the file's share
    registry, size = per_server(lambda: Registry(config))
    assert len(registry.pool("p").servers) == SERVERS
    # 2,555 bytes when each ServerRuntime had an instance dict (1,584 of them); slots: 1,179
    # (1,254 later); the monitor tracks kept in the recent checks (one dict a server, not
    # two), the tracks at rest shared, the monitor-name list shared: 1,014; the answer
    # counts shared (NO_COUNTS) until a server's first: 886; the admin record at start
    # shared, the recent checks in a Checks (not a dict), the rank a whole number: 629 (637
    # later); a monitor's results in a bytes (none before the first), not an array: 557;
    # no Traffic record before the first request: 485; the five error counters in one
    # record made by the first error: 453
    assert size < 470, size
    s = registry.pool("p").servers[0]
    assert s.responses is NO_COUNTS and s.grpc_statuses is NO_COUNTS
    assert s.own_traffic is None and s.traffic is NO_TRAFFIC
    assert s.errors is None and (s.retries, s.conn_errors, s.srv_aborts) == (0, 0, 0)


def test_a_servers_error_counters_are_made_by_its_first_error() -> None:
    registry = Registry(parse_config(raw()))
    a, b = registry.pool("p").servers[:2]
    a.conn_errors += 1
    a.srv_aborts += 2
    assert (a.conn_errors, a.srv_aborts, a.resp_errors, a.retries, a.redispatches) == (
        1,
        2,
        0,
        0,
        0,
    )
    assert a.errors is not None and b.errors is None  # the other server has none
    assert (b.conn_errors, b.srv_aborts) == (0, 0)


def test_the_shared_empty_counts_refuse_a_count() -> None:
    for write in (
        lambda: NO_COUNTS.__setitem__("2xx", 1),
        lambda: NO_COUNTS.setdefault("2xx", 1),
        lambda: NO_COUNTS.update({"2xx": 1}),
    ):
        with pytest.raises(TypeError, match="NO_COUNTS is shared"):
            write()
    assert NO_COUNTS == {}


def fill(registry: Registry) -> Registry:
    """Ten check results for every server (a monitor's full ring), as a TCP monitor makes
    them: each its own time and latency, the odd one failed with a detail."""
    for k in range(LAST_CHECKS):
        for i, server in enumerate(registry.pool("p").servers):
            fail = (i + k) % 7 == 0
            registry.record_check(
                server,
                CheckResult(
                    "m",
                    Verdict.FAIL if fail else Verdict.PASS,
                    Reason.CONNECTION_REFUSED if fail else Reason.OK,
                    1000.0 + 60.0 * k + i / SERVERS,
                    0.0001 + i / 1e7,
                    None,
                    "connection refused" if fail else "",
                ),
            )
    return registry


def test_a_monitors_last_ten_results_take_under_310_bytes_a_server() -> None:
    registry = Registry(parse_config(raw()))
    fill(registry)  # the rings grown once: the size measured is their steady state
    registry = Registry(parse_config(raw()))
    registry, size = per_server(lambda: fill(registry))
    assert all(len(s.last_checks["m"]) == LAST_CHECKS for s in registry.pool("p").servers)
    # a list of ten CheckResult objects: 1,488 bytes; rows packed in one array: about 400
    # (331 later); rows of 20 bytes (the status code by number too) in one bytes: 292
    assert size < 310, size


def test_a_servers_health_job_takes_under_300_bytes() -> None:
    """The health manager's share: a job per (server, monitor) pair, armed in its bucket
    (no check runs: the measure is taken before the loop turns)."""

    async def start() -> float:
        manager = HealthManager(Registry(parse_config(raw())))
        try:
            _, size = per_server(manager.start)
            assert len(manager.pairs) == SERVERS
            return size
        finally:
            await manager.stop()

    size = asyncio.run(start())
    # 627 bytes with a bound method for its callback, a _InEngine and a Schedule a job: 460;
    # the server's address string kept, not a Target with its host and port; a server's
    # first job by the server, not by a (server, monitor) tuple: 269; the second slot's
    # float dropped after the first check, no first flag: 261
    assert size < 265, size


def test_a_servers_check_spec_takes_under_100_bytes() -> None:
    """The C engine's form of a server's check, made once for its job (each server its own
    address, as in a real pool): the monitor's request and rules shared by its servers."""
    if not fast.available():
        pytest.skip("the C check engine is not built (or QUIESCE_PURE)")
    data = raw()
    for i, s in enumerate(data["pools"]["p"]["servers"]):
        s["address"] = f"127.1.{i // 250}.{1 + i % 250}:1000"

    async def specs() -> float:
        manager = HealthManager(Registry(parse_config(data)))
        manager.start()
        try:
            jobs = manager._jobs.values()
            prober = manager.prober("tcp")
            assert isinstance(prober, StreamProber)
            definition = manager.registry.monitors["m"]

            def make() -> list[object]:
                return [prober.fast_spec(job.target, definition) for job in jobs]

            made, size = per_server(make)
            assert len(made) == SERVERS and all(s is not None for s in made)
            return size
        finally:
            await manager.stop()

    size = asyncio.run(specs())
    # 2,479 bytes with a plan per server kept by the prober (its Rules, request, closures,
    # a TcpMonitor each); the Spec alone, the rest made once per monitor: 176; its address
    # as a sockaddr_in/sockaddr_in6 union, not a sockaddr_storage: 72
    assert size < 100, size
