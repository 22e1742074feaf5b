"""Every route through HTTP: no credentials, wrong ones, read-only, admin, malformed bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from quiesce.frontends.views import server_view
from tests.api.harness import ADMIN, ADMIN_TOKEN, VIEWER

pytestmark = pytest.mark.loopback


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    body: Any = None
    ok: int = 200
    bad_body: Any = None  # a malformed body and the status it gets
    bad_status: int = 422

    @property
    def write(self) -> bool:
        return self.method != "GET"

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


READS = [
    Route("GET", "/api/v1/pools"),
    Route("GET", "/api/v1/pools/web"),
    Route("GET", "/api/v1/servers"),
    Route("GET", "/api/v1/servers/web/web1"),
    Route("GET", "/api/v1/healthmonitors"),
    Route("GET", "/api/v1/healthmonitors/System-HTTP"),
    Route("GET", "/api/v1/healthmonitor-types"),
    Route("GET", "/api/v1/flags"),
    Route("GET", "/api/v1/events"),
    Route("GET", "/api/v1/whoami"),
    Route("GET", "/api/v1/openapi.json"),
    Route("GET", "/metrics"),
]
WRITES = [
    Route(
        "PUT",
        "/api/v1/pools/web/healthmonitors",
        {"healthmonitors": ["System-HTTP", "Spare-TCP"]},
        bad_body={"healthmonitors": "System-HTTP"},
    ),
    Route(
        "POST",
        "/api/v1/servers/app/a1/maintenance",
        {"reason": "kernel upgrade", "for": "5m"},
        bad_body={"force": "maybe"},
    ),
    Route(
        "POST",
        "/api/v1/servers/app/a1/drain",
        {"timeout": "30s", "reason": "deploy"},
        bad_body={"timeout": "soon"},
    ),
    Route(
        "POST",
        "/api/v1/servers/app/a1/disable",
        {"graceful": True, "timeout": "1m"},
        bad_body={"gracefully": True},
    ),
    Route("POST", "/api/v1/servers/app/a1/enable", {}, bad_body="not json", bad_status=400),
    Route(
        "POST",
        "/api/v1/servers/app/a1/clear",
        {"state": "maintenance"},
        bad_body={"state": "sleeping"},
        bad_status=400,
    ),
    Route("PUT", "/api/v1/servers/app/a1/weight", {"weight": 5}, bad_body={"weight": "x"}),
    Route(
        "POST",
        "/api/v1/healthmonitors",
        {"name": "New-TCP", "type": "tcp"},
        ok=201,
        bad_body={"name": "New-HTTP", "type": "http", "receive_timeout": "20s"},
    ),
    Route(
        "PUT",
        "/api/v1/healthmonitors/Spare-TCP",
        {"type": "tcp", "send_interval": "5s", "receive_timeout": "1s"},
        bad_body={"type": "http", "http_monitor": {"maintenance_code": [500, 501, 502, 503, 504]}},
    ),
    Route("DELETE", "/api/v1/healthmonitors/Spare-TCP", ok=204),
    Route("PUT", "/api/v1/flags/maintenance_mode", {"value": True}, bad_body={"value": [1]}),
    Route("DELETE", "/api/v1/flags/maintenance_mode", ok=204),
    Route("PUT", "/v1/servers/app/a1/set?state=maintenance", ok=204),
    Route("PUT", "/v1/servers/a1/clear?state=maintenance", ok=204),
]
ALL = READS + WRITES


async def call(
    client: httpx.AsyncClient, route: Route, body: Any = None, **kw: Any
) -> httpx.Response:
    body = route.body if body is None else body
    if isinstance(body, str):
        kw["content"] = body.encode()
        kw.setdefault("headers", {})["Content-Type"] = "application/json"
    elif body is not None:
        kw["json"] = body
    return await client.request(route.method, route.path, **kw)


def assert_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    data = r.json()
    assert set(data) >= {"error", "detail"}, data
    assert isinstance(data["detail"], str) and data["detail"]
    return data


@pytest.mark.parametrize("route", ALL, ids=str)
async def test_admin(client: httpx.AsyncClient, app: Any, route: Route) -> None:
    r = await call(client, route, auth=ADMIN)
    assert r.status_code == route.ok, r.text
    if route.ok == 204:
        assert r.content == b""
    r2 = await call(client, route, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r2.status_code in (route.ok, 404, 409), r2.text  # repeated create/delete


@pytest.mark.parametrize("route", [r for r in WRITES if r.bad_body is not None], ids=str)
async def test_malformed_body(client: httpx.AsyncClient, app: Any, route: Route) -> None:
    before = {s.key: server_view(app.registry, s) for s in app.registry.servers()}
    monitors = dict(app.registry.monitors)
    pool_monitors = list(app.registry.pool("web").pool_monitors)
    assert_error(await call(client, route, body=route.bad_body, auth=ADMIN), route.bad_status)
    assert_error(await call(client, route, body="{nope", auth=ADMIN), 400)
    assert {s.key: server_view(app.registry, s) for s in app.registry.servers()} == before
    assert app.registry.monitors == monitors
    assert app.registry.pool("web").pool_monitors == pool_monitors


async def test_validation_errors_name_the_path(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/servers/app/a1/maintenance", json={"force": "maybe", "x": 1}, auth=ADMIN
    )
    data = assert_error(r, 422)
    assert "force: Input should be a valid boolean" in data["problems"][0] or any(
        p.startswith("force:") for p in data["problems"]
    )
    assert "x: unknown key" in data["problems"]


async def test_whoami_names_the_principal(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/whoami", auth=VIEWER)
    assert r.json() == {"user": "viewer", "role": "read_only", "via": "basic"}
    r = await client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.json() == {"user": "deploy", "role": "admin", "via": "bearer"}


async def test_openapi_lists_the_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/api/v1/openapi.json", auth=VIEWER)).json()["paths"]
    for p in ("/api/v1/servers/{pool}/{server}/maintenance", "/api/v1/healthmonitors/{name}"):
        assert p in paths
    assert "/v1/servers/{name}/set" in paths


async def test_openapi_describes_the_command_bodies(client: httpx.AsyncClient) -> None:
    # Bodies are parsed after authentication (not as FastAPI body parameters), and the
    # document still describes them, fields included.
    doc = (await client.get("/api/v1/openapi.json", auth=VIEWER)).json()
    schemas = doc["components"]["schemas"]
    for path, model, field, required in (
        ("/api/v1/servers/{pool}/{server}/maintenance", "MaintenanceBody", "force", False),
        ("/api/v1/servers/{pool}/{server}/drain", "DrainBody", "timeout", False),
        ("/api/v1/servers/{pool}/{server}/disable", "DisableBody", "graceful", False),
        ("/api/v1/servers/{pool}/{server}/clear", "ClearBody", "state", True),
        ("/api/v1/pools/{pool}/healthmonitors", "PoolMonitorsBody", "healthmonitors", True),
    ):
        body = doc["paths"][path]["post" if "servers" in path else "put"]["requestBody"]
        assert body["required"] is required, path
        ref = body["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{model}"
        assert field in schemas[model]["properties"], (model, schemas[model])


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/nothing", auth=ADMIN), 404)
