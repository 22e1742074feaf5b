"""Reading message heads: the ``HeadCodec`` seam, and the head-size cap that keeps httptools
from buffering an unbounded header line.

A head codec reads one whole common-case message in one call and returns its named fields
(:class:`RequestHead`, :class:`ResponseHead`), or declines (None). Two implementations, twins
like aiohttp's C and Python parsers:

* :data:`C_HEADS` — ``quiesce._httpfast`` (src/quiesce/_ext/httpfast.c), when built: the
  proxy's per-request path. It returns plain tuples with the named tuples' fields in the
  same order (a plain tuple is what that path unpacks fastest; ``RequestHead(*r)`` names
  them).
* :class:`HttptoolsHeads` — the same contract in Python on httptools and the header policy
  (quiesce.dataplane.h1.headers): the reference the C is tested against
  (tests/dataplane/test_headers.py: whatever the C accepts, the twin reads the same).

Every message the C declines is fed to httptools incrementally (``ClientConnection`` and
``Upstream`` callbacks), exactly as if the C module were not there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

import httptools

from quiesce import _accel
from quiesce.dataplane.h1.exchange import RQ_BODY, Request
from quiesce.dataplane.h1.headers import (
    HTTP_FORWARDED,
    WireError,
    forward_request,
    forward_response,
)


class RequestHead(NamedTuple):
    """A whole bodyless request head, read and rewritten for the server."""

    method: bytes
    url: bytes
    http10: bool
    keep_alive: bool
    host: bytes | None  # the Host it is forwarded with (None: HTTP/1.0 without one)
    cookie: bytes | None  # the Cookie header(s), joined with "; "
    head: bytes  # the head sent to the server (X-Forwarded-* added, hop-by-hop removed)


class ResponseHead(NamedTuple):
    """A whole Content-Length response, head and body, rewritten for the client."""

    status: int
    keep_alive: bool  # may the server's connection be reused
    out: bytes  # the bytes for the client (``extra`` lines added to the head)


RequestFields = tuple[bytes, bytes, bool, bool, bytes | None, bytes | None, bytes]
ResponseFields = tuple[int, bool, bytes]


class HeadCodec(Protocol):
    """Reads one whole common-case message, or declines (None): the caller then feeds the
    same bytes to httptools."""

    def request(
        self,
        data: bytes,
        peer: bytes,
        max_line: int,
        max_header: int,
        forwarded: bytes = HTTP_FORWARDED,
    ) -> RequestFields | None:
        """``data`` is one whole bodyless request with nothing behind it; ``peer`` the
        client's address (X-Forwarded-For); ``max_line`` / ``max_header`` the limits;
        ``forwarded`` the CRLF-terminated lines added after X-Forwarded-For."""

    def response(self, data: bytes, max_header: int, extra: bytes) -> ResponseFields | None:
        """``data`` is one whole Content-Length response (head and body) with nothing behind
        it; ``extra``: header lines (CRLF-terminated) the proxy adds to its head."""


class _Collect:
    """httptools callbacks that keep one message's pieces."""

    __slots__ = ("begun", "body", "done", "head", "headers", "parser", "reason", "url")

    def __init__(self) -> None:
        self.begun = self.done = 0
        self.url = self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None
        # what the parser says once the head is read (it forgets at the message's end):
        # keep-alive, HTTP/1.0, upgrade, status
        self.head: tuple[bool, bool, bool, int] = (False, False, False, 0)

    def on_headers_complete(self) -> None:
        p = self.parser
        assert p is not None
        status = p.get_status_code() if isinstance(p, httptools.HttpResponseParser) else 0
        self.head = (
            p.should_keep_alive(),
            p.get_http_version() == "1.0",
            p.should_upgrade(),
            status,
        )

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done += 1


class HttptoolsHeads:
    """The head codec in Python: httptools and the header policy, one whole message."""

    def request(
        self,
        data: bytes,
        peer: bytes,
        max_line: int,
        max_header: int,
        forwarded: bytes = HTTP_FORWARDED,
    ) -> RequestHead | None:
        if max_line < 0 or max_header < 0:
            return None
        got = _Collect()
        parser = got.parser = httptools.HttpRequestParser(got)
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None
        keep, http10, upgrade, _ = got.head
        if got.begun != 1 or got.done != 1 or got.body or upgrade:
            return None
        size = sum(len(n) + len(v) + 4 for n, v in got.headers)
        method = parser.get_method()
        if len(got.url) > max_line or size > max_header or method == b"CONNECT":
            return None
        req = Request()
        req.method, req.url = method, got.url
        try:
            forward_request(req, got.headers, False, peer, forwarded)
        except WireError:
            return None
        if req.state is RQ_BODY or req.chunked or req.expect:
            return None
        return RequestHead(method, got.url, http10, keep, req.host, req.cookie, req.head)

    def response(self, data: bytes, max_header: int, extra: bytes) -> ResponseHead | None:
        got = _Collect()
        parser = got.parser = httptools.HttpResponseParser(got)
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None
        keep, _, _, status = got.head
        end = data.find(b"\r\n\r\n")
        if got.begun != 1 or got.done != 1 or status < 200 or status in (204, 304):
            return None
        if end < 0 or end + 4 > max_header:
            return None
        lines, length, chunked = forward_response(status, got.reason, got.headers)
        if length is None or chunked:
            return None
        out = b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n" + b"".join(got.body)
        return ResponseHead(status, keep, out)


if TYPE_CHECKING:
    from quiesce import _httpfast

    _: HeadCodec = _httpfast  # the stub (src/quiesce/_httpfast.pyi) fits the seam
    _ = HttptoolsHeads()

# The C twin, or None (not built, or QUIESCE_PURE=1).
C_HEADS: HeadCodec | None = _accel.httpfast
# Its functions, read by the per-request path (a module global each: no attribute lookup).
fast_request = C_HEADS.request if C_HEADS is not None else None
fast_response = C_HEADS.response if C_HEADS is not None else None


class HeadTooLarge(httptools.HttpParserError):
    pass


class HeadCapped(Protocol):
    """A connection whose incoming heads are capped (client or upstream side)."""

    head_left: int  # head bytes still allowed; -1: in a body
    heads: int  # heads parsed so far
    closed: bool


def feed_capped(
    conn: HeadCapped,
    parser: httptools.HttpResponseParser | httptools.HttpRequestParser,
    data: bytes,
) -> None:
    """Feed ``data`` that goes past the head-size limit (``conn.head_left`` bytes): the head
    must end within it, else HttpParserError. httptools buffers an unfinished header line
    itself, without bound (and quadratically): only this limit keeps it small. Rare path:
    only a read that crosses the limit comes here."""
    base = 0
    while True:
        left = conn.head_left
        rest = len(data) - base
        if left < 0 or rest <= left:
            if left >= 0:
                conn.head_left = left - rest
            try:
                parser.feed_data(data[base:] if base else data)
            except httptools.HttpParserUpgrade as exc:
                raise httptools.HttpParserUpgrade(base + exc.args[0]) from None
            return
        heads = conn.heads
        try:
            parser.feed_data(data[base : base + left])
        except httptools.HttpParserUpgrade as exc:
            raise httptools.HttpParserUpgrade(base + exc.args[0]) from None
        if conn.heads == heads:
            raise HeadTooLarge("message head larger than the limit")
        if conn.closed:
            return
        base += left
