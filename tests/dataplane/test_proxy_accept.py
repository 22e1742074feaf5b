"""``accept_proxy`` refusing what it must (issue 17, items 5 and 7), on raw loopback sockets:
a connection from outside ``trusted_proxies``, a malformed header, a spoofed one (a client
speaking HTTP straight to the port), one not whole within ``client_header_timeout``: each
closed with a log line and counted in ``proxy_refused``, the back end never reached. A v2
LOCAL header keeps the connection's own address. Config keys refused naming their path."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from types import SimpleNamespace

import pydantic
import pytest

from quiesce.config.models import Config
from quiesce.dataplane.proxyproto import v1, v2
from quiesce.frontends.metrics import build_collector_registry, render
from tests.dataplane.conftest import wait_for
from tests.support.backend import Backend
from tests.support.certs import Certs
from tests.support.proxy import make_config, start_proxy

pytestmark = pytest.mark.loopback


async def send(port: int, data: bytes) -> bytes:
    """Write ``data``, then everything the proxy answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        out = await asyncio.wait_for(reader.read(-1), 10)
    except ConnectionResetError:
        out = b""
    writer.close()
    return out


REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def accepting(backend: Backend, trusted: str = "127.0.0.0/8", **service: object) -> dict:  # type: ignore[type-arg]
    return make_config(
        [backend.address],
        service={"accept_proxy": True, "trusted_proxies": [trusted], **service},
    )


@pytest.mark.parametrize(
    ("first", "why"),
    [
        (REQUEST, "no PROXY header"),
        (b"PROXY TCP4 10.0.0.1 nothere 1 2\r\n" + REQUEST, "is not an IP address"),
        (b"PROXY TCP9 10.0.0.1 10.0.0.2 1 2\r\n" + REQUEST, "expected PROXY TCP4"),
    ],
)
async def test_malformed_or_spoofed_header_closed(
    first: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with Backend() as backend, start_proxy(accepting(backend)) as q:
        with caplog.at_level(logging.WARNING, logger="quiesce"):
            assert await send(q.port, first) == b""
        assert q.service.stats.proxy_refused == 1
    assert backend.requests == []
    assert any(why in r.getMessage() and "closed" in r.getMessage() for r in caplog.records)


async def test_untrusted_source_closed(caplog: pytest.LogCaptureFixture) -> None:
    async with Backend() as backend, start_proxy(accepting(backend, "10.0.0.0/8")) as q:
        header = v1(("192.0.2.7", 4000), ("127.0.0.1", q.port))
        with caplog.at_level(logging.WARNING, logger="quiesce"):
            assert await send(q.port, header + REQUEST) == b""
        assert q.service.stats.proxy_refused == 1
        # and an operator sees it in /metrics
        app = SimpleNamespace(registry=q.registry, services={"web": q.service})
        text = render(build_collector_registry(app))[0].decode()
        assert 'quiesce_service_proxy_refused_total{service="web"} 1.0' in text
    assert backend.requests == []
    assert any("not from trusted_proxies" in r.getMessage() for r in caplog.records)


async def test_incomplete_header_closed_at_the_header_timeout() -> None:
    async with (
        Backend() as backend,
        start_proxy(accepting(backend, client_header_timeout=0.2)) as q,
    ):
        assert await send(q.port, b"PROXY TCP4 192.0.2.7") == b""
        assert q.service.stats.proxy_refused == 1
    assert backend.requests == []


@pytest.mark.parametrize("protocol", ["http", "tcp"])
async def test_header_whole_in_pieces_then_request(protocol: str) -> None:
    async with Backend() as backend, start_proxy(accepting(backend, protocol=protocol)) as q:
        header = v2(("192.0.2.7", 4000), ("127.0.0.1", q.port))
        reader, writer = await asyncio.open_connection("127.0.0.1", q.port)
        for b in header:
            writer.write(bytes([b]))
            await writer.drain()
        writer.write(REQUEST)
        answer = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    if protocol == "http":
        assert backend.requests[0].headers["x-forwarded-for"] == "192.0.2.7"


async def test_local_header_keeps_the_connections_own_address() -> None:
    async with Backend() as backend, start_proxy(accepting(backend)) as q:
        answer = await send(q.port, v2(None, None) + REQUEST)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert backend.requests[0].headers["x-forwarded-for"] == "127.0.0.1"


async def test_rules_see_the_carried_source() -> None:
    rules = [{"if": {"source": ["192.0.2.0/24"]}, "then": {"respond": {"status": 403}}}]
    async with Backend() as backend, start_proxy(accepting(backend, rules=rules)) as q:
        blocked = await send(q.port, v1(("192.0.2.7", 1), ("127.0.0.1", q.port)) + REQUEST)
        passed = await send(q.port, v1(("198.51.100.1", 1), ("127.0.0.1", q.port)) + REQUEST)
    assert blocked.startswith(b"HTTP/1.1 403"), blocked
    assert passed.startswith(b"HTTP/1.1 200"), passed


@pytest.mark.parametrize(
    ("service", "pool", "where"),
    [
        ({"accept_proxy": True}, {}, "trusted_proxies: required"),
        ({"accept_proxy": True, "trusted_proxies": ["nope"]}, {}, "trusted_proxies.0"),
        ({}, {"send_proxy": "v3"}, "pools.web.send_proxy"),
        ({}, {"send_proxy": "v2", "max_idle_per_server": 8}, "max_idle_per_server:"),
    ],
)
def test_bad_keys_named(service: dict, pool: dict, where: str) -> None:  # type: ignore[type-arg]
    raw = make_config(["127.0.0.1:9"], service=service, pool=pool)
    with pytest.raises(pydantic.ValidationError) as err:
        Config.model_validate(raw)
    text = str(err.value).replace("\n", " ").replace("  ", " ")
    assert where.split(".")[-1] in text


async def test_header_before_tls(tmp_path: Path) -> None:
    """On a TLS listener the header comes first, in cleartext, then the handshake."""
    certs = Certs(tmp_path)
    certs.leaf("a", "a.example", "localhost", "127.0.0.1")
    tls = {"certificates": [{"cert": "a.pem", "key": "a.key"}]}
    async with (
        Backend() as backend,
        start_proxy(accepting(backend, tls=tls), base_dir=tmp_path) as q,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", q.port)
        writer.write(v1(("192.0.2.7", 4000), ("127.0.0.1", q.port)))
        await writer.drain()
        ctx = ssl.create_default_context(cafile=str(certs.ca_file))
        await writer.start_tls(ctx, server_hostname="localhost")
        writer.write(REQUEST)
        answer = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert backend.requests[0].headers["x-forwarded-for"] == "192.0.2.7"
    assert backend.requests[0].headers["x-forwarded-proto"] == "https"


async def test_a_proxied_connection_is_not_parked_and_keeps_its_address() -> None:
    async with Backend() as backend, start_proxy(accepting(backend)) as q:
        q.service.park_after = 0.0
        reader, writer = await asyncio.open_connection("127.0.0.1", q.port)
        writer.write(v2(("192.0.2.7", 4000), ("127.0.0.1", q.port)))
        keep = REQUEST.replace(b"Connection: close", b"Connection: keep-alive")
        for i in range(2):
            writer.write(keep)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            if i == 0:  # idle long enough to be parked, were it an ordinary connection
                sweeps = 0

                def swept() -> bool:
                    nonlocal sweeps
                    sweeps += 1
                    return sweeps > 20

                await wait_for(swept, interval=0.05)
                assert q.service.parked == 0
        writer.close()
    assert [r.headers["x-forwarded-for"] for r in backend.requests] == ["192.0.2.7"] * 2
