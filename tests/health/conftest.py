"""Fixtures for the health tests: real back ends on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import trustme

from quiesce import _accel
from tests.health.servers import HttpBackend, UdpEcho

# QUIESCE_PURE=1 asks for the Python path alone: the c runs are not even made.
ENGINES = ["python"] if _accel.PURE else ["c", "python"]


@pytest.fixture(params=ENGINES, autouse=True)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every health test runs twice: plain TCP/HTTP checks on the C engine
    (``quiesce._checkfast``; skipped when it is not built, not run with ``QUIESCE_PURE=1``),
    and on the pure-Python path, as when the extension is missing."""
    from quiesce.health.probes import fast

    if request.param == "c":
        if fast.checkfast is None:
            pytest.skip("quiesce._checkfast is not built")
    else:
        monkeypatch.setattr(fast, "checkfast", None)
    return str(request.param)


@pytest.fixture
async def http_backend() -> AsyncIterator[HttpBackend]:
    backend = await HttpBackend().start()
    yield backend
    await backend.stop()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_backend(ca: trustme.CA) -> AsyncIterator[HttpBackend]:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    backend = await HttpBackend().start(ssl=ctx)
    yield backend
    await backend.stop()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: object) -> Iterator[str]:
    with ca.cert_pem.tempfile() as path:
        yield path


@pytest.fixture
async def udp_echo() -> AsyncIterator[UdpEcho]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    yield proto
    transport.close()


@pytest.fixture
def closed_port() -> int:
    """A port with nothing listening (TCP and UDP): bound, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root / CAP_NET_RAW")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async health test runs on both loops: ``quiesce run`` uses uvloop."""
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
