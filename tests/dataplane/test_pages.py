"""Maintenance pages, rule decisions, on_response_status and persistence."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from quiesce.core.admin import AdminCommand
from quiesce.core.states import Admin, Cause, Oper
from quiesce.rules.decision import (
    Decision,
    Redirect,
    RequestView,
    Respond,
    ServePage,
    ToPool,
)
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import curl, make_config, start_proxy

pytestmark = pytest.mark.peers


def maint(p: object, name: str, force: bool = False) -> None:
    reg = p.registry  # type: ignore[attr-defined]
    s = reg.pool("web").server(name)
    reg.admin_command(s, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.API, force=force))


async def test_default_page_when_no_server_is_eligible(backend: Backend) -> None:
    raw = make_config([backend.address], service={"maintenance_page": {"retry_after": 120}})
    async with start_proxy(raw) as p:
        maint(p, "s0")
        async with httpx.AsyncClient() as c:
            r = await c.get(p.url + "/anything")
            assert r.status_code == 503
            assert r.headers["retry-after"] == "120"
            assert r.headers["content-type"] == "text/html; charset=utf-8"
            assert "under maintenance" in r.text and "try again in about 2 minutes" in r.text
            # self-contained: no stylesheet, script or image to fetch from the dead pool
            assert "<link" not in r.text and "src=" not in r.text
            h = await c.head(p.url + "/")
            assert h.status_code == 503 and h.content == b""
            # keep-alive is kept across pages
            r = await c.get(p.url + "/")
            assert r.status_code == 503
        assert p.service.stats.maintenance_pages == 3
        assert p.service.stats.requests == 3
        assert backend.requests == []  # never proxied


async def test_page_from_file_and_inline(backend: Backend, tmp_path: Path) -> None:
    (tmp_path / "sorry.html").write_text("<h1>back soon</h1>")
    raw = make_config(
        [backend.address],
        service={
            "maintenance_page": {"file": "sorry.html", "status": 502, "content_type": "text/html"}
        },
    )
    async with start_proxy(raw, base_dir=tmp_path) as p:
        maint(p, "s0")
        r = await curl("-i", p.url + "/")
        assert r.stdout.startswith(b"HTTP/1.1 502")
        assert r.stdout.endswith(b"<h1>back soon</h1>")
        assert b"Retry-After" not in r.stdout
    raw = make_config(
        [backend.address],
        service={"maintenance_page": {"body": "down", "content_type": "text/plain"}},
    )
    async with start_proxy(raw) as p:
        maint(p, "s0")
        r = await curl("-i", p.url + "/")
        assert r.stdout.startswith(b"HTTP/1.1 503") and r.stdout.endswith(b"\r\n\r\ndown")


async def test_fallback_pool(backends: list[Backend]) -> None:
    a, b = backends[:2]
    raw = make_config(
        [a.address],
        service={"fallback_pool": "spare"},
        extra_pools={"spare": {"servers": [{"name": "x", "address": b.address}]}},
    )
    async with start_proxy(raw) as p:
        maint(p, "s0")
        r = await curl(p.url + "/")
        assert r.stdout == b"hello from b\n"


async def test_post_body_is_drained_when_a_page_answers(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        maint(p, "s0")
        async with httpx.AsyncClient() as c:
            r = await c.post(p.url + "/upload", content=b"z" * 3_000_000)
            assert r.status_code == 503
            r = await c.get(p.url + "/")
            assert r.status_code == 503


class FakeRouter:
    def __init__(self) -> None:
        self.seen: list[RequestView] = []

    def route(self, request: RequestView) -> Decision:
        self.seen.append(request)
        if request.path == "/health":
            return Respond(200, b"ok\n", (("X-Check", "1"),), log=False)
        if request.path == "/old":
            return Redirect("/new", 301)
        if request.path.startswith("/sorry"):
            return ServePage("sorry")
        if request.path.startswith("/spare"):
            return ToPool("spare")
        return ToPool("web")


async def test_router_decisions(backends: list[Backend]) -> None:
    a, b = backends[:2]
    raw = make_config(
        [a.address],
        extra_pools={"spare": {"servers": [{"name": "x", "address": b.address}]}},
        pages={"sorry": {"body": "named page", "status": 503, "content_type": "text/plain"}},
    )
    router = FakeRouter()
    async with start_proxy(raw, router=router) as p:
        async with httpx.AsyncClient() as c:
            r = await c.get(p.url + "/health", headers={"Cookie": "a=1; b=2"})
            assert r.status_code == 200 and r.text == "ok\n" and r.headers["x-check"] == "1"
            r = await c.get(p.url + "/old")
            assert r.status_code == 301 and r.headers["location"] == "/new"
            r = await c.get(p.url + "/sorry/x")
            assert r.status_code == 503 and r.text == "named page"
            r = await c.get(p.url + "/spare/y?q=1")
            assert r.text == "hello from b\n"
            r = await c.get(p.url + "/")
            assert r.text == "hello from a\n"
        view = router.seen[0]
        assert view.method == "GET" and view.path == "/health"
        assert view.cookies == {"a": "1", "b": "2"} and view.source == "127.0.0.1"
        assert view.host == f"127.0.0.1:{p.port}"  # raw: the router normalises it
        assert router.seen[3].path == "/spare/y"


async def test_on_response_status_serves_the_page_and_marks_the_server(
    backends: list[Backend],
) -> None:
    a, b = backends[:2]
    raw = make_config(
        [a.address, b.address],
        service={"on_response_status": {"codes": [503, 418], "mark_server": "maintenance"}},
    )
    raw["healthmonitors"] = {"hm": {"type": "tcp", "send_interval": 60, "receive_timeout": 1}}
    raw["pools"]["web"]["healthmonitors"] = ["hm"]
    async with start_proxy(raw) as p:
        s0, s1 = p.registry.pool("web").servers
        for s in (s0, s1):  # as if the monitor had passed (the socket's `set server … health up`)
            p.registry.force_oper(s, Oper.UP, Cause.RUNTIME_SOCKET, {})
        async with httpx.AsyncClient() as c:
            r = await c.get(p.url + "/status/418")  # -> a
            assert r.status_code == 503 and "under maintenance" in r.text
            assert s0.oper is Oper.MAINTENANCE
            # a's body was drained: its upstream connection went back to the pool
            assert p.table.idle_upstream_count(s0) in (0, 1)
            r = await c.get(p.url + "/")
            assert r.text == "hello from b\n"
            r = await c.get(p.url + "/status/404")
            assert r.status_code == 404


async def test_cookie_persistence_and_drain(backends: list[Backend]) -> None:
    raw = make_config([x.address for x in backends], pool={"persistence": {"type": "cookie"}})
    async with start_proxy(raw) as p, httpx.AsyncClient() as c:
        r = await c.get(p.url + "/")
        first = r.headers["x-server"]
        assert "QUIESCE_SERVER" in r.headers["set-cookie"]
        names = {(await c.get(p.url + "/")).headers["x-server"] for _ in range(6)}
        assert names == {first}
        idx = "abc".index(first)
        server = p.registry.pool("web").servers[idx]
        p.registry.admin_command(server, AdminCommand(Admin.DRAIN, actor="t", cause=Cause.API))
        # Draining: the sticky session still reaches it.
        assert (await c.get(p.url + "/")).headers["x-server"] == first
        p.registry.admin_command(
            server, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.API)
        )
        # The same keep-alive connection (not closed: only detached) now moves on.
        r = await c.get(p.url + "/")
        moved = r.headers["x-server"]
        assert moved != first and "set-cookie" in r.headers
        assert {(await c.get(p.url + "/")).headers["x-server"] for _ in range(4)} == {moved}


async def test_source_ip_persistence(backends: list[Backend]) -> None:
    raw = make_config([x.address for x in backends], pool={"persistence": {"type": "source_ip"}})
    async with start_proxy(raw) as p:
        async with httpx.AsyncClient() as c:
            names = {(await c.get(p.url + "/")).headers["x-server"] for _ in range(6)}
        assert len(names) == 1
        assert len(p.table.sticky_table("web")) == 1
