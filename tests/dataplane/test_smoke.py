from __future__ import annotations

import gc

import httpx
import pytest

from tests.dataplane.backend import Backend
from tests.dataplane.conftest import curl, make_config, start_proxy

pytestmark = pytest.mark.peers


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


async def test_both_loops_are_covered(request: pytest.FixtureRequest) -> None:
    import asyncio

    loop_module = type(asyncio.get_running_loop()).__module__
    assert loop_module.startswith("uvloop" if "uvloop" in request.node.name else "asyncio")


async def test_l4_and_shutdown_leave_nothing_open(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address], protocol="tcp")) as p:
        r = await curl(f"http://127.0.0.1:{p.port}/")
        assert r.stdout == b"hello from a\n"
    async with start_proxy(make_config([backend.address])) as p:
        async with httpx.AsyncClient() as c:
            assert (await c.get(p.url + "/")).status_code == 200
        assert p.table.idle_upstream_count(p.registry.pool("web").servers[0]) == 1
    assert p.table.idle_upstream_count(p.registry.pool("web").servers[0]) == 0
    gc.collect()
