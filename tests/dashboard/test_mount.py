"""``quiesce.frontends.dashboard.mount`` without a browser: pages, assets, the origin guard."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from quiesce.frontends.dashboard import STATIC_DIR, mount


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    api = FastAPI()

    @api.post("/api/v1/poke")
    async def poke() -> dict[str, bool]:
        return {"poked": True}

    mount(api)
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9900") as c:
        yield c


@pytest.mark.parametrize("path", ["/", "/login"])
async def test_pages_are_served_with_a_strict_policy(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    # Nothing from outside the machine: every src/href is local.
    assert "http://" not in r.text and "https://" not in r.text
    assert "<script>" not in r.text  # no inline script (the policy would block it)


@pytest.mark.parametrize("name", sorted(p.name for p in STATIC_DIR.iterdir()))
async def test_every_asset_is_served(client: httpx.AsyncClient, name: str) -> None:
    r = await client.get(f"/ui/{name}")
    assert r.status_code == 200
    assert r.content == (STATIC_DIR / name).read_bytes()
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_basic_login_challenges_without_credentials(client: httpx.AsyncClient) -> None:
    r = await client.get("/basic-login", follow_redirects=False)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Basic realm="quiesce"'


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),  # CLI, curl, scripts
        ({"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:9900"}, 200),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),  # another port on the same host
        ({"Origin": "http://127.0.0.1:8000"}, 403),
        ({"Origin": "null"}, 403),
    ],
)
async def test_origin_guard_on_writes(
    client: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    r = await client.post("/api/v1/poke", headers=headers)
    assert r.status_code == status
    if status == 403:
        assert r.json()["error"] == "forbidden"
        assert "cross-origin request refused" in r.json()["detail"]


async def test_origin_guard_leaves_reads_alone(client: httpx.AsyncClient) -> None:
    r = await client.get("/", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 200
