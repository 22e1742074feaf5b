"""Types of the optional C extension ``quiesce._h2fast`` (src/quiesce/_ext/h2fast.c): the C
twin of quiesce.dataplane.h2.stream.answer_fields."""

def answer(data: bytes, /) -> tuple[list[tuple[bytes, bytes]], int, bytes] | None:
    """(fields, length, body) of an HTTP/1.1 answer with its whole head: the HTTP/2 header
    list (``:status`` first, names in lower case, connection-specific fields left out), its
    Content-Length (-1: none) and the bytes after the head; None for an interim answer, a
    chunked one, a Content-Length not a number."""
