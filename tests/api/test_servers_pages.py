"""GET /api/v1/servers?pool=…&limit=…&offset=… (issue 21): a pool of thousands of servers
read a page at a time, in config order, with the total and the next page's link."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from quiesce.config.models import ServerConfig
from quiesce.core.states import Cause
from tests.api.harness import VIEWER

pytestmark = pytest.mark.loopback


async def test_a_pool_read_page_by_page(app: Any, client: httpx.AsyncClient) -> None:
    for i in range(23):
        cfg = ServerConfig(name=f"x{i:02}", address=f"127.0.0.1:{20000 + i}")
        app.registry.add_server("app", cfg, actor="test", cause=Cause.API)
    everything = [s.name for s in app.registry.pools["app"].servers]
    assert len(everything) == 26
    seen: list[str] = []
    url: str | None = "/api/v1/servers?pool=app&limit=10"
    pages = 0
    while url is not None:
        r = await client.get(url, auth=VIEWER)
        assert r.status_code == 200, r.text
        assert r.headers["X-Total-Count"] == "26"
        body = r.json()
        assert all(v["pool"] == "app" for v in body)
        seen += [v["name"] for v in body]
        pages += 1
        url = r.links.get("next", {}).get("url")
    assert pages == 3 and seen == everything  # 10 + 10 + 6, config order, each once
    r = await client.get("/api/v1/servers?pool=app&offset=25", auth=VIEWER)
    assert [v["name"] for v in r.json()] == [everything[25]] and "Link" not in r.headers
    r = await client.get("/api/v1/servers?limit=2&offset=1", auth=VIEWER)
    assert [(v["pool"], v["name"]) for v in r.json()] == [("web", "web2"), ("app", "a1")]
    assert r.headers["X-Total-Count"] == "29"  # every pool: 2 + 26 + 1
    r = await client.get("/api/v1/servers", auth=VIEWER)  # no limit: all, as before
    assert len(r.json()) == 29 and "Link" not in r.headers


@pytest.mark.parametrize(
    ("query", "status", "named"),
    [
        ("pool=nope", 404, "nope"),
        ("pool=app&limit=0", 422, "limit"),
        ("pool=app&limit=10001", 422, "limit"),
        ("pool=app&offset=-1", 422, "offset"),
        ("pool=app&limit=ten", 422, "limit"),
    ],
)
async def test_a_bad_page_is_refused_naming_it(
    client: httpx.AsyncClient, query: str, status: int, named: str
) -> None:
    r = await client.get(f"/api/v1/servers?{query}", auth=VIEWER)
    assert r.status_code == status, r.text
    assert named in r.text
