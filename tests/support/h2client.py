"""A raw HTTP/2 client for tests that must send what a polite client would not (hostile
frames, by hand or by the ``h2`` library) or watch every frame::

    c = await RawClient.open(port)
    c.h2.send_headers(1, request("/"), end_stream=True); c.flush()
    await c.read_until(lambda: c.ended(1))
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions


def request(path: str = "/", method: str = "GET") -> list[tuple[str, str]]:
    return [(":method", method), (":path", path), (":scheme", "http"), (":authority", "t")]


class RawClient:
    """An HTTP/2 client on raw frames: ``h2`` writes what it may, ``send`` anything."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.events: list[Any] = []
        self.raw = b""  # every byte received
        self.eof = False

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        c = cls(reader, writer)
        c.flush()
        return c

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_until(self, done: Any, timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not done():
                data = await self.reader.read(65536)
                if not data:
                    self.eof = True
                    return
                self.raw += data
                try:
                    self.events += self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    # frames for streams it never opened (the hostile part is ours), or after
                    # a GOAWAY (h2 closes its state at one): nothing of its own goes back,
                    # not the GOAWAY it would answer with
                    self.h2.data_to_send()
                    continue
                self.flush()

        await asyncio.wait_for(loop(), timeout)

    def frames(self) -> list[tuple[int, int, bytes]]:
        """(type, stream id, payload) of every frame received."""
        out, i, raw = [], 0, self.raw
        while i + 9 <= len(raw):
            n = int.from_bytes(raw[i : i + 3], "big")
            sid = int.from_bytes(raw[i + 5 : i + 9], "big") & 0x7FFFFFFF
            out.append((raw[i + 3], sid, raw[i + 9 : i + 9 + n]))
            i += 9 + n
        return out

    def ended(self, sid: int) -> bool:
        return any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in self.events)

    def goaway(self) -> Any:
        found = [e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)]
        return found[0] if found else None

    def close(self) -> None:
        self.writer.close()


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", sid)
        + payload
    )
