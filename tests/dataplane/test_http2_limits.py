"""HTTP/2 limits and defences driven by a hostile client (issue 16, item 3): raw frames,
written by the ``h2`` library or by hand. Rapid reset (CVE-2023-44487), a CONTINUATION
flood, a PING flood and a SETTINGS flood are each answered with GOAWAY ENHANCE_YOUR_CALM and
the connection closed, while the proxy keeps serving everyone else; a request RFC 9113 calls
malformed resets its stream only; more streams than the 100 advertised end the connection
with PROTOCOL_ERROR; a frame longer than advertised gets FRAME_SIZE_ERROR at its header, and
a first frame that is not SETTINGS PROTOCOL_ERROR; split cookies are joined."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import struct

import h2.events
import h2.settings
import pytest

from tests.dataplane.backend import Backend
from tests.dataplane.conftest import make_config, start_proxy, wait_for
from tests.support.h2client import RawClient, frame, request

pytestmark = [pytest.mark.loopback, pytest.mark.one_path]

ENHANCE_YOUR_CALM = 11
PROTOCOL_ERROR = 1
FRAME_SIZE_ERROR = 6


async def still_serves(port: int) -> None:
    """Another client, on its own connection, is served."""
    c = await RawClient.open(port)
    c.h2.send_headers(1, request("/"), end_stream=True)
    c.flush()
    await c.read_until(lambda: c.ended(1))
    body = b"".join(e.data for e in c.events if isinstance(e, h2.events.DataReceived))
    assert body == b"hello from a\n"
    c.close()


async def test_rapid_reset_gets_goaway_enhance_your_calm(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        sid = 1
        for _ in range(12):  # 1,200 streams opened and cancelled at once
            for _ in range(100):
                c.h2.send_headers(sid, request("/slow/5"), end_stream=True)
                c.h2.reset_stream(sid)
                sid += 2
            c.flush()
        await c.read_until(lambda: c.goaway() is not None or c.eof)
        assert c.goaway() is not None and c.goaway().error_code == ENHANCE_YOUR_CALM
        await c.read_until(lambda: c.eof)  # then closed
        c.close()
        await still_serves(p.port)
        # the cancelled streams were never left on a server
        await wait_for(lambda: p.registry.pool("web").servers[0].connections == 0)


async def test_continuation_flood_gets_goaway(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        block = c.h2.encoder.encode(request())
        c.send(frame(1, 0, 1, block))  # HEADERS without END_HEADERS
        for _ in range(100):  # CONTINUATION frames that never end the block
            c.send(frame(9, 0, 1, b"\x40\x01a\x01b" * 200))
        await c.read_until(lambda: c.goaway() is not None or c.eof)
        assert c.goaway() is not None and c.goaway().error_code == ENHANCE_YOUR_CALM
        c.close()
        await still_serves(p.port)


@pytest.mark.parametrize("kind", ["ping", "settings"])
async def test_ping_and_settings_floods_get_goaway(backend: Backend, kind: str) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        for i in range(1000):
            if kind == "ping":
                c.send(frame(6, 0, 0, struct.pack(">Q", i)))
            else:
                c.send(frame(4, 0, 0, b""))
        # (and reads none of the answers: the guard counts what comes in)
        await c.read_until(lambda: c.goaway() is not None or c.eof)
        assert c.goaway() is not None and c.goaway().error_code == ENHANCE_YOUR_CALM
        c.close()
        await still_serves(p.port)


async def test_a_few_pings_and_resets_are_fine(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        for i in range(20):
            c.h2.ping(struct.pack(">Q", i))
            c.h2.send_headers(1 + 4 * i, request("/slow/5"), end_stream=True)
            c.h2.reset_stream(1 + 4 * i)
        c.h2.send_headers(81, request("/"), end_stream=True)
        c.flush()
        await c.read_until(
            lambda: any(
                isinstance(e, h2.events.StreamEnded) and e.stream_id == 81 for e in c.events
            )
        )
        assert c.goaway() is None
        c.close()


async def test_malformed_request_resets_its_stream_only(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        # a path with a space, a path that is not absolute: by hand (h2 refuses to send them)
        c.send(frame(1, 0x5, 1, c.h2.encoder.encode(request("/a b"))))
        c.send(frame(1, 0x5, 3, c.h2.encoder.encode(request("a"))))
        c.send(frame(1, 0x5, 5, c.h2.encoder.encode(request("*"))))  # GET * (RFC 9113 §8.3.1)
        c.h2.highest_outbound_stream_id = 5  # (the client's own state skips the three by hand)
        await asyncio.sleep(0)
        c.h2.send_headers(7, [*request("/headers"), ("cookie", "a=1"), ("cookie", "b=2")], True)
        c.flush()
        await c.read_until(
            lambda: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == 7 for e in c.events)
        )
        resets = {sid: int.from_bytes(p, "big") for kind, sid, p in c.frames() if kind == 3}
        assert resets == {1: PROTOCOL_ERROR, 3: PROTOCOL_ERROR, 5: PROTOCOL_ERROR}
        assert backend.paths == ["/headers"]  # none of the three went to the server
        body = b"".join(e.data for e in c.events if isinstance(e, h2.events.DataReceived))
        assert json.loads(body)["cookie"] == "a=1; b=2"  # RFC 9113 §8.2.3
        assert c.goaway() is None
        c.close()


async def test_more_streams_than_advertised_end_the_connection(backend: Backend) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        await c.read_until(
            lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events)
        )
        assert c.h2.remote_settings.max_concurrent_streams == 100
        for i in range(100):
            c.h2.send_headers(1 + 2 * i, request("/hold"), end_stream=True)
        c.flush()
        await wait_for(lambda: backend.holding == 100)
        c.send(frame(1, 0x5, 201, c.h2.encoder.encode(request("/hold"))))  # the 101st, by hand
        await c.read_until(lambda: c.goaway() is not None or c.eof)
        assert c.goaway() is not None and c.goaway().error_code == PROTOCOL_ERROR
        c.close()
        backend.release()
        await still_serves(p.port)
        await wait_for(lambda: p.registry.pool("web").servers[0].connections == 0)


async def test_a_stream_left_at_zero_window_is_reset(backend: Backend) -> None:
    """A client that opens a stream and never opens its window (zero-window stall) holds its
    server connection only until client_idle_timeout: then RST_STREAM CANCEL."""
    raw = make_config([backend.address], service={"client_idle_timeout": "0.5s"})
    async with start_proxy(raw) as p:
        c = await RawClient.open(p.port)
        c.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        c.h2.send_headers(1, request("/size/1000000"), end_stream=True)
        c.flush()
        await c.read_until(lambda: any(k == 3 and sid == 1 for k, sid, _ in c.frames()))
        (reset,) = [p for k, sid, p in c.frames() if k == 3 and sid == 1]
        assert int.from_bytes(reset, "big") == 8  # CANCEL
        await wait_for(lambda: p.registry.pool("web").servers[0].connections == 0)
        assert c.goaway() is None  # the connection stays
        c.close()


async def test_streams_stalled_together_are_one_log_line(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Three streams left at a zero window: each reset, and the log says so per connection
    and sweep ("3 stream(s) stalled, reset: 1, 3, 5"), not a line a stream (a client holding
    100 such streams wrote 100 lines each client_idle_timeout)."""
    raw = make_config([backend.address], service={"client_idle_timeout": "0.5s"})
    async with start_proxy(raw) as p:
        c = await RawClient.open(p.port)
        c.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        for sid in (1, 3, 5):
            c.h2.send_headers(sid, request("/size/1000000"), end_stream=True)
        with caplog.at_level(logging.INFO, logger="quiesce"):
            c.flush()
            await c.read_until(lambda: {sid for k, sid, _ in c.frames() if k == 3} == {1, 3, 5})
        lines = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
        counts = [
            int(m.group(1))
            for m in map(re.compile(r"(\d+) stream\(s\) stalled").search, lines)
            if m
        ]
        assert len(counts) == len(lines) and sum(counts) == 3, lines
        c.close()


