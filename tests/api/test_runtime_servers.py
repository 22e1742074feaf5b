"""REST: servers added, changed and removed at runtime (issue 14, item 2), over HTTP against
the in-process admin server; bad input is refused naming the field and changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from quiesce.core.events import EventQuery
from tests.api.harness import ADMIN, VIEWER

pytestmark = pytest.mark.loopback


def names(app: Any, pool: str) -> list[str]:
    return [s.name for s in app.registry.pools[pool].servers]


async def test_add_patch_delete(app: Any, client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/pools/app/servers",
        json={"name": "a3", "address": "127.0.0.1:18095", "weight": 4, "reason": "scale out"},
        auth=ADMIN,
    )
    assert r.status_code == 201, r.text
    view = r.json()
    assert (view["name"], view["address"], view["weight"]) == ("a3", "127.0.0.1:18095", 4)
    assert view["status"] == "up"  # no monitor: unmonitored, shown up
    assert names(app, "app")[-1] == "a3"
    (e,) = app.admin.events(EventQuery(kind="server_added"))
    assert (e.actor, e.cause, e.reason) == ("admin", "api", "scale out")
    # review F12: the view says who added it and when, not "config" at 0
    assert (view["cause"], view["actor"], view["reason"]) == ("api", "admin", "scale out")
    assert view["since"] == pytest.approx(e.time, abs=1)

    r = await client.patch(
        "/api/v1/servers/app/a3",
        json={"address": "127.0.0.1:18096", "weight": 2, "backup": True},
        auth=ADMIN,
    )
    assert r.status_code == 200, r.text
    assert r.json()["changed"] == {
        "address": ["127.0.0.1:18095", "127.0.0.1:18096"],
        "weight": [4, 2],
        "backup": [False, True],
    }
    assert r.json()["server"]["address"] == "127.0.0.1:18096"

    r = await client.delete("/api/v1/servers/app/a3", auth=ADMIN)
    assert r.status_code == 409
    assert "Only servers in maintenance mode can be deleted" in r.json()["detail"]
    await client.post("/api/v1/servers/app/a3/maintenance", json={}, auth=ADMIN)
    r = await client.delete("/api/v1/servers/app/a3", auth=ADMIN)
    assert r.status_code == 200 and r.json()["removed"] is True
    assert "a3" not in names(app, "app")
    assert (await client.get("/api/v1/servers/app/a3", auth=ADMIN)).status_code == 404


async def test_drain_then_delete(app: Any, client: httpx.AsyncClient) -> None:
    web1 = app.registry.find_server("web/web1")
    web1.connections = 3
    r = await client.delete(
        "/api/v1/servers/web/web1", params={"drain": "true", "timeout": "5m"}, auth=ADMIN
    )
    assert r.status_code == 202, r.text
    assert r.json()["removing"] is True
    assert r.json()["server"]["status"] == "removing (3)"
    assert (await client.get("/api/v1/servers/web/web1", auth=ADMIN)).json()["admin"] == "drain"
    web1.connections = 0
    app.admin._finish_removals()
    assert "web1" not in names(app, "web")


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"name": "a1", "address": "127.0.0.1:1"}, 409, "name"),
        ({"name": "x", "address": "nowhere"}, 422, "address"),
        ({"name": "x", "address": "127.0.0.1:99999"}, 422, "address"),
        ({"name": "x", "address": "999.1.1.1:80"}, 422, "'999.1.1.1' is not an IPv4 address"),
        ({"name": "x", "address": "<img src=x>:80"}, 422, "neither an IP address nor a host"),
        ({"name": "x", "address": "127.0.0.1:1", "weight": 300}, 422, "weight"),
        ({"name": "x", "address": "127.0.0.1:1", "weight": "heavy"}, 422, "weight"),
        ({"name": "bad name", "address": "127.0.0.1:1"}, 422, "name"),
        ({"address": "127.0.0.1:1"}, 422, "name"),
        ({"name": "x", "address": "127.0.0.1:1", "colour": "red"}, 422, "colour"),
    ],
)
async def test_bad_add_names_the_field(
    app: Any, client: httpx.AsyncClient, body: dict[str, Any], status: int, words: str
) -> None:
    before = names(app, "app")
    r = await client.post("/api/v1/pools/app/servers", json=body, auth=ADMIN)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert names(app, "app") == before
    assert app.store.load_servers() == {}


async def test_bad_requests_change_nothing(app: Any, client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/pools/nope/servers", json={"name": "x", "address": "127.0.0.1:1"}, auth=ADMIN
    )
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = await client.patch("/api/v1/servers/app/a1", json={"weight": -1}, auth=ADMIN)
    assert r.status_code == 422 and r.json()["detail"].startswith("weight")
    r = await client.patch("/api/v1/servers/app/a1", json={"address": "x"}, auth=ADMIN)
    assert r.status_code == 422 and r.json()["detail"].startswith("address")
    # review F12: the same class of mistake as an unknown key in POST: 422 with problems
    r = await client.patch("/api/v1/servers/app/a1", json={"name": "b"}, auth=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["problems"] == ["name: cannot be changed (delete the server and add it again)"]
    r = await client.patch("/api/v1/servers/app/a1", json={"weight": 2, "colour": 1}, auth=ADMIN)
    assert r.status_code == 422 and r.json()["problems"] == ["colour: unknown key"], r.text
    assert app.registry.find_server("app/a1").weight != 2
    r = await client.patch("/api/v1/servers/app/nope", json={"weight": 2}, auth=ADMIN)
    assert r.status_code == 404
    assert app.registry.find_server("app/a1").address == "127.0.0.1:18091"
    # read-only users change nothing
    r = await client.post(
        "/api/v1/pools/app/servers", json={"name": "x", "address": "127.0.0.1:1"}, auth=VIEWER
    )
    assert r.status_code == 403
    r = await client.delete("/api/v1/servers/app/a1", auth=VIEWER)
    assert r.status_code == 403
    assert app.store.load_servers() == {}


async def test_min_servers_up_guards_drain_delete(app: Any, client: httpx.AsyncClient) -> None:
    # pool app: min_servers_up 1, three servers
    for name in ("a1", "a2"):
        await client.post(f"/api/v1/servers/app/{name}/maintenance", json={}, auth=ADMIN)
    r = await client.delete("/api/v1/servers/app/shared", params={"drain": "true"}, auth=ADMIN)
    assert r.status_code == 409 and "min_servers_up" in r.json()["detail"]
    shared = app.registry.find_server("app/shared")
    assert shared.admin.state.value == "enabled" and not shared.removing
    r = await client.delete(
        "/api/v1/servers/app/shared",
        params={"drain": "true", "force_guard": "true"},
        auth=ADMIN,
    )
    assert r.status_code == 200 and r.json()["removed"] is True  # no connection: at once
    assert "shared" not in names(app, "app")


async def test_a_server_at_its_pools_collection(app: Any, client: httpx.AsyncClient) -> None:
    """Review 14 R8: ``DELETE /api/v1/pools/P/servers/S`` (the collection the server was
    POSTed to) was a bare 404: it, ``GET`` and ``PATCH`` there are the server's routes."""
    r = await client.post(
        "/api/v1/pools/app/servers", json={"name": "c4", "address": "127.0.0.1:18095"}, auth=ADMIN
    )
    assert r.status_code == 201, r.text
    r = await client.get("/api/v1/pools/app/servers/c4", auth=ADMIN)
    assert r.status_code == 200 and r.json()["name"] == "c4", r.text
    r = await client.patch("/api/v1/pools/app/servers/c4", json={"weight": 3}, auth=ADMIN)
    assert r.status_code == 200 and r.json()["changed"] == {"weight": [1, 3]}, r.text
    # the same rules as at /api/v1/servers/P/S: role, guard, query
    r = await client.delete("/api/v1/pools/app/servers/c4", auth=VIEWER)
    assert r.status_code == 403, r.text
    r = await client.delete("/api/v1/pools/app/servers/c4?colour=red", auth=ADMIN)
    assert r.status_code == 422 and "c4" in names(app, "app"), r.text
    r = await client.delete("/api/v1/pools/app/servers/c4?drain=true", auth=ADMIN)
    assert r.status_code == 200 and r.json()["removed"] is True, r.text
    assert "c4" not in names(app, "app")
    r = await client.delete("/api/v1/pools/app/servers/c4", auth=ADMIN)
    assert r.status_code == 404 and "c4" in r.json()["detail"], r.text
