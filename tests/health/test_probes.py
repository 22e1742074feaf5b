"""Each probe type against real servers on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import trustme

from quiesce.config.models import HealthMonitor
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import SystemClock
from quiesce.core.states import Verdict
from quiesce.health.probes import StreamProber, Target, UdpProber
from tests.health.servers import HttpBackend, UdpEcho

pytestmark = pytest.mark.loopback

P, F, M = Verdict.PASS, Verdict.FAIL, Verdict.MAINTENANCE


def monitor(kind: str, **sub: Any) -> HealthMonitor:
    key = {"http": "http_monitor", "https": "https_monitor", "tcp": "tcp_monitor"}.get(
        kind, "udp_monitor"
    )
    fields: dict[str, Any] = {"type": kind, "send_interval": 1.0, "receive_timeout": 0.5}
    if sub:
        fields[key] = sub
    return HealthMonitor.model_validate(fields)


async def check(kind: str, port: int, host: str = "127.0.0.1", **sub: Any) -> CheckResult:
    prober = UdpProber(SystemClock()) if kind == "udp" else StreamProber(SystemClock())
    try:
        return await prober.check(Target(host, port), monitor(kind, **sub), "m")
    finally:
        prober.close()


# --- HTTP ----------------------------------------------------------------------------------


async def test_http_switches_between_pass_fail_maintenance(http_backend: HttpBackend) -> None:
    port = http_backend.port
    rules = {"maintenance_code": [503], "maintenance_response": "under construction"}
    r = await check("http", port, **rules)
    assert (r.verdict, r.reason, r.status_code) == (P, Reason.OK, 200)
    assert r.latency > 0 and r.detail.startswith("HTTP/1.1 200")
    assert http_backend.seen[-1].startswith(b"GET / HTTP/1.0\r\nHost: 127.0.0.1:")

    http_backend.mode = "503"
    r = await check("http", port, **rules)
    assert (r.verdict, r.reason, r.status_code) == (M, Reason.MAINTENANCE_RESPONSE_CODE_MATCH, 503)
    r = await check("http", port)  # without maintenance_code 503 is an ordinary failure
    assert (r.verdict, r.reason, r.status_code) == (F, Reason.RESPONSE_CODE_MISMATCH, 503)

    http_backend.mode = "construction"
    r = await check("http", port, **rules)
    assert (r.verdict, r.reason) == (M, Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH)

    http_backend.mode = "construction_late"  # the string starts after byte 2048
    r = await check("http", port, **rules)
    assert (r.verdict, r.reason) == (P, Reason.OK)

    http_backend.mode = "ok"
    r = await check("http", port, **rules)
    assert r.verdict is P


async def test_http_response_string_and_codes(http_backend: HttpBackend) -> None:
    r = await check("http", http_backend.port, http_response="hello")
    assert r.verdict is P
    r = await check("http", http_backend.port, http_response="goodbye")
    assert (r.verdict, r.reason) == (F, Reason.PAYLOAD_CONTENT_MISMATCH)
    http_backend.mode = "500"
    r = await check("http", http_backend.port, http_response_code=["5xx"])
    assert (r.verdict, r.status_code) == (P, 500)


async def test_http_refused_timeout_and_empty(http_backend: HttpBackend, closed_port: int) -> None:
    r = await check("http", closed_port)
    assert (r.verdict, r.reason) == (F, Reason.CONNECTION_REFUSED)
    http_backend.mode = "hang"
    r = await check("http", http_backend.port)
    assert (r.verdict, r.reason) == (F, Reason.TIMEOUT)
    assert 0.4 < r.latency < 2.0
    http_backend.mode = "close"
    r = await check("http", http_backend.port)
    assert (r.verdict, r.reason) == (F, Reason.MALFORMED_RESPONSE)


async def test_http_exact_request_adds_no_host(http_backend: HttpBackend) -> None:
    r = await check(
        "http", http_backend.port, http_request="GET /status HTTP/1.0", exact_http_request=True
    )
    assert r.verdict is P
    assert http_backend.seen[-1] == b"GET /status HTTP/1.0\r\n\r\n"


# --- HTTPS ---------------------------------------------------------------------------------


async def test_https_verify_on_with_ca(tls_backend: HttpBackend, ca_file: str) -> None:
    r = await check("https", tls_backend.port, ca=ca_file, sni="localhost")
    assert (r.verdict, r.status_code) == (P, 200)
    tls_backend.mode = "503"
    r = await check("https", tls_backend.port, ca=ca_file, maintenance_code=[503])
    assert (r.verdict, r.reason) == (M, Reason.MAINTENANCE_RESPONSE_CODE_MATCH)


async def test_https_verify_fails_without_ca_and_passes_with_verify_off(
    tls_backend: HttpBackend,
) -> None:
    r = await check("https", tls_backend.port)  # system trust store: trustme CA unknown
    assert (r.verdict, r.reason) == (F, Reason.TLS_ERROR)
    assert "certificate" in r.detail.lower()
    r = await check("https", tls_backend.port, verify=False)
    assert r.verdict is P


async def test_https_wrong_sni(tls_backend: HttpBackend, ca_file: str) -> None:
    r = await check("https", tls_backend.port, ca=ca_file, sni="wrong.example")
    assert (r.verdict, r.reason) == (F, Reason.TLS_ERROR)
    assert "wrong.example" in r.detail or "match" in r.detail.lower()
    assert tls_backend.seen == []  # no request went out over an unverified channel
    r = await check("https", tls_backend.port, verify=False, sni="wrong.example")
    assert r.verdict is P
    assert b"Host: wrong.example\r\n" in tls_backend.seen[-1]


async def test_https_client_cert(ca: trustme.CA, ca_file: str, tmp_path: Any) -> None:
    import ssl

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    backend = await HttpBackend().start(ssl=server_ctx)
    try:
        r = await check("https", backend.port, ca=ca_file)
        assert r.verdict is F  # the server demands a client certificate
        client = ca.issue_cert("health-checker.example")
        pem = tmp_path / "client.pem"
        pem.write_bytes(client.private_key_and_cert_chain_pem.bytes())
        r = await check("https", backend.port, ca=ca_file, client_cert={"cert": str(pem)})
        assert (r.verdict, r.status_code) == (P, 200)
    finally:
        await backend.stop()


async def test_https_unreadable_ca_file(tls_backend: HttpBackend, tmp_path: Any) -> None:
    r = await check("https", tls_backend.port, ca=str(tmp_path / "missing.pem"))
    assert (r.verdict, r.reason) == (F, Reason.TLS_ERROR)
    assert "cannot load the TLS settings" in r.detail


# --- TCP -----------------------------------------------------------------------------------


class Banner:
    def __init__(self) -> None:
        self.banner = b"220 mail.example ESMTP ready\r\n"
        self.accepted = 0
        self.got: list[bytes] = []
        self.port = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.write(self.banner)
        try:
            self.got.append(await asyncio.wait_for(reader.read(100), 2.0))
        except (TimeoutError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self) -> Banner:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_tcp_handshake_banner_and_maintenance(closed_port: int) -> None:
    async with Banner() as srv:
        r = await check("tcp", srv.port)
        assert (r.verdict, r.reason) == (P, Reason.OK)
        assert r.latency < 0.4  # the handshake suffices: no waiting for data
        r = await check("tcp", srv.port, tcp_response="ESMTP")
        assert r.verdict is P and r.latency < 0.4
        r = await check("tcp", srv.port, tcp_response="SSH-2.0")
        assert (r.verdict, r.reason) == (F, Reason.PAYLOAD_CONTENT_MISMATCH)
        r = await check("tcp", srv.port, tcp_request="QUIT\r\n", maintenance_response="421")
        assert r.verdict is P
        assert b"QUIT\r\n" in srv.got
        srv.banner = b"421 down for maintenance\r\n"
        r = await check("tcp", srv.port, tcp_response="220", maintenance_response="421")
        assert (r.verdict, r.reason) == (M, Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH)
    r = await check("tcp", closed_port)
    assert (r.verdict, r.reason) == (F, Reason.CONNECTION_REFUSED)


# --- UDP -----------------------------------------------------------------------------------


async def test_udp_echo_and_closed_port(udp_echo: UdpEcho, closed_port: int) -> None:
    r = await check("udp", udp_echo.port, udp_request="ping", udp_response="ping")
    assert (r.verdict, r.reason) == (P, Reason.OK)
    assert r.latency < 0.4
    r = await check("udp", udp_echo.port, udp_request="ping", udp_response="pong")
    assert (r.verdict, r.reason) == (F, Reason.PAYLOAD_CONTENT_MISMATCH)
    udp_echo.prefix = b"maintenance "
    r = await check(
        "udp", udp_echo.port, udp_request="ping", udp_response="ping", maintenance_response="maint"
    )
    assert (r.verdict, r.reason) == (M, Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH)

    r = await check("udp", closed_port, udp_request="ping", udp_response="ping")
    assert (r.verdict, r.reason) == (F, Reason.PORT_UNREACHABLE)
    assert r.latency < 0.4  # immediate, not a timeout
    r = await check("udp", closed_port, udp_request="ping")
    assert (r.verdict, r.reason) == (F, Reason.PORT_UNREACHABLE)


async def test_udp_silence(closed_port: int) -> None:
    loop = asyncio.get_running_loop()
    # a server that swallows datagrams
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        r = await check("udp", port, udp_request="ping", udp_response="pong")
        assert (r.verdict, r.reason) == (F, Reason.TIMEOUT)
        r = await check("udp", port, udp_request="ping")  # no reply expected
        assert (r.verdict, r.reason) == (P, Reason.OK)
    finally:
        transport.close()


@pytest.mark.parametrize("kind", ["http", "tcp"])
async def test_unresolvable_host(kind: str) -> None:
    r = await check(kind, 80, host="no-such-host.invalid")
    assert r.verdict is F
    assert r.reason in (Reason.CONNECTION_ERROR, Reason.TIMEOUT)


@pytest.mark.parametrize("engine", ["python"], indirect=True)  # the Python path's guard
async def test_a_bug_while_reading_fails_the_check_and_frees_the_socket(
    http_backend: HttpBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quiesce.health.classify import HttpRules

    def broken(self: HttpRules, reply: bytes) -> bool:
        raise RuntimeError("boom")

    monkeypatch.setattr(HttpRules, "complete", broken)
    prober = StreamProber(SystemClock())
    try:
        r = await prober.check(Target("127.0.0.1", http_backend.port), monitor("http"), "m")
        assert (r.verdict, r.reason) == (F, Reason.CONNECTION_ERROR)
        assert "RuntimeError: boom" in r.detail
        assert prober._fast is not None and prober._fast.checks == {}
    finally:
        prober.close()
