"""Fixes from the security review, each through HTTP against the running app."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from quiesce.core.events import EventKind


def _failed(app: Any) -> list[Any]:
    return [e for e in app.admin.events(limit=1000) if e.kind == EventKind.LOGIN_FAILED]


async def test_forwarded_for_neither_bypasses_the_rate_limit_nor_forges_the_source(
    app: Any, client: httpx.AsyncClient
) -> None:
    statuses = []
    for i in range(12):
        r = await client.post(
            "/api/v1/login",
            json={"user": "admin", "password": "wrong"},
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
        )
        statuses.append(r.status_code)
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429] * 7
    failed = _failed(app)
    assert len(failed) == 5
    assert {e.detail["source"] for e in failed} == {"127.0.0.1"}


async def test_parallel_wrong_logins_cannot_beat_the_rate_limit(
    app: Any, client: httpx.AsyncClient
) -> None:
    rs = await asyncio.gather(
        *(
            client.post("/api/v1/login", json={"user": "admin", "password": f"wrong{i}"})
            for i in range(20)
        )
    )
    statuses = [r.status_code for r in rs]
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) <= 5
    assert statuses.count(429) >= 15
    assert len(_failed(app)) <= 5
