from __future__ import annotations

import httpx

from tests.dataplane.backend import Backend
from tests.dataplane.conftest import curl, make_config, start_proxy


async def test_get_through_proxy(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        async with httpx.AsyncClient() as c:
            for _ in range(3):
                r = await c.get(p.url + "/")
                assert r.status_code == 200
                assert r.text == "hello from a\n"
        r2 = await curl(p.url + "/headers")
        assert r2.code == 0, r2.stderr
        assert b"x-forwarded-for" in r2.stdout


async def test_runs_on_uvloop() -> None:
    import asyncio

    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
