"""TLS on the data plane with in-process clients (issue 16, items 1, 2 and 6): httpx and
Python's ssl against a TLS listener; SNI picks the certificate; client certificates reach
the server as X-Forwarded-Client-Cert; TLS to back ends; bad input answered, nothing
crashes; certificates re-read by a reload without dropping a connection."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from quiesce.core.admin import AdminCommand
from quiesce.core.states import Admin, Cause
from quiesce.dataplane.service import make_context
from quiesce.frontends.metrics import build_collector_registry, render
from tests.dataplane.backend import Backend, encode_frame, read_frame
from tests.dataplane.conftest import make_config, start_proxy, wait_for
from tests.support.certs import Certs

pytestmark = pytest.mark.loopback


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    c = Certs(tmp_path)
    c.leaf("a", "a.example", "localhost", "127.0.0.1")
    c.leaf("b", "b.example", "*.b.example")
    c.leaf("client", "client.example", common_name="alice")
    return c


def tls_service(**extra: Any) -> dict[str, Any]:
    certificates = [{"cert": "a.pem", "key": "a.key"}, {"cert": "b.pem", "key": "b.key"}]
    return {"tls": {"certificates": certificates, **extra}}


def client_ctx(certs: Certs, cert: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca_file))
    if cert:
        ctx.load_cert_chain(certs.dir / f"{cert}.pem", certs.dir / f"{cert}.key")
    return ctx


async def handshake(port: int, ctx: ssl.SSLContext, name: str) -> dict[str, Any]:
    """The certificate the listener shows for ``name``, and the ALPN protocol chosen."""
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
    obj = writer.get_extra_info("ssl_object")
    out = {"names": [v for _, v in obj.getpeercert()["subjectAltName"]]}
    out["alpn"] = obj.selected_alpn_protocol()
    writer.close()
    return out


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with Backend("a") as b:
        yield b


async def test_https_keep_alive_with_forwarded_proto(
    certs: Certs, tmp_path: Path, backend: Backend
) -> None:
    raw = make_config([backend.address], service=tls_service())
    async with start_proxy(raw, base_dir=tmp_path) as p:
        url = f"https://localhost:{p.port}"
        async with httpx.AsyncClient(verify=client_ctx(certs)) as client:
            for _ in range(3):
                r = await client.get(url + "/headers")
                assert r.status_code == 200
                seen = json.loads(r.content)
                assert seen["x-forwarded-proto"] == "https"
                assert "x-forwarded-client-cert" not in seen
        assert backend.connections == 1  # upstream keep-alive too
        assert p.service.stats.connections_total == 1  # one TLS connection, three requests


async def test_sni_picks_the_certificate_and_unknown_names_get_the_default(
    certs: Certs, tmp_path: Path, backend: Backend
) -> None:
    raw = make_config([backend.address], service=tls_service())
    async with start_proxy(raw, base_dir=tmp_path) as p:
        a = await handshake(p.port, client_ctx(certs), "a.example")
        assert "a.example" in a["names"] and a["alpn"] == "http/1.1"  # alpn: [http/1.1] by default
        assert "b.example" in (await handshake(p.port, client_ctx(certs), "b.example"))["names"]
        wild = await handshake(p.port, client_ctx(certs), "x.b.example")
        assert "*.b.example" in wild["names"]
        unknown = await handshake(p.port, client_ctx(certs), "nobody.example")
        assert "a.example" in unknown["names"]  # the first certificate is the default


async def test_a_verified_client_certificate_reaches_the_server(
    certs: Certs, tmp_path: Path, backend: Backend
) -> None:
    raw = make_config([backend.address], service=tls_service(client_ca="ca.pem", verify="optional"))
    async with start_proxy(raw, base_dir=tmp_path) as p:
        url = f"https://localhost:{p.port}/headers"
        forged = {"X-Forwarded-Client-Cert": 'Subject="CN=root"'}
        async with httpx.AsyncClient(verify=client_ctx(certs, "client")) as client:
            seen = json.loads((await client.get(url, headers=forged)).content)
            assert seen["x-forwarded-client-cert"].startswith('Subject="CN=alice,')
            # the pure-Python path (a body: not the C fast path) strips it the same way
            r = await client.post(url, headers=forged, content=b"x")
            assert json.loads(r.content)["x-forwarded-client-cert"].startswith('Subject="CN=alice,')
        async with httpx.AsyncClient(verify=client_ctx(certs)) as client:  # optional: no cert
            seen = json.loads((await client.get(url, headers=forged)).content)
            assert "x-forwarded-client-cert" not in seen


async def test_verify_required_refuses_a_client_without_a_certificate(
    certs: Certs, tmp_path: Path, backend: Backend
) -> None:
    raw = make_config([backend.address], service=tls_service(client_ca="ca.pem", verify="required"))
    async with start_proxy(raw, base_dir=tmp_path) as p:
        url = f"https://localhost:{p.port}/"
        async with httpx.AsyncClient(verify=client_ctx(certs)) as client:
            with pytest.raises(httpx.HTTPError):
                await client.get(url)
        async with httpx.AsyncClient(verify=client_ctx(certs, "client")) as client:
            assert (await client.get(url)).status_code == 200
        await wait_for(lambda: p.service.stats.tls_failed >= 1)


async def test_plain_http_to_a_tls_port_is_a_400(
    certs: Certs, tmp_path: Path, backend: Backend
) -> None:
    raw = make_config([backend.address], service=tls_service())
    async with start_proxy(raw, base_dir=tmp_path) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = await asyncio.wait_for(reader.read(), 10)
        assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        head, body = got.split(b"\r\n\r\n", 1)
        assert body == b"400 Bad Request: a plain HTTP request to an HTTPS port\n"
        assert f"Content-Length: {len(body)}".encode() in head
        writer.close()
        assert p.service.stats.tls_refused == 1
        # garbage that is neither: closed without an answer
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"\x00\x01\x02")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        # a broken handshake: closed, counted
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"\x16\x03\x01\x00\x05hello")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await wait_for(lambda: p.service.stats.tls_failed == 1)
        async with httpx.AsyncClient(verify=client_ctx(certs)) as client:
            assert (await client.get(f"https://localhost:{p.port}/")).status_code == 200
        app = SimpleNamespace(registry=p.registry, services={"web": p.service})
        text = render(build_collector_registry(app))[0].decode()
        assert 'quiesce_service_tls_errors_total{kind="handshake",service="web"} 1.0' in text
        assert 'quiesce_service_tls_errors_total{kind="cleartext",service="web"} 2.0' in text


async def test_a_client_hello_to_a_cleartext_port_is_answered_and_closed(
    certs: Certs, backend: Backend
) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(verify=client_ctx(certs)) as client:
                await client.get(f"https://localhost:{p.port}/")
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"r" * 40)
        got = await asyncio.wait_for(reader.read(), 10)
        assert got.startswith(b"HTTP/1.1 400 ")
        writer.close()
        async with httpx.AsyncClient() as client:
            assert (await client.get(p.url + "/")).status_code == 200
        assert backend.paths == ["/"]


async def test_a_tls_connection_is_never_parked(
    certs: Certs, tmp_path: Path, backend: Backend
) -> None:
    raw = make_config([backend.address], service=tls_service())
    async with start_proxy(raw, base_dir=tmp_path) as p:
        p.service.park_after = 0.0
        async with httpx.AsyncClient(verify=client_ctx(certs)) as client:
            url = f"https://localhost:{p.port}/"
            assert (await client.get(url)).status_code == 200
            sweeps = 0

            def swept() -> bool:
                nonlocal sweeps
                sweeps += 1
                return sweeps > 30

            await wait_for(swept, interval=0.05)  # a second and a half of sweeps
            assert p.service.parked == 0
            assert (await client.get(url)).status_code == 200
        assert p.service.stats.connections_total == 1


async def test_tls_to_the_back_end_verified_with_the_pool_ca(certs: Certs, tmp_path: Path) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs.dir / "b.pem", certs.dir / "b.key")
    async with Backend("secure", tls=server_ctx) as b:
        pool = {"tls": {"ca": "ca.pem", "sni": "api.b.example"}}
        async with start_proxy(make_config([b.address], pool=pool), base_dir=tmp_path) as p:
            async with httpx.AsyncClient() as client:
                for _ in range(3):
                    r = await client.get(p.url + "/headers")
                    assert r.status_code == 200, r.content
                    assert json.loads(r.content)["x-forwarded-proto"] == "http"
            assert b.connections == 1  # pooled: one TLS connection for three requests
        # the wrong name: the certificate does not match, so no request is sent (502);
        # verify: false accepts it
        for tls, status in [({"ca": "ca.pem", "sni": "a.example"}, 502), ({"verify": False}, 200)]:
            raw = make_config([b.address], pool={"tls": tls})
            async with start_proxy(raw, base_dir=tmp_path) as p, httpx.AsyncClient() as client:
                assert (await client.get(p.url + "/")).status_code == status


async def test_a_reload_serves_the_renewed_certificate_to_new_handshakes_only(
    certs: Certs, tmp_path: Path, backend: Backend
) -> None:
    raw = make_config([backend.address], service=tls_service())
    async with start_proxy(raw, base_dir=tmp_path) as p:
        old = httpx.AsyncClient(verify=client_ctx(certs))
        url = f"https://localhost:{p.port}/"
        assert (await old.get(url)).status_code == 200
        (tmp_path / "renewed").mkdir()
        renewed = Certs(tmp_path / "renewed")  # another CA: tells the two apart
        cert, key = renewed.leaf("a", "a.example", "localhost")
        (tmp_path / "a.pem").write_bytes(cert.read_bytes())
        (tmp_path / "a.key").write_bytes(key.read_bytes())
        svc = p.service
        fresh = make_context(
            "web",
            svc.config,
            p.registry,
            p.table,
            asyncio.get_running_loop(),
            router=None,
            base_dir=tmp_path,
        )
        svc.reconfigure(fresh)
        assert (await old.get(url)).status_code == 200  # the established connection carries on
        with pytest.raises(httpx.ConnectError):  # a new one gets the new certificate
            async with httpx.AsyncClient(verify=client_ctx(certs)) as c:
                await c.get(url)
        async with httpx.AsyncClient(verify=client_ctx(renewed)) as c:
            assert (await c.get(url)).status_code == 200
        await old.aclose()
        stats = p.service.stats
        assert (stats.connections_total, stats.tls_failed) == (2, 1)  # the refused handshake


async def test_a_rolling_drain_over_tls_loses_no_request(certs: Certs, tmp_path: Path) -> None:
    async with Backend("a") as a, Backend("b") as b, Backend("c") as c:
        backends = [a, b, c]
        raw = make_config([x.address for x in backends], service=tls_service())
        async with start_proxy(raw, base_dir=tmp_path) as p:
            url = f"https://localhost:{p.port}/"
            ok: list[str] = []
            errors: list[str] = []
            stop = asyncio.Event()

            async def load(client: httpx.AsyncClient) -> None:
                while not stop.is_set():
                    try:
                        r = await client.get(url)
                    except httpx.HTTPError as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    if r.status_code == 200:
                        ok.append(r.headers["x-server"])
                    else:
                        errors.append(f"HTTP {r.status_code}")

            keep = httpx.AsyncClient(verify=client_ctx(certs))
            fresh = httpx.AsyncClient(  # a new TLS handshake per request
                verify=client_ctx(certs), limits=httpx.Limits(max_keepalive_connections=0)
            )
            async with keep, fresh:
                workers = [asyncio.create_task(load(cl)) for cl in (keep, keep, keep, fresh)]
                try:
                    await wait_for(lambda: len(set(ok)) == 3, 30)
                    for server in p.registry.pool("web").servers:
                        for to in (Admin.DRAIN, Admin.MAINTENANCE, Admin.ENABLED):
                            p.registry.admin_command(server, AdminCommand(to, "t", cause=Cause.API))
                            if to is Admin.DRAIN:
                                await wait_for(lambda s=server: s.connections == 0, 30)  # type: ignore[misc]
                            n = len(ok)
                            await wait_for(lambda n=n: len(ok) > n + 50, 30)  # type: ignore[misc]
                finally:
                    stop.set()
                    await asyncio.gather(*workers)
            assert errors == [], errors[:5]
            assert len(ok) > 300 and set(ok) == {"a", "b", "c"}


async def test_a_tcp_relay_to_a_tls_pool_survives_a_half_close(
    certs: Certs, tmp_path: Path
) -> None:
    """asyncio cannot half-close TLS: the client's EOF is not passed on to a TLS server, and
    the answer still comes back."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs.dir / "a.pem", certs.dir / "a.key")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(4)
        writer.write(data[::-1])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        raw = make_config([address], protocol="tcp", pool={"tls": {"ca": "ca.pem"}})
        async with start_proxy(raw, base_dir=tmp_path) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(b"ping")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 10) == b"gnip"
            writer.close()
            await wait_for(lambda: p.service.connections == 0)
    finally:
        server.close()


