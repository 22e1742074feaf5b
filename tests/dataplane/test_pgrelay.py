"""The postgresql relay on loopback (quiesce.dataplane.pgrelay) against a scripted server: a
server or a client breaking the framing closes that connection only, with a
``protocol_error`` event; ``max_message_size`` is enforced. Real PostgreSQL and drivers:
tests/e2e/test_postgresql.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from quiesce.core.events import Event, EventKind
from quiesce.core.states import CloseMode
from quiesce.dataplane import pgrelay
from quiesce.dataplane.pg import GOODBYE
from tests.support import dbframers
from tests.support.proxy import make_config, start_proxy

# on the C framers and on the pure-Python ones (not on both HTTP head paths: no HTTP here)
pytestmark = [pytest.mark.loopback, pytest.mark.one_path]


framers = dbframers.relay(pgrelay)


READY = b"R\0\0\0\x08\0\0\0\0" + b"Z\0\0\0\x05I"


def msg(t: bytes, body: bytes = b"") -> bytes:
    return t + (len(body) + 4).to_bytes(4, "big") + body


def startup() -> bytes:
    body = (196608).to_bytes(4, "big") + b"user\0u\0\0"
    return (len(body) + 4).to_bytes(4, "big") + body


@contextlib.asynccontextmanager
async def fake_server(hold: asyncio.Event | None = None) -> AsyncIterator[int]:
    """Answers a start-up with AuthenticationOk + ReadyForQuery; a Query ``bad`` with a
    message of type 0x00, ``BEGIN`` with ReadyForQuery('T'), any other Query with
    CommandComplete + ReadyForQuery('I'). ``hold``: after the client's EOF, the connection
    stays open until it is set."""

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            n = int.from_bytes(await r.readexactly(4), "big")
            await r.readexactly(n - 4)
            w.write(READY)
            while True:
                t = await r.readexactly(1)
                n = int.from_bytes(await r.readexactly(4), "big")
                body = await r.readexactly(n - 4)
                if t == b"X":
                    break
                if body == b"bad\0":
                    w.write(b"\0\0\0\0\x05x")
                elif body == b"BEGIN\0":
                    w.write(msg(b"C", b"BEGIN\0") + msg(b"Z", b"T"))
                else:
                    w.write(msg(b"C", b"SELECT 1\0") + msg(b"Z", b"I"))
        except asyncio.IncompleteReadError:
            if hold is not None:
                await hold.wait()
        except ConnectionError:
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
    w.write(startup())
    assert await r.readexactly(len(READY)) == READY
    return r, w


async def query(r: asyncio.StreamReader, w: asyncio.StreamWriter, sql: bytes) -> bytes:
    w.write(msg(b"Q", sql + b"\0"))
    return await asyncio.wait_for(r.read(100), 10)


async def test_framing_errors_close_that_connection_only() -> None:
    async with fake_server() as port:
        cfg = make_config(
            [f"127.0.0.1:{port}"], protocol="postgresql", service={"max_message_size": 1024}
        )
        async with start_proxy(cfg) as p:
            events: list[Event] = []
            p.registry.listeners.append(events.append)
            (r1, w1), (r2, w2), (r3, w3) = [await connect(p.port) for _ in range(3)]

            # the server breaks the framing on connection 1
            assert await query(r1, w1, b"bad") == b""
            # a client message over max_message_size on connection 3
            w3.write(b"Q" + (5000).to_bytes(4, "big") + b"x" * 100)
            assert await asyncio.wait_for(r3.read(100), 10) == b""
            # connection 2 is untouched
            assert await query(r2, w2, b"SELECT 1") == msg(b"C", b"SELECT 1\0") + msg(b"Z", b"I")

            errors = [e for e in events if e.kind is EventKind.PROTOCOL_ERROR]
            reasons = sorted(str(e.reason) for e in errors)
            assert reasons == [
                "client sent a message of type b'Q' with length 5000",
                "server sent an unknown message type b'\\x00'",
            ]
            assert {(e.pool, e.server) for e in errors} == {("web", "s0")}
            assert p.service.stats.protocol_errors == 2

            # maintenance: connection 2 (idle, not fresh) gets 57P01 and is closed
            # (what set server … maintenance does to the table)
            p.table.close(p.registry.pool("web").server("s0"), CloseMode.AT_BOUNDARY)
            assert await asyncio.wait_for(r2.read(200), 10) == GOODBYE
            assert await asyncio.wait_for(r2.read(200), 10) == b""
            for w in (w1, w2, w3):
                w.close()


async def test_shutdown_ends_sessions_at_their_transaction_boundary() -> None:
    """quiesce stopping (Service.shutdown with a grace period): an idle session gets 57P01 at
    once, one in a transaction commits first; the shutdown ends with them, not at the grace."""
    async with (
        fake_server() as port,
        start_proxy(make_config([f"127.0.0.1:{port}"], protocol="postgresql")) as p,
    ):
        (r1, w1), (r2, w2) = [await connect(p.port) for _ in range(2)]
        await query(r1, w1, b"SELECT 1")
        assert await query(r2, w2, b"BEGIN") == msg(b"C", b"BEGIN\0") + msg(b"Z", b"T")
        stopping = asyncio.create_task(p.service.shutdown(30.0))
        assert await asyncio.wait_for(r1.read(200), 10) == GOODBYE
        assert not stopping.done()  # the transaction goes on
        w2.write(msg(b"Q", b"COMMIT\0"))
        committed = msg(b"C", b"SELECT 1\0") + msg(b"Z", b"I") + GOODBYE
        assert await asyncio.wait_for(r2.readexactly(len(committed)), 10) == committed
        await asyncio.wait_for(stopping, 10)
        for w in (w1, w2):
            w.close()


async def test_tls_after_an_ssl_request_split_and_after_a_gssenc_request(tmp_path: Path) -> None:
    """A service with tls: a GSSENCRequest is answered N, an SSLRequest split across reads
    then 'S', TLS starts with the service's certificate, and the session inside it is
    followed (maintenance's 57P01 comes over TLS)."""
    import ssl

    from tests.support.certs import Certs

    certs = Certs(tmp_path)
    cert, key = certs.leaf("pg", "127.0.0.1")
    tls = {"certificates": [{"cert": str(cert), "key": str(key)}]}
    async with fake_server() as port:
        cfg = make_config([f"127.0.0.1:{port}"], protocol="postgresql", service={"tls": tls})
        async with start_proxy(cfg) as p:
            r, w = await asyncio.open_connection("127.0.0.1", p.port)
            w.write(b"\0\0\0\x08\x04\xd2\x16\x30")  # GSSENCRequest
            assert await asyncio.wait_for(r.readexactly(1), 10) == b"N"
            w.write(b"\0\0\0\x08")  # SSLRequest, in two reads
            await w.drain()
            await asyncio.sleep(0.05)  # likely read alone (the test passes either way)
            w.write(b"\x04\xd2\x16\x2f")
            assert await asyncio.wait_for(r.readexactly(1), 10) == b"S"
            client = ssl.create_default_context(cafile=str(certs.ca_file))
            await w.start_tls(client, server_hostname="127.0.0.1")
            w.write(startup())
            assert await asyncio.wait_for(r.readexactly(len(READY)), 10) == READY
            assert await query(r, w, b"SELECT 1") == msg(b"C", b"SELECT 1\0") + msg(b"Z", b"I")
            p.table.close(p.registry.pool("web").server("s0"), CloseMode.AT_BOUNDARY)
            assert await asyncio.wait_for(r.read(200), 10) == GOODBYE
            w.close()


def test_scram_plus_is_taken_out_of_a_tls_servers_offer() -> None:
    """Behind TLS to the server the relay takes SCRAM-SHA-256-PLUS out of the server's SASL
    offer (channel binding cannot span the relay), rewriting that message's length, and stops
    looking once the authentication has ended."""
    from types import SimpleNamespace

    strip = pgrelay._PgTlsUpstream._no_channel_binding
    sasl = msg(b"R", (10).to_bytes(4, "big") + b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0")
    state = SimpleNamespace(auth=True)
    before = msg(b"N", b"SNOTICE\0\0")
    assert strip(state, before + sasl) == before + msg(
        b"R", (10).to_bytes(4, "big") + b"SCRAM-SHA-256\0\0"
    )
    assert state.auth
    ok = msg(b"R", (0).to_bytes(4, "big"))
    assert strip(state, ok + msg(b"Z", b"I")) == ok + msg(b"Z", b"I")
    assert not state.auth  # AuthenticationOk: nothing more is looked at
    split = SimpleNamespace(auth=True)
    assert strip(split, sasl[:7]) == sasl[:7]  # split by the read: passed as it is


async def test_maintenance_after_the_servers_eof_on_a_terminated_session() -> None:
    """A client sent Terminate and has not closed yet (pgbench -C, its thread descheduled);
    the server closed at once and the relay passed its EOF on (``write_eof`` to the client).
    Maintenance then reaches that session (``done``): no goodbye is written after that EOF
    (asyncio and uvloop raise RuntimeError: 'Cannot call write() after write_eof()', which
    made ``set server … maintenance`` a 500 and left the server's other sessions unmarked),
    and the other session still gets its 57P01."""
    async with (
        fake_server() as port,
        start_proxy(make_config([f"127.0.0.1:{port}"], protocol="postgresql")) as p,
    ):
        (r1, w1), (r2, w2) = [await connect(p.port) for _ in range(2)]
        await query(r2, w2, b"SELECT 1")  # idle, not fresh: closed at once
        w1.write(msg(b"X"))  # Terminate, the socket left open
        assert await asyncio.wait_for(r1.read(100), 10) == b""  # the server's EOF
        server = p.registry.pool("web").server("s0")
        assert server.connections == 2  # the terminated one is still the server's
        p.table.close(server, CloseMode.AT_BOUNDARY)
        assert await asyncio.wait_for(r2.read(200), 10) == GOODBYE
        assert await asyncio.wait_for(r2.read(200), 10) == b""
        w1.close()
        w2.close()


async def test_maintenance_after_the_clients_eof_on_an_idle_session() -> None:
    """The other direction: a client shut its sending side (its EOF passed on to the server,
    which keeps the connection open): maintenance closes the idle session with the client's
    57P01 and no Terminate written after the EOF passed to the server."""
    hold = asyncio.Event()
    async with (
        fake_server(hold) as port,
        start_proxy(make_config([f"127.0.0.1:{port}"], protocol="postgresql")) as p,
    ):
        r, w = await connect(p.port)
        await query(r, w, b"SELECT 1")
        server = p.registry.pool("web").server("s0")
        (conn,) = p.table.busy[server]
        w.write_eof()
        for _ in range(1000):  # the relay passes the EOF on
            if getattr(conn, "half", 0) & 1:
                break
            await asyncio.sleep(0.005)
        assert getattr(conn, "half", 0) == 1
        p.table.close(server, CloseMode.AT_BOUNDARY)
        assert await asyncio.wait_for(r.read(200), 10) == GOODBYE
        assert await asyncio.wait_for(r.read(200), 10) == b""
        hold.set()
        w.close()
