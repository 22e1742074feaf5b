"""Issue 7 on the wire: real back ends, the real data plane, real clients (httpx, curl).

Everything listens on 127.0.0.1, port 0; every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from itertools import groupby
from pathlib import Path

import httpx
import pytest

from quiesce.admin import AdminService, CommandContext
from quiesce.config import load_text
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.events import Event, EventKind
from quiesce.core.states import Cause, CloseMode, Oper, Verdict
from quiesce.dataplane import ConnectionTable, Service, start_service
from quiesce.frontends.views import server_view
from quiesce.health import HealthManager
from quiesce.rules import compile_router
from quiesce.state.registry import Registry
from quiesce.store import open_store
from tests.support.backend import Backend, serve_in_thread

pytestmark = [
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl"),
    pytest.mark.peers,
]

BYPASS_COOKIE = "let-me-in"


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def curl(url: str, *args: str) -> tuple[int, dict[str, str], str]:
    """(status, lower-cased headers, body) as curl saw them."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-i", "--max-time", "5", *args, url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    head, _, body = out.decode().partition("\r\n\r\n")
    status_line, *lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return int(status_line.split()[1]), headers, body


class Site:
    """A config's registry, admin service and HTTP services, started on port 0."""

    def __init__(self, text: str, tmp_path: Path) -> None:
        self.config = load_text(text)
        self.registry = Registry(self.config)
        self.events: list[Event] = []
        self.registry.listeners.append(self.events.append)
        self.table = ConnectionTable(self.registry)
        self.registry.close_handlers.append(self.table.close)
        self.store = open_store(self.config.state, tmp_path)
        self.admin = AdminService(self.registry, self.store)
        self.services: dict[str, Service] = {}
        self.base_dir = tmp_path

    async def start(self) -> None:
        await self.admin.start()
        for name, svc in self.config.services.items():
            router = compile_router(name, svc, self.registry)
            self.services[name] = await start_service(
                name, svc, self.registry, self.table, router=router, base_dir=self.base_dir
            )

    def url(self, service: str = "www") -> str:
        return f"http://127.0.0.1:{self.services[service].port}"

    async def stop(self) -> None:
        for s in self.services.values():
            await s.close()
        for s in self.services.values():
            await s.shutdown(2.0)
        # Service.shutdown leaves the table's idle upstream (keep-alive) connections open;
        # close them so no transport outlives the test's loop.
        for server in self.registry.servers():
            self.table.close(server, CloseMode.AT_BOUNDARY)
        await wait_until(
            lambda: not any(self.table.upstream_idle.values()), "idle upstreams closed"
        )
        await self.admin.stop()
        self.store.close()

    def pass_check(self, ref: str, monitor: str = "hm") -> None:
        server = self.registry.find_server(ref)
        now = self.registry.clock.time()
        self.registry.record_check(server, CheckResult(monitor, Verdict.PASS, Reason.OK, now, 0))


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    with serve_in_thread(Backend("a"), Backend("b"), Backend("s")) as made:
        yield {b.name: b for b in made}


@pytest.fixture
async def site_factory(tmp_path: Path) -> AsyncIterator[Callable[[str], Site]]:
    sites: list[Site] = []

    def make(text: str) -> Site:
        site = Site(text, tmp_path)
        sites.append(site)
        return site

    yield make
    for site in sites:
        await site.stop()


def pools(b: dict[str, Backend], web_extra: str = "") -> str:
    return f"""
state: {{sqlite: null}}
pools:
  web:
    {web_extra}
    servers:
      - {{name: a, address: {b["a"].address}}}
      - {{name: b, address: {b["b"].address}}}
  static:
    servers: [{{name: s, address: {b["s"].address}}}]
"""


def bypass_service(name: str, allow: str) -> str:
    return f"""
  {name}:
    listen: 127.0.0.1:0
    pool: web
    maintenance_page: {{retry_after: 120}}
    rules:
      - name: operators-bypass
        if:
          all:
            - flag: maintenance_mode
            - any:
                - source: [{allow}]
                - cookie: {{name: qbypass, equals: {BYPASS_COOKIE}}}
        then: {{pool: web}}
      - if: {{flag: maintenance_mode}}
        then: maintenance_page
"""


def kind(r: httpx.Response) -> str:
    if r.status_code == 200 and r.headers.get("x-backend") in ("a", "b"):
        return "pool"
    if (
        r.status_code == 503
        and r.headers.get("retry-after") == "120"
        and "under maintenance" in r.text
        and "x-backend" not in r.headers
    ):
        return "page"
    return f"bad {r.status_code} {dict(r.headers)} {r.text[:80]!r}"


