"""An h2 pool's servers misbehaving (issue 16, item 5): bad frames, a GOAWAY that refuses
the request, a refused stream, a GOAWAY and a close in the middle of a response, a response
without ``:status``. Each is answered cleanly (a refused request is sent again on a new
connection and served; the others get 502, or a response cut short as over HTTP/1.1) and
the proxy goes on serving (tests.support.h2server scripts the server)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from quiesce.dataplane.h2client.links import links_of
from tests.dataplane.conftest import make_config, start_proxy
from tests.support.h2server import H2Server

pytestmark = [pytest.mark.loopback, pytest.mark.one_path]


def first(what: str) -> Callable[[int, int], str]:
    """``what`` on the first connection, then a well-behaved server."""
    return lambda conn, req: what if conn == 1 else "ok"


async def test_bad_frames_get_502_and_the_next_request_is_served() -> None:
    async with H2Server("g", first("garbage")) as g:
        raw = make_config([g.address], pool={"protocol": "h2"})
        async with start_proxy(raw) as p, httpx.AsyncClient(timeout=10) as client:
            r = await client.get(p.url + "/")
            assert r.status_code == 502
            r = await client.get(p.url + "/")
            assert (r.status_code, r.text) == (200, "g:2")  # a new connection
            assert g.connections == 2


async def test_a_stream_refused_three_times_is_still_served_once() -> None:
    """A server may refuse again (it counts a stream until its handler is done): up to three
    resends; the fourth refusal is the exchange's (502)."""
    for refusals, status in ((3, 200), (4, 502)):
        behaviour = lambda conn, req, n=refusals: "reset" if req <= n else "ok"  # noqa: E731
        async with H2Server("r", behaviour) as r_server:
            raw = make_config([r_server.address], pool={"protocol": "h2"})
            async with start_proxy(raw) as p, httpx.AsyncClient(timeout=10) as client:
                r = await client.post(p.url + "/call", content=b"payload")
                assert r.status_code == status
                assert r_server.requests == min(refusals + 1, 4)


@pytest.mark.parametrize("what", ["refuse", "reset"])
async def test_a_refused_request_is_sent_again_whatever_its_method(what: str) -> None:
    """GOAWAY with last stream id 0, or RST_STREAM REFUSED_STREAM: not processed (RFC 9113
    8.7), so even a POST with a body is sent again, on the next connection."""
    if what == "refuse":
        behaviour = first("refuse")
    else:
        behaviour = lambda conn, req: "reset" if req == 1 else "ok"  # noqa: E731
    async with H2Server("r", behaviour) as r_server:
        raw = make_config([r_server.address], pool={"protocol": "h2"})
        async with start_proxy(raw) as p, httpx.AsyncClient(timeout=10) as client:
            r = await client.post(p.url + "/call", content=b"payload" * 100)
            assert r.status_code == 200
            assert r_server.requests == 2
            assert r_server.connections == (2 if what == "refuse" else 1)
            assert r.text == f"r:{r_server.connections}"


async def test_a_refused_request_its_server_will_not_take_again_goes_to_another() -> None:
    """A server stopping gracefully refuses a stream (GOAWAY, last stream id 0) and stops
    listening: the resend to it is refused at connect, so the request, never processed,
    goes to the pool's other server as a refused connect would (a POST too), not a 502."""
    async with H2Server("a", lambda conn, req: "stop") as a, H2Server("b", first("ok")) as b:
        raw = make_config([a.address, b.address], pool={"protocol": "h2"})
        async with start_proxy(raw) as p, httpx.AsyncClient(timeout=10) as client:
            for _ in range(4):
                r = await client.post(p.url + "/call", content=b"payload" * 100)
                assert (r.status_code, r.text) == (200, "b:1")
            assert a.requests == 1 and b.requests == 4


async def test_goaway_and_close_mid_response_cut_the_client_and_the_proxy_goes_on() -> None:
    async with H2Server("c", first("cut")) as c:
        raw = make_config([c.address], pool={"protocol": "h2"})
        async with start_proxy(raw) as p, httpx.AsyncClient(timeout=10) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(p.url + "/")  # 1,000 of 100,000 bytes, then the end
            r = await client.get(p.url + "/")
            assert (r.status_code, r.text) == (200, "c:2")
        # the HTTP/2 front end: the client's stream is reset, its connection goes on
        async with H2Server("c", first("cut")) as c2:
            raw = make_config([c2.address], pool={"protocol": "h2"})
            async with (
                start_proxy(raw) as p,
                httpx.AsyncClient(http1=False, http2=True, timeout=10) as client,
            ):
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get(p.url + "/")
                r = await client.get(p.url + "/")
                assert (r.status_code, r.http_version, r.text) == (200, "HTTP/2", "c:2")
                assert p.service.stats.connections_total == 1


async def test_a_response_without_status_is_a_502() -> None:
    async with H2Server("n", first("no_status")) as n:
        raw = make_config([n.address], pool={"protocol": "h2"})
        async with start_proxy(raw) as p, httpx.AsyncClient(timeout=10) as client:
            r = await client.get(p.url + "/")
            assert r.status_code == 502
            r = await client.get(p.url + "/")
            assert r.status_code == 200
            assert len(links_of(p.table).live) == 1


async def test_no_stream_goes_before_the_servers_settings() -> None:
    """A server slow to send its SETTINGS, which allow one stream at a time: ten requests at
    once are all served on its one connection and none is refused (the link waits for the
    SETTINGS before its first stream; libnghttp2 holds the others)."""
    slow = lambda conn, req: "slow"  # noqa: E731
    async with H2Server("s", slow, settings_delay=0.2, max_streams=1) as s:
        raw = make_config([s.address], pool={"protocol": "h2"})
        async with start_proxy(raw) as p, httpx.AsyncClient(timeout=10) as client:
            rs = await asyncio.gather(*(client.get(p.url + f"/{i}") for i in range(10)))
            assert [r.status_code for r in rs] == [200] * 10
            assert (s.refused, s.requests, s.connections) == (0, 10, 1)


async def test_a_graceful_goaway_lets_the_streams_it_names_finish(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server takes two streams, says GOAWAY (NO_ERROR, last stream id the higher one),
    then answers both with bodies over the flow-control window: both finish whole (the
    proxy's WINDOW_UPDATEs go on after the GOAWAY), nothing is logged as an error, and the
    next request goes on a new connection."""
    drain = lambda conn, req: "drain" if conn == 1 else "ok"  # noqa: E731
    async with H2Server("d", drain) as d:
        raw = make_config([d.address], pool={"protocol": "h2"})
        async with start_proxy(raw) as p, httpx.AsyncClient(timeout=10) as client:
            rs = await asyncio.gather(client.get(p.url + "/1"), client.get(p.url + "/2"))
            assert [(r.status_code, r.content) for r in rs] == [(200, b"d" * 100_000)] * 2
            r = await client.get(p.url + "/3")
            assert (r.status_code, r.text) == (200, "d:2")
    assert [rec.getMessage() for rec in caplog.records if rec.levelname == "ERROR"] == []
