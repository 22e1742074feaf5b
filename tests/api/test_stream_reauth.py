"""A reload that removes or changes a user or token ends the live event streams those
credentials opened, Basic and Bearer as well as a dashboard session (review F16,
docs/admin.md's reload table: "sessions of a user removed or changed end"); a reload that
leaves them as they were keeps the stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from quiesce.app.reload import Reloader
from quiesce.config.loader import parse_config
from tests.api.harness import ADMIN, VIEWER, VIEWER_TOKEN, cheap_hash, config_dict

pytestmark = pytest.mark.loopback

Admin = dict[str, Any]


def _without(kind: str, name: str) -> Callable[[Admin], None]:
    def edit(admin: Admin) -> None:
        admin[kind] = [e for e in admin[kind] if e["name"] != name]

    return edit


def _viewer_password(admin: Admin) -> None:
    for u in admin["users"]:
        if u["name"] == "viewer":
            u["password_hash"] = cheap_hash("a-new-password")


def _grafana_role(admin: Admin) -> None:
    for t in admin["tokens"]:
        if t["name"] == "grafana":
            t["role"] = "admin"


def _reload_admin(app: Any, edit: Callable[[Admin], None]) -> None:
    """The reload's own step for ``admin.users`` / ``admin.tokens``, with the edited config."""
    data = config_dict()
    edit(data["admin"])
    Reloader._reload_admin(SimpleNamespace(app=app), parse_config(data))  # type: ignore[arg-type]


def _open(client: httpx.AsyncClient, how: str) -> Any:
    return client.stream("GET", "/api/v1/events/stream", **_creds(how))


@pytest.mark.parametrize(
    ("how", "edit"),
    [
        ("basic", _without("users", "viewer")),
        ("basic", _viewer_password),
        ("bearer", _without("tokens", "grafana")),
        ("bearer", _grafana_role),
    ],
    ids=["user-removed", "password-changed", "token-removed", "token-role-changed"],
)
async def test_a_reload_ends_the_streams_of_credentials_it_removed_or_changed(
    app: Any, client: httpx.AsyncClient, how: str, edit: Callable[[Admin], None]
) -> None:
    async with _open(client, how) as stream:
        assert stream.status_code == 200
        lines = stream.aiter_lines()
        assert await anext(lines) == "retry: 2000"
        _reload_admin(app, edit)
        # ends at once, before any later event (not at the next 15 s keep-alive)
        rest = await asyncio.wait_for(_drain(lines), 5)
        r = await client.put("/api/v1/flags/maintenance_mode", json={"value": True}, auth=ADMIN)
        assert r.status_code == 200
    assert not [line for line in rest if line.startswith("data:")]
    again = await client.get("/api/v1/events", **_creds(how))
    assert again.status_code == 401 or (how == "bearer" and edit is _grafana_role)


@pytest.mark.parametrize("how", ["basic", "bearer"])
async def test_a_reload_that_keeps_the_credentials_keeps_the_stream(
    app: Any, client: httpx.AsyncClient, how: str
) -> None:
    async with _open(client, how) as stream:
        lines = stream.aiter_lines()
        assert await anext(lines) == "retry: 2000"
        _reload_admin(app, _without("users", "admin") if how == "bearer" else _grafana_role)
        r = await client.put(
            "/api/v1/flags/maintenance_mode",
            json={"value": True},
            headers={"Authorization": "Bearer deploy-token-0123456789"},
        )
        assert r.status_code == 200, r.text
        got = await asyncio.wait_for(_first_data(lines), 5)
    assert "maintenance_mode" in got


def _creds(how: str) -> dict[str, Any]:
    if how == "basic":
        return {"auth": VIEWER}
    return {"headers": {"Authorization": f"Bearer {VIEWER_TOKEN}"}}


async def _drain(lines: Any) -> list[str]:
    return [line async for line in lines]


async def _first_data(lines: Any) -> str:
    async for line in lines:
        if line.startswith("data:"):
            return str(line)
    raise AssertionError("the stream ended")


async def test_a_reload_keeps_the_remembered_credentials_it_left_unchanged(
    app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that leaves a user as it was does not cost its next request a hash check
    (~50 ms of a core at quiesce's own cost factor, in the middle of every scripted reload:
    issue 14's p99 during a reload); one that changes the password does, and the old
    password is refused."""
    from quiesce.frontends import auth

    calls: list[str] = []
    real = auth.verify_password

    def counting(password: str, stored: str) -> bool:
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(auth, "verify_password", counting)
    assert (await client.get("/api/v1/events", auth=VIEWER)).status_code == 200
    assert len(calls) == 1
    _reload_admin(app, _grafana_role)  # the viewer user unchanged
    assert (await client.get("/api/v1/events", auth=VIEWER)).status_code == 200
    assert len(calls) == 1  # remembered across the reload
    _reload_admin(app, _viewer_password)
    assert (await client.get("/api/v1/events", auth=VIEWER)).status_code == 401
    assert len(calls) == 2  # forgotten: checked again, against the new hash
