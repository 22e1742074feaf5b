"""Reading a TLS ClientHello without terminating TLS (sans-IO): the server name (SNI) and
the ALPN protocols a TCP service routes on, as HAProxy's ``req.ssl_sni``.

:func:`parse_hello` takes the bytes a client sent so far and answers :data:`NEED_MORE` (the hello
is not complete yet), a :class:`Hello`, or raises :class:`NotHello` (not TLS, malformed,
truncated by its own lengths, or longer than :data:`MAX_HELLO`). The hello may span several
TLS records (RFC 8446 §5.1 allows a handshake message to be fragmented); nothing is copied
but the handshake message itself.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HELLO = 16384  # bytes of the handshake message (one record's worth, as HAProxy buffers)

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_SERVER_NAME = 0x0000
_ALPN = 0x0010


class NotHello(ValueError):
    """The bytes are not (the start of) a well-formed TLS ClientHello."""


@dataclass(frozen=True, slots=True)
class Hello:
    sni: str | None  # the host_name of server_name, lower-case; None: none sent
    alpn: tuple[str, ...] = ()


NEED_MORE = None


def parse_hello(data: bytes) -> Hello | None:
    """The ClientHello at the start of ``data``; None (:data:`NEED_MORE`) while incomplete."""
    message = _handshake(data)
    if message is None:
        return NEED_MORE
    return _client_hello(message)


def _handshake(data: bytes) -> bytes | None:
    """The first handshake message, gathered from as many records as it takes."""
    body = bytearray()
    at = 0
    while True:
        if len(data) - at < 5:
            if at == 0 and data and data[0] != _HANDSHAKE:
                raise NotHello("not a TLS handshake record")
            return None
        kind, major, length = data[at], data[at + 1], int.from_bytes(data[at + 3 : at + 5])
        if kind != _HANDSHAKE:
            raise NotHello("not a TLS handshake record")
        if major != 3:
            raise NotHello(f"not a TLS record version ({major}.{data[at + 2]})")
        if length == 0 or length > 16384 + 256:
            raise NotHello(f"bad TLS record length {length}")
        fragment = data[at + 5 : at + 5 + length]
        body += fragment
        if len(body) >= 4:
            if body[0] != _CLIENT_HELLO:
                raise NotHello("the first handshake message is not a ClientHello")
            need = int.from_bytes(body[1:4])
            if need > MAX_HELLO:
                raise NotHello(f"ClientHello of {need} bytes (at most {MAX_HELLO})")
            if len(body) >= 4 + need:
                return bytes(body[4 : 4 + need])
        if len(fragment) < length:
            return None
        at += 5 + length


class _Reader:
    __slots__ = ("at", "data", "end")

    def __init__(self, data: bytes, at: int = 0, end: int | None = None) -> None:
        self.data = data
        self.at = at
        self.end = len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if self.at + n > self.end:
            raise NotHello("ClientHello truncated (a length runs past its end)")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n))

    def sub(self, length_bytes: int) -> _Reader:
        n = self.number(length_bytes)
        if self.at + n > self.end:
            raise NotHello("ClientHello truncated (a length runs past its end)")
        r = _Reader(self.data, self.at, self.at + n)
        self.at += n
        return r

    @property
    def left(self) -> int:
        return self.end - self.at


def _client_hello(message: bytes) -> Hello:
    r = _Reader(message)
    r.take(2 + 32)  # legacy_version, random
    r.sub(1)  # legacy_session_id
    r.sub(2)  # cipher_suites
    r.sub(1)  # legacy_compression_methods
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    if r.left == 0:
        return Hello(None)  # no extensions (SSL 3 / early TLS 1.0 clients)
    extensions = r.sub(2)
    if r.left:
        raise NotHello("bytes after the ClientHello's extensions")
    seen: set[int] = set()
    while extensions.left:
        kind = extensions.number(2)
        body = extensions.sub(2)
        if kind in seen:
            raise NotHello(f"extension {kind} sent twice")
        seen.add(kind)
        if kind == _SERVER_NAME:
            sni = _server_name(body)
        elif kind == _ALPN:
            alpn = _alpn(body)
    return Hello(sni, alpn)


def _server_name(body: _Reader) -> str | None:
    names = body.sub(2)
    found: str | None = None
    while names.left:
        kind = names.number(1)
        raw = names.sub(2)
        value = raw.take(raw.left)
        if kind != 0 or found is not None:
            continue  # only one host_name counts (RFC 6066 §3)
        if not value or not all(0x21 <= b < 0x7F for b in value):
            raise NotHello("server name is not a printable ASCII host name")
        found = value.decode("ascii").lower().rstrip(".")
    return found


def _alpn(body: _Reader) -> tuple[str, ...]:
    protocols = body.sub(2)
    out = []
    while protocols.left:
        p = protocols.sub(1)
        out.append(p.take(p.left).decode("latin-1"))
    return tuple(out)
