"""Per-server max_connections and the pool queue on the wire (issue 17, item 2): a pool whose
server takes one request at a time queues the second and serves it after the first, a
request that waits longer than queue_timeout gets the queue's 503, and hold_when_empty
carries a pool through a maintenance window: under a real load no request fails and none
gets the maintenance page, and the held requests are served in the order they came. The
access log's queue_ms and termination, the pool queue's counters."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from quiesce.core.admin import AdminCommand
from quiesce.core.states import Admin, Cause
from quiesce.frontends.metrics import build_collector_registry, render
from quiesce.frontends.runtime_socket.stats import Stats
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import make_config, start_proxy, wait_for

pytestmark = pytest.mark.loopback

GET = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n"


def logged(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    cfg["logging"] = {"access": {"format": "json", "path": str(path)}}
    return cfg


async def get(port: int, path: bytes) -> tuple[int, bytes]:
    """One request on its own connection: the status and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET % path)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    body = await asyncio.wait_for(reader.readexactly(n), 20)
    writer.close()
    return int(head.split()[1]), body


def one_slot(b: Backend, **kw: Any) -> dict[str, Any]:
    """One server, taking one request (L4: connection) at a time."""
    return make_config([{"name": "s0", "address": b.address, "max_connections": 1}], **kw)


async def busy(port: int, b: Backend) -> asyncio.Task[tuple[int, bytes]]:
    """A request parked on the back end's /hold: the server's one slot is taken."""
    first = asyncio.create_task(get(port, b"/hold"))
    await wait_for(lambda: b.holding == 1)
    return first


async def queued(port: int, pool: Any, path: bytes = b"/second") -> asyncio.Task[tuple[int, bytes]]:
    """A request that waits in ``pool``'s queue (the only one there)."""
    task = asyncio.create_task(get(port, path))
    await wait_for(lambda: pool.queue.qcur == 1)
    return task