def fetch_blocking(
    port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLSession | None, bool, bytes]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s,
    ):
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return s.session, s.session_reused, data


async def test_sessions_resume_with_tickets(certs: Certs, tmp_path: Path, backend: Backend) -> None:
    raw = make_config([backend.address], service=tls_service())
    async with start_proxy(raw, base_dir=tmp_path) as p:
        ctx = client_ctx(certs)
        session, reused, data = await asyncio.to_thread(fetch_blocking, p.port, ctx)
        assert data.endswith(b"hello from a\n") and not reused and session is not None
        _, reused, data = await asyncio.to_thread(fetch_blocking, p.port, ctx, session)
        assert reused and data.endswith(b"hello from a\n")


async def test_a_websocket_tunnel_over_tls_both_ways(certs: Certs, tmp_path: Path) -> None:
    """A TLS listener, and a TLS back end: the 101 tunnel relays frames between two TLS
    connections, and ends cleanly."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs.dir / "a.pem", certs.dir / "a.key")
    async with Backend("ws", tls=server_ctx) as b:
        pool = {"tls": {"ca": "ca.pem", "sni": "a.example"}}
        raw = make_config([b.address], pool=pool, service=tls_service())
        async with start_proxy(raw, base_dir=tmp_path) as p:
            ctx = client_ctx(certs)
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", p.port, ssl=ctx, server_hostname="a.example"
            )
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
                + base64.b64encode(os.urandom(16))
                + b"\r\n\r\n"
                + encode_frame(0x1, b"early", mask=True)
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 101")
            buf = bytearray()
            assert await asyncio.wait_for(read_frame(reader, buf), 10) == (0x1, b"early")
            for msg in (b"hello", b"x" * 70000):
                writer.write(encode_frame(0x2, msg, mask=True))
                assert await asyncio.wait_for(read_frame(reader, buf), 10) == (0x2, msg)
            writer.write(encode_frame(0x8, b"", mask=True))
            assert await asyncio.wait_for(read_frame(reader, buf), 10) == (0x8, b"")
            writer.close()
            server = p.registry.pool("web").server("s0")
            await wait_for(lambda: server.connections == 0 and p.service.connections == 0)


async def test_optional_refuses_a_certificate_from_another_ca(
    certs: Certs, tmp_path: Path, backend: Backend
) -> None:
    raw = make_config([backend.address], service=tls_service(client_ca="ca.pem", verify="optional"))
    (tmp_path / "other").mkdir()
    stranger = Certs(tmp_path / "other")
    cert, key = stranger.leaf("client", "client.example", common_name="mallory")
    ctx = client_ctx(certs)
    ctx.load_cert_chain(cert, key)
    async with start_proxy(raw, base_dir=tmp_path) as p:
        async with httpx.AsyncClient(verify=ctx) as client:
            with pytest.raises(httpx.HTTPError):
                await client.get(f"https://localhost:{p.port}/")
        await wait_for(lambda: p.service.stats.tls_failed == 1)
        assert backend.paths == []


async def test_big_bodies_both_ways_over_tls_with_back_pressure(
    certs: Certs, tmp_path: Path, backend: Backend
) -> None:
    raw = make_config([backend.address], service=tls_service())
    async with start_proxy(raw, base_dir=tmp_path) as p:
        url = f"https://localhost:{p.port}"
        body = os.urandom(8 * 1024 * 1024)
        async with httpx.AsyncClient(verify=client_ctx(certs), timeout=60) as client:
            r = await client.post(url + "/sink", content=body)
            assert r.status_code == 200
            assert hashlib.sha256(body).hexdigest() in r.text
            size = 16 * 1024 * 1024
            async with client.stream("GET", url + f"/size/{size}") as r:
                got = 0
                async for chunk in r.aiter_bytes():
                    got += len(chunk)
                    if got < 1024 * 1024:
                        await asyncio.sleep(0.01)  # a slow reader first: the proxy must wait
            assert got == size


def close_notify_after(port: int, ctx: ssl.SSLContext, request: bytes, before: Any = None) -> bytes:
    """A TLS client that sends ``request`` (maybe none), calls ``before``, then sends its
    close_notify (a TLS half-close, as ``openssl s_client`` does at the end of its input), then
    reads to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")

        def pump(step: Any) -> Any:
            while True:
                try:
                    out = step()
                except ssl.SSLWantReadError:
                    raw.sendall(outgoing.read())
                    chunk = raw.recv(65536)
                    if chunk:
                        incoming.write(chunk)
                    else:
                        incoming.write_eof()
                    continue
                raw.sendall(outgoing.read())
                return out

        pump(obj.do_handshake)
        if request:
            pump(lambda: obj.write(request))
        if before is not None:
            before()
        try:
            obj.unwrap()  # sends close_notify, then wants the peer's
        except ssl.SSLWantReadError:
            pass
        raw.sendall(outgoing.read())
        data = b""
        while True:
            try:
                chunk = obj.read(65536)
            except ssl.SSLWantReadError:
                more = raw.recv(65536)
                if not more:
                    return data
                incoming.write(more)
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return data
            if not chunk:
                return data
            data += chunk


async def test_a_tls_client_closing_without_a_request_logs_no_warning(
    certs: Certs, tmp_path: Path, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """``echo | openssl s_client``: the handshake, then close_notify. Nothing is logged above
    debug; no "returning true from eof_received() has no effect when using ssl" either, nor
    for a client that half-closes after a request, before or after the service's protocol
    took the connection over (asyncio's TLS closes on a close_notify whatever it answers)."""
    raw = make_config([backend.address], service=tls_service())
    caplog.set_level("INFO")
    async with start_proxy(raw, base_dir=tmp_path) as p:
        ctx = client_ctx(certs)
        for _ in range(3):
            assert await asyncio.to_thread(close_notify_after, p.port, ctx, b"") == b""
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        await asyncio.to_thread(close_notify_after, p.port, ctx, request)
        # and once the request is with the server (the service's protocol has the connection)
        hold = b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"
        await asyncio.to_thread(
            close_notify_after, p.port, ctx, hold, lambda: backend.wait_holding(1)
        )
        backend.release()
        await wait_for(lambda: p.service.connections == 0)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= 30]
    assert warned == []
