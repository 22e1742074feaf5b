"""An h2 pool's server and its SETTINGS_MAX_CONCURRENT_STREAMS (issue 16, reviewer).

A server that announces 0 can take no stream on that connection: a request sent there
waited for the whole ``response_timeout`` (then 504 ``sH``). Now such a connection takes no
new stream; one more is opened, and when the server says 0 there too the request fails at
once as a refused connect (``503`` ``SC``, one warning, counted by outlier_detection; on
another server when the pool has one). A server that lowers its limit under the streams in
flight lets those finish while the new ones wait for a free stream; one that lowers it to 0
has the requests not yet sent to it go on a new connection.

The server here is scripted on ngh2's server role (a hostile peer, on a real socket)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from ngh2 import (
    Connection,
    DataReceived,
    PingAcknowledged,
    RequestReceived,
    Role,
    Setting,
    SettingsAcknowledged,
)

from quiesce.dataplane.h2client.links import links_of
from tests.dataplane.conftest import make_config, start_proxy, wait_for
from tests.support.h2server import H2Server

pytestmark = [pytest.mark.loopback, pytest.mark.one_path]

MAX_STREAMS = Setting.MAX_CONCURRENT_STREAMS


class _Conn(asyncio.Protocol):
    def __init__(self, server: Limited) -> None:
        self.server = server
        server.conns.append(self)
        self.no = len(server.conns)
        self.h2 = Connection(Role.SERVER)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.open: set[int] = set()
        self.held: list[int] = []
        self.streams: list[int] = []  # every stream that came, in order
        self.limit: int | None = None  # the limit the client acknowledged
        self.pending: int | None = None  # a limit sent, not acknowledged yet
        self.over = 0  # streams that came past an acknowledged limit
        self.closed = False
        self.body = 0  # request body bytes read
        self.pong: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        limit = self.server.initial(self.no)
        self.pending = limit
        self.h2.initiate_connection(None if limit is None else {MAX_STREAMS: limit})
        self.transport.write(self.h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        try:
            self.h2.receive_data(data)
        except Exception:
            self.transport.close()
            return
        for e in self.h2.events():
            if isinstance(e, SettingsAcknowledged):
                self.limit = self.pending
            elif isinstance(e, PingAcknowledged):
                self.pong.set_result(None)
            elif isinstance(e, RequestReceived):
                self.streams.append(e.stream_id)
                if self.limit is not None and len(self.open) >= self.limit:
                    self.over += 1
                self.open.add(e.stream_id)
                if e.end_stream:
                    self.request(e.stream_id)
            elif isinstance(e, DataReceived):
                self.body += len(e.data)
                if e.end_stream:
                    self.request(e.stream_id)
        self.flush()

    def request(self, sid: int) -> None:
        if self.server.hold:
            self.held.append(sid)
        else:
            self.answer(sid)

    def flush(self) -> None:
        out = self.h2.data_to_send()
        if out and not self.transport.is_closing():
            self.transport.write(out)

    def answer(self, sid: int) -> None:
        self.open.discard(sid)
        body = b"c%d" % self.no
        self.h2.send_response(sid, [(b":status", b"200"), (b"content-length", b"%d" % len(body))])
        self.h2.send_data(sid, body, end_stream=True)
        self.flush()

    def release(self) -> None:
        held, self.held = self.held, []
        for sid in held:
            self.answer(sid)

    async def ping(self) -> None:
        """A PING and its ACK: every frame the client wrote before has been read."""
        self.pong = asyncio.get_running_loop().create_future()
        self.h2.ping(b"12345678")
        self.flush()
        await asyncio.wait_for(self.pong, 10)

    def lower(self, limit: int) -> None:
        self.pending = limit
        self.h2.update_settings({MAX_STREAMS: limit})
        self.flush()


class Limited:
    """An h2c server: ``initial(conn_no)`` is the MAX_CONCURRENT_STREAMS each connection
    announces (None: none); with ``hold`` it answers a request only on ``release``."""

    def __init__(self, initial: Callable[[int], int | None], hold: bool = False) -> None:
        self.initial = initial
        self.hold = hold
        self.conns: list[_Conn] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> Limited:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Conn(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for c in self.conns:
            c.transport.abort()


def pool(**more: object) -> dict[str, object]:
    return {"protocol": "h2", "response_timeout": "30s", "connect_timeout": "5s", **more}


async def test_a_server_that_takes_no_stream_fails_fast_with_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "access.log"
    async with Limited(lambda conn: 0) as z:
        raw = make_config(
            [z.address],
            pool=pool(outlier_detection={"consecutive_connect_failures": 5}),
        )
        raw["logging"] = {"access": {"format": "json", "path": str(log)}}
        with caplog.at_level(logging.INFO, logger="quiesce"):
            async with start_proxy(raw) as p, httpx.AsyncClient(timeout=40) as client:
                began = time.monotonic()
                r = await client.get(p.url + "/a")
                took = time.monotonic() - began
                assert r.status_code == 503
                assert took < 10  # not the 30 s response_timeout
                assert len(z.conns) == 2  # one more connection tried
                assert all(not c.streams for c in z.conns)  # no stream ever sent
                await wait_for(lambda: all(c.closed for c in z.conns))
                r = await client.get(p.url + "/b")
                assert r.status_code == 503
                s0 = p.registry.pool("web").servers[0]
                assert s0.outlier is not None and s0.outlier.connect_failures == 2
        warned = [m for m in caplog.messages if "SETTINGS_MAX_CONCURRENT_STREAMS 0" in m]
        assert len(warned) == 1, warned  # one warning, not one a request
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        assert [(e["status"], e["termination"]) for e in entries] == [(503, "SC")] * 2


async def test_a_connection_saying_0_is_followed_by_one_that_takes_streams() -> None:
    async with Limited(lambda conn: 0 if conn == 1 else None) as z:
        raw = make_config([z.address], pool=pool())
        async with start_proxy(raw) as p, httpx.AsyncClient(timeout=40) as client:
            began = time.monotonic()
            r = await client.get(p.url + "/")
            assert (r.status_code, r.text) == (200, "c2")
            assert time.monotonic() - began < 10
            assert not z.conns[0].streams
            await wait_for(lambda: z.conns[0].closed)


async def test_a_server_that_takes_no_stream_is_left_for_another() -> None:
    """The pool's default retry (a refused connect, once, on another server) takes it."""
    async with Limited(lambda conn: 0) as z, H2Server("b", lambda c, r: "ok") as b:
        raw = make_config([z.address, b.address], pool=pool(algorithm="round_robin"))
        async with start_proxy(raw) as p, httpx.AsyncClient(timeout=40) as client:
            for _ in range(4):
                r = await client.get(p.url + "/")
                assert (r.status_code, r.text) == (200, "b:1")


