"""More streams than the 100 advertised (SETTINGS_MAX_CONCURRENT_STREAMS), in the client's
first flight, before it has acknowledged the proxy's SETTINGS: each extra stream gets
RST_STREAM REFUSED_STREAM (never processed: the client may retry it), the others are
served and the connection stays up (libnghttp2: the limit still pending). Once the
client has acknowledged them, a stream past the limit is a connection error, GOAWAY
PROTOCOL_ERROR (tests/dataplane/test_http2_limits.py)."""

from __future__ import annotations

import h2.events
import pytest

from tests.dataplane.backend import Backend
from tests.dataplane.conftest import make_config, start_proxy, wait_for
from tests.support.h2client import RawClient, request

pytestmark = [pytest.mark.loopback, pytest.mark.one_path]

REFUSED_STREAM = 7


async def test_streams_past_the_limit_in_the_first_flight_are_refused(
    backend: Backend,
) -> None:
    async with start_proxy(make_config([backend.address])) as p:
        c = await RawClient.open(p.port)  # the preface and our SETTINGS, nothing read yet
        sids = [1 + 2 * i for i in range(110)]
        for sid in sids:
            c.h2.send_headers(sid, request("/hold"), end_stream=True)
        c.flush()

        def resets() -> dict[int, int]:
            return {sid: int.from_bytes(pl, "big") for kind, sid, pl in c.frames() if kind == 3}

        await c.read_until(lambda: len(resets()) >= 10)
        await wait_for(lambda: backend.holding == 100)
        assert resets() == dict.fromkeys(sids[100:], REFUSED_STREAM)
        assert c.goaway() is None
        backend.release()
        await c.read_until(lambda: all(c.ended(sid) for sid in sids[:100]))
        # the same connection goes on: a new stream is served
        c.h2.send_headers(221, request("/"), end_stream=True)
        c.flush()
        await c.read_until(lambda: c.ended(221))
        body = b"".join(
            e.data for e in c.events if isinstance(e, h2.events.DataReceived) and e.stream_id == 221
        )
        assert body == b"hello from a\n"
        assert c.goaway() is None and not c.eof
        c.close()
