"""The mysql relay on loopback (quiesce.dataplane.mysqlrelay, the dbrelay shell) against a
scripted server: a server or a client breaking the framing closes that connection only, with
a ``protocol_error`` event; ``max_message_size`` is enforced; maintenance and quiesce
stopping end sessions at their transaction boundary with ERR 1053. Real MariaDB and
PyMySQL: tests/e2e/test_mysql.py."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from quiesce.core.events import Event, EventKind
from quiesce.core.states import CloseMode
from quiesce.dataplane import mysqlrelay
from quiesce.dataplane.dbrelay import _DbUpstream
from quiesce.dataplane.mysql import CLIENT_PROTOCOL_41, CLIENT_SSL, GOODBYE
from tests.dataplane.test_mysql import greeting, ok, packet, response
from tests.support import dbframers
from tests.support.certs import Certs
from tests.support.proxy import make_config, start_proxy

# on the C framers and on the pure-Python ones (not on both HTTP head paths: no HTTP here)
pytestmark = [pytest.mark.loopback, pytest.mark.one_path]


framers = dbframers.relay(mysqlrelay)


@contextlib.asynccontextmanager
async def fake_server() -> AsyncIterator[int]:
    """Greets, takes any handshake response with OK; then answers ``bad`` with two OKs (one
    too many), ``BEGIN`` with OK in a transaction, anything else with OK out of one."""

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            w.write(greeting())
            head = await r.readexactly(4)
            await r.readexactly(int.from_bytes(head[:3], "little"))
            w.write(ok(2))
            while True:
                head = await r.readexactly(4)
                body = await r.readexactly(int.from_bytes(head[:3], "little"))
                if body == b"\x01":  # COM_QUIT
                    break
                if body == b"\x03bad":
                    w.write(ok(1) + ok(2))
                elif body == b"\x03BEGIN":
                    w.write(ok(1, 0x0003))
                else:
                    w.write(ok(1))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    assert await r.readexactly(len(greeting())) == greeting()
    w.write(response(CLIENT_PROTOCOL_41, 1))
    assert await r.readexactly(len(ok(2))) == ok(2)
    return r, w


async def query(r: asyncio.StreamReader, w: asyncio.StreamWriter, sql: bytes) -> bytes:
    w.write(packet(0, b"\x03" + sql))
    return await asyncio.wait_for(r.read(100), 10)


async def test_framing_errors_close_that_connection_only() -> None:
    async with fake_server() as port:
        cfg = make_config(
            [f"127.0.0.1:{port}"], protocol="mysql", service={"max_message_size": 1024}
        )
        async with start_proxy(cfg) as p:
            events: list[Event] = []
            p.registry.listeners.append(events.append)
            (r1, w1), (r2, w2), (r3, w3) = [await connect(p.port) for _ in range(3)]

            # the server breaks the framing on connection 1 (an answer with nothing asked)
            w1.write(packet(0, b"\x03bad"))
            assert await asyncio.wait_for(r1.read(100), 10) == b""
            # a client packet over max_message_size on connection 3
            w3.write((5000).to_bytes(3, "little") + b"\0\x03" + b"x" * 100)
            assert await asyncio.wait_for(r3.read(100), 10) == b""
            # connection 2 is untouched
            assert await query(r2, w2, b"SELECT 1") == ok(1)

            errors = [e for e in events if e.kind is EventKind.PROTOCOL_ERROR]
            reasons = sorted(str(e.reason) for e in errors)
            assert reasons == [
                "client sent a packet of 5000 bytes (limit 1024)",
                "server sent a packet with no command outstanding",
            ]
            assert {(e.pool, e.server) for e in errors} == {("web", "s0")}
            assert p.service.stats.protocol_errors == 2

            # maintenance: connection 2 (idle, not fresh) gets ERR 1053 and is closed
            p.table.close(p.registry.pool("web").server("s0"), CloseMode.AT_BOUNDARY)
            assert await asyncio.wait_for(r2.read(200), 10) == GOODBYE
            assert await asyncio.wait_for(r2.read(200), 10) == b""
            for w in (w1, w2, w3):
                w.close()


async def test_shutdown_ends_sessions_at_their_transaction_boundary() -> None:
    """quiesce stopping (Service.shutdown with a grace period): an idle session gets 1053 at
    once, one in a transaction commits first; the shutdown ends with them, not at the grace."""
    async with (
        fake_server() as port,
        start_proxy(make_config([f"127.0.0.1:{port}"], protocol="mysql")) as p,
    ):
        (r1, w1), (r2, w2) = [await connect(p.port) for _ in range(2)]
        assert await query(r1, w1, b"SELECT 1") == ok(1)
        assert await query(r2, w2, b"BEGIN") == ok(1, 0x0003)
        stopping = asyncio.create_task(p.service.shutdown(30.0))
        assert await asyncio.wait_for(r1.read(200), 10) == GOODBYE
        assert not stopping.done()  # the transaction goes on
        w2.write(packet(0, b"\x03COMMIT"))
        committed = ok(1) + GOODBYE
        assert await asyncio.wait_for(r2.readexactly(len(committed)), 10) == committed
        await asyncio.wait_for(stopping, 10)
        for w in (w1, w2):
            w.close()


async def test_tls_terminated_then_followed_as_cleartext(tmp_path: Path) -> None:
    """A mysql service with ``tls``: the client's SSL request starts TLS with the service's
    certificate (verified by the client), the handshake response inside TLS is renumbered
    for the server and its OK back for the client, and the session is then a plain
    MysqlClient (the command phase's own path) whose transaction commits across maintenance
    before ERR 1053. A client gone in the middle of its TLS handshake is counted out."""
    certs = Certs(tmp_path)
    cert, key = certs.leaf("my", "127.0.0.1")
    tls = {"certificates": [{"cert": str(cert), "key": str(key)}]}
    async with (
        fake_server() as port,
        start_proxy(
            make_config([f"127.0.0.1:{port}"], protocol="mysql", service={"tls": tls})
        ) as p,
    ):
        ctx = p.service._ctx
        r, w = await asyncio.open_connection("127.0.0.1", p.port)
        assert await r.readexactly(len(greeting())) == greeting()  # CLIENT_SSL offered
        w.write(response(CLIENT_PROTOCOL_41 | CLIENT_SSL))  # the SSL request
        await w.start_tls(ssl.create_default_context(cafile=str(certs.ca_file)))
        inner = response(CLIENT_PROTOCOL_41 | CLIENT_SSL, 1)
        w.write(inner[:3] + b"\x02" + inner[4:])
        assert await asyncio.wait_for(r.readexactly(len(ok(3))), 10) == ok(3)  # server's 2
        (client,) = ctx.conns
        assert type(client) is mysqlrelay.MysqlClient  # plain again once authenticated
        assert type(client.up) is _DbUpstream
        assert await query(r, w, b"BEGIN") == ok(1, 0x0003)
        p.table.close(p.registry.pool("web").server("s0"), CloseMode.AT_BOUNDARY)
        w.write(packet(0, b"\x03COMMIT"))
        committed = ok(1) + GOODBYE
        assert await asyncio.wait_for(r.readexactly(len(committed)), 10) == committed
        w.close()

        # gone in the middle of the TLS handshake: its connection is counted out once
        r2, w2 = await asyncio.open_connection("127.0.0.1", p.port)
        await r2.readexactly(len(greeting()))
        w2.write(response(CLIENT_PROTOCOL_41 | CLIENT_SSL) + b"\x16\x03\x01\x00")
        w2.close()
        for _ in range(500):
            if not ctx.conns:
                break
            await asyncio.sleep(0.01)
        assert not ctx.conns and ctx.stats.connections == 0
        assert ctx.stats.tls_failed == 1


async def test_a_server_packet_during_the_clients_tls_handshake_closes_it(tmp_path: Path) -> None:
    """The server speaking while the client's TLS handshake runs (an ERR: it gave up waiting)
    is not written into that handshake: the connection is closed with a protocol_error and
    counted out once (the client's transport belonged to the TLS protocol then)."""
    certs = Certs(tmp_path)
    cert, key = certs.leaf("my", "127.0.0.1")
    tls = {"certificates": [{"cert": str(cert), "key": str(key)}]}
    asked = asyncio.Event()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(greeting())
        await asyncio.wait_for(asked.wait(), 10)
        w.write(packet(1, b"\xff\x0b\x04#08S01Bad handshake"))
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await r.read(100)
        w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = make_config([f"127.0.0.1:{port}"], protocol="mysql", service={"tls": tls})
    try:
        async with start_proxy(cfg) as p:
            ctx = p.service._ctx
            r, w = await asyncio.open_connection("127.0.0.1", p.port)
            await r.readexactly(len(greeting()))
            w.write(response(CLIENT_PROTOCOL_41 | CLIENT_SSL))  # and no ClientHello yet
            for _ in range(500):
                (client,) = ctx.conns
                if getattr(client, "securing", False):
                    break
                await asyncio.sleep(0.01)
            asked.set()
            assert await asyncio.wait_for(r.read(100), 10) == b""  # no cleartext ERR
            for _ in range(500):
                if not ctx.conns:
                    break
                await asyncio.sleep(0.01)
            assert not ctx.conns and ctx.stats.connections == 0
            assert ctx.stats.protocol_errors == 1
            w.close()
    finally:
        server.close()
