"""Sans-IO translation between the HTTP/1.1 exchange and an HTTP/2 stream to a server: the
request head the exchange writes becomes a header list, the server's HEADERS, DATA and
trailers become the HTTP/1.1 bytes the exchange's :class:`~quiesce.dataplane.h1.upstream.
Upstream` parses. Nothing here does I/O or keeps state beyond its arguments.

Framing: a response with a ``content-length`` keeps it (its trailers, if a server sends
any, cannot be said in HTTP/1.1 and are dropped); one without is chunked, and its trailers
(gRPC's ``grpc-status``, ``grpc-message``) become the chunked body's trailer section. A
response that ends with its HEADERS (gRPC's "trailers-only" answer) gets ``content-length:
0``, which the HTTP/2 front end sends as HEADERS with END_STREAM again.
"""

from __future__ import annotations

# Connection-specific fields (RFC 9113 §8.2.2) and Host (:authority carries it): never sent in
# an HTTP/2 header list, nor taken from one into an HTTP/1.1 head.
CONNECTION_SPECIFIC = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"host",
        b"http2-settings",
    }
)
# A trailer field that must not be passed on in a chunked body's trailer section.
NOT_TRAILERS = CONNECTION_SPECIFIC | {b"content-length", b"trailer", b"content-encoding"}
TE_TRAILERS = (b"te", b"trailers")
GRPC_STATUS = b"grpc-status"


def request_headers(
    method: bytes, url: bytes, fields: list[tuple[bytes, bytes]], scheme: bytes
) -> list[tuple[bytes, bytes]]:
    """The header list of a request whose HTTP/1.1 head had ``method``, ``url`` (origin form,
    or absolute form) and ``fields``. ``te: trailers`` is always sent: quiesce reads the
    trailers of the response (and gRPC servers refuse a call without it)."""
    authority = b""
    path = url
    if not url.startswith(b"/") and b"://" in url:  # absolute form
        rest = url.split(b"://", 1)[1]
        slash = rest.find(b"/")
        authority, path = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
    out: list[tuple[bytes, bytes]] = []
    add = out.append
    for name, value in fields:
        low = name.lower()
        if low in CONNECTION_SPECIFIC:
            if low == b"host" and not authority:
                authority = value
            continue
        add((low, value))
    head = [(b":method", method), (b":scheme", scheme), (b":authority", authority)]
    if method != b"CONNECT":
        head.append((b":path", path or b"/"))
    head += out
    head.append(TE_TRAILERS)
    return head


def response_head(
    headers: tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]],
    end: bool,
    head_only: bool,
) -> tuple[int, bytes, bool, bytes | None]:
    """An HTTP/2 response's header list as an HTTP/1.1 head: (status, head, chunked,
    grpc_status). ``end``: the HEADERS ended the stream; ``head_only``: the request was HEAD
    (no framing is added). ``grpc_status`` is the field's value when the HEADERS carry it
    (a trailers-only answer), else None. ValueError: no valid ``:status``."""
    status = -1
    lines = []
    length = False
    grpc: bytes | None = None
    for name, value in headers:
        if name[:1] == b":":
            if name == b":status":
                status = int(value)
            continue
        if name in CONNECTION_SPECIFIC:
            continue
        if name == b"content-length":
            length = True
        elif name == GRPC_STATUS:
            grpc = value
        lines.append(b"%s: %s\r\n" % (name, value))
    if not 100 <= status <= 999:
        raise ValueError("response without a valid :status")
    chunked = False
    if not head_only and status >= 200 and status not in (204, 304):
        if end:
            if not length:
                lines.append(b"content-length: 0\r\n")
        elif not length:
            lines.append(b"transfer-encoding: chunked\r\n")
            chunked = True
    return status, b"HTTP/1.1 %d \r\n%s\r\n" % (status, b"".join(lines)), chunked, grpc


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def trailer_section(
    headers: tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]],
) -> tuple[bytes, bytes | None]:
    """A chunked body's end with ``headers`` as its trailers, and the ``grpc-status`` among
    them (None: not a gRPC answer)."""
    grpc = None
    lines = [b"0\r\n"]
    for name, value in headers:
        if name[:1] == b":" or name in NOT_TRAILERS:
            continue
        if name == GRPC_STATUS:
            grpc = value
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    return b"".join(lines), grpc


def grpc_code(value: bytes | None) -> int | None:
    """A ``grpc-status`` value as its code (0..16; anything else as it is, or -1 when it is
    not a number), None for None."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return -1
