"""Admin commands through the API: answers, guards, actors and causes, MaxScale aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.harness import ADMIN, ADMIN_TOKEN, config_dict, running

pytestmark = pytest.mark.loopback

TOKEN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_maintenance_answer_and_view(client: httpx.AsyncClient, app: Any) -> None:
    r = await client.post(
        "/api/v1/servers/app/a1/maintenance",
        json={"reason": "kernel", "for": "10m", "force": True},
        auth=ADMIN,
    )
    assert r.status_code == 200
    data = r.json()
    assert data["changed"] is True
    assert data["closed"] == 0
    view = data["server"]
    assert (view["admin"], view["status"], view["eligible"]) == ("maintenance", "disabled", False)
    assert view["actor"] == "admin" and view["reason"] == "kernel"
    assert abs(view["expires"] - (app.clock.time() + 600)) < 5
    again = await client.post("/api/v1/servers/app/a1/maintenance", json={}, auth=ADMIN)
    assert again.json()["changed"] is False
    shown = (await client.get("/api/v1/servers/app/a1", auth=ADMIN)).json()
    for key in ("pool", "name", "address", "weight", "backup", "oper", "admin", "status"):
        assert key in shown
    for key in ("eligible", "connections", "requests_in_flight", "reason", "actor", "since"):
        assert key in shown
    assert "expires" in shown and isinstance(shown["last_checks"], list)


async def test_until_takes_iso_and_epoch(client: httpx.AsyncClient, app: Any) -> None:
    until = app.clock.time() + 3600
    r = await client.post("/api/v1/servers/app/a1/drain", json={"until": until}, auth=ADMIN)
    assert abs(r.json()["server"]["expires"] - until) < 1
    r = await client.post(
        "/api/v1/servers/app/a2/drain", json={"until": "2030-01-01T00:00:00Z"}, auth=ADMIN
    )
    assert r.json()["server"]["expires"] == 1893456000.0
    r = await client.post(
        "/api/v1/servers/app/a2/drain", json={"until": "next tuesday"}, auth=ADMIN
    )
    assert r.status_code == 422
    r = await client.post(
        "/api/v1/servers/app/a2/drain", json={"until": until, "for": "1m"}, auth=ADMIN
    )
    assert r.status_code == 422 and "either for or until" in r.json()["detail"]


async def test_past_expiry_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/servers/app/a1/maintenance", json={"until": 1}, auth=ADMIN)
    assert r.status_code == 400 and r.json()["error"] == "invalid command"


async def test_guard_refused_is_409_unless_forced(client: httpx.AsyncClient, app: Any) -> None:
    for name in ("a1", "shared"):
        r = await client.post(f"/api/v1/servers/app/{name}/maintenance", json={}, auth=ADMIN)
        assert r.status_code == 200
    r = await client.post("/api/v1/servers/app/a2/maintenance", json={}, auth=ADMIN)
    assert r.status_code == 409
    assert "'app'" in r.json()["detail"] and "min_servers_up 1" in r.json()["detail"]
    assert app.registry.find_server("app/a2").admin.state.value == "enabled"
    refused = (await client.get("/api/v1/events?kind=admin_refused", auth=ADMIN)).json()
    assert refused and refused[-1]["server"] == "a2"
    r = await client.post(
        "/api/v1/servers/app/a2/maintenance", json={"force_guard": True}, auth=ADMIN
    )
    assert r.status_code == 200


async def test_unknown_pool_and_server_are_404(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/servers/app/zz", "/api/v1/servers/zz/a1", "/api/v1/pools/zz"):
        r = await client.get(path, auth=ADMIN)
        assert r.status_code == 404 and r.json()["error"] == "not found"
    r = await client.post("/api/v1/servers/app/zz/drain", json={}, auth=ADMIN)
    assert r.status_code == 404


async def test_actor_and_cause_come_from_authentication(
    client: httpx.AsyncClient, app: Any
) -> None:
    await client.post("/api/v1/servers/app/a1/drain", json={}, headers=TOKEN)
    await client.post(
        "/api/v1/servers/app/a1/enable", json={}, auth=ADMIN, headers={"X-Quiesce-Client": "cli"}
    )
    events = (await client.get("/api/v1/events?server=a1&kind=admin_change", auth=ADMIN)).json()
    assert [(e["to"], e["actor"], e["cause"]) for e in events] == [
        ("drain", "deploy", "api"),
        ("enabled", "admin", "cli"),
    ]


async def test_disable_modes(client: httpx.AsyncClient, app: Any) -> None:
    r = await client.post("/api/v1/servers/app/a1/disable", json={}, auth=ADMIN)
    assert r.json()["server"]["admin"] == "maintenance"
    r = await client.post(
        "/api/v1/servers/app/a2/disable", json={"graceful": True, "timeout": "2m"}, auth=ADMIN
    )
    view = r.json()["server"]
    assert view["admin"] == "drain" and abs(view["deadline"] - app.clock.time() - 120) < 5
    await client.post("/api/v1/servers/app/a1/enable", json={}, auth=ADMIN)
    r = await client.post(
        "/api/v1/servers/app/a1/disable", json={"graceful": True, "timeout": -1}, auth=ADMIN
    )
    assert r.json()["server"]["deadline"] is None
    assert r.json()["server"]["status"] == "drained"


async def test_clear_only_clears_that_state(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/servers/app/a1/drain", json={}, auth=ADMIN)
    r = await client.post("/api/v1/servers/app/a1/clear", json={"state": "maintenance"}, auth=ADMIN)
    assert r.json()["changed"] is False and r.json()["server"]["admin"] == "drain"
    r = await client.post("/api/v1/servers/app/a1/clear", json={"state": "drain"}, auth=ADMIN)
    assert r.json()["changed"] is True and r.json()["server"]["admin"] == "enabled"


async def test_weight(client: httpx.AsyncClient, app: Any) -> None:
    r = await client.put("/api/v1/servers/web/web2/weight", json={"weight": 7}, auth=ADMIN)
    assert r.json()["weight"] == 7 and app.registry.find_server("web/web2").weight == 7
    r = await client.put("/api/v1/servers/web/web2/weight", json={"weight": 999}, auth=ADMIN)
    assert r.status_code == 400


async def test_pools(client: httpx.AsyncClient) -> None:
    pools = (await client.get("/api/v1/pools", auth=ADMIN)).json()
    assert [p["name"] for p in pools] == ["web", "app", "other"]
    app_pool = (await client.get("/api/v1/pools/app", auth=ADMIN)).json()
    assert app_pool["eligible"] == 3 and [s["name"] for s in app_pool["servers"]] == [
        "a1",
        "a2",
        "shared",
    ]


async def test_a_pool_shows_its_retry_and_outlier_settings(tmp_path: Path) -> None:
    """GET /api/v1/pools/NAME says how the pool retries and ejects (the reviewer found
    neither there), as configured."""
    data = config_dict()
    data["pools"]["app"] |= {
        "retries": 2,
        "retry_on": ["connect_failure", 503],
        "outlier_detection": {"consecutive_5xx": 3, "base_ejection_time": "10s"},
    }
    async with (
        running(tmp_path, data) as app,
        httpx.AsyncClient(base_url=app.admin_server.url, timeout=10) as client,
    ):
        pool = (await client.get("/api/v1/pools/app", auth=ADMIN)).json()
        web = (await client.get("/api/v1/pools/web", auth=ADMIN)).json()
    assert pool["retries"] == {
        "retries": 2,
        "retry_on": ["connect_failure", 503],
        "redispatch": True,
        "retry_non_idempotent": False,
        "retry_budget": {"percent": 20.0, "min_retries": 3},
    }
    od = pool["outlier_detection"]
    assert od["consecutive_5xx"] == 3 and od["base_ejection_time"] == 10.0
    assert od["max_ejection_percent"] == 50
    assert web["retries"]["retries"] is None and web["outlier_detection"] is None


async def test_maxscale_aliases(client: httpx.AsyncClient, app: Any) -> None:
    r = await client.put("/v1/servers/a1/set?state=maintenance&force=yes", auth=ADMIN)
    assert r.status_code == 204
    a1 = app.registry.find_server("app/a1")
    assert a1.admin.state.value == "maintenance"
    r = await client.put("/v1/servers/app/a2/set?state=drain", auth=ADMIN)
    assert r.status_code == 204 and app.registry.find_server("app/a2").admin.state.value == "drain"
    r = await client.put("/v1/servers/a1/clear?state=maintenance", auth=ADMIN)
    assert r.status_code == 204 and a1.admin.state.value == "enabled"
    assert (await client.put("/v1/servers/a1/set?state=sleep", auth=ADMIN)).status_code == 400
    assert (await client.put("/v1/servers/a1/set", auth=ADMIN)).status_code == 400
    assert (await client.put("/v1/servers/a1/clear?state=x", auth=ADMIN)).status_code == 400
    assert (await client.put("/v1/servers/nope/set?state=drain", auth=ADMIN)).status_code == 404
    # a name in two pools is not unique
    r = await client.put("/v1/servers/shared/set?state=drain", auth=ADMIN)
    assert r.status_code == 404 and "POOL/SERVER" in r.json()["detail"]
    r = await client.put("/v1/servers/other/shared/set?state=drain", auth=ADMIN)
    assert r.status_code == 204


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("maintenance", {"for": "99999999999d"}),
        ("maintenance", {"for": 1e308}),
        ("maintenance", {"until": 99999999999999, "force_guard": True}),
        ("maintenance", {"until": "2999-01-01T00:00:00Z"}),
        ("drain", '{"timeout": 1e309}'),
        ("drain", {"timeout": "nan"}),
    ],
)
async def test_out_of_range_times_are_refused_and_change_nothing(
    client: httpx.AsyncClient, app: Any, route: str, body: dict[str, Any] | str
) -> None:
    url = f"/api/v1/servers/app/a1/{route}"
    if isinstance(body, str):  # JSON that Python's encoder will not write (1e309 is inf)
        headers = {"content-type": "application/json"}
        r = await client.post(url, content=body, headers=headers, auth=ADMIN)
    else:
        r = await client.post(url, json=body, auth=ADMIN)
    assert r.status_code in (400, 422), r.text
    assert "10 years" in r.text or "out of range" in r.text or "not a duration" in r.text
    shown = (await client.get("/api/v1/servers/app/a1", auth=ADMIN)).json()
    assert (shown["admin"], shown["expires"]) == ("enabled", None)
