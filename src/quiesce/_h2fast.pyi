"""Types of the optional C extension ``quiesce._h2fast`` (src/quiesce/_ext/h2fast.c): the C
twin of quiesce.dataplane.h2.stream.answer_fields, quiesce.dataplane.h2.request.slow_request
and the header walk of quiesce.dataplane.h2.guard.Guard.feed."""

from collections.abc import Sequence

def answer(data: bytes, /) -> tuple[list[tuple[bytes, bytes]], int, bytes] | None:
    """(fields, length, body) of an HTTP/1.1 answer with its whole head: the HTTP/2 header
    list (``:status`` first, names in lower case, connection-specific fields left out), its
    Content-Length (-1: none) and the bytes after the head; None for an interim answer, a
    chunked one, a Content-Length not a number."""

def request(
    headers: Sequence[tuple[bytes, bytes]],
    end_stream: bool,
    peer: bytes,
    forwarded: bytes,
    max_line: int,
    max_header: int,
    /,
) -> (
    tuple[bytes, bytes, bytes | None, bytes | None, bytes, list[tuple[bytes, bytes]], int]
    | int
    | None
):
    """(method, path, host, cookie, head, fields, flags) of a stream's header list
    (quiesce.dataplane.h2.request.slow_request's twin; flags: 1 chunked, 2 expect, 4 no
    body); an int for a refusal (1 malformed, 414, 431); None: left to the Python path."""

def frames(data: bytes | bytearray | memoryview, i: int, max_frame: int, /) -> int:
    """The offset of the first frame header at or after ``i`` (a frame header's offset) that
    the HTTP/2 guard must read itself (counted, refused, taken out, or cut by the end of
    ``data``); at or past ``len(data)`` when it passes every frame from ``i`` on (the excess:
    what of the last frame the next read carries)."""
