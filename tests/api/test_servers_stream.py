"""An unpaged ``GET /api/v1/servers`` of thousands of servers, or a page of more than
``routes._SLICE`` (200), is written and sent a slice at a time, the loop given back between
two (issue 21, review F15): the same bytes as the pages FastAPI writes, with the same
headers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from quiesce.frontends.api import routes
from tests.api.harness import VIEWER, config_dict, running

pytestmark = pytest.mark.loopback

SERVERS = 2500


async def test_a_big_list_is_the_pages_joined(tmp_path: Path) -> None:
    data = config_dict()
    data["pools"]["big"] = {
        "servers": [
            {"name": f"s{i}", "address": f"127.0.0.1:{20000 + i % 1000}", "weight": i % 7 + 1}
            for i in range(SERVERS)
        ]
    }
    total = SERVERS + 6
    async with (
        running(tmp_path, data) as app,
        httpx.AsyncClient(base_url=app.admin_server.url, auth=VIEWER) as c,
    ):
        whole = await c.get("/api/v1/servers")
        n = routes._SLICE
        pages = [await c.get(f"/api/v1/servers?offset={o}&limit={n}") for o in range(0, total, n)]
        page = await c.get("/api/v1/servers?pool=big&offset=100&limit=1000")
        big = await c.get("/api/v1/servers?pool=big")
        small = await c.get("/api/v1/servers?pool=app")
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "application/json"
    assert whole.headers["x-total-count"] == str(total)
    assert "link" not in whole.headers
    assert whole.headers["transfer-encoding"] == "chunked"  # sent as written (before: whole)
    assert "content-length" in pages[0].headers
    assert all(p.headers["content-type"] == "application/json" for p in pages)
    # byte for byte the pages (written by FastAPI, _SLICE each: not streamed) joined
    assert whole.content == b"[" + b",".join(p.content[1:-1] for p in pages) + b"]"
    # a page of more than a slice is streamed too, with its headers
    assert page.headers["transfer-encoding"] == "chunked"
    assert page.headers["x-total-count"] == str(SERVERS)
    assert "offset=1100" in page.headers["link"]
    assert [v["name"] for v in page.json()] == [f"s{i}" for i in range(100, 1100)]
    assert len(whole.json()) == total
    assert [v["name"] for v in big.json()] == [f"s{i}" for i in range(SERVERS)]
    assert big.headers["x-total-count"] == str(SERVERS)
    assert len(small.json()) == 3 and small.headers["x-total-count"] == "3"
    assert SERVERS > routes._SLICE  # the big answers were streamed