async def test_a_server_at_its_limit_queues_the_next_request(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with Backend("a") as b:
        cfg = one_slot(b)
        async with start_proxy(logged(cfg, log)) as p:
            pool = p.registry.pool("web")
            first = await busy(p.port, b)
            second = await queued(p.port, pool)
            await asyncio.sleep(0.05)  # what is queued stays queued: the back end has one
            assert b.paths == ["/hold"] and pool.queue.qcur == 1
            b.release()
            assert (await first)[0] == 200 and (await second)[0] == 200
            assert b.paths == ["/hold", "/second"]
            assert (pool.queue.qcur, pool.queue.qmax, pool.queue.served) == (0, 1, 1)
            assert pool.queue.qtime >= 0.05
    entries = {e["path"]: e for e in map(json.loads, log.read_text().splitlines())}
    assert entries["/hold"]["queue_ms"] == 0
    assert entries["/second"]["queue_ms"] >= 50
    assert entries["/second"]["termination"] == "--"


async def test_queue_timeout_answers_503(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with Backend("a") as b:
        cfg = one_slot(
            b,
            pool={"queue_timeout": "200ms"},
        )
        async with start_proxy(logged(cfg, log)) as p:
            first = await busy(p.port, b)
            status, body = await get(p.port, b"/late")
            assert status == 503 and b"queue_timeout" in body
            assert p.registry.pool("web").queue.timeouts == 1
            # HAProxy 2.6 counts a queue timeout in its BACKEND's econ, not the server's
            assert p.registry.pool("web").conn_errors == 1
            assert p.registry.pool("web").servers[0].conn_errors == 0
            b.release()
            assert (await first)[0] == 200
            assert b.paths == ["/hold"]  # the late one never reached the back end
    entries = {e["path"]: e for e in map(json.loads, log.read_text().splitlines())}
    assert (entries["/late"]["status"], entries["/late"]["termination"]) == (503, "sQ")
    assert entries["/late"]["server"] == "-"  # it never had one
    assert entries["/late"]["queue_ms"] >= 150  # the time it waited (queue_timeout 200ms)


@pytest.mark.parametrize("how", ["reset", "fin"])
async def test_a_client_gone_while_queued_leaves_the_queue(tmp_path: Path, how: str) -> None:
    """A client that resets, or closes normally (FIN, its side only: ``shutdown(SHUT_WR)``),
    while its request waits leaves the queue: the request never reaches a server (``CQ``,
    as HAProxy's ``option abortonclose`` for a queued request) and takes no slot."""
    log = tmp_path / "access.log"
    async with Backend("a") as b:
        cfg = one_slot(b)
        async with start_proxy(logged(cfg, log)) as p:
            pool = p.registry.pool("web")
            first = await busy(p.port, b)
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(GET % b"/gone")
            await wait_for(lambda: pool.queue.qcur == 1)
            await asyncio.sleep(0.05)
            if how == "fin":
                writer.write_eof()
                assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, unanswered
            else:
                writer.transport.abort()
            await wait_for(lambda: pool.queue.qcur == 0)
            writer.close()
            b.release()
            assert (await first)[0] == 200
            assert (await get(p.port, b"/after"))[0] == 200
            assert "/gone" not in b.paths and b.paths == ["/hold", "/after"]
            assert pool.queue.served == 0
    entries = {e["path"]: e for e in map(json.loads, log.read_text().splitlines())}
    gone = entries["/gone"]
    assert (gone["termination"], gone["server"]) == ("CQ", "-")
    assert gone["queue_ms"] >= 50  # the time it waited before its client went


async def test_hold_when_empty_ends_with_the_maintenance_page_and_its_wait(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    async with Backend("a") as b:
        cfg = make_config([b.address], pool={"hold_when_empty": "200ms"})
        async with start_proxy(logged(cfg, log)) as p:
            server = p.registry.pool("web").servers[0]
            p.registry.admin_command(
                server, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.CLI)
            )
            status, _ = await get(p.port, b"/held")
            assert status == 503
            assert b.paths == []
    [held] = [json.loads(x) for x in log.read_text().splitlines()]
    assert (held["path"], held["termination"]) == ("/held", "MQ")
    assert held["queue_ms"] >= 150  # the time it was held (hold_when_empty 200ms)


async def test_hold_when_empty_carries_a_maintenance_window_under_load() -> None:
    """One server, taken into maintenance and brought back within hold_when_empty, while
    clients keep sending: no failure, no maintenance page, held requests served in order."""
    async with Backend("a") as b:
        cfg = make_config([b.address], pool={"hold_when_empty": "10s"})
        async with start_proxy(cfg) as p:
            pool = p.registry.pool("web")
            server = pool.servers[0]
            failures: list[object] = []
            served = 0
            stop = False

            async def client(k: int) -> None:
                nonlocal served
                i = 0
                while not stop:
                    try:
                        status, body = await get(p.port, b"/load/%d/%d" % (k, i))
                    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                        failures.append(exc)
                        continue
                    if status != 200:
                        failures.append((status, body))
                    served += 1
                    i += 1

            load = [asyncio.create_task(client(k)) for k in range(4)]
            await wait_for(lambda: served >= 40)
            p.registry.admin_command(
                server, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.CLI)
            )
            await wait_for(lambda: pool.queue.qcur == 4)  # every load client is held
            order = []
            ordered = []
            for j in range(5):  # five more, one after the other, in a known order
                order.append(f"/ordered/{j}")
                ordered.append(asyncio.create_task(get(p.port, order[-1].encode())))
                await wait_for(lambda j=j: pool.queue.qcur == 5 + j)
            before = served
            p.registry.admin_command(
                server, AdminCommand(Admin.ENABLED, actor="t", cause=Cause.CLI)
            )
            await wait_for(lambda: served >= before + 40)
            stop = True
            await asyncio.gather(*load)
            assert [status for status, _ in await asyncio.gather(*ordered)] == [200] * 5
            assert failures == []
            assert p.service.stats.maintenance_pages == 0
            seen = [x for x in b.paths if x.startswith("/ordered/")]
            assert seen == order
            assert pool.queue.qmax >= 9 and pool.queue.timeouts == 0


async def test_show_stat_and_metrics_read_the_queue() -> None:
    """``show stat`` (qcur, qmax, qtime on the BACKEND row, HAProxy's meanings; the server's
    slim) and /metrics while a request waits, then after it got its server."""
    async with Backend("a") as b:
        cfg = one_slot(b)
        async with start_proxy(cfg) as p:
            app = SimpleNamespace(registry=p.registry, config=p.registry.config, services={})
            stats = Stats(app, 0.0)
            pool = p.registry.pool("web")

            def rows() -> dict[str, dict[str, str]]:
                text = stats.show_stat(["3", "6", "-1"])  # iid 3: the pool (2 is the service)
                return {r["svname"]: r for r in csv.DictReader(io.StringIO(text[2:]))}

            def metric(name: str) -> float:
                text = render(build_collector_registry(app))[0].decode()
                line = next(x for x in text.splitlines() if x.startswith(name + '{pool="web"}'))
                return float(line.split()[-1])

            first = await busy(p.port, b)
            second = await queued(p.port, pool)
            now = rows()
            assert (now["BACKEND"]["qcur"], now["BACKEND"]["qmax"]) == ("1", "1")
            assert (now["s0"]["qcur"], now["s0"]["slim"], now["s0"]["scur"]) == ("0", "1", "1")
            assert metric("quiesce_pool_queue_current") == 1.0
            await asyncio.sleep(0.1)
            b.release()
            await first
            await second
            after = rows()["BACKEND"]
            assert (after["qcur"], after["qmax"]) == ("0", "1")
            assert int(after["qtime"]) >= 100 and int(after["qtime_max"]) >= 100
            assert metric("quiesce_pool_queue_current") == 0.0
            assert metric("quiesce_pool_queue_max") == 1.0
            assert metric("quiesce_pool_queue_served_total") == 1.0
            assert metric("quiesce_pool_queue_time_seconds") >= 0.1


@pytest.mark.one_path  # L4: no HTTP head is read by the proxy
async def test_l4_connections_queue_for_a_slot_and_hold_for_an_empty_pool(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    async with Backend("a") as b:
        cfg = one_slot(
            b,
            protocol="tcp",
            pool={"hold_when_empty": "10s"},
        )
        async with start_proxy(logged(cfg, log)) as p:
            pool = p.registry.pool("web")
            server = pool.servers[0]
            first = await busy(p.port, b)
            second = await queued(p.port, pool)
            assert b.connections == 1  # the queued connection has no server connection
            b.release()
            assert (await first)[0] == 200  # its client closes: the slot frees
            assert (await second)[0] == 200
            assert b.paths == ["/hold", "/second"]
            p.registry.admin_command(
                server, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.CLI)
            )
            held = asyncio.create_task(get(p.port, b"/held"))
            await wait_for(lambda: pool.queue.qcur == 1)
            p.registry.admin_command(
                server, AdminCommand(Admin.ENABLED, actor="t", cause=Cause.CLI)
            )
            assert (await held)[0] == 200
            assert p.service.stats.maintenance_pages == 0
            await wait_for(lambda: server.connections == 0)
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    assert [e["layer"] for e in entries] == [4, 4, 4]
    assert all(e["termination"] == "--" for e in entries)
    assert entries[0]["queue_ms"] == 0 and entries[1]["queue_ms"] > 0
    assert entries[2]["queue_ms"] > 0


@pytest.mark.one_path
async def test_l4_queue_timeout_closes_the_connection(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with Backend("a") as b:
        cfg = one_slot(
            b,
            protocol="tcp",
            pool={"queue_timeout": "200ms"},
        )
        async with start_proxy(logged(cfg, log)) as p:
            uv = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
            first = await busy(p.port, b)
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(GET % b"/late")
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, unanswered
            writer.close()
            b.release()
            assert (await first)[0] == 200
            assert b.paths == ["/hold"]
            await wait_for(lambda: p.registry.pool("web").servers[0].connections == 0)
            assert p.registry.pool("web").conn_errors == 1  # HAProxy's BACKEND econ
    late = next(e for e in map(json.loads, log.read_text().splitlines()) if e["server"] == "-")
    assert late["termination"] == "sQ" and late["layer"] == 4
    assert late["queue_ms"] >= 150  # the time it waited (queue_timeout 200ms)
    # uvloop reads the first chunk whatever the relay asked (held, counted); asyncio's loop
    # honours pause_reading in connection_made: nothing is read while it waits
    assert late["bytes_in"] == (len(GET % b"/late") if uv else 0)


async def test_a_limit_raised_at_runtime_wakes_the_queue() -> None:
    """``max_connections`` of a server changed at runtime (the API's PATCH, a reload): the
    server_updated event drains the queue at once, without waiting for a slot to free."""
    async with Backend("a") as b:
        cfg = one_slot(b)
        async with start_proxy(cfg) as p:
            pool = p.registry.pool("web")
            first = await busy(p.port, b)
            second = await queued(p.port, pool)
            p.registry.update_server(
                pool.servers[0], {"max_connections": 2}, actor="t", cause=Cause.API
            )
            assert (await second)[0] == 200  # served while the first still holds its slot
            assert pool.queue.qcur == 0 and b.holding == 1
            b.release()
            assert (await first)[0] == 200


def chunks(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    while True:
        size, _, data = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return out
        out.append(data[:n])
        data = data[n + 2 :]


async def test_a_queued_request_keeps_its_body() -> None:
    """A POST that waits in the queue: its body, sent while it waits, reaches the server."""
    async with Backend("a") as b:
        cfg = one_slot(b)
        async with start_proxy(cfg) as p:
            pool = p.registry.pool("web")
            first = await busy(p.port, b)
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            body = b"x" * 5000 + b"end"
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            await wait_for(lambda: pool.queue.qcur == 1)
            writer.write(body)  # arrives while the request waits
            b.release()
            assert (await first)[0] == 200
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200")
            got = b""
            while not got.endswith(b"\r\n0\r\n\r\n"):  # chunked, as /echo answers
                got += await asyncio.wait_for(reader.read(65536), 10)
            writer.close()
            assert b"".join(chunks(got)) == body
