"""An h2 pool's server that says GOAWAY while requests are in flight and others are still
held unsent by libnghttp2 behind its SETTINGS_MAX_CONCURRENT_STREAMS (reviewer, issue 16).

A graceful GOAWAY names stream 2^31-1 first (RFC 9113 §6.8; grpc-go and nghttp2 servers do
so): libnghttp2 then never sends the streams it held, and nothing failed them, so they
waited for the pool's ``response_timeout``. Now they are taken back at the GOAWAY and go on
a new connection at once; the streams in flight finish on the old one, even when their
answers come in the same read as the final GOAWAY and the connection's close (they were
502 ``SH`` before when libnghttp2 reported the end of the connection first).

The server is scripted on ngh2's server role (tests/dataplane/test_h2_upstream_streams)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest

from quiesce.dataplane.h2client.links import links_of
from tests.dataplane.conftest import make_config, start_proxy, wait_for
from tests.dataplane.test_h2_upstream_streams import MAX_STREAMS, Limited, pool

pytestmark = [pytest.mark.loopback, pytest.mark.one_path]


async def test_goaway_takes_back_the_streams_held_unsent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "access.log"
    async with Limited(lambda conn: 2 if conn == 1 else None, hold=True) as z:
        raw = make_config([z.address], pool=pool())
        raw["logging"] = {"access": {"format": "json", "path": str(log)}}
        with caplog.at_level(logging.INFO, logger="quiesce"):
            async with start_proxy(raw) as p, httpx.AsyncClient(timeout=40) as client:
                gets = [asyncio.create_task(client.get(p.url + f"/{i}")) for i in range(5)]
                await wait_for(lambda: len(z.conns) == 1 and len(z.conns[0].held) == 2)
                first = z.conns[0]
                s0 = p.registry.pool("web").servers[0]
                # five streams on the link: two sent, three held by libnghttp2 (limit 2)
                await wait_for(
                    lambda: len(getattr(links_of(p.table).live.get(s0), "streams", ())) == 5
                )
                # graceful shutdown's first GOAWAY: every stream may still be processed
                first.h2.send_goaway(0, last_stream_id=2**31 - 1)
                first.flush()
                # the three held unsent go on a new connection at once (before: they waited
                # for the response timeout, the first connection's two still unanswered)
                await wait_for(lambda: len(z.conns) == 2 and len(z.conns[1].held) == 3)
                assert first.streams == [1, 3] and not first.closed
                # the final GOAWAY, the two answers and the close in one write
                held, first.held = first.held, []
                for sid in held:
                    first.open.discard(sid)
                    first.h2.send_response(sid, [(b":status", b"200"), (b"content-length", b"2")])
                    first.h2.send_data(sid, b"c1", end_stream=True)
                first.h2.send_goaway(0, last_stream_id=3)
                first.transport.write(first.h2.data_to_send())
                first.transport.close()
                z.conns[1].release()
                z.hold = False
                done = await asyncio.gather(*gets)
        assert (
            sorted((r.status_code, r.text) for r in done) == [(200, "c1")] * 2 + [(200, "c2")] * 3
        )
        moved = [m for m in caplog.messages if "GOAWAY (code 0, last stream 2147483647)" in m]
        assert len(moved) == 1 and "3 requests it did not process" in moved[0], moved
        assert "2 in flight finish" in moved[0]
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        assert [(e["status"], e["termination"]) for e in entries] == [(200, "--")] * 5


async def test_a_limit_of_0_read_with_an_answer_sends_that_request_nowhere_else() -> None:
    """An answer and SETTINGS_MAX_CONCURRENT_STREAMS 0 in one read: libnghttp2 reports the
    SETTINGS before the answer's end, and the stream it has closed looked unsent: it was
    sent again on a new connection (a request processed twice). Now the limit is acted on
    once the read's events are: nothing is sent again, no connection opened."""
    async with Limited(lambda conn: 100, hold=True) as z:
        raw = make_config([z.address], pool=pool())
        async with start_proxy(raw) as p, httpx.AsyncClient(timeout=40) as client:
            gets = [asyncio.create_task(client.get(p.url + f"/{i}")) for i in range(2)]
            await wait_for(lambda: len(z.conns) == 1 and len(z.conns[0].held) == 2)
            first = z.conns[0]
            sid = first.held.pop(0)
            first.open.discard(sid)
            first.h2.send_response(sid, [(b":status", b"200"), (b"content-length", b"2")])
            first.h2.send_data(sid, b"c1", end_stream=True)
            first.pending = 0
            first.h2.update_settings({MAX_STREAMS: 0})
            first.transport.write(first.h2.data_to_send())  # one write
            r = await gets[0]
            assert (r.status_code, r.text) == (200, "c1")
            await first.ping()
            assert len(z.conns) == 1 and first.streams == [1, 3]
            first.release()
            r = await gets[1]
            assert (r.status_code, r.text) == (200, "c1")
            assert len(z.conns) == 1
