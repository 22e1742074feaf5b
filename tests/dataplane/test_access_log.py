"""The access log on the wire (issue 17, items 1 and 6): real client sockets through the L7
and L4 proxy to a real back end, the log written to a file by the writer thread, every line
parsed and checked field by field — a normal request (and one reusing its connection), a
drain deadline and a ``maintenance --force`` cutting a request waiting on a slow back end
(the client gets a 503 with ``Connection: close`` and ``Retry-After``, not an empty reply),
a client abort, a bad request, the maintenance page, a refused server; sampling, the
per-service switch, the httplog layout. Each test runs on the C and the Python head path."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from quiesce.config.logs import ACCESS_FIELDS
from quiesce.core.admin import AdminCommand
from quiesce.core.states import Admin, Cause
from quiesce.state.registry import Registry, ServerRuntime
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import dead_port, make_config, start_proxy, wait_for

pytestmark = pytest.mark.loopback

DELAY = 0.05  # the back end's answer to a normal request


def logged(cfg: dict[str, Any], path: Path, fmt: str = "json", **access: Any) -> dict[str, Any]:
    cfg["logging"] = {"access": {"format": fmt, "path": str(path), **access}}
    return cfg


def lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines()]


async def exchange(port: int, request: bytes) -> tuple[bytes, int]:
    """Send ``request``, read until the proxy closes; the response and our port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    mine = writer.get_extra_info("sockname")[1]
    writer.write(request)
    data = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    return data, mine


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    return head + await asyncio.wait_for(reader.readexactly(n), 10)


async def test_normal_requests_every_field(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with Backend("a") as b:
        b.delay = DELAY
        async with start_proxy(logged(make_config([b.address]), log)) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            mine = writer.get_extra_info("sockname")[1]
            req = b"GET /x?y=1 HTTP/1.1\r\nHost: t\r\n\r\n"
            began = time.time()
            writer.write(req)
            first = await read_response(reader)
            writer.write(req)  # the same connection, and its upstream connection reused
            second = await read_response(reader)
            writer.close()
            await wait_for(lambda: p.registry.pool("web").servers[0].requests_in_flight == 0)
    one, two = lines(log)
    for entry, response in ((one, first), (two, second)):
        assert list(entry) == list(ACCESS_FIELDS)
        assert entry["layer"] == 7
        assert entry["client_ip"] == "127.0.0.1" and entry["client_port"] == mine
        assert (entry["service"], entry["pool"], entry["server"]) == ("web", "web", "s0")
        assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/x?y=1", 200)
        assert entry["bytes_in"] == len(req) and entry["bytes_out"] == len(response)
        assert entry["queue_ms"] == 0
        assert entry["response_ms"] >= DELAY * 1000 - 2  # uvloop timers: ms-grained
        assert entry["total_ms"] >= entry["response_ms"]
        assert (entry["retries"], entry["termination"]) == (0, "--")
        t = time.strptime(entry["time"][:19], "%Y-%m-%dT%H:%M:%S")
        assert abs(time.mktime(t) - time.timezone - began) < 5
    assert one["connect_ms"] >= 0 and two["connect_ms"] == 0  # a reused connection
    assert one["request_id"] != two["request_id"]
    assert one["request_id"].split("-")[0] == two["request_id"].split("-")[0]


async def take_server(registry: Registry, server: ServerRuntime, how: str) -> None:
    """A drain deadline reached (``how`` "deadline") or ``maintenance --force``."""
    if how == "deadline":
        deadline = registry.clock.time() + 0.2
        cmd = AdminCommand(Admin.DRAIN, actor="t", cause=Cause.CLI, deadline=deadline)
        registry.admin_command(server, cmd)
        await wait_for(lambda: registry.clock.time() >= deadline)
        assert registry.tick()  # what the admin service's timer does
    else:
        cmd = AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.CLI, force=True)
        registry.admin_command(server, cmd)


async def cut_while_waiting(tmp_path: Path, how: str) -> tuple[bytes, dict[str, Any]]:
    """A request waits on a slow back end; a drain deadline or --force takes its server."""
    log = tmp_path / "access.log"
    async with Backend("a") as b, start_proxy(logged(make_config([b.address]), log)) as p:
        server = p.registry.pool("web").servers[0]
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET /slow/30 HTTP/1.1\r\nHost: t\r\n\r\n")
        await wait_for(lambda: b.requests)  # the back end has it
        await take_server(p.registry, server, how)
        data = await asyncio.wait_for(reader.read(), 10)  # then the proxy closes
        writer.close()
        assert server.requests_in_flight == 0
    (entry,) = lines(log)
    return data, entry


@pytest.mark.parametrize(("how", "term"), [("deadline", "DH"), ("force", "KH")])
async def test_a_cut_request_gets_a_503(tmp_path: Path, how: str, term: str) -> None:
    data, entry = await cut_while_waiting(tmp_path, how)
    head = data.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 503 ")
    assert b"\r\nconnection: close" in head and b"\r\nretry-after: 1" in head
    assert (entry["status"], entry["termination"], entry["server"]) == (503, term, "s0")
    assert entry["bytes_out"] == len(data) and entry["response_ms"] == -1


