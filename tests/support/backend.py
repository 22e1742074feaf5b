"""The suite's fake HTTP/1.1 back end (h11, asyncio streams, 127.0.0.1, port 0)::

    from tests.support.backend import Backend
    async with Backend("a") as b:        # b.port, b.address ("127.0.0.1:PORT"), b.requests

    with serve_in_thread(Backend("a"), Backend("b")) as (a, b):   # from synchronous tests
        ...

What the test may set, before or while it runs (plain attributes):

* ``status`` (200), ``body`` (None: ``hello from NAME``), ``delay`` (0 s): the answer to
  ``/`` and any path not in the table below;
* ``health`` (200) answers ``/health``; ``maintenance`` (False) makes it answer
  ``maintenance_status`` (503) with ``under construction``;
* ``keep_alive`` (True): False answers every request with ``Connection: close``;
* ``drop_reused`` (False): the second request on any connection is dropped by closing the
  connection without answering (the keep-alive race, made deterministic).

What it counts: ``requests`` (every request seen, with its connection number), ``paths``
(targets other than ``/health``), ``connections`` (accepted), ``open_connections``,
``holding`` (requests parked on ``/hold``).

Paths it answers:

=====================  =====================================================================
``/``, anything else   ``status``, ``body`` after ``delay`` (``X-Server``/``X-Backend: NAME``)
``/health``            ``health`` ("ok"), or ``maintenance_status`` ("under construction")
``/headers``           200, JSON of the request headers it received
``/echo``              streams the request body back (chunked)
``/sink``              reads the body, answers its length and a sha256
``/size/N``            N bytes (Content-Length), written in 64 KiB pieces as the peer reads
``/chunked/N``         N bytes, chunked
``/close/N``           N bytes, no length: delimited by closing the connection
``/status/N``          status N, small body
``/slow/S``            answers after S seconds
``/hold``              answers once :meth:`Backend.release` is called
``/malformed``         bytes that are not HTTP
``/hang``              reads the request, never answers
``/ws``                WebSocket handshake, then echoes every frame it gets
=====================  =====================================================================
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType

import h11

CHUNK = 64 * 1024
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    conn: int


@dataclass
class Backend:
    name: str = "backend"
    status: int = 200
    body: bytes | None = None
    delay: float = 0.0
    health: int = 200
    maintenance: bool = False
    maintenance_status: int = 503
    keep_alive: bool = True
    drop_reused: bool = False
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    open_connections: int = 0
    holding: int = 0
    tls: ssl.SSLContext | None = None  # serve HTTPS with this context

    @property
    def paths(self) -> list[str]:
        """The targets it served, ``/health`` checks left out."""
        return [r.target for r in self.requests if r.target.split("?")[0] != "/health"]

    def release(self) -> None:
        """Answer every request parked on ``/hold``, and the later ones at once (from any
        thread)."""
        self._loop.call_soon_threadsafe(self._release.set)

    def wait_holding(self, count: int, timeout: float = 10.0) -> None:
        """Blocks until ``count`` requests are parked on ``/hold``; for a back end served by
        :func:`serve_in_thread`, from the test's thread."""
        deadline = time.monotonic() + timeout
        while self.holding < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {self.holding} held requests, wanted {count}")
            time.sleep(0.01)

    async def __aenter__(self) -> Backend:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port: int = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._writers: set[asyncio.StreamWriter] = set()
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release.set()
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await asyncio.sleep(0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        self.open_connections += 1
        conn_id = self.connections
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=256 * 1024)
        served = 0
        try:
            while True:
                event = await self._next(conn, reader)
                if isinstance(event, h11.ConnectionClosed) or event is None:
                    break
                assert isinstance(event, h11.Request)
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                self.requests.append(
                    Seen(event.method.decode(), event.target.decode(), headers, conn_id)
                )
                served += 1
                if self.drop_reused and served >= 2:
                    break
                upgraded = await self._answer(conn, reader, writer, event, headers)
                if upgraded:
                    break
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    break
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                else:
                    break
        except (ConnectionError, h11.RemoteProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader) -> object:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(CHUNK)
                conn.receive_data(data)
                continue
            return event

    async def _body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> list[bytes]:
        out = []
        while True:
            event = await self._next(conn, reader)
            if isinstance(event, h11.Data):
                out.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage) or event is None:
                return out
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed mid-body")

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, *events: h11.Event
    ) -> None:
        for ev in events:
            data = conn.send(ev)
            if data:
                writer.write(data)
        await writer.drain()

    async def _answer(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        req: h11.Request,
        headers: dict[str, str],
    ) -> bool:
        target = req.target.decode()
        path = target.split("?", 1)[0]
        parts = path.strip("/").split("/")
        name = self.name.encode()
        base = [(b"X-Server", name), (b"X-Backend", name)]
        if path == "/ws":
            return await self._websocket(conn, reader, writer, headers)
        if path == "/echo":
            await self._send(
                conn,
                writer,
                h11.Response(
                    status_code=200, headers=[*base, (b"Content-Type", b"application/octet-stream")]
                ),
            )
            while True:
                event = await self._next(conn, reader)
                if isinstance(event, h11.Data):
                    await self._send(conn, writer, h11.Data(data=bytes(event.data)))
                else:
                    break
            await self._send(conn, writer, h11.EndOfMessage())
            return False
        if path == "/sink":
            h = hashlib.sha256()
            n = 0
            while True:
                event = await self._next(conn, reader)
                if isinstance(event, h11.Data):
                    h.update(event.data)
                    n += len(event.data)
                else:
                    break
            body = json.dumps({"length": n, "sha256": h.hexdigest()}).encode()
            await self._send(
                conn,
                writer,
                h11.Response(
                    status_code=200,
                    headers=[*base, (b"Content-Length", str(len(body)).encode())],
                ),
                h11.Data(data=body),
                h11.EndOfMessage(),
            )
            return False
        await self._body(conn, reader)
        if parts[0] in ("size", "chunked", "close") and len(parts) == 2:
            n = int(parts[1])
            hdrs = list(base)
            if parts[0] == "size":
                hdrs.append((b"Content-Length", str(n).encode()))
            elif parts[0] == "close":
                hdrs.append((b"Connection", b"close"))
            if parts[0] == "close":
                # h11 refuses to send a length-less body to an HTTP/1.1 peer: write raw.
                writer.write(
                    b"HTTP/1.1 200 OK\r\nX-Server: " + name + b"\r\nConnection: close\r\n\r\n"
                )
                await self._stream(writer, n, req.method == b"HEAD")
                writer.close()
                return True
            await self._send(conn, writer, h11.Response(status_code=200, headers=hdrs))
            if req.method != b"HEAD":
                left = n
                block = b"x" * CHUNK
                while left > 0:
                    piece = block if left >= CHUNK else block[:left]
                    await self._send(conn, writer, h11.Data(data=piece))
                    left -= len(piece)
            await self._send(conn, writer, h11.EndOfMessage())
            return False
        if parts[0] == "status" and len(parts) == 2:
            code = int(parts[1])
            body = b"" if code in (204, 304) else f"status {code} from {self.name}\n".encode()
            hdrs = list(base)
            if code not in (204, 304):
                hdrs.append((b"Content-Length", str(len(body)).encode()))
            await self._send(conn, writer, h11.Response(status_code=code, headers=hdrs))
            if body and req.method != b"HEAD":
                await self._send(conn, writer, h11.Data(data=body))
            await self._send(conn, writer, h11.EndOfMessage())
            return False
        if parts[0] == "slow" and len(parts) == 2:
            await asyncio.sleep(float(parts[1]))
        if path == "/malformed":
            writer.write(b"THIS IS NOT HTTP\r\n\r\n")
            await writer.drain()
            return True
        if path == "/hang":
            await asyncio.sleep(3600)
        status = 200
        if path == "/headers":
            body = json.dumps(headers).encode()
        elif path == "/health":
            status, body = self.health, b"ok\n"
            if self.maintenance:
                status, body = self.maintenance_status, b"under construction\n"
        elif path == "/hold":
            self.holding += 1
            try:
                await self._release.wait()
            finally:
                self.holding -= 1
            body = b"released by " + name + b"\n"
        else:
            if self.delay:
                await asyncio.sleep(self.delay)
            status = self.status
            body = b"hello from " + name + b"\n" if self.body is None else self.body
        await self._send(
            conn,
            writer,
            h11.Response(
                status_code=status,
                headers=[
                    *base,
                    (b"Content-Type", b"text/plain"),
                    (b"Content-Length", str(len(body)).encode()),
                    *([] if self.keep_alive else [(b"Connection", b"close")]),
                ],
            ),
        )
        if req.method != b"HEAD":
            await self._send(conn, writer, h11.Data(data=body))
        await self._send(conn, writer, h11.EndOfMessage())
        return False

    async def _stream(self, writer: asyncio.StreamWriter, n: int, head: bool) -> None:
        if head:
            return
        block = b"x" * CHUNK
        while n > 0:
            piece = block if n >= CHUNK else block[:n]
            writer.write(piece)
            await writer.drain()
            n -= len(piece)

    async def _websocket(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        headers: dict[str, str],
    ) -> bool:
        key = headers.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        await self._send(
            conn,
            writer,
            h11.InformationalResponse(
                status_code=101,
                headers=[
                    (b"Upgrade", b"websocket"),
                    (b"Connection", b"Upgrade"),
                    (b"Sec-WebSocket-Accept", accept),
                ],
            ),
        )
        data, _ = conn.trailing_data
        buf = bytearray(data)
        while True:
            frame = await read_frame(reader, buf)
            if frame is None:
                return True
            opcode, payload = frame
            if opcode == 0x8:
                writer.write(encode_frame(0x8, payload, mask=False))
                await writer.drain()
                return True
            writer.write(encode_frame(opcode, payload, mask=False))
            await writer.drain()