async def test_a_limit_lowered_under_the_streams_in_flight() -> None:
    """Three streams in flight, then SETTINGS_MAX_CONCURRENT_STREAMS 1: the three finish, the
    two requests that came meanwhile wait and go one at a time, none over the limit."""
    async with Limited(lambda conn: 100, hold=True) as z:
        raw = make_config([z.address], pool=pool())
        async with start_proxy(raw) as p, httpx.AsyncClient(timeout=40) as client:
            first = [asyncio.create_task(client.get(p.url + f"/{i}")) for i in range(3)]
            await wait_for(lambda: len(z.conns) == 1 and len(z.conns[0].held) == 3)
            c = z.conns[0]
            c.lower(1)
            await wait_for(lambda: c.limit == 1)
            z.hold = False  # the next ones are answered at once
            later = [asyncio.create_task(client.get(p.url + f"/later{i}")) for i in range(2)]
            link = links_of(p.table).live[p.registry.pool("web").servers[0]]
            await wait_for(lambda: len(link.streams) == 5)  # the two are on their way
            await c.ping()  # (what the proxy wrote before its PING ACK has come)
            assert len(c.streams) == 3  # none sent while three are in flight
            c.release()
            done = [await t for t in first + later]
            assert [(r.status_code, r.text) for r in done] == [(200, "c1")] * 5
            assert len(c.streams) == 5 and c.over == 0 and len(z.conns) == 1


async def test_a_limit_lowered_to_0_sends_what_was_not_sent_on_a_new_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection with a limit of 2 and two streams in flight, a third request (a POST with
    a body) held back by the limit; then the server says 0: the third goes on a new
    connection at once (it never left), the two finish on the old one, which then closes;
    later requests use the new one."""
    async with Limited(lambda conn: 2 if conn == 1 else None, hold=True) as z:
        raw = make_config([z.address], pool=pool())
        async with start_proxy(raw) as p, httpx.AsyncClient(timeout=40) as client:
            first = [asyncio.create_task(client.get(p.url + f"/{i}")) for i in range(2)]
            await wait_for(lambda: len(z.conns) == 1 and len(z.conns[0].held) == 2)
            c1 = z.conns[0]
            third = asyncio.create_task(client.post(p.url + "/third", content=b"x" * 10_000))
            link = links_of(p.table).live[p.registry.pool("web").servers[0]]
            await wait_for(lambda: len(link.streams) == 3)  # held back by libnghttp2
            await c1.ping()
            assert len(c1.streams) == 2
            z.hold = False
            with caplog.at_level(logging.INFO, logger="quiesce"):
                c1.lower(0)
                r = await asyncio.wait_for(third, 10)
            assert (r.status_code, r.text) == (200, "c2")  # a POST: it never left
            assert z.conns[1].body == 10_000 and c1.body == 0
            assert len(c1.streams) == 2 and not c1.closed
            assert any("1 not sent go on a new one" in m for m in caplog.messages)
            c1.release()
            done = [await t for t in first]
            assert [(x.status_code, x.text) for x in done] == [(200, "c1")] * 2
            await wait_for(lambda: c1.closed)
            r = await client.get(p.url + "/next")
            assert (r.status_code, r.text) == (200, "c2")
            assert len(z.conns) == 2
