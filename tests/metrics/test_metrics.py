"""/metrics through HTTP, parsed with prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quiesce.core.checks import CheckResult, Reason
from quiesce.core.states import Verdict
from quiesce.dataplane.context import ServiceStats
from tests.api.harness import ADMIN, VIEWER, running

pytestmark = pytest.mark.loopback


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    async with running(tmp_path) as a:
        yield a


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app.admin_server.url, auth=VIEWER) as c:
        yield c


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_maintenance_transition_shows(client: httpx.AsyncClient, app: Any) -> None:
    before = await scrape(client)
    a1 = {"pool": "app", "server": "a1"}
    assert get(before, "quiesce_server_admin_state", **a1, state="enabled") == 1
    assert get(before, "quiesce_server_eligible", **a1) == 1
    assert get(before, "quiesce_pool_eligible_servers", pool="app") == 3
    assert get(before, "quiesce_server_transitions_total", **a1, axis="admin") == 0
    r = await client.post("/api/v1/servers/app/a1/maintenance", json={}, auth=ADMIN)
    assert r.status_code == 200
    after = await scrape(client)
    assert get(after, "quiesce_server_admin_state", **a1, state="maintenance") == 1
    assert get(after, "quiesce_server_admin_state", **a1, state="enabled") == 0
    assert get(after, "quiesce_server_status", **a1, status="disabled") == 1
    assert get(after, "quiesce_server_eligible", **a1) == 0
    assert get(after, "quiesce_pool_eligible_servers", pool="app") == 2
    assert get(after, "quiesce_server_transitions_total", **a1, axis="admin") == 1
    assert get(after, "quiesce_events_total", kind="admin_change") >= 1


async def test_down_for_maintenance_is_not_down(client: httpx.AsyncClient, app: Any) -> None:
    web1 = app.registry.find_server("web/web1")
    now = app.clock.time()
    app.registry.record_check(
        web1,
        CheckResult(
            "System-HTTP",
            Verdict.MAINTENANCE,
            Reason.MAINTENANCE_RESPONSE_CODE_MATCH,
            now,
            0.004,
            503,
        ),
    )
    s = await scrape(client)
    labels = {"pool": "web", "server": "web1"}
    assert get(s, "quiesce_server_oper_state", **labels, state="maintenance") == 1
    assert get(s, "quiesce_server_oper_state", **labels, state="down") == 0
    assert get(s, "quiesce_server_status", **labels, status="down for maintenance") == 1
    assert get(s, "quiesce_server_status", **labels, status="down") == 0
    assert get(s, "quiesce_server_transitions_total", **labels, axis="oper") == 1
    hist = {**labels, "monitor": "System-HTTP"}
    assert get(s, "quiesce_check_latency_seconds_count", **hist) == 1
    assert get(s, "quiesce_check_latency_seconds_bucket", **hist, le="0.005") == 1
    assert get(s, "quiesce_check_latency_seconds_bucket", **hist, le="0.0025") == 0
    # a check is counted once, however many scrapes see it in last_checks
    again = await scrape(client)
    assert get(again, "quiesce_check_latency_seconds_count", **hist) == 1


async def test_live_counters_and_services(client: httpx.AsyncClient, app: Any) -> None:
    web2 = app.registry.find_server("web/web2")
    web2.connections, web2.requests_total, web2.responses = 4, 10, {"2xx": 9, "5xx": 1}
    stats = ServiceStats(requests=12, maintenance_pages=3, connections=2, connections_total=7)
    stats.count_response(200)
    stats.count_response(503)
    app.services["www"] = SimpleNamespace(stats=stats)
    s = await scrape(client)
    w = {"pool": "web", "server": "web2"}
    assert get(s, "quiesce_server_connections", **w) == 4
    assert get(s, "quiesce_server_requests_total", **w) == 10
    assert get(s, "quiesce_server_responses_total", **w, code="5xx") == 1
    assert get(s, "quiesce_service_requests_total", service="www") == 12
    assert get(s, "quiesce_service_maintenance_pages_total", service="www") == 3
    assert get(s, "quiesce_service_responses_total", service="www", code="5xx") == 1
    assert get(s, "quiesce_flag", flag="maintenance_mode", value="") == 0


async def test_metrics_need_credentials(app: Any) -> None:
    async with httpx.AsyncClient(base_url=app.admin_server.url) as c:
        assert (await c.get("/metrics")).status_code == 401


async def test_weights_runtime_and_configured(client: httpx.AsyncClient, app: Any) -> None:
    web2 = app.registry.find_server("web/web2")
    app.registry.set_weight(web2, 7)
    s = await scrape(client)
    w = {"pool": "web", "server": "web2"}
    assert get(s, "quiesce_server_weight", **w) == 7
    assert get(s, "quiesce_server_configured_weight", **w) == 2


async def test_haproxy_names_are_off_by_default(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics")
    assert "haproxy_" not in r.text


async def test_a_server_added_again_starts_its_counters_at_0(
    client: httpx.AsyncClient, app: Any
) -> None:
    """A server deleted and added again under its name (blue/green, autoscaling) is a new
    server: its transitions count from 0, and the collector keeps nothing of the deleted
    one (it kept an entry per server ever deleted, and the new one took the old counts)."""
    a1 = {"pool": "app", "server": "a1"}
    r = await client.post("/api/v1/servers/app/a1/maintenance", json={}, auth=ADMIN)
    assert r.status_code == 200
    assert get(await scrape(client), "quiesce_server_transitions_total", **a1, axis="admin") == 1
    address = app.registry.find_server("app/a1").address
    r = await client.delete("/api/v1/servers/app/a1", auth=ADMIN)
    assert r.status_code == 200, r.text
    r = await client.post(
        "/api/v1/pools/app/servers", json={"name": "a1", "address": address}, auth=ADMIN
    )
    assert r.status_code == 201, r.text
    again = await scrape(client)
    assert get(again, "quiesce_server_transitions_total", **a1, axis="admin") == 0
