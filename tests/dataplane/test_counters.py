"""HAProxy's bin/bout and ctime/rtime/ttime on the wire (issue 18, item 1).

Bytes are the client's bytes on the wire, as HAProxy counts them: what the client sent
(``bin``) and what it received (``bout``), the proxy's own response headers included
(``Connection``…), the headers it adds towards the server (``X-Forwarded-For``) not. Times
are lower bounds against a back end that waits a known time: the machine is shared.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from quiesce import _accel
from quiesce.core.admin import AdminCommand
from quiesce.core.states import Admin, Cause
from quiesce.frontends.metrics import build_collector_registry, render
from quiesce.frontends.runtime_socket.stats import Stats
from quiesce.state import traffic
from quiesce.state.traffic import NO_TRAFFIC, averages_ms
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import make_config, start_proxy, wait_for

pytestmark = pytest.mark.peers

DELAY = 0.3  # seconds the back ends wait before answering


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


def show_stat(p: object, pool: str) -> dict[str, dict[str, str]]:
    """``show stat`` rows of the proxy's service and pool, by svname."""
    app = SimpleNamespace(
        registry=p.registry,  # type: ignore[attr-defined]
        config=p.registry.config,  # type: ignore[attr-defined]
        services={"web": p.service},  # type: ignore[attr-defined]
    )
    text = Stats(app, time.time()).show_stat([])
    lines = text.splitlines()
    fields = lines[0][2:].split(",")
    rows = [dict(zip(fields, line.split(","), strict=False)) for line in lines[1:]]
    return {r["svname"]: r for r in rows if r["pxname"] in ("web", pool)}


def untouched() -> bool:
    """The shared zeros a server reads before its first request were never written."""
    return all(getattr(NO_TRAFFIC, f) == 0 for f in traffic.PyTraffic.__slots__)


async def test_l7_bytes_and_times(backends: list[Backend]) -> None:
    async with start_proxy(make_config([backends[0].address])) as p:
        s0 = p.registry.pool("web").servers[0]
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        sent = received = b""
        for path in (f"/slow/{DELAY}", "/"):  # a new upstream connection, then a reused one
            request = f"GET {path} HTTP/1.1\r\nHost: example\r\nX-Pad: {'x' * 100}\r\n\r\n"
            writer.write(request.encode())
            sent += request.encode()
            received += await read_response(reader)
            await wait_for(lambda: s0.requests_in_flight == 0)
        # exactly the bytes on the wire, for the server, its pool and the service
        assert (s0.bytes_in, s0.bytes_out) == (len(sent), len(received))
        stats = p.service.stats
        assert (stats.bytes_in, stats.bytes_out) == (len(sent), len(received))
        assert s0.traffic.timed == 2
        assert s0.traffic is s0.own_traffic and untouched()  # its own, made by its first
        # one connect measured, counted with the first request (the loop's clock has
        # millisecond ticks, as HAProxy's: a loopback connect is 0 ms)
        assert s0.traffic.ctime_at == 1
        ctime, rtime, ttime = averages_ms([s0])
        # two samples: the mean of DELAY and ~0, each at least half of DELAY
        assert rtime >= DELAY * 1000 / 2 - 1 and ttime >= rtime
        rows = show_stat(p, "web")
        server, backend, frontend = rows["s0"], rows["BACKEND"], rows["FRONTEND"]
        assert (server["bin"], server["bout"]) == (str(len(sent)), str(len(received)))
        assert (backend["bin"], backend["bout"]) == (server["bin"], server["bout"])
        assert (frontend["bin"], frontend["bout"]) == (server["bin"], server["bout"])
        for row in (server, backend):
            assert (row["ctime"], row["rtime"], row["ttime"]) == tuple(
                str(v) for v in (ctime, rtime, ttime)
            )
        writer.close()
        # the same bytes in the metrics (quiesce's names)
        app = SimpleNamespace(
            registry=p.registry, config=p.registry.config, services={"web": p.service}
        )
        text = render(build_collector_registry(app))[0].decode()
        assert f'quiesce_server_bytes_in_total{{pool="web",server="s0"}} {float(len(sent))}' in text
        assert f'quiesce_service_bytes_out_total{{service="web"}} {float(len(received))}' in text


async def test_l7_client_bytes_without_a_server(backends: list[Backend]) -> None:
    """A request answered by the proxy itself (no eligible server: the page) counts for the
    service, not for any server."""
    async with start_proxy(make_config([backends[0].address])) as p:
        s0 = p.registry.pool("web").servers[0]
        p.registry.admin_command(s0, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.API))
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        request = b"GET / HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n"
        writer.write(request)
        got = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await wait_for(lambda: p.service.stats.connections == 0)
        assert (p.service.stats.bytes_in, p.service.stats.bytes_out) == (len(request), len(got))
        assert (s0.bytes_in, s0.bytes_out, s0.traffic.timed) == (0, 0, 0)
        assert s0.own_traffic is None and s0.traffic is NO_TRAFFIC  # never served: none