async def test_header_list_size(backend: Backend) -> None:
    """Past SETTINGS_MAX_HEADER_LIST_SIZE (max_header_size + max_request_line): GOAWAY
    ENHANCE_YOUR_CALM (an HPACK bomb, or a header block too long); within it but past the
    HTTP/1.1 head limit: that stream's 431, the connection carries on."""
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        c.h2.send_headers(1, [*request(), ("x-big", "x" * 66000)], end_stream=True)
        c.flush()
        await c.read_until(lambda: c.ended(1))
        (resp,) = [e for e in c.events if isinstance(e, h2.events.ResponseReceived)]
        assert dict(resp.headers)[b":status"] == b"431"
        c.h2.send_headers(3, [*request(), ("x-big", "a" * 100_000)], end_stream=True)
        c.flush()
        await c.read_until(lambda: c.goaway() is not None or c.eof)
        assert c.goaway() is not None and c.goaway().error_code == ENHANCE_YOUR_CALM
        c.close()
        await still_serves(p.port)


async def test_a_frame_longer_than_advertised_gets_goaway_at_its_header(backend: Backend) -> None:
    """A DATA frame announcing 0xFFFFFF bytes (16 MiB a connection before h2 looked at it):
    GOAWAY FRAME_SIZE_ERROR as soon as its 9-byte header is read, without its payload."""
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        await c.read_until(
            lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events)
        )
        assert c.h2.remote_settings.max_frame_size == 16384  # what the proxy advertises
        c.h2.send_headers(1, request("/echo", "POST"), end_stream=False)
        c.flush()
        await wait_for(lambda: p.registry.pool("web").servers[0].connections == 1)
        c.send(b"\xff\xff\xff" + bytes((0, 0)) + struct.pack(">I", 1))  # the header alone
        await c.read_until(lambda: c.goaway() is not None or c.eof, timeout=5)
        assert c.goaway() is not None and c.goaway().error_code == FRAME_SIZE_ERROR
        await c.read_until(lambda: c.eof, timeout=5)  # then closed
        kind, _, payload = c.frames()[-1]  # the last frame: nothing after the GOAWAY
        assert kind == 7 and payload[4:8] == struct.pack(">I", FRAME_SIZE_ERROR)
        c.close()
        await wait_for(lambda: p.registry.pool("web").servers[0].connections == 0)
        await still_serves(p.port)


