"""The connection phase of a ``protocol: mysql`` service with ``tls``, sans-IO: the bytes the
relay rewrites so that it terminates the client's TLS and speaks cleartext to the server.

MySQL starts TLS inside its handshake: the server's greeting advertises ``CLIENT_SSL``, the
client answers with an *SSL request* (the first 32 bytes of a handshake response, with
``CLIENT_SSL``, sequence id 1), both start TLS, and the client sends its whole handshake
response inside TLS with sequence id 2. The server the relay speaks to sees a cleartext
connection, so :class:`Splice`:

* sets ``CLIENT_SSL`` in the greeting it passes to the client (whatever the server offers);
* takes the client's SSL request (not passed on): :meth:`Splice.client` says start TLS, with
  the bytes that followed it in the same read, which must be the TLS handshake (a record
  starting 0x16) and go to the TLS engine, never to the server: bytes the client sent in
  cleartext after its SSL request cannot be taken for bytes inside TLS (as PostgreSQL's
  CVE-2021-23214). Anything else is refused;
* inside TLS, checks the client's handshake response (sequence id 2, a full response),
  clears its ``CLIENT_SSL`` and renumbers the connection phase: client to server -1, server
  to client +1, every packet (authentication switch and more-data packets too), until the
  server's OK (or ERR) that ends the authentication; the relay then follows the session as a
  cleartext one (quiesce.dataplane.mysql).

A client that answers the greeting with a cleartext handshake response is passed on
untouched (only the greeting's ``CLIENT_SSL`` differs).

With ``server_tls`` (the pool's ``tls``) the server gets, for the client's handshake response,
the relay's own SSL request then the response as a client sends it inside TLS (``wire``:
sequence id 2, ``CLIENT_SSL``), and the renumbering is by the difference of the two sides
(none when both have TLS, -1 / +1 for a cleartext client). Without the service's ``tls``
(``offer`` false) the greeting's ``CLIENT_SSL`` is cleared and a client's SSL request refused.
"""

from __future__ import annotations

from typing import Final

from quiesce.dataplane.mysql import CLIENT_PROTOCOL_41, CLIENT_SSL, MAX_GREETING

_SSL_BYTE: Final = CLIENT_SSL >> 8  # CLIENT_SSL in a capabilities' second byte
TLS_RECORD: Final = 0x16  # a TLS handshake record: how a ClientHello starts


