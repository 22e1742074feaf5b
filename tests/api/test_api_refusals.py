# ruff: noqa: E501 - the cases are kept one a line
"""REST refusals over HTTP against the in-process admin server: bad input gets a clear
error and changes nothing. A weight (or priority) of ``true`` is not 1; an unknown health
monitor in a server's body is a 404 as everywhere in the API; an empty PATCH names every
field it could change; a DELETE's unknown query parameter (``drian=true``) is a 422 naming
it; ``POST /api/v1/reload`` takes no body."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from quiesce.admin import CommandContext
from quiesce.core.events import EventQuery
from quiesce.core.states import Cause
from tests.api.harness import ADMIN

pytestmark = pytest.mark.loopback


def unchanged(app: Any) -> None:
    a1 = app.registry.find_server("app/a1")
    assert (a1.weight, a1.config.priority, a1.config.healthmonitors) == (1, 0, [])
    assert [s.name for s in app.registry.pools["app"].servers] == ["a1", "a2", "shared"]
    assert app.admin.events(EventQuery(kind="server_updated")) == []
    assert app.admin.events(EventQuery(kind="server_removed")) == []
    assert app.store.load_servers() == {}


@pytest.mark.parametrize(
    ("method", "path", "body", "words"),
    [
        ("PATCH", "/api/v1/servers/app/a1", {"weight": True}, "weight: Input should be a valid integer"),
        ("PATCH", "/api/v1/servers/app/a1", {"priority": True}, "priority: Input should be a valid integer"),
        ("PATCH", "/api/v1/servers/app/a1", {"weight": "3"}, "weight: Input should be a valid integer"),
        ("PUT", "/api/v1/servers/app/a1/weight", {"weight": True}, "weight: Input should be a valid integer"),
        ("POST", "/api/v1/pools/app/servers", {"name": "x", "address": "127.0.0.1:1", "weight": True}, "weight: Input should be a valid integer"),
    ],
)  # fmt: skip
async def test_a_bool_is_not_a_weight(
    app: Any, client: httpx.AsyncClient, method: str, path: str, body: Any, words: str
) -> None:
    r = await client.request(method, path, json=body, auth=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(words), r.text
    unchanged(app)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/api/v1/servers/app/a1", {"healthmonitors": ["Nope"]}),
        ("POST", "/api/v1/pools/app/servers", {"name": "x", "address": "127.0.0.1:1", "healthmonitors": ["Nope"]}),
        ("PUT", "/api/v1/pools/app/healthmonitors", {"healthmonitors": ["Nope"]}),
    ],
)  # fmt: skip
async def test_an_unknown_monitor_is_a_404(
    app: Any, client: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    r = await client.request(method, path, json=body, auth=ADMIN)
    assert r.status_code == 404, r.text
    assert "no health monitor named 'Nope'" in r.json()["detail"]
    unchanged(app)
    assert app.registry.pools["app"].config.healthmonitors == []


@pytest.mark.parametrize("body", [{}, {"reason": "why not"}])
async def test_an_empty_patch_names_every_field(
    app: Any, client: httpx.AsyncClient, body: Any
) -> None:
    r = await client.patch("/api/v1/servers/app/a1", json=body, auth=ADMIN)
    assert r.status_code == 422
    assert r.json()["detail"] == (
        "give at least one of address, weight, backup, priority, healthmonitors, max_connections"
    )
    # each of them can be patched
    for field, value in [
        ("address", "127.0.0.1:18099"),
        ("weight", 3),
        ("backup", True),
        ("priority", 2),
        ("healthmonitors", ["Spare-TCP"]),
        ("max_connections", 5),
    ]:
        r = await client.patch("/api/v1/servers/app/a1", json={field: value}, auth=ADMIN)
        assert r.status_code == 200 and field in r.json()["changed"], r.text


@pytest.mark.parametrize(
    ("path", "query", "words"),
    [
        ("/api/v1/servers/app/a1", {"drian": "true"}, "drian: unknown query parameter (this route takes drain, timeout, force_guard, reason, local)"),
        ("/api/v1/servers/app/a1", {"drain": "true", "timout": "5m", "x": "1"}, "timout: unknown query parameter"),
        ("/api/v1/flags/maintenance_mode", {"reasn": "x"}, "reasn: unknown query parameter (this route takes reason, local)"),
        ("/api/v1/healthmonitors/Spare-TCP", {"reason": "x"}, "reason: unknown query parameter (this route takes local)"),
    ],
)  # fmt: skip
async def test_delete_refuses_unknown_query_parameters(
    app: Any, client: httpx.AsyncClient, path: str, query: dict[str, str], words: str
) -> None:
    await client.put("/api/v1/flags/maintenance_mode", json={"value": True}, auth=ADMIN)
    app.admin.maintenance("app/a1", ctx())
    r = await client.delete(path, params=query, auth=ADMIN)
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"]
    assert len(r.json()["problems"]) == len(query) - ("drain" in query)
    assert "a1" in [s.name for s in app.registry.pools["app"].servers]
    assert app.registry.flags.get("maintenance_mode") is True
    assert "Spare-TCP" in app.registry.monitors
    # known parameters still work
    r = await client.delete(
        "/api/v1/servers/app/a1", params={"reason": "r", "local": "false"}, auth=ADMIN
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"drain": "maybe"}, "query.drain: "),
        ({"drain": "true", "timeout": "-1s"}, "query.timeout: '-1s' is not a duration"),
        ({"drain": "true", "timeout": "soon"}, "query.timeout: 'soon' is not a duration"),
        ({"timeout": "5m"}, "query.timeout: applies with drain=true"),
    ],
)
async def test_a_bad_delete_query_value_is_a_422_naming_it(
    app: Any, client: httpx.AsyncClient, query: dict[str, str], words: str
) -> None:
    """One status for a bad value of any parameter (review 90 F9: timeout's were a 400
    without `problems`), nothing deleted."""
    app.admin.maintenance("app/a1", ctx())
    r = await client.delete("/api/v1/servers/app/a1", params=query, auth=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["problems"][0].startswith(words), r.text
    assert "a1" in [s.name for s in app.registry.pools["app"].servers]


async def test_a_reason_over_1024_characters_is_a_422_and_changes_nothing(
    app: Any, client: httpx.AsyncClient
) -> None:
    """review 90 F11: a 100,000-character reason went into the event, the admin record and
    the log line; the limit holds for a JSON body's, a query's and a server body's."""
    long = "r" * 1025
    before = len(app.admin.events())
    calls = [
        ("POST", "/api/v1/servers/app/a1/maintenance", {"json": {"reason": long}}),
        ("PUT", "/api/v1/flags/f", {"json": {"value": True, "reason": long}}),
        ("DELETE", "/api/v1/flags/maintenance_mode", {"params": {"reason": long}}),
        ("PATCH", "/api/v1/servers/app/a1", {"json": {"weight": 3, "reason": long}}),
        (
            "POST",
            "/api/v1/pools/app/servers",
            {"json": {"name": "n1", "address": "127.0.0.1:9", "reason": long}},
        ),
    ]
    for method, path, kw in calls:
        r = await client.request(method, path, auth=ADMIN, **kw)
        assert r.status_code == 422, (path, r.text)
        assert "reason" in r.json()["problems"][0] and "1024" in r.text, r.text
    a1 = app.registry.find_server("app/a1")
    assert a1.admin.state.value == "enabled" and a1.weight != 3
    assert "f" not in app.registry.flags
    assert "n1" not in [s.name for s in app.registry.pools["app"].servers]
    assert len(app.admin.events()) == before
    r = await client.request(
        "POST", "/api/v1/servers/app/a1/maintenance", auth=ADMIN, json={"reason": "r" * 1024}
    )
    assert r.status_code == 200, r.text


def ctx() -> CommandContext:
    return CommandContext(actor="t", cause=Cause.API)


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (b'{"dry_run": true}', 422, "dry_run: unknown key (POST /api/v1/reload takes no body)"),
        (b"[1]", 422, "the body: POST /api/v1/reload takes no body"),
        (b"yes please", 400, "not valid JSON"),
    ],
)
async def test_reload_takes_no_body(
    app: Any, client: httpx.AsyncClient, content: bytes, status: int, words: str
) -> None:
    reloads: list[str] = []

    async def reload(actor: str, via: str) -> Any:  # what quiesce run's app does, recorded
        reloads.append(actor)
        return SimpleNamespace(changes=[], kept=[], warnings=[])

    app.reload = reload
    r = await client.post("/api/v1/reload", content=content, auth=ADMIN)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert reloads == []
    for empty in (b"", b"{}", b"null"):
        r = await client.post("/api/v1/reload", content=empty, auth=ADMIN)
        assert r.status_code == 200 and r.json()["reloaded"] is True, r.text
    assert reloads == ["admin"] * 3