async def read_frame(reader: asyncio.StreamReader, buf: bytearray) -> tuple[int, bytes] | None:
    async def need(n: int) -> bool:
        while len(buf) < n:
            data = await reader.read(CHUNK)
            if not data:
                return False
            buf.extend(data)
        return True

    if not await need(2):
        return None
    opcode = buf[0] & 0x0F
    masked = buf[1] & 0x80
    length = buf[1] & 0x7F
    pos = 2
    if length == 126:
        if not await need(4):
            return None
        length = int.from_bytes(buf[2:4], "big")
        pos = 4
    elif length == 127:
        if not await need(10):
            return None
        length = int.from_bytes(buf[2:10], "big")
        pos = 10
    mask = b""
    if masked:
        if not await need(pos + 4):
            return None
        mask = bytes(buf[pos : pos + 4])
        pos += 4
    if not await need(pos + length):
        return None
    payload = bytes(buf[pos : pos + length])
    del buf[: pos + length]
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def encode_frame(opcode: int, payload: bytes, *, mask: bool) -> bytes:
    head = bytearray([0x80 | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(mbit | 127)
        head += n.to_bytes(8, "big")
    if mask:
        key = b"\x01\x02\x03\x04"
        head += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + payload


@contextlib.contextmanager
def serve_in_thread(*backends: Backend) -> Iterator[tuple[Backend, ...]]:
    """Runs ``backends`` on their own event loop in a thread, for synchronous tests (a
    ``quiesce`` subprocess in front of them); :func:`wait_holding` and ``release`` work from
    the test's thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()

    async def start() -> None:
        for b in backends:
            await stack.enter_async_context(b)

    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        yield backends
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
