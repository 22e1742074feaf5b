"""A client's malformed GOAWAY (issue 16, reviewer): one on a stream other than 0 is a
connection error PROTOCOL_ERROR (RFC 9113 §6.8), one shorter than its 8 bytes of last stream
id and error code a FRAME_SIZE_ERROR (§4.2). The proxy answers with GOAWAY carrying that
code, closes, and logs one line; before, the guard took the frame out of the stream and
dropped it without a word (and the connection went on). Raw frames over a socket."""

from __future__ import annotations

import logging
import struct

import h2.events
import pytest

from tests.dataplane.backend import Backend
from tests.dataplane.conftest import make_config, start_proxy, wait_for
from tests.support.h2client import RawClient, frame, request

pytestmark = [pytest.mark.loopback, pytest.mark.one_path]

PROTOCOL_ERROR = 1
FRAME_SIZE_ERROR = 6
GOAWAY = 7


@pytest.mark.parametrize(
    ("sid", "payload", "code", "says"),
    [
        (1, struct.pack(">II", 0, 0), PROTOCOL_ERROR, "a GOAWAY on a stream other than 0"),
        (0x80000001, struct.pack(">II", 0, 0), PROTOCOL_ERROR, "on a stream other than 0"),
        (0, b"", FRAME_SIZE_ERROR, "a GOAWAY of 0 bytes"),
        (0, struct.pack(">I", 0), FRAME_SIZE_ERROR, "a GOAWAY of 4 bytes"),
        (0, b"\0" * 7, FRAME_SIZE_ERROR, "a GOAWAY of 7 bytes"),
    ],
    ids=["stream-1", "stream-1-reserved-bit", "empty", "4-bytes", "7-bytes"],
)
async def test_a_malformed_goaway_gets_goaway_with_its_error_code(
    backend: Backend,
    caplog: pytest.LogCaptureFixture,
    sid: int,
    payload: bytes,
    code: int,
    says: str,
) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        c.h2.send_headers(1, request("/"), end_stream=True)  # a stream that completes first
        c.flush()
        await c.read_until(lambda: c.ended(1))
        with caplog.at_level(logging.INFO, logger="quiesce"):
            c.send(frame(GOAWAY, 0, sid, payload))
            await c.read_until(lambda: c.eof, timeout=5)
        kind, stream, answer = c.frames()[-1]  # the last frame before the close
        assert kind == GOAWAY and stream == 0
        assert struct.unpack(">I", answer[4:8])[0] == code
        assert struct.unpack(">I", answer[:4])[0] == 1  # the last stream it processed
        lines = [r.getMessage() for r in caplog.records if "GOAWAY" in r.getMessage()]
        assert len(lines) == 1 and says in lines[0], lines
        c.close()
        await wait_for(lambda: p.registry.pool("web").servers[0].connections == 0)


async def test_a_well_formed_goaway_still_lets_streams_finish(backend: Backend) -> None:
    """The checks refuse only malformed ones: a client's GOAWAY with debug data (longer than
    8 bytes, on stream 0) while a stream is in flight lets it finish, with no GOAWAY error
    back."""
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)
        c.h2.send_headers(1, request("/slow/0.3"), end_stream=True)
        c.flush()
        await wait_for(lambda: p.registry.pool("web").servers[0].connections == 1)
        c.send(frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0) + b"bye"))
        await c.read_until(lambda: c.ended(1) or c.eof, timeout=5)
        assert c.ended(1)
        assert any(isinstance(e, h2.events.DataReceived) for e in c.events)
        errors = [
            struct.unpack(">I", f[2][4:8])[0] for f in c.frames() if f[0] == GOAWAY and f[2][4:8]
        ]
        assert all(e == 0 for e in errors), errors
        c.close()
