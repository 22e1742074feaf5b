"""``metrics: {haproxy_compatible: true}``: HAProxy 2.6's exporter names, labels and values
over HTTP from the admin listener, next to quiesce's own; both families pass ``promtool check
metrics`` in test_promtool.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from quiesce.config.loader import ConfigError, parse_config
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.states import Verdict
from quiesce.dataplane.context import ServiceStats
from tests.api.harness import ADMIN, VIEWER, config_dict, running
from tests.metrics.test_metrics import get, scrape

pytestmark = pytest.mark.loopback


def haproxy_config() -> dict[str, Any]:
    data = config_dict()
    data["metrics"] = {"haproxy_compatible": True}
    data["pools"]["app"]["servers"].append(
        {"name": "spare", "address": "127.0.0.1:18095", "backup": True}
    )
    return data


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    async with running(tmp_path, haproxy_config()) as a:
        yield a


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app.admin_server.url, auth=VIEWER) as c:
        yield c


def check(app: Any, ref: str, verdict: Verdict, reason: Reason, code: int | None) -> None:
    server = app.registry.find_server(ref)
    result = CheckResult("System-HTTP", verdict, reason, app.clock.time(), 0.012, code)
    app.registry.record_check(server, result)


async def test_server_states_as_haproxy_names_them(client: httpx.AsyncClient, app: Any) -> None:
    for _ in range(2):  # successful_checks: 2
        check(app, "web/web1", Verdict.PASS, Reason.OK, 200)
    assert (await client.post("/api/v1/servers/app/a1/drain", json={}, auth=ADMIN)).is_success
    r = await client.post("/api/v1/servers/app/a2/maintenance", json={}, auth=ADMIN)
    assert r.is_success
    check(app, "web/web2", Verdict.MAINTENANCE, Reason.MAINTENANCE_RESPONSE_CODE_MATCH, 503)
    s = await scrape(client)

    def state(proxy: str, server: str) -> str:
        on = [
            st
            for st in ("DOWN", "UP", "MAINT", "DRAIN", "NOLB")
            if get(s, "haproxy_server_status", proxy=proxy, server=server, state=st) == 1
        ]
        assert len(on) == 1, on
        return on[0]

    assert state("web", "web1") == "UP"
    assert state("web", "web2") == "NOLB"  # down for maintenance is not DOWN
    assert state("app", "a1") == "DRAIN"
    assert state("app", "a2") == "MAINT"
    assert state("app", "shared") == "UP"  # no monitor: treated as up
    web1 = {"proxy": "web", "server": "web1"}
    assert get(s, "haproxy_server_check_status", **web1, state="L7OK") == 1
    assert get(s, "haproxy_server_check_status", **web1, state="L4OK") == 0
    assert get(s, "haproxy_server_check_code", **web1) == 200
    assert get(s, "haproxy_server_check_duration_seconds", **web1) == pytest.approx(0.012)
    web2 = {"proxy": "web", "server": "web2"}
    # HAProxy's disable-on-404 answer: L7OKC, as show stat says (one mapping for both)
    assert get(s, "haproxy_server_check_status", **web2, state="L7OKC") == 1
    assert get(s, "haproxy_server_check_status", **web2, state="L7STS") == 0
    assert get(s, "haproxy_server_check_code", **web2) == 503
    # no monitor, no check series (HAProxy: only servers whose checks are enabled)
    assert (
        "haproxy_server_check_status",
        (("proxy", "app"), ("server", "a1"), ("state", "L4OK")),
    ) not in s
    # backend: UP while a server takes traffic; act/bck count usable servers
    app_px = {"proxy": "app"}
    assert get(s, "haproxy_backend_status", **app_px, state="UP") == 1
    assert get(s, "haproxy_backend_status", **app_px, state="DOWN") == 0
    assert get(s, "haproxy_backend_active_servers", **app_px) == 1  # shared
    assert get(s, "haproxy_backend_backup_servers", **app_px) == 1  # spare
    assert get(s, "haproxy_backend_status", proxy="other", state="UP") == 1


async def test_weights_sessions_and_frontends(client: httpx.AsyncClient, app: Any) -> None:
    web2 = app.registry.find_server("web/web2")
    app.registry.set_weight(web2, 5)
    web2.connections, web2.responses = 3, {"2xx": 8, "5xx": 1}
    stats = ServiceStats(requests=12, connections=2, connections_total=7)
    stats.count_response(200)
    app.services["www"] = SimpleNamespace(stats=stats, max_connections=100)
    s = await scrape(client)
    w2 = {"proxy": "web", "server": "web2"}
    assert get(s, "haproxy_server_weight", **w2) == 5
    assert get(s, "haproxy_server_uweight", **w2) == 5
    assert get(s, "haproxy_server_current_sessions", **w2) == 3
    assert get(s, "haproxy_server_http_responses_total", **w2, code="2xx") == 8
    assert get(s, "haproxy_server_http_responses_total", **w2, code="4xx") == 0
    assert get(s, "haproxy_backend_http_responses_total", proxy="web", code="5xx") == 1
    www = {"proxy": "www"}
    assert get(s, "haproxy_frontend_current_sessions", **www) == 2
    assert get(s, "haproxy_frontend_connections_total", **www) == 7
    assert get(s, "haproxy_frontend_http_requests_total", **www) == 12
    assert get(s, "haproxy_frontend_http_responses_total", **www, code="2xx") == 1
    assert get(s, "haproxy_frontend_limit_sessions", **www) == 100
    assert get(s, "haproxy_frontend_status", **www, state="UP") == 1
    # quiesce's own family is still there
    assert get(s, "quiesce_server_weight", pool="web", server="web2") == 5
    assert get(s, "quiesce_server_configured_weight", pool="web", server="web2") == 2


def test_bad_metrics_config_is_refused() -> None:
    for bad in ({"haproxy_compatible": "perhaps"}, {"haproxy": True}):
        data = config_dict()
        data["metrics"] = bad
        with pytest.raises(ConfigError) as exc:
            parse_config(data)
        assert any("metrics" in p for p in exc.value.problems), exc.value.problems
