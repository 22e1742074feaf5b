"""Health monitors at runtime, monitor types, flags, events and the live stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from quiesce.config.loader import ConfigError, parse_config
from tests.api.harness import ADMIN, VIEWER, config_dict

pytestmark = pytest.mark.loopback

HM = "/api/v1/healthmonitors"


async def test_everyday_edit_add_and_remove_maintenance_response(
    client: httpx.AsyncClient, app: Any
) -> None:
    mon = (await client.get(f"{HM}/System-HTTP", auth=VIEWER)).json()
    assert mon["name"] == "System-HTTP" and mon["http_monitor"]["maintenance_code"] == [503]
    mon["http_monitor"]["maintenance_response"] = "under construction"
    mon["http_monitor"]["maintenance_code"] = [500, 501]
    r = await client.put(f"{HM}/System-HTTP", json=mon, auth=ADMIN)
    assert r.status_code == 200, r.text
    live = app.registry.monitors["System-HTTP"]
    assert live.http.maintenance_response == "under construction"
    assert live.http.maintenance_code == [500, 501]
    del mon["http_monitor"]["maintenance_response"]
    await client.put(f"{HM}/System-HTTP", json=mon, auth=ADMIN)
    shown = (await client.get(f"{HM}/System-HTTP", auth=VIEWER)).json()
    assert "maintenance_response" not in shown["http_monitor"]
    assert app.registry.monitors["System-HTTP"].http.maintenance_response is None
    kinds = [
        e["to"] for e in (await client.get("/api/v1/events?kind=monitor_change", auth=ADMIN)).json()
    ]
    assert kinds == ["updated", "updated"]


@pytest.mark.parametrize(
    "body",
    [
        {"type": "http", "receive_timeout": "20s"},
        {"type": "http", "http_monitor": {"maintenance_code": [500, 501, 502, 503, 504]}},
        {"type": "http", "http_monitor": {"maintenance_code": [99]}},
        {"type": "tcp", "http_monitor": {}},
        {"type": "smtp"},
        {"type": "http", "colour": "blue"},
    ],
)
async def test_monitor_validated_exactly_like_the_config_file(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    data = config_dict()
    data["healthmonitors"]["Edited"] = body
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    r = await client.put(f"{HM}/Edited", json=body, auth=ADMIN)
    assert r.status_code == 422
    assert r.json()["problems"] == exc.value.problems


async def test_create_conflict_delete(client: httpx.AsyncClient, app: Any) -> None:
    r = await client.post(HM, json={"name": "New", "type": "tcp"}, auth=ADMIN)
    assert r.status_code == 201 and r.json()["type"] == "tcp"
    r = await client.post(HM, json={"name": "New", "type": "tcp"}, auth=ADMIN)
    assert r.status_code == 409
    r = await client.post(HM, json={"type": "tcp"}, auth=ADMIN)
    assert r.status_code == 422
    r = await client.post(HM, json={"name": "bad name!", "type": "tcp"}, auth=ADMIN)
    assert r.status_code == 422
    r = await client.put(f"{HM}/New", json={"name": "Other", "type": "tcp"}, auth=ADMIN)
    assert r.status_code == 400
    r = await client.delete(f"{HM}/System-HTTP", auth=ADMIN)
    assert r.status_code == 409 and "web" in r.json()["detail"]
    assert (await client.delete(f"{HM}/New", auth=ADMIN)).status_code == 204
    assert (await client.delete(f"{HM}/New", auth=ADMIN)).status_code == 404
    assert (await client.get(f"{HM}/New", auth=ADMIN)).status_code == 404
    assert (await client.put(f"{HM}/Fresh", json={"type": "icmp"}, auth=ADMIN)).status_code == 201


async def test_attach_and_detach(client: httpx.AsyncClient, app: Any) -> None:
    r = await client.put(
        "/api/v1/pools/app/healthmonitors", json={"healthmonitors": ["Spare-TCP"]}, auth=ADMIN
    )
    assert r.json()["healthmonitors"] == ["Spare-TCP"]
    assert app.registry.find_server("app/a1").oper.value == "unknown"
    r = await client.put(
        "/api/v1/pools/app/healthmonitors", json={"healthmonitors": ["Nope"]}, auth=ADMIN
    )
    assert r.status_code == 404
    r = await client.put(
        "/api/v1/pools/app/healthmonitors", json={"healthmonitors": []}, auth=ADMIN
    )
    assert app.registry.find_server("app/a1").oper.value == "unmonitored"


async def test_monitor_types(client: httpx.AsyncClient) -> None:
    types = {
        t["type"]: t for t in (await client.get("/api/v1/healthmonitor-types", auth=VIEWER)).json()
    }
    assert set(types) == {
        "icmp",
        "tcp",
        "tcp_half_open",
        "udp",
        "http",
        "https",
        "postgresql",
        "mysql",
        "grpc",
    }
    assert types["icmp"]["node_compatible"] is True
    assert types["http"]["pool_compatible"] is True
    assert all(t["description"] for t in types.values())


async def test_flags(client: httpx.AsyncClient, app: Any) -> None:
    assert (await client.get("/api/v1/flags", auth=VIEWER)).json() == {"maintenance_mode": False}
    r = await client.put(
        "/api/v1/flags/maintenance_mode", json={"value": True, "reason": "x"}, auth=ADMIN
    )
    assert r.json() == {"name": "maintenance_mode", "value": True}
    await client.put("/api/v1/flags/banner", json={"value": "blue"}, auth=ADMIN)
    assert app.registry.flags == {"maintenance_mode": True, "banner": "blue"}
    assert (await client.delete("/api/v1/flags/banner", auth=ADMIN)).status_code == 204
    assert (await client.delete("/api/v1/flags/banner", auth=ADMIN)).status_code == 404
    assert (
        await client.put("/api/v1/flags/bad%20name", json={"value": 1 == 1}, auth=ADMIN)
    ).status_code == 422


async def test_event_filters(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/servers/app/a1/drain", json={}, auth=ADMIN)
    await client.post("/api/v1/servers/app/a2/drain", json={}, auth=ADMIN)
    await client.put("/api/v1/flags/x", json={"value": True}, auth=ADMIN)
    every = (await client.get("/api/v1/events", auth=ADMIN)).json()
    assert len(every) >= 3
    a1 = (await client.get("/api/v1/events?server=a1", auth=ADMIN)).json()
    assert a1 and all(e["server"] == "a1" for e in a1)
    flags = (await client.get("/api/v1/events?kind=flag_change", auth=ADMIN)).json()
    assert [e["detail"]["flag"] for e in flags] == ["x"]
    recent = (await client.get("/api/v1/events?since=1h&pool=app", auth=ADMIN)).json()
    assert len(recent) >= 2
    assert (await client.get("/api/v1/events?since=2999-01-01", auth=ADMIN)).json() == []
    last = (await client.get("/api/v1/events?limit=1", auth=ADMIN)).json()
    assert len(last) == 1 and last[0]["id"] == every[-1]["id"]
    after = (await client.get(f"/api/v1/events?after_id={every[-2]['id']}", auth=ADMIN)).json()
    assert [e["id"] for e in after] == [every[-1]["id"]]
    assert (await client.get("/api/v1/events?kind=nope", auth=ADMIN)).status_code == 400
    assert (await client.get("/api/v1/events?since=whenever", auth=ADMIN)).status_code == 400
    assert (await client.get("/api/v1/events?limit=0", auth=ADMIN)).status_code == 422


async def test_event_stream(client: httpx.AsyncClient, app: Any) -> None:
    async with client.stream("GET", "/api/v1/events/stream?server=a2", auth=VIEWER) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.aiter_lines()
        assert await anext(lines) == "retry: 2000"  # subscribed: now make events
        await client.post("/api/v1/servers/app/a1/drain", json={}, auth=ADMIN)
        await client.post("/api/v1/servers/app/a2/maintenance", json={}, auth=ADMIN)

        async def next_data() -> dict[str, Any]:
            async for line in lines:
                if line.startswith("data: "):
                    result: dict[str, Any] = json.loads(line[6:])
                    return result
            raise AssertionError("stream ended")

        event = await asyncio.wait_for(next_data(), 10)
        assert (event["server"], event["to"], event["actor"]) == ("a2", "maintenance", "admin")


async def test_event_stream_ends_on_server_stop(client: httpx.AsyncClient, app: Any) -> None:
    async with client.stream("GET", "/api/v1/events/stream", auth=VIEWER) as r:
        lines = r.aiter_lines()
        assert await anext(lines) == "retry: 2000"
        stop = asyncio.create_task(app.admin_server.stop())
        rest = await asyncio.wait_for(_drain(lines), 10)
        assert all(not line.startswith("data:") for line in rest)
        await asyncio.wait_for(stop, 10)


async def _drain(lines: Any) -> list[str]:
    return [line async for line in lines]


async def test_event_stream_needs_credentials(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/events/stream")
    assert r.status_code == 401
    r = await client.get("/api/v1/events/stream", auth=("viewer", "wrong"))
    assert r.status_code == 401


async def test_event_stream_replays_after_last_event_id(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/servers/app/a1/drain", json={}, auth=ADMIN)
    last = (await client.get("/api/v1/events?limit=1", auth=ADMIN)).json()[-1]["id"]
    await client.post("/api/v1/servers/app/a1/enable", json={}, auth=ADMIN)
    headers = {"Last-Event-ID": str(last)}
    async with client.stream(
        "GET", "/api/v1/events/stream?server=a1", auth=VIEWER, headers=headers
    ) as r:
        ids = []
        async with asyncio.timeout(10):
            async for line in r.aiter_lines():
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    assert event["id"] > last and event["to"] == "enabled"
                    break
        assert ids and ids[0] > last
