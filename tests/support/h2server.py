"""A scriptable HTTP/2 server (h2c, ngh2's server role) on 127.0.0.1, port 0, for the h2
pool's hostile-server tests. ``behaviour(conn_no, request_no)`` (both from 1) names what it
does with each request:

* ``ok``: 200, body ``<name>:<conn_no>`` (content-length), as a well-behaved server;
* ``garbage``: answers the request with bytes that are no HTTP/2 frame;
* ``refuse``: GOAWAY with last stream id 0 (the request was not processed), then closes;
* ``stop``: as ``refuse``, and the server stops listening (a server's own graceful stop:
  its next connect is refused);
* ``reset``: RST_STREAM REFUSED_STREAM on the request's stream (not processed);
* ``cut``: response HEADERS and part of the body, then GOAWAY naming the stream (it is to
  finish), then the connection closes mid-body;
* ``no_status``: a response without ``:status`` (raw HPACK-less bytes are not needed: ngh2
  refuses to send it, so the HEADERS frame is written by hand).

* ``slow``: as ``ok``, 50 ms later.
* ``drain``: holds the request until ``drain`` streams are open on the connection, then a
  graceful GOAWAY (NO_ERROR, last stream id the highest taken: all are to finish) and an
  answer to each: 200, 100,000 bytes of body (over the default flow-control window, so the
  client's WINDOW_UPDATEs after the GOAWAY are needed), then the connection closes.

``settings_delay``: the server's SETTINGS (and its reading) wait that long after the
connection opens; ``max_streams``: announced as SETTINGS_MAX_CONCURRENT_STREAMS, and a
stream over it is refused (RST_STREAM REFUSED_STREAM, counted in ``refused``).

``connections`` counts the connections accepted, ``requests`` the requests seen.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from ngh2 import Connection, DataReceived, RequestReceived, Role, Setting


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", sid)
        + payload
    )


class _Conn(asyncio.Protocol):
    def __init__(self, server: H2Server) -> None:
        self.server = server
        server.connections += 1
        self.no = server.connections
        self.h2 = Connection(Role.SERVER)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.early: list[bytes] | None = None  # read before our SETTINGS went
        self.open: set[int] = set()
        self.held: list[int] = []  # "drain": streams waiting for the GOAWAY
        self.bodies: set[int] = set()  # "drain": streams answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.server.settings_delay:
            self.early = []
            asyncio.get_running_loop().call_later(self.server.settings_delay, self.start)
        else:
            self.start()

    def start(self) -> None:
        limit = self.server.max_streams
        self.h2.initiate_connection(
            None if limit is None else {Setting.MAX_CONCURRENT_STREAMS: limit}
        )
        self.transport.write(self.h2.data_to_send())
        early, self.early = self.early, None
        if early:
            self.data_received(b"".join(early))

    def data_received(self, data: bytes) -> None:
        if self.early is not None:
            self.early.append(data)
            return
        try:
            self.h2.receive_data(data)
        except Exception:
            self.transport.close()
            return
        for e in self.h2.events():
            if isinstance(e, RequestReceived):
                self.server.requests += 1
                limit = self.server.max_streams
                if limit is not None and len(self.open) >= limit:
                    self.h2.reset_stream(e.stream_id, 0x7)
                    self.server.refused += 1
                    continue
                self.open.add(e.stream_id)
                if e.end_stream:
                    self.answer(e.stream_id)
            elif isinstance(e, DataReceived) and e.end_stream:
                self.answer(e.stream_id)
        self.pump()
        out = self.h2.data_to_send()
        if out and not self.transport.is_closing():
            self.transport.write(out)

    def answer(self, sid: int) -> None:
        what = self.server.behaviour(self.no, self.server.requests)
        h2 = self.h2
        t = self.transport
        if what == "slow":
            asyncio.get_running_loop().call_later(0.05, self.late, sid)
            return
        if what == "drain":
            self.held.append(sid)
            if len(self.held) == self.server.drain:
                h2.send_goaway(0, last_stream_id=max(self.held))
                for held in self.held:
                    h2.send_response(held, [(b":status", b"200"), (b"content-length", b"100000")])
                    h2.send_data(held, b"d" * 100_000, end_stream=True)
                    self.bodies.add(held)
            return
        self.open.discard(sid)
        if what == "ok":
            body = b"%s:%d" % (self.server.name.encode(), self.no)
            h2.send_response(sid, [(b":status", b"200"), (b"content-length", b"%d" % len(body))])
            h2.send_data(sid, body, end_stream=True)
        elif what == "garbage":
            t.write(h2.data_to_send() + b"\xff" * 64 + b"this is not HTTP/2\r\n")
        elif what in ("refuse", "stop"):
            h2.send_goaway(0, last_stream_id=0)
            t.write(h2.data_to_send())
            t.close()
            if what == "stop" and self.server.server is not None:
                self.server.server.close()
        elif what == "reset":
            h2.reset_stream(sid, 0x7)
        elif what == "cut":
            h2.send_response(sid, [(b":status", b"200"), (b"content-length", b"100000")])
            h2.send_data(sid, b"x" * 1000)
            h2.send_goaway(0, last_stream_id=sid)
            t.write(h2.data_to_send())
            t.close()
        elif what == "no_status":
            # HEADERS, END_HEADERS|END_STREAM, one literal field without indexing:
            # "x-a: b" (no :status)
            block = b"\x00\x03x-a\x01b"
            t.write(h2.data_to_send() + frame(0x1, 0x5, sid, block))

    def pump(self) -> None:
        """``drain``: the connection closes once the held answers are all sent (libnghttp2
        sends the bodies as the client's windows allow)."""
        if not self.bodies:
            return
        out = self.h2.data_to_send()
        if out:
            self.transport.write(out)
        if self.h2.queued_body_size() == 0:
            self.transport.close()

    def late(self, sid: int) -> None:
        self.open.discard(sid)
        body = b"%s:%d" % (self.server.name.encode(), self.no)
        self.h2.send_response(sid, [(b":status", b"200"), (b"content-length", b"%d" % len(body))])
        self.h2.send_data(sid, body, end_stream=True)
        if not self.transport.is_closing():
            self.transport.write(self.h2.data_to_send())


class H2Server:
    def __init__(
        self,
        name: str,
        behaviour: Callable[[int, int], str],
        settings_delay: float = 0.0,
        max_streams: int | None = None,
        drain: int = 2,
    ) -> None:
        self.drain = drain
        self.name = name
        self.behaviour = behaviour
        self.settings_delay = settings_delay
        self.max_streams = max_streams
        self.refused = 0
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> H2Server:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Conn(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