async def test_maintenance_flag_flip_with_operator_bypass(
    backends: dict[str, Backend], site_factory: Callable[[str], Site]
) -> None:
    site = site_factory(
        pools(backends)
        + "services:"
        + bypass_service("www", "192.0.2.0/24")  # the test client is not allow-listed here
        + bypass_service("ops", "127.0.0.1/32")  # ... and is here
    )
    await site.start()
    public: list[str] = []
    operator: list[str] = []
    stop = asyncio.Event()

    async def client_loop(out: list[str], cookies: dict[str, str]) -> None:
        async with httpx.AsyncClient(base_url=site.url(), cookies=cookies) as client:
            while not stop.is_set():
                out.append(kind(await client.get("/shop/cart?x=1")))

    tasks = [
        asyncio.create_task(client_loop(public, {})),
        asyncio.create_task(client_loop(operator, {"qbypass": BYPASS_COOKIE})),
    ]
    try:
        await wait_until(lambda: len(public) >= 20, "traffic before the flip")
        site.admin.set_flag(
            "maintenance_mode",
            True,
            CommandContext(actor="alice", cause=Cause.API, reason="release 4.2"),
        )
        flipped = len(public)
        await wait_until(lambda: public[flipped:].count("page") >= 20, "pages after the flip")

        # Real curl clients while the flag is set.
        status, headers, body = await curl(site.url() + "/")
        assert status == 503 and headers["retry-after"] == "120"
        assert "under maintenance" in body and "x-backend" not in headers
        status, headers, _ = await curl(site.url() + "/", "--cookie", "qbypass=guess")
        assert status == 503
        status, headers, _ = await curl(site.url() + "/", "--cookie", f"qbypass={BYPASS_COOKIE}")
        assert status == 200 and headers["x-backend"] in ("a", "b")
        status, headers, _ = await curl(site.url("ops") + "/")  # allow-listed source
        assert status == 200 and headers["x-backend"] in ("a", "b")

        site.admin.clear_flag(
            "maintenance_mode", CommandContext(actor="alice", cause=Cause.API, reason="done")
        )
        cleared = len(public)
        await wait_until(lambda: public[cleared:].count("pool") >= 20, "traffic after clear")
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    assert not [k for k in public + operator if k not in ("pool", "page")]
    # One switch to the page and one back, each at a request boundary: nothing failed between.
    assert [k for k, _ in groupby(public)] == ["pool", "page", "pool"]
    assert set(operator) == {"pool"} and len(operator) >= 20
    status, headers, _ = await curl(site.url() + "/")
    assert status == 200 and headers["x-backend"] in ("a", "b")
    changes = [e for e in site.events if e.kind is EventKind.FLAG_CHANGE]
    assert [(e.to, e.actor, e.reason) for e in changes] == [
        ("true", "alice", "release 4.2"),
        (None, "alice", "done"),
    ]


async def test_monitor_uri_follows_the_pool(
    backends: dict[str, Backend], site_factory: Callable[[str], Site]
) -> None:
    site = site_factory(
        pools(backends)
        + """
services:
  www:
    listen: 127.0.0.1:0
    pool: web
    monitor_uri:
      path: /site_alive
      fail_if: {usable_servers_below: {web: 1}, flag: maintenance_mode}
    rules:
      - {if: {path_prefix: /static/}, then: {pool: static}}
      - {if: {path_prefix: /old}, then: {redirect: {location: /new, status: 301}}}
"""
    )
    await site.start()
    url = site.url()

    async def monitor() -> int:
        status, headers, body = await curl(url + "/site_alive")
        assert "x-backend" not in headers and headers["cache-control"] == "no-store"
        assert body.startswith("OK" if status == 200 else "FAIL")
        return status

    assert await monitor() == 200
    site.admin.maintenance("web/a", CommandContext(actor="ops", cause=Cause.CLI))
    assert await monitor() == 200  # b is still eligible
    site.admin.maintenance("web/b", CommandContext(actor="ops", cause=Cause.CLI, reason="last one"))
    assert await monitor() == 503
    status, _, _ = await curl(url + "/site_alive", "-I")  # HEAD too
    assert status == 503
    status, _, body = await curl(url + "/anything")
    assert status == 503 and "under maintenance" in body  # no eligible server: the page
    site.admin.enable("web/b", CommandContext(actor="ops", cause=Cause.CLI))
    assert await monitor() == 200
    site.admin.set_flag("maintenance_mode", "on", CommandContext(actor="ops", cause=Cause.CLI))
    assert await monitor() == 503
    site.admin.set_flag("maintenance_mode", "off", CommandContext(actor="ops", cause=Cause.CLI))
    assert await monitor() == 200

    # Paths that match no rule go to the service's pool; rules send the others elsewhere.
    status, headers, body = await curl(url + "/checkout")
    assert status == 200 and headers["x-backend"] == "b" and body == "hello from b\n"
    assert backends["b"].paths[-1] == "/checkout"
    status, headers, _ = await curl(url + "/static/app.css")
    assert status == 200 and headers["x-backend"] == "s"
    status, headers, _ = await curl(url + "/old/page")
    assert status == 301 and headers["location"] == "/new"
    # Never proxied: no back end ever saw the monitor URI.
    assert not [p for b in backends.values() for p in b.paths if p.startswith("/site_alive")]


