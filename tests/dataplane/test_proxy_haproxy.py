"""PROXY protocol v1 and v2 on the wire against HAProxy 2.6 (issue 17, item 5).

The client connects from 127.0.0.2, the proxies from 127.0.0.1, so the address a back end
sees says whether the header carried it: HAProxy as the sender (``server … send-proxy`` /
``send-proxy-v2``) in front of an ``accept_proxy`` service, whose back end reads
X-Forwarded-For; HAProxy as the receiver (``bind … accept-proxy``, ``X-Src: %[src]``) behind
a pool with ``send_proxy``, for an http and a tcp service. A connection from outside
``trusted_proxies`` and a malformed header are refused (tests/dataplane/test_proxy_accept.py
has those on raw sockets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.backend import Backend
from tests.support.haproxy import HAProxy, available
from tests.support.proxy import make_config, start_proxy

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(not available(), reason="needs haproxy"),
]

CLIENT = "127.0.0.2"  # the client's own address, not the proxies'


async def get(port: int, path: str = "/") -> bytes:
    """One request from 127.0.0.2, the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(CLIENT, 0))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    return data


def receiver(backend: Backend) -> str:
    """HAProxy taking a PROXY header (``accept-proxy``), telling the back end its ``src``."""
    return (
        "frontend fe\n    mode http\n    bind fd@{fd} accept-proxy\n"
        "    http-request set-header X-Src %[src]\n    default_backend be\n"
        f"backend be\n    mode http\n    server b {backend.address}\n"
    )


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
async def test_haproxy_sends_quiesce_accepts(tmp_path: Path, send: str) -> None:
    async with Backend() as backend:
        cfg = make_config(
            [backend.address],
            service={"accept_proxy": True, "trusted_proxies": ["127.0.0.1/32"]},
        )
        async with start_proxy(cfg) as q:
            sections = (
                "frontend fe\n    mode http\n    bind fd@{fd}\n    default_backend be\n"
                f"backend be\n    mode http\n    server q 127.0.0.1:{q.port} {send}\n"
            )
            async with HAProxy(tmp_path, sections) as h:
                assert h.port is not None
                answer = await get(h.port, "/a")
        assert answer.startswith(b"HTTP/1.1 200"), answer
        [seen] = backend.requests
        assert seen.headers["x-forwarded-for"] == CLIENT
        assert q.service.stats.proxy_refused == 0


@pytest.mark.parametrize("protocol", ["http", "tcp"])
@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_quiesce_sends_haproxy_accepts(tmp_path: Path, protocol: str, version: str) -> None:
    async with Backend() as backend:
        async with HAProxy(tmp_path, receiver(backend)) as h:
            assert h.port is not None
            cfg = make_config(
                [f"127.0.0.1:{h.port}"], protocol=protocol, pool={"send_proxy": version}
            )
            async with start_proxy(cfg) as q:
                answers = [await get(q.port, f"/{i}") for i in range(2)]
        for answer in answers:
            assert answer.startswith(b"HTTP/1.1 200"), answer
        assert [r.headers["x-src"] for r in backend.requests] == [CLIENT, CLIENT]


async def test_haproxy_to_quiesce_tcp_to_haproxy(tmp_path: Path) -> None:
    """HAProxy (send-proxy-v2) → a tcp service with accept_proxy and send_proxy v1 →
    HAProxy (accept-proxy): the client's address crosses both hops."""
    async with Backend() as backend:
        async with HAProxy(tmp_path, receiver(backend)) as h2:
            cfg = make_config(
                [f"127.0.0.1:{h2.port}"],
                protocol="tcp",
                pool={"send_proxy": "v1"},
                service={"accept_proxy": True, "trusted_proxies": ["127.0.0.0/8"]},
            )
            async with start_proxy(cfg) as q:
                first = (
                    "frontend fe\n    mode tcp\n    bind fd@{fd}\n    default_backend be\n"
                    f"backend be\n    mode tcp\n    server q 127.0.0.1:{q.port} send-proxy-v2\n"
                )
                async with HAProxy(tmp_path, first) as h1:
                    assert h1.port is not None
                    answer = await get(h1.port)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert [r.headers["x-src"] for r in backend.requests] == [CLIENT]