class SlowEcho:
    """An L4 back end: reads until EOF, waits DELAY, answers what it got reversed, closes."""

    async def __aenter__(self) -> SlowEcho:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        await asyncio.sleep(DELAY)
        writer.write(data[::-1] + b"!")
        await writer.drain()
        writer.close()


@pytest.fixture
async def slow_echo() -> AsyncIterator[SlowEcho]:
    async with SlowEcho() as e:
        yield e


@pytest.mark.one_path
async def test_l4_bytes_and_times(slow_echo: SlowEcho) -> None:
    async with start_proxy(make_config([slow_echo.address], protocol="tcp")) as p:
        s0 = p.registry.pool("web").servers[0]
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        payload = b"0123456789" * 1000
        writer.write(payload)
        writer.write_eof()
        got = await asyncio.wait_for(reader.read(), 10)
        assert got == payload[::-1] + b"!"
        writer.close()
        await wait_for(lambda: s0.traffic.timed == 1)
        assert (s0.bytes_in, s0.bytes_out) == (len(payload), len(got))
        stats = p.service.stats
        assert (stats.bytes_in, stats.bytes_out) == (len(payload), len(got))
        _ctime, rtime, ttime = averages_ms([s0])
        assert rtime == 0  # HAProxy: no response time in TCP mode
        assert ttime >= DELAY * 1000 - 1  # the session lasted at least the back end's wait
        assert s0.traffic.ctime_at == 1  # its connect was measured
        assert s0.traffic is s0.own_traffic and untouched()
        row = show_stat(p, "web")["s0"]
        assert (row["bin"], row["bout"], row["ttime"]) == (
            str(len(payload)),
            str(len(got)),
            str(ttime),
        )


@pytest.mark.one_path
async def test_l4_long_relay_counts_as_it_goes(slow_echo: SlowEcho) -> None:
    """A relay still open shows its bytes after a sweep, not only when it ends."""
    async with start_proxy(make_config([slow_echo.address], protocol="tcp")) as p:
        s0 = p.registry.pool("web").servers[0]
        _reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"x" * 500)
        await writer.drain()
        await wait_for(lambda: s0.bytes_in == 500, timeout=10)  # the sweep (1 s) folds it
        assert s0.traffic.timed == 0  # still open: not timed yet
        writer.close()


@pytest.mark.one_path
def test_account_c_and_python_agree() -> None:
    """quiesce._httpfast's account and Traffic against the pure twins, sample by sample."""
    if _accel.httpfast is None:
        pytest.skip("quiesce._httpfast not built")
    c_srv, c_svc = _accel.httpfast.Traffic(), _accel.httpfast.Traffic()
    p_srv, p_svc = traffic.PyTraffic(), traffic.PyTraffic()
    samples = [(120, 3400, 0.25, 0.5), (77, 0, -1.0, 0.0), (5, 10**12, 0.0, 3.0)] * 700
    for nin, nout, rtime, ttime in samples:
        _accel.httpfast.account(c_srv, c_svc, nin, nout, rtime, ttime)
        traffic.py_account(p_srv, p_svc, nin, nout, rtime, ttime)
        _accel.httpfast.account(None, c_svc, 1, 2, rtime, ttime)
        traffic.py_account(None, p_svc, 1, 2, rtime, ttime)
    for name in traffic.PyTraffic.__slots__:
        assert getattr(c_srv, name) == pytest.approx(getattr(p_srv, name), rel=1e-12), name
        assert getattr(c_svc, name) == pytest.approx(getattr(p_svc, name), rel=1e-12), name
    with pytest.raises(TypeError):
        _accel.httpfast.account(object(), c_svc, 1, 1, 0.0, 0.0)


@pytest.mark.one_path
def test_averages_are_over_about_the_last_1024_requests() -> None:
    """The first samples' plain mean; then the recent ones weigh: after 4096 samples of
    10 ms following 1000 of 1 s, the average is close to 10 ms (HAProxy's swrate)."""
    s = SimpleNamespace(traffic=traffic.Traffic())
    for _ in range(3):
        traffic.account(s.traffic, traffic.Traffic(), 0, 0, 0.2, 0.3)
    traffic.connected(s.traffic, 0.6)  # one connect in four requests
    traffic.account(s.traffic, traffic.Traffic(), 0, 0, 0.2, 0.3)
    assert averages_ms([s]) == (150, 200, 300)
    for _ in range(1000):
        traffic.account(s.traffic, traffic.Traffic(), 0, 0, 1.0, 1.0)
    assert averages_ms([s])[1] > 900
    for _ in range(4096):
        traffic.account(s.traffic, traffic.Traffic(), 0, 0, 0.01, 0.01)
    ctime, rtime, ttime = averages_ms([s])
    assert ctime == 0 and 10 <= rtime <= 30 and 10 <= ttime <= 30