async def test_not_http2_after_the_preface_gets_goaway_protocol_error(backend: Backend) -> None:
    """What follows the preface must be a SETTINGS frame (RFC 9113 §3.4): HTTP/1.1 bytes there
    (read as the header of a 4.6 MB frame) get GOAWAY PROTOCOL_ERROR at once."""
    async with start_proxy(make_config([backend.address])) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        c = RawClient(reader, writer)
        c.h2.data_to_send()  # (its own preface and SETTINGS: not sent)
        c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await c.read_until(lambda: c.goaway() is not None or c.eof, timeout=5)
        assert c.goaway() is not None and c.goaway().error_code == PROTOCOL_ERROR
        await c.read_until(lambda: c.eof, timeout=5)
        c.close()
        await still_serves(p.port)


@pytest.mark.parametrize("cut", range(1, 24))
async def test_a_preface_split_over_two_reads_is_http2(backend: Backend, cut: int) -> None:
    """The preface cut at any byte, the proxy reading the first part alone: still HTTP/2 by
    prior knowledge (SETTINGS back, the request served), not an HTTP/1.1 400."""
    async with start_proxy(make_config([backend.address])) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        c = RawClient(reader, writer)
        out = c.h2.data_to_send()
        assert out[:24] == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        c.send(out[:cut])
        await wait_for(lambda: [x.rx for x in p.service._ctx.conns] == [cut])  # read alone
        c.send(out[cut:])
        c.h2.send_headers(1, request("/"), end_stream=True)
        c.flush()
        await c.read_until(lambda: c.ended(1) or c.eof, timeout=5)
        assert not c.raw.startswith(b"HTTP/1.1")
        body = b"".join(e.data for e in c.events if isinstance(e, h2.events.DataReceived))
        assert body == b"hello from a\n"
        c.close()


async def test_a_split_start_that_is_not_the_preface_stays_http1(backend: Backend) -> None:
    """The start of the preface, then other bytes: an HTTP/1.1 400, no HTTP/2."""
    async with start_proxy(make_config([backend.address])) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"PRI * HTTP/2.0\r\n")
        await wait_for(lambda: [x.rx for x in p.service._ctx.conns] == [16])
        writer.write(b"\r\nXY\r\n\r\n")
        assert (await reader.read(100)).startswith(b"HTTP/1.1 400")
        writer.close()
