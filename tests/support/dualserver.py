"""A back end that speaks HTTP/1.1 and h2c (prior knowledge) on the same port, and records
which protocol each connection spoke, each request's path, and when each connection
closed: for tests that switch a pool's ``protocol`` by a reload.

Every request is answered ``200`` with the body ``<protocol>:<connection no>`` (``h1:1``,
``h2:3``). A request for ``/hold`` is answered only once :meth:`DualServer.release` is
called (``held`` counts those waiting). Runs on its own loop in a thread
(:func:`serving`), for a ``quiesce run`` subprocess in front of it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from ngh2 import Connection, RequestReceived, Role

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass
class Seen:
    no: int
    proto: str = ""  # "h1" or "h2" once its first bytes came
    paths: list[str] = field(default_factory=list)
    closed: bool = False


class _Conn(asyncio.Protocol):
    def __init__(self, server: DualServer) -> None:
        self.server = server
        self.seen = Seen(len(server.conns) + 1)
        server.conns.append(self.seen)
        server.protos.append(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buf = b""
        self.h2: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.seen.closed = True

    def data_received(self, data: bytes) -> None:
        if self.h2 is not None:
            self._h2(data)
            return
        self.buf += data
        if not self.seen.proto:
            if len(self.buf) < len(PREFACE) and PREFACE.startswith(self.buf):
                return
            if self.buf.startswith(PREFACE):
                self.seen.proto = "h2"
                self.h2 = Connection(Role.SERVER)
                self.h2.initiate_connection()
                data, self.buf = self.buf, b""
                self._h2(data)
                return
            self.seen.proto = "h1"
        while b"\r\n\r\n" in self.buf:  # GETs only (no body)
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1].decode()
            self._answer(path, None)

    def _h2(self, data: bytes) -> None:
        h2 = self.h2
        assert h2 is not None
        try:
            h2.receive_data(data)
        except Exception:
            self.transport.close()
            return
        for e in h2.events():
            if isinstance(e, RequestReceived):
                path = dict(e.headers)[b":path"].decode()
                self._answer(path, e.stream_id)
        self._flush()

    def _flush(self) -> None:
        if self.h2 is not None and not self.transport.is_closing():
            out = self.h2.data_to_send()
            if out:
                self.transport.write(out)

    def _answer(self, path: str, sid: int | None) -> None:
        self.seen.paths.append(path)
        if path == "/hold":
            self.server.waiting.append((self, sid))
            return
        self.send(sid)

    def send(self, sid: int | None) -> None:
        body = b"%s:%d" % (self.seen.proto.encode(), self.seen.no)
        if sid is None:
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            return
        assert self.h2 is not None
        self.h2.send_response(sid, [(b":status", b"200"), (b"content-length", b"%d" % len(body))])
        self.h2.send_data(sid, body, end_stream=True)
        self._flush()


class DualServer:
    def __init__(self) -> None:
        self.conns: list[Seen] = []
        self.protos: list[_Conn] = []
        self.waiting: list[tuple[_Conn, int | None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0

    @property
    def held(self) -> int:
        return len(self.waiting)

    def release(self) -> None:
        """Answer the held ``/hold`` requests (from any thread)."""

        def go() -> None:
            waiting, self.waiting = self.waiting, []
            for conn, sid in waiting:
                conn.send(sid)

        assert self.loop is not None
        self.loop.call_soon_threadsafe(go)

    def protocol_of(self, path: str) -> list[str]:
        """The protocol of each connection that carried a request for ``path``."""
        return [c.proto for c in list(self.conns) for p in list(c.paths) if p == path]


@contextlib.contextmanager
def serving() -> Iterator[DualServer]:
    """A :class:`DualServer` on 127.0.0.1, port 0, its own event loop in a thread."""
    server = DualServer()
    loop = asyncio.new_event_loop()
    server.loop = loop
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> asyncio.Server:
        srv = await loop.create_server(lambda: _Conn(server), "127.0.0.1", 0)
        server.port = srv.sockets[0].getsockname()[1]
        return srv

    srv = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield server
    finally:

        async def stop() -> None:
            srv.close()
            for conn in server.protos:
                conn.transport.abort()
            await srv.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