async def test_client_abort(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with Backend("a") as b, start_proxy(logged(make_config([b.address]), log)) as p:
        server = p.registry.pool("web").servers[0]
        _, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET /slow/30 HTTP/1.1\r\nHost: t\r\n\r\n")
        await wait_for(lambda: b.requests)
        # a reset, as a client gives up (a FIN alone is a half-close: still answered)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        await wait_for(lambda: server.requests_in_flight == 0)
    (entry,) = lines(log)
    assert (entry["status"], entry["termination"], entry["path"]) == (-1, "CH", "/slow/30")


async def test_bad_request_page_and_refused_server(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with Backend("a") as b:
        cfg = make_config(
            [b.address, f"127.0.0.1:{dead_port()}"], pool={"algorithm": "round_robin"}
        )
        async with start_proxy(logged(cfg, log)) as p:
            bad, _ = await exchange(p.port, b"GET /\x01 HTTP/1.1\r\n\r\n")
            assert bad.startswith(b"HTTP/1.1 400 ")
            # a refused server: the request goes once to the other (retries 1)
            got = [await exchange(p.port, b"GET / HTTP/1.0\r\n\r\n") for _ in range(2)]
            assert all(r.startswith(b"HTTP/1.1 200 ") for r, _ in got)
            for s in p.registry.pool("web").servers:
                cmd = AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.CLI)
                p.registry.admin_command(s, cmd)
            page, _ = await exchange(p.port, b"GET /p HTTP/1.0\r\n\r\n")
            assert page.startswith(b"HTTP/1.1 503 ")
    entries = lines(log)
    assert len(entries) == 4, entries
    first = entries[0]
    assert (first["status"], first["termination"], first["method"], first["path"]) == (
        400,
        "PR",
        "-",
        "-",
    )
    assert sorted(e["retries"] for e in entries[1:3]) == [0, 1]
    assert all(e["server"] == "s0" and e["termination"] == "--" for e in entries[1:3])
    last = entries[3]
    assert (last["status"], last["termination"], last["server"], last["path"]) == (
        503,
        "M-",
        "-",
        "/p",
    )


async def test_sampling_and_the_service_switch(tmp_path: Path) -> None:
    async with Backend("a") as b:
        for name, cfg in (
            ("sampled", logged(make_config([b.address]), tmp_path / "s.log", sample=0)),
            (
                "off",
                logged(make_config([b.address], service={"access_log": False}), tmp_path / "o"),
            ),
        ):
            async with start_proxy(cfg) as p:
                for _ in range(3):
                    r, _ = await exchange(p.port, b"GET / HTTP/1.0\r\n\r\n")
                    assert r.startswith(b"HTTP/1.1 200 "), name
    assert (tmp_path / "s.log").read_text() == ""  # opened (a start-up check), nothing logged
    assert (tmp_path / "o").read_text() == ""


HTTPLOG = re.compile(
    r"(?P<ip>[\d.]+):(?P<port>\d+) \[(?P<date>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\.\d{3})\] "
    r"(?P<service>\S+) (?P<pool>\S+)/(?P<server>\S+) "
    r"(?P<tw>-?\d+)/(?P<tc>-?\d+)/(?P<tr>-?\d+)/(?P<tt>-?\d+) (?P<status>-?\d+) "
    r"(?P<out>\d+) (?P<in>\d+) (?P<term>\S\S) (?P<retries>\d+) (?P<id>\S+) "
    r'"(?P<method>\S+) (?P<path>\S+)"'
)


async def test_httplog_line(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with Backend("a") as b:
        b.delay = DELAY
        async with start_proxy(logged(make_config([b.address]), log, fmt="httplog")) as p:
            data, mine = await exchange(p.port, b"GET /h HTTP/1.0\r\n\r\n")
    m = HTTPLOG.fullmatch(log.read_text().strip())
    assert m, log.read_text()
    assert (m["ip"], int(m["port"]), m["service"], m["pool"], m["server"]) == (
        "127.0.0.1",
        mine,
        "web",
        "web",
        "s0",
    )
    assert (m["status"], int(m["out"]), m["term"], m["method"], m["path"]) == (
        "200",
        len(data),
        "--",
        "GET",
        "/h",
    )
    assert int(m["tr"]) >= DELAY * 1000 - 2 and int(m["tt"]) >= int(m["tr"])


@pytest.mark.one_path  # L4 reads no HTTP head
async def test_l4_connection(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with Backend("a") as b:
        cfg = logged(make_config([b.address], protocol="tcp"), log)
        async with start_proxy(cfg) as p:
            req = b"GET / HTTP/1.0\r\n\r\n"
            data, mine = await exchange(p.port, req)
            assert data.startswith(b"HTTP/1.1 200 ")
            await wait_for(lambda: p.service.connections == 0)
    (entry,) = lines(log)
    assert (entry["layer"], entry["client_port"], entry["server"]) == (4, mine, "s0")
    assert (entry["bytes_in"], entry["bytes_out"]) == (len(req), len(data))
    assert entry["method"] is None and entry["status"] is None
    assert entry["termination"] == "--" and entry["connect_ms"] >= 0


async def test_websocket_upgrade_logged_at_its_101(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with Backend("a") as b, start_proxy(logged(make_config([b.address]), log)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        req = (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        writer.write(req)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101")
        writer.close()
        server = p.registry.pool("web").servers[0]
        await wait_for(lambda: server.connections == 0)
    (entry,) = lines(log)
    assert (entry["status"], entry["path"], entry["termination"]) == (101, "/ws", "--")
    assert entry["bytes_in"] == len(req) and entry["bytes_out"] == len(head)