async def test_status_506_serves_the_page_and_marks_the_server(
    backends: dict[str, Backend], site_factory: Callable[[str], Site]
) -> None:
    site = site_factory(
        """
healthmonitors:
  hm:
    type: http
    send_interval: 1s
    receive_timeout: 900ms  # one slow answer on a loaded machine must not look like a failure
    successful_checks: 1
    failed_checks: 1
    http_monitor: {http_request: "GET /health HTTP/1.0"}
"""
        + pools(backends, web_extra="healthmonitors: [hm]")
        + """
services:
  www:
    listen: 127.0.0.1:0
    pool: web
    maintenance_page: {retry_after: 120}
    on_response_status: {codes: [506], then: maintenance_page, mark_server: maintenance}
"""
    )
    await site.start()
    site.pass_check("web/a")
    site.pass_check("web/b")
    a = site.registry.find_server("web/a")
    assert a.eligible

    backends["a"].status = 506  # a's deploy starts: it answers 506
    seen: list[str] = []
    async with httpx.AsyncClient(base_url=site.url()) as client:
        while "page" not in seen:
            assert len(seen) < 10, seen
            seen.append(kind(await client.get("/x")))
        assert a.oper is Oper.MAINTENANCE and not a.eligible
        passive = [
            e for e in site.events if e.kind is EventKind.OPER_CHANGE and e.cause == "passive"
        ]
        assert [(e.server, e.from_, e.to) for e in passive] == [("a", "up", "maintenance")]
        assert passive[0].detail["status_code"] == 506
        assert server_view(site.registry, a)["status"] == "down for maintenance"
        # Out of the rotation: every request now reaches b.
        for _ in range(10):
            r = await client.get("/y")
            assert r.status_code == 200 and r.headers["x-backend"] == "b"
        assert backends["a"].paths.count("/y") == 0

        # a's deploy ends; its active monitor brings it back as usual.
        backends["a"].status = 200
        health = HealthManager(site.registry)
        health.start()
        try:
            await wait_until(lambda: a.oper is Oper.UP, "web/a back up by its monitor")
        finally:
            await health.stop()
        back = [e for e in site.events if e.kind is EventKind.OPER_CHANGE and e.server == "a"]
        assert (back[-1].from_, back[-1].to, back[-1].cause) == ("maintenance", "up", "health")
        answered = {(await client.get("/z")).headers["x-backend"] for _ in range(4)}
        assert answered == {"a", "b"}


async def test_named_page_from_a_file(
    backends: dict[str, Backend], site_factory: Callable[[str], Site], tmp_path: Path
) -> None:
    (tmp_path / "upgrade.txt").write_text("Upgrading to 4.2, back at 14:00 UTC\n")
    site = site_factory(
        pools(backends)
        + """
pages:
  upgrade:
    status: 503
    file: upgrade.txt
    content_type: text/plain; charset=utf-8
    retry_after: 900
services:
  www:
    listen: 127.0.0.1:0
    pool: web
    rules:
      - {if: {flag: {name: maintenance_mode, equals: upgrade}}, then: {maintenance_page: upgrade}}
      - {if: {flag: maintenance_mode}, then: maintenance_page}
"""
    )
    await site.start()
    site.admin.set_flag("maintenance_mode", "upgrade", CommandContext(actor="ops", cause=Cause.API))
    status, headers, body = await curl(site.url() + "/")
    assert (status, headers["content-type"], headers["retry-after"]) == (
        503,
        "text/plain; charset=utf-8",
        "900",
    )
    assert body == "Upgrading to 4.2, back at 14:00 UTC\n"
    site.admin.set_flag("maintenance_mode", True, CommandContext(actor="ops", cause=Cause.API))
    status, headers, body = await curl(site.url() + "/")
    assert status == 503 and "retry-after" not in headers  # the service's default page
    assert headers["content-type"].startswith("text/html") and "under maintenance" in body
    site.admin.set_flag("maintenance_mode", False, CommandContext(actor="ops", cause=Cause.API))
    status, headers, _ = await curl(site.url() + "/")
    assert status == 200 and headers["x-backend"] in ("a", "b")
    assert backends["a"].paths + backends["b"].paths == ["/"]
