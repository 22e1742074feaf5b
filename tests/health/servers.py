"""Real back ends on loopback for the health tests (port 0, ready when the fixture returns)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast

PAD = 2100  # bytes of body before a string that must NOT be seen (beyond byte 2048)


@dataclass
class HttpBackend:
    """An HTTP/1.0-style server whose answer the test switches with :attr:`mode`:

    ``ok`` (200), ``503``, ``500``, ``construction`` (200 with "under construction" near the
    top), ``construction_late`` (200 with it starting after byte 2048), ``close`` (closes
    without a reply), ``hang`` (reads the request, never answers)."""

    mode: str = "ok"
    requests: int = 0
    seen: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0

    def reply(self) -> bytes | None:
        body = b"hello\n"
        status = "200 OK"
        if self.mode == "503":
            status, body = "503 Service Unavailable", b"busy\n"
        elif self.mode == "500":
            status, body = "500 Internal Server Error", b"oops\n"
        elif self.mode == "construction":
            body = b"<html>site under construction</html>\n"
        elif self.mode == "construction_late":
            body = b"x" * PAD + b"under construction\n"
        elif self.mode in ("close", "hang"):
            return None
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        return head.encode() + body

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            writer.close()
            return
        self.requests += 1
        self.seen.append(request)
        try:
            if self.mode == "hang":
                await reader.read()  # until the prober gives up
            answer = self.reply()
            if answer is not None:
                writer.write(answer)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def start(self, ssl: object = None) -> HttpBackend:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl)  # type: ignore[arg-type]
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class UdpEcho(asyncio.DatagramProtocol):
    """Echoes every datagram, prefixed with :attr:`prefix`."""

    def __init__(self) -> None:
        self.prefix = b""
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.prefix + data, addr)
