"""Issue 14, item 2 on the wire: servers added, re-addressed and removed at runtime through
AdminService, with the real data plane, real back ends and real clients."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from quiesce.admin import CommandContext
from quiesce.config.models import ServerConfig
from quiesce.core.states import Cause
from tests.admin.test_wire import stack
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import wait_for

pytestmark = pytest.mark.loopback

OPS = CommandContext("ops", Cause.API)


async def test_added_server_receives_traffic() -> None:
    async with stack(1) as st, Backend("b") as b, httpx.AsyncClient(base_url=st.url) as client:
        st.admin.add_server("web", ServerConfig(name="s1", address=b.address), OPS)
        for _ in range(10):
            r = await client.get("/")
            assert r.status_code == 200
        assert len(b.paths) == 5 and len(st.backends[0].paths) == 5  # round robin over both


async def test_readdressed_server_new_requests_go_to_the_new_address() -> None:
    async with stack(1) as st, Backend("b") as b, Backend("c") as c:
        st.admin.add_server("web", ServerConfig(name="s1", address=b.address), OPS)
        st.admin.maintenance("web/s0", OPS)
        async with httpx.AsyncClient(base_url=st.url) as client:
            assert (await client.get("/")).text == "hello from b\n"  # an idle upstream to b
            assert st.table.idle_upstream_count(st.registry.find_server("web/s1")) == 1
            held = asyncio.ensure_future(client.get("/hold"))
            await wait_for(lambda: b.holding == 1)
            st.admin.update_server("web/s1", {"address": c.address}, OPS)
            async with httpx.AsyncClient(base_url=st.url) as other:
                for _ in range(5):
                    assert (await other.get("/")).text == "hello from c\n"
            b.release()
            r = await held
            assert r.status_code == 200 and r.text == "released by b\n"  # in flight: completes
            for _ in range(3):
                assert (await client.get("/")).text == "hello from c\n"
        assert b.paths == ["/", "/hold"]
        await wait_for(lambda: b.open_connections == 0)  # the old address's upstreams closed


async def test_removed_server_stops_receiving_with_no_failed_request() -> None:
    async with stack(1) as st, Backend("b", delay=0.02) as b:
        st.admin.add_server("web", ServerConfig(name="s1", address=b.address), OPS)
        failures: list[str] = []
        stop = asyncio.Event()

        async def load() -> None:
            async with httpx.AsyncClient(base_url=st.url) as client:
                while not stop.is_set():
                    r = await client.get("/")
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text}")

        tasks = [asyncio.ensure_future(load()) for _ in range(4)]
        try:
            await wait_for(lambda: len(b.paths) >= 10)
            result = st.admin.remove_server("web/s1", OPS, drain=True, timeout=10)
            assert st.registry.find_server("web/s1").status.startswith("removing") or result.changed
            await wait_for(lambda: "s1" not in [s.name for s in st.registry.pools["web"].servers])
            served = len(b.paths)
            before = len(st.backends[0].paths)
            await wait_for(lambda: len(st.backends[0].paths) >= before + 20)
            assert len(b.paths) == served
        finally:
            stop.set()
            for t in tasks:
                with contextlib.suppress(Exception):
                    await t
        assert failures == []
