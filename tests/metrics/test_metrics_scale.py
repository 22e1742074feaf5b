"""/metrics at scale (issue 21): written as text a slice of servers at a time
(quiesce.frontends.metrics_text), streamed over HTTP with the loop given back between slices,
the same bytes as prometheus-client's exposition before (tests/metrics/metrics_before.py),
and ``scope`` to leave families out as HAProxy's exporter does."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from quiesce.core.checks import CheckResult, Reason
from quiesce.core.states import Verdict
from quiesce.dataplane.context import ServiceStats
from quiesce.frontends import metrics_text
from quiesce.frontends.api import start_admin_server
from quiesce.frontends.api.cluster import ClusterCollector
from quiesce.frontends.metrics import MetricsRegistry, chunks, stream
from tests.api.harness import ADMIN, VIEWER, build_app, config_dict
from tests.metrics import metrics_before

pytestmark = pytest.mark.loopback

SERVERS = 1500  # in three pools of 500, besides the harness's (6 slices of 250 servers)


def big_config(per_server: bool = True) -> dict[str, Any]:
    data = config_dict()
    data["metrics"] = {"haproxy_compatible": True, "per_server": per_server}
    for p, monitors in enumerate((["Spare-TCP"], ["System-HTTP"], [])):
        pool: dict[str, Any] = {
            "healthmonitors": monitors,
            "servers": [
                {"name": f"s{i}", "address": f"127.0.0.1:{20000 + i}"}
                for i in range(p * 500, (p + 1) * 500)
            ],
        }
        if p == 2:
            pool["outlier_detection"] = {"consecutive_5xx": 3}
        data["pools"][f"big{p}"] = pool
    data["services"] = {"www": {"listen": "127.0.0.1:0", "pool": "big1"}}
    return data


MAINT_404 = "big1/s503"
MAINT_REASON = Reason.MAINTENANCE_RESPONSE_CODE_MATCH


def as_now(old: str, per_server: bool) -> str:
    """The old exposition with the one change made since on purpose: a maintenance answer's
    haproxy_server_check_status is L7OKC (HAProxy's disable-on-404 answer, as ``show stat``
    says), where the old module said L7STS. Each of the two samples must be there exactly
    once (none without per-server series): nothing else is let through."""
    pool, server = MAINT_404.split("/")
    head = f'haproxy_server_check_status{{proxy="{pool}",server="{server}",state='
    out = old
    for line, now in (
        (f'{head}"L7STS"}} 1.0\n', f'{head}"L7STS"}} 0.0\n'),
        (f'{head}"L7OKC"}} 0.0\n', f'{head}"L7OKC"}} 1.0\n'),
    ):
        assert old.count(line) == (1 if per_server else 0), line
        out = out.replace(line, now)
    assert (out != old) is per_server
    return out


def stir(app: Any) -> None:
    """Checks, counters and states of every kind on some of the servers."""
    reg = app.registry
    now = app.clock.time()
    for i, s in enumerate(reg.servers()):
        if i % 7 == 0 and s.monitors:
            verdict = Verdict.PASS if i % 2 else Verdict.FAIL
            reason = Reason.OK if i % 2 else Reason.CONNECTION_REFUSED
            code = 200 if s.monitors == ["System-HTTP"] and i % 2 else None
            reg.record_check(s, CheckResult(s.monitors[0], verdict, reason, now, 0.0031 * i, code))
        if i % 5 == 0:
            s.requests_total, s.responses = i, {"2xx": i, "5xx": i % 3}
            s.retries, s.conn_errors, s.resp_errors = i % 4, i % 3, i % 2
            s.srv_aborts = i % 2
        if i % 11 == 0:
            s.grpc_statuses = {0: i, 14: 1}
        if i % 13 == 0:
            s.weight = 3
    # HAProxy's disable-on-404 answer (an http monitor's maintenance code): the one sample
    # the new exposition writes otherwise than the old (see :func:`as_now`)
    s = reg.find_server(MAINT_404)
    reg.record_check(
        s, CheckResult("System-HTTP", Verdict.MAINTENANCE, MAINT_REASON, now, 0.002, 404)
    )
    stats = ServiceStats(requests=12, maintenance_pages=3, connections=2, connections_total=7)
    stats.count_response(200)
    app.services["www"] = SimpleNamespace(stats=stats)


@pytest.fixture
async def app(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    a = await build_app(tmp_path, big_config(getattr(request, "param", True)))
    # the exposition as it was, listening to the same events from the start
    a.before = metrics_before.build_collector_registry(a)
    a.before.register(ClusterCollector(a))
    a.admin_server = await start_admin_server(a)
    try:
        yield a
    finally:
        await a.admin_server.stop()
        await a.admin.stop()
        a.store.close()


async def changes(app: Any) -> None:
    async with httpx.AsyncClient(base_url=app.admin_server.url, auth=ADMIN) as c:
        for ref, what in (("big0/s3", "maintenance"), ("big1/s700", "drain"), ("app/a1", "drain")):
            r = await c.post(f"/api/v1/servers/{ref}/{what}", json={})
            assert r.status_code == 200, r.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize("app", [True, False], indirect=True, ids=["per_server", "pools_only"])
async def test_a_streamed_scrape_is_the_old_exposition(app: Any) -> None:
    stir(app)
    await changes(app)
    async with httpx.AsyncClient(base_url=app.admin_server.url, auth=VIEWER) as c:
        r = await c.get("/metrics")
        again = await c.get("/metrics")  # checks folded once: the second scrape is alike
    assert r.status_code == 200
    assert r.headers["content-type"] == CONTENT_TYPE_LATEST  # as before
    per_server = app.config.metrics.per_server
    old = as_now(generate_latest(app.before).decode(), per_server)
    old_again = as_now(generate_latest(app.before).decode(), per_server)
    assert r.text == old  # byte for byte: family order, label order, value format
    assert again.text == old_again
    new = samples(r.text)  # what a Prometheus server reads (the parser: ≈ 2 s a MB)
    servers = {labels for name, labels in new if name == "quiesce_server_eligible"}
    assert len(servers) == (SERVERS + 6 if app.config.metrics.per_server else 0)
    if servers:
        assert new[("quiesce_server_weight", (("pool", "big0"), ("server", "s7")))] == 3  # i = 13


async def test_each_chunk_covers_one_slice_of_servers(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk (what is written between two turns of the loop) covers at most SLICE
    servers, whatever the family; together they are the whole exposition."""
    monkeypatch.setattr(metrics_text, "SLICE", 250)
    stir(app)
    reg = MetricsRegistry(app)
    parts = list(chunks(reg))
    widest = 0
    for part in parts:
        servers = set(re.findall(r'(?:pool|proxy)="([^"]*)",server="([^"]*)"', part))
        widest = max(widest, len(servers))
    assert widest == 250
    # every per-server family is split: at least (servers / 250) chunks each, 40-odd of them
    assert len(parts) > 40 * (SERVERS // 250)
    assert "".join(parts) == as_now(generate_latest(_without_events(app)).decode(), True)


def _without_events(app: Any) -> Any:
    """The old exposition of a registry with no events seen (as a fresh MetricsRegistry)."""
    before = metrics_before.build_collector_registry(app)
    before.register(ClusterCollector(app))
    return before


async def test_the_loop_runs_between_chunks(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """stream() gives the loop back after every chunk: a task that counts its turns runs at
    least once per chunk of servers while a scrape is written (before: none, the whole text
    was built in one turn)."""
    monkeypatch.setattr(metrics_text, "SLICE", 250)
    reg = MetricsRegistry(app)
    expected = len(list(chunks(reg)))
    turns = 0
    done = False

    async def ticker() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = turns
    body = b"".join([part async for part in stream(reg)])
    done = True
    await task
    assert turns - start >= expected
    assert body.decode() == "".join(chunks(reg))


def pools_only(text: str) -> str:
    """The exposition without its lines of one server (the families' heads stay)."""
    return "".join(line for line in text.splitlines(True) if 'server="' not in line)


async def test_scope_leaves_families_out(app: Any) -> None:
    stir(app)
    old = samples(pools_only(generate_latest(app.before).decode()))
    async with httpx.AsyncClient(base_url=app.admin_server.url, auth=VIEWER) as c:

        async def names(query: str) -> set[str]:
            r = await c.get(f"/metrics{query}")
            assert r.status_code == 200, r.text
            return set(re.findall(r"^([a-z_]+)[{ ]", r.text, re.M))  # the samples' names

        pools = await names("?scope=pool")
        assert pools and all(n.startswith(("quiesce_pool_", "haproxy_backend_")) for n in pools)
        assert await names("?scope=backend") == pools  # HAProxy's name for it
        servers = await names("?scope=server")
        per_server = ("quiesce_server_", "quiesce_check_", "haproxy_server_")
        assert servers and all(n.startswith(per_server) for n in servers)
        assert await names("?scope=service") == {
            n for n, _ in old if n.startswith(("quiesce_service_", "haproxy_frontend_"))
        }
        r = await c.get("/metrics?scope=global&scope=service,pool")
        assert 'server="' not in r.text
        assert samples(r.text) == old
        assert (await c.get("/metrics?scope=")).text == ""  # HAProxy's: nothing selected
        bad = await c.get("/metrics?scope=servers")
        assert bad.status_code == 400
        assert "servers" in bad.text
