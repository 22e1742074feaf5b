"""Issue 5 on the wire: AdminService driving the real data plane, real back ends (Python HTTP
servers on port 0) and real clients (httpx, raw sockets). Loopback only; every wait is on a
condition, never a fixed sleep."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest

from quiesce.admin import AdminService, CommandContext
from quiesce.config.models import Config
from quiesce.core.events import EventQuery
from quiesce.core.states import Admin, Cause
from quiesce.dataplane import ConnectionTable, Service, start_service
from quiesce.state.registry import Registry
from quiesce.store import SqliteStore
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import make_config, wait_for

pytestmark = pytest.mark.loopback

A = CommandContext("ops", Cause.CLI)


@dataclass
class Stack:
    backends: list[Backend]
    registry: Registry
    table: ConnectionTable
    service: Service
    admin: AdminService

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    @property
    def port(self) -> int:
        return self.service.port

    def ref(self, i: int) -> str:
        return f"web/s{i}"


@contextlib.asynccontextmanager
async def stack(n: int, pool: dict[str, Any] | None = None) -> AsyncIterator[Stack]:
    async with contextlib.AsyncExitStack() as es:
        backends = [await es.enter_async_context(Backend("abcd"[i])) for i in range(n)]
        config = Config.model_validate(make_config([b.address for b in backends], pool=pool))
        registry = Registry(config)
        table = ConnectionTable(registry)
        registry.close_handlers.append(table.close)
        store = SqliteStore(":memory:")
        es.callback(store.close)
        admin = AdminService(registry, store)
        await admin.start()
        es.push_async_callback(admin.stop)
        svc = await start_service("web", config.services["web"], registry, table)
        es.push_async_callback(svc.shutdown, 0.5)
        yield Stack(backends, registry, table, svc, admin)


# raw-socket helpers: see exactly when a connection is closed ---------------------------------


async def send_get(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await asyncio.wait_for(reader.readexactly(length), 10)


async def closed_at(reader: asyncio.StreamReader, timeout: float = 10, cut: bool = True) -> float:
    """Loop time at which the peer closed (EOF or reset); fails if data arrives instead,
    except, when ``cut``, the 503 (Connection: close, Retry-After) a request waiting for its
    response head gets when a deadline or --force cuts it (issue 17, item 6)."""
    try:
        data = await asyncio.wait_for(reader.read(), timeout)
    except ConnectionError:
        data = b""
    if cut and data:
        head = data.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 503 "), data
        assert b"\r\nconnection: close" in head and b"\r\nretry-after: 1" in head, data
        data = b""
    assert data == b"", f"expected a close, got {data!r}"
    return asyncio.get_running_loop().time()


def close_all(*writers: asyncio.StreamWriter) -> None:
    for w in writers:
        w.close()


# rolling maintenance under load -------------------------------------------------------------


@dataclass
class Load:
    """Continuous traffic; every answer is checked. A client may retry a request once, and
    only when its keep-alive connection was closed before the request was read (RFC 9112
    §9.3.1, what browsers and curl do): the test checks at the end that no such request
    reached a back end, so nothing is retried that a server had seen."""

    url: str
    ok: int = 0
    by_server: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    retried: dict[str, str] = field(default_factory=dict)  # request id -> first error
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    seq: int = 0

    async def request(
        self, client: httpx.AsyncClient, method: str, path: str, body: bytes | None = None
    ) -> httpx.Response | None:
        self.seq += 1
        rid = f"r{self.seq}"
        for attempt in (1, 2):
            try:
                r = await client.request(
                    method, self.url + path, content=body, headers={"x-req-id": f"{rid}.{attempt}"}
                )
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if attempt == 1:
                    self.retried[f"{rid}.1"] = f"{method} {path}: {type(exc).__name__} {exc}"
                    continue
                self.errors.append(f"{method} {path} (retry): {type(exc).__name__}: {exc}")
                return None
            except Exception as exc:  # a timeout, a refused connection: losses
                self.errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
                return None
            if r.status_code != 200:
                self.errors.append(f"{method} {path}: HTTP {r.status_code} {r.text[:80]!r}")
                return None
            name = r.headers.get("x-server", "?")
            self.by_server[name] = self.by_server.get(name, 0) + 1
            self.ok += 1
            return r
        return None

    async def gets(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            r = await self.request(client, "GET", "/")
            if r is not None and r.text != f"hello from {r.headers['x-server']}\n":
                self.errors.append(f"GET /: wrong body {r.text!r}")

    async def posts(self, client: httpx.AsyncClient, worker: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            body = os.urandom(1 + (worker * 7919 + i * 104729) % 300_000)
            r = await self.request(client, "POST", "/sink", body)
            want = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
            if r is not None and json.loads(r.text) != want:
                self.errors.append(f"POST /sink: wrong answer {r.text!r}")

    async def slow(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            await self.request(client, "GET", "/slow/0.3")


async def test_rolling_maintenance_under_load_loses_nothing() -> None:
    async with stack(4) as st:
        load = Load(st.url)
        timeout = httpx.Timeout(10.0)
        keep = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=16))
        fresh = httpx.AsyncClient(  # a new connection for every request
            timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0)
        )
        async with keep, fresh:
            workers = [
                *(asyncio.create_task(load.gets(keep)) for _ in range(3)),
                *(asyncio.create_task(load.posts(keep, w)) for w in range(2)),
                asyncio.create_task(load.gets(fresh)),
                asyncio.create_task(load.posts(fresh, 9)),
                *(asyncio.create_task(load.slow(keep)) for _ in range(2)),
            ]
            idle_detached = 0
            try:
                await wait_for(lambda: len(load.by_server) == 4 and load.ok > 100, 30)
                for i, backend in enumerate(st.backends):
                    ref = st.ref(i)
                    r = st.admin.drain(ref, replace(A, reason="rolling upgrade"))
                    assert r.changed
                    seen = [n async for n in st.admin.wait_drained(ref, timeout=20)]
                    assert seen[-1] == 0
                    idle_detached += st.table.idle_count(st.registry.find_server(ref))
                    st.admin.maintenance(ref, replace(A, reason="rolling upgrade"))
                    before, ok = len(backend.requests), load.ok
                    await wait_for(lambda ok=ok: load.ok > ok + 100, 30)  # type: ignore[misc]
                    assert len(backend.requests) == before, "a server in maintenance got traffic"
                    assert st.admin.enable(ref, A).changed
                    served = backend.requests and len(backend.requests)
                    await wait_for(lambda b=backend, s=served: len(b.requests) > s, 30)  # type: ignore[misc]
            finally:
                load.stop.set()
                await asyncio.gather(*workers)
        assert load.errors == [], load.errors[:10]
        # Non-forced maintenance closes no idle client connection (only the proxy's own
        # connections to the server), so no client ever had to retry.
        assert load.retried == {}, load.retried
        print(f"rolling: {load.ok} answers, none retried ({idle_detached} idle detached)")
        assert load.ok > 500 and set(load.by_server) == {"a", "b", "c", "d"}
        kinds = [
            (e.server, e.to) for e in st.admin.events(EventQuery(kind="admin_change", limit=100))
        ]
        assert kinds == [
            (f"s{i}", to) for i in range(4) for to in ("drain", "maintenance", "enabled")
        ]


# drain deadline accuracy ----------------------------------------------------------------------


async def test_drain_deadline_closes_within_100ms_and_not_before() -> None:
    async with stack(2) as st:
        loop = asyncio.get_running_loop()
        s0 = st.registry.find_server("web/s0")
        conns = [await send_get(st.port, "/hang") for _ in range(4)]  # round robin: 2 each
        await wait_for(lambda: s0.connections == 2)
        start = loop.time()
        r = st.admin.drain("web/s0", A, timeout=0.5)
        assert r.server.admin.deadline is not None
        deadline_loop = start + 0.5
        closes = await asyncio.wait_for(
            asyncio.gather(*(closed_at(rd) for rd, _ in conns[0::2])),  # s0: 1st and 3rd
            10,
        )
        print("deadline: closed at", [f"{(t - deadline_loop) * 1000:+.1f} ms" for t in closes])
        for t in closes:
            assert deadline_loop - 0.005 <= t <= deadline_loop + 0.1, t - deadline_loop
        assert s0.admin.state is Admin.MAINTENANCE and s0.admin.cause is Cause.DEADLINE
        # The other server's connections are untouched.
        s1 = st.registry.find_server("web/s1")
        assert s1.connections == 2
        close_all(*(w for _, w in conns))


async def test_drain_without_deadline_never_closes() -> None:
    async with stack(2) as st:
        s0, s1 = st.registry.find_server("web/s0"), st.registry.find_server("web/s1")
        slow = await send_get(st.port, "/slow/1.5")  # -> s0
        await wait_for(lambda: s0.connections == 1)
        hang = await send_get(st.port, "/hang")  # -> s1
        await wait_for(lambda: s1.connections == 1)
        st.admin.drain("web/s0", A)  # until all flows drain
        st.admin.drain("web/s1", replace(A, force_guard=True), timeout=0.3)  # a deadline elsewhere
        await closed_at(hang[0])
        assert s1.admin.state is Admin.MAINTENANCE
        head, body = await read_response(slow[0])  # s0's request ran its full 1.5 s
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello from a\n"
        assert s0.admin.state is Admin.DRAIN and s0.status == "drained"
        close_all(slow[1], hang[1])


# force ---------------------------------------------------------------------------------------


async def test_force_closes_every_connection_of_the_target_only() -> None:
    async with stack(2) as st:
        loop = asyncio.get_running_loop()
        s0, s1 = st.registry.find_server("web/s0"), st.registry.find_server("web/s1")
        hangs = [await send_get(st.port, "/hang") for _ in range(3)]  # round robin: s0, s1, s0
        await wait_for(lambda: s0.connections + s1.connections == 3)
        hangs += [await send_get(st.port, "/hang") for _ in range(3)]  # s1, s0, s1
        await wait_for(lambda: s0.connections == 3 and s1.connections == 3)
        idle = await send_get(st.port, "/")  # keep-alive, answered, idle-to-s0 (round robin)
        await read_response(idle[0])
        assert st.table.idle_count(s0) == 1
        others = [await send_get(st.port, "/slow/0.5") for _ in range(2)]  # s1, s0
        await wait_for(lambda: s0.connections + s1.connections == 8)
        t0 = loop.time()
        r = st.admin.maintenance("web/s0", replace(A, reason="fire"), force=True)
        assert r.changed and r.closed == 4
        on_s0 = [*hangs[0::2], idle, others[1]]
        on_s1 = [*hangs[1::2], others[0]]
        times = await asyncio.gather(*(closed_at(rd) for rd, _ in on_s0))
        print(f"force: {len(times)} closed within {(max(times) - t0) * 1000:.1f} ms")
        assert max(times) - t0 < 0.1, max(times) - t0
        await wait_for(lambda: s0.connections == 0)
        # s1: its hanging requests are still open, its slow one completes.
        head, body = await read_response(others[0][0])
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello from b\n"
        assert s1.connections == 3
        close_all(*(w for _, w in on_s0 + on_s1))


# maintenance without force on L7 --------------------------------------------------------------


async def test_maintenance_finishes_in_flight_then_closes_idle_at_once() -> None:
    async with stack(2) as st:
        s0 = st.registry.find_server("web/s0")
        busy = await send_get(st.port, "/slow/0.5")  # -> s0
        await wait_for(lambda: s0.connections == 1)
        other = await send_get(st.port, "/")  # -> s1, idle-to-s1 afterwards
        await read_response(other[0])
        idle = await send_get(st.port, "/")  # -> s0, idle-to-s0 afterwards
        await read_response(idle[0])
        assert st.table.idle_count(s0) == 1
        r = st.admin.maintenance("web/s0", replace(A, reason="patch"))
        assert r.closed == 0 and "1 connection(s) close at their next request boundary" in r.message
        # The proxy's idle keep-alive connections to s0 are closed now (no await since the
        # command: within the call, whatever the machine's load); the idle client connection
        # is detached, not closed (its next request goes to s1, no reset race).
        assert st.table.idle_upstream_count(s0) == 0 and st.table.idle_count(s0) == 0
        head, body = await read_response(busy[0])  # in-flight: finishes...
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello from a\n"
        assert b"connection: close" in head.lower()
        await closed_at(busy[0], timeout=2, cut=False)  # ...then its connection closes
        # The other server's idle keep-alive connection is untouched and still usable, and
        # the detached one now reaches s1.
        other[1].write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head, body = await read_response(other[0])
        assert body == b"hello from b\n"
        idle[1].write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head, body = await read_response(idle[0])
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello from b\n"
        close_all(busy[1], idle[1], other[1])


# persistence cookie -----------------------------------------------------------------------------


async def test_cookie_reaches_draining_server_and_moves_on_maintenance() -> None:
    async with (
        stack(3, pool={"persistence": {"type": "cookie"}}) as st,
        httpx.AsyncClient(timeout=10) as sticky,
    ):
        first = (await sticky.get(st.url + "/")).headers["x-server"]
        i = "abc".index(first)
        server = st.registry.find_server(st.ref(i))
        st.admin.drain(st.ref(i), A)
        for _ in range(5):
            assert (await sticky.get(st.url + "/")).headers["x-server"] == first
        # A client without the cookie never reaches the draining server.
        async with httpx.AsyncClient(timeout=10) as new:
            fresh = {(await new.get(st.url + "/")).headers["x-server"] for _ in range(6)}
        assert first not in fresh
        assert server.status == "drained" and st.table.idle_count(server) == 1
        st.admin.maintenance(st.ref(i), A)
        # The same keep-alive connection, cookie and all, now reaches another server.
        r = await sticky.get(st.url + "/")
        moved = r.headers["x-server"]
        assert moved != first and "set-cookie" in r.headers
        for _ in range(4):
            assert (await sticky.get(st.url + "/")).headers["x-server"] == moved