class _Way:
    """One direction's renumbering: packet headers rewritten as they pass, payloads not."""

    __slots__ = ("delta", "done", "ending", "hold", "left", "server")

    def __init__(self, delta: int, server: bool) -> None:
        self.delta = delta
        self.server = server  # the server's side: an OK or ERR ends the renumbering
        self.hold = b""  # a header split by reads
        self.left = 0  # payload bytes of the current packet still to pass
        self.ending = False  # the current packet is the server's OK / ERR
        self.done = False

    def renumber(self, data: bytes) -> bytes:
        buf = self.hold + data if self.hold else data
        self.hold = b""
        out: list[bytes] = []
        pos, n = 0, len(buf)
        while pos < n:
            left = self.left
            if left:
                take = min(left, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self.left = left - take
                if not self.left and self.ending:
                    self.done = True
                continue
            if self.done:
                out.append(buf[pos:])
                break
            length = int.from_bytes(buf[pos : pos + 3], "little") if n - pos >= 3 else 0
            if n - pos < 4 or (self.server and length and n - pos < 5):
                self.hold = buf[pos:]  # the header (and a server packet's first byte)
                break
            out.append(buf[pos : pos + 3] + bytes(((buf[pos + 3] + self.delta) & 0xFF,)))
            pos += 4
            self.left = length
            if self.server and length and buf[pos] in (0x00, 0xFF):
                self.ending = True  # the authentication's end: OK, or ERR
        return b"".join(out)


class Splice:
    """One session's connection phase on a mysql service with ``tls`` (see the module)."""

    __slots__ = (
        "cbuf",
        "down",
        "greeted",
        "inner",
        "offer",
        "sbuf",
        "server_tls",
        "tls",
        "up",
        "wire",
    )

    def __init__(self, offer: bool = True, server_tls: bool = False) -> None:
        self.offer = offer  # the service has tls: CLIENT_SSL offered to the client
        self.server_tls = server_tls  # the pool has tls: an SSL request of the relay's own
        self.greeted = False  # the greeting passed to the client
        self.sbuf = b""  # the greeting, split by reads
        self.cbuf = b""  # the client's first packet's head, split by reads
        self.tls = False  # the client asked for TLS
        self.inner = False  # the handshake response passed on
        self.up = _Way(1, True)  # server to client
        self.down = _Way(-1, False)  # client to server
        # with server_tls, what goes to the server for the handshake response (the relay's
        # SSL request, 36 bytes, first; then TLS): the bytes returned are the framer's view
        self.wire: bytes | None = None

    @property
    def renumbered(self) -> bool:
        return self.tls or self.server_tls

    @property
    def done(self) -> bool:
        """Nothing more to rewrite: a cleartext client answered a cleartext server, or the
        server's OK / ERR that ends the authentication passed."""
        return self.greeted and (self.up.done or (self.inner and not self.renumbered))

    def server(self, data: bytes) -> bytes | str:
        """One read from the server: the bytes to pass to the client, or an error."""
        if self.greeted:
            return self.up.renumber(data) if self.renumbered else data
        buf = self.sbuf + data
        if len(buf) < 4:
            self.sbuf = buf
            return b""
        length = int.from_bytes(buf[:3], "little")
        if length > MAX_GREETING:
            return f"server sent a greeting of {length} bytes (limit {MAX_GREETING})"
        if len(buf) < 4 + length:
            self.sbuf = buf
            return b""
        self.sbuf = b""
        self.greeted = True
        if not length or buf[4] != 10:
            return buf  # refused at once (ERR), or not MySQL: the framer says
        nul = buf.find(b"\0", 5, 4 + length)
        q = nul + 1 + 4 + 8 + 1  # version, connection id, scramble, filler
        if nul < 0 or q + 2 > 4 + length:
            return buf  # malformed: the framer says
        if self.server_tls and not buf[q + 1] & _SSL_BYTE:
            return "server does not offer TLS (CLIENT_SSL), which its pool's tls asks for"
        out = bytearray(buf)
        if self.offer:
            out[q + 1] |= _SSL_BYTE
        else:  # the relay cannot relay a client's TLS it does not terminate
            out[q + 1] &= ~_SSL_BYTE & 0xFF
        return bytes(out)

    def client(self, data: bytes) -> tuple[bytes, bytes | None, str | None]:
        """One read from the client: (the bytes to pass to the server, the bytes to start
        TLS with when the client asked for it, else None, an error or None)."""
        if self.inner:  # (a cleartext client's response, split by reads: the rest as it is)
            return self.down.renumber(data) if self.renumbered else data, None, None
        buf = self.cbuf + data
        length = int.from_bytes(buf[:3], "little")
        if len(buf) < 8 or len(buf) < min(36, 4 + length):  # a header and 32 bytes
            self.cbuf = buf
            return b"", None, None
        seq = buf[3]
        caps = int.from_bytes(buf[4:8], "little")
        asks = length == 32 and bool(caps & CLIENT_SSL) and bool(caps & CLIENT_PROTOCOL_41)
        if not self.tls:
            if not asks:  # a cleartext client: passed on untouched (the framer checks it)
                self.cbuf = b""
                return self._response(buf, 0), None, None
            if not self.offer:
                return b"", None, "client asked for TLS, which this service does not offer"
            if seq != 1:
                return b"", None, f"client sent an SSL request with sequence id {seq}"
            if len(buf) < 36:
                self.cbuf = buf
                return b"", None, None
            self.cbuf = b""
            rest = buf[36:]
            if rest and rest[0] != TLS_RECORD:
                return (
                    b"",
                    None,
                    f"client sent {len(rest)} bytes after its SSL request that are not TLS",
                )
            self.tls = True
            return b"", rest, None
        if asks:
            return b"", None, "client sent a second SSL request inside TLS"
        if seq != 2:
            return b"", None, f"client's handshake response inside TLS has sequence id {seq}"
        self.cbuf = b""
        return self._response(buf, 1), None, None

    def _response(self, buf: bytes, shift: int) -> bytes:
        """The client's handshake response (its first 36 bytes here, or all of it; ``shift``:
        its sequence id's distance from 1, 1 with TLS to the client). Returns the framer's
        view (sequence id 1, no CLIENT_SSL), which is also what a cleartext server gets; with
        ``server_tls`` the server gets ``wire``: the relay's SSL request, then the response
        as sent inside TLS (sequence id 2, CLIENT_SSL). Sets both directions' renumbering:
        server to client ``shift - server_tls``, client to server the opposite."""
        self.inner = True
        delta = shift - self.server_tls
        self.up.delta, self.down.delta = delta, -delta
        length = int.from_bytes(buf[:3], "little")
        head = bytearray(buf[:8])
        head[3] = 1
        head[5] &= ~_SSL_BYTE & 0xFF
        self.down.left = max(0, length - 4)  # the rest of this packet passes as it is
        out = bytes(head) + self.down.renumber(buf[8:])
        if self.server_tls:
            request = bytearray(out[:36])
            request[:4] = b"\x20\0\0\x01"
            request[5] |= _SSL_BYTE
            wire = bytearray(out)
            wire[3] = 2
            wire[5] |= _SSL_BYTE
            self.wire = bytes(request) + bytes(wire)
        return out
