"""A stream's request, straight from its decoded header list: the
:class:`~quiesce.dataplane.h1.exchange.Request` the HTTP/1.1 exchange serves, with the head
it sends the server, without an HTTP/1.1 head written and parsed again in between.

What it applies is the HTTP/1.1 proxy's header policy (quiesce.dataplane.h1.headers.POLICY):
the same head comes out as :func:`~quiesce.dataplane.h1.headers.forward_request` makes of
the HTTP/1.1 head the list would be (tests/dataplane/test_h2_request.py compares them, field
list by field list). The list is one libnghttp2 let through: it resets (RST_STREAM
PROTOCOL_ERROR, no event) a request with a pseudo-header unknown (``:protocol`` too),
repeated, missing or after a field, a name not in lower case or not a token, a value with
NUL, CR, LF or white space at either end, a connection-specific field (``connection``,
``keep-alive``, ``proxy-connection``, ``transfer-encoding``, ``upgrade``, ``te`` other than
``trailers``), a ``:method`` not a token, a ``:path`` empty, not absolute or with a control
character or space, ``*`` for a method other than OPTIONS, a ``content-length`` not a
number or given twice, and a body that does not match its ``content-length`` (each driven in
tests/dataplane/test_h2_session.py). Checked here again, as they cost a comparison each and
the head sent upstream is never built from anything unchecked: a framing or connection field
(:class:`Malformed`), two ``content-length`` or ``host`` that differ, a ``content-length``
not a number; and here only: ``CONNECT`` (which the codec lets through without ``:path``),
the HTTP/1.1 limits (``max_request_line`` for ``:path``: 414; ``max_header_size`` for the
fields: 431, :class:`TooLarge`).

The HTTP/1.1 head: ``:authority`` (over ``host``) as ``host``, first; the fields in their
order, the dropped ones left out; the split ``cookie`` fields joined with ``; `` (RFC 9113
§8.2.3); then the proxy's ``X-Forwarded-For`` (the client's appended to), its
``X-Forwarded-Proto`` line(s) and ``X-Forwarded-Host``; a body without ``content-length``
sent ``Transfer-Encoding: chunked`` (the stream's DATA frames become its chunks). The
request is keep-alive, so the exchange ends as the usual end of a keep-alive exchange, at
once, and the stream with its answer (quiesce.dataplane.h2.stream).
"""

from __future__ import annotations

from collections.abc import Sequence

from quiesce import _accel
from quiesce.dataplane.h1.exchange import RQ_COMPLETE, Request
from quiesce.dataplane.h1.headers import (
    H_CONNECTION,
    H_COOKIE,
    H_EXPECT,
    H_HOST,
    H_LENGTH,
    H_TE,
    H_UPGRADE,
    H_XFF,
    REQUEST_SPECIAL,
)


class Malformed(Exception):
    """A request RFC 9113 §8.1.1 calls malformed: its stream is reset (PROTOCOL_ERROR)."""


class TooLarge(Exception):
    """A request past the HTTP/1.1 limits: answered ``status`` (414, 431) as over HTTP/1.1."""

    def __init__(self, status: int) -> None:
        super().__init__(f"request refused with {status}")
        self.status = status


_NEVER = (H_TE, H_CONNECTION, H_UPGRADE)  # (libnghttp2 resets these first)

# quiesce._h2fast's request, or None (tests switch it: tests/support/paths.py)
_fast_request = None if _accel.h2fast is None else _accel.h2fast.request


def stream_request(
    headers: Sequence[tuple[bytes, bytes]],
    end_stream: bool,
    peer: bytes,
    forwarded: bytes,
    max_line: int,
    max_header: int,
) -> Request:
    """The request of a stream's header list (see the module docstring); raises
    :class:`Malformed` (reset the stream) or :class:`TooLarge` (answer 414 or 431).
    quiesce._h2fast.request does it in C when built (the same, tests/dataplane/test_h2fast)."""
    fast = _fast_request
    if fast is not None:
        r = fast(headers, end_stream, peer, forwarded, max_line, max_header)
        if type(r) is tuple:
            req = Request()
            req.method, req.url, req.host, req.cookie, req.head, req.headers, flags = r
            req.head_only = req.method == b"HEAD"
            if flags & 1:
                req.chunked = True
            elif flags & 4:
                req.state = RQ_COMPLETE
            if flags & 2:
                req.expect = True
            return req
        if r == 1:  # (rare: the Python path again, for the reason to log)
            slow_request(headers, end_stream, peer, forwarded, max_line, max_header)
            raise Malformed("malformed")
        if r is not None:
            raise TooLarge(r)
    return slow_request(headers, end_stream, peer, forwarded, max_line, max_header)


def slow_request(
    headers: Sequence[tuple[bytes, bytes]],
    end_stream: bool,
    peer: bytes,
    forwarded: bytes,
    max_line: int,
    max_header: int,
) -> Request:
    """:func:`stream_request` in Python (QUIESCE_PURE=1, or a list the C leaves to it)."""
    method = path = authority = host = length = xff = None
    cookies: list[bytes] | None = None
    expect = False
    lines: list[bytes] = []
    append = lines.append
    fields: list[tuple[bytes, bytes]] = []  # the client's fields (the rules' view of them)
    keep = fields.append
    special = REQUEST_SPECIAL
    for field in headers:
        name, value = field
        if name[0] == 58:  # b":"
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue
        code = special.get(name)
        if code is None:
            append(name + b": " + value)
            keep(field)
            continue
        if code == H_COOKIE:
            if cookies is None:
                cookies = [value]
            else:
                cookies.append(value)
            continue
        if code == H_HOST:
            if host is not None and host != value:
                raise Malformed("two host fields")
            host = value
            continue
        keep(field)
        if code == H_LENGTH:
            if (length is not None and length != value) or not value.isdigit():
                raise Malformed("content-length")
            if length is None:
                append(name + b": " + value)
            length = value
        elif code == H_XFF:
            xff = value if xff is None else xff + b", " + value
        elif code == H_EXPECT:
            if value.lower() == b"100-continue":
                expect = True  # answered by the proxy once a server is connected
            else:
                append(name + b": " + value)
        elif code in _NEVER:
            raise Malformed(name.decode("latin-1"))
        # else: hop-by-hop or set by the proxy (H_DROP; ``te: trailers``)
    if method is None or path is None:
        raise Malformed("CONNECT is not supported" if method == b"CONNECT" else "no :path")
    if len(path) > max_line:
        raise TooLarge(414)
    if authority is not None:
        host = authority
    if host is not None:
        lines.insert(0, b"host: " + host)
        fields.insert(0, (b"host", host))
    cookie = None
    if cookies is not None:
        cookie = cookies[0] if len(cookies) == 1 else b"; ".join(cookies)
        append(b"cookie: " + cookie)
        fields.append((b"cookie", cookie))
    # the header block's bytes as HTTP/1.1 counts them (``name: value`` and CRLF a field)
    if sum(map(len, lines)) + 2 * len(lines) > max_header:
        raise TooLarge(431)
    chunked = not end_stream and length is None
    req = Request()
    req.method = method
    req.url = path
    req.host = host
    req.cookie = cookie
    req.expect = expect
    req.headers = fields
    req.head_only = method == b"HEAD"
    append(b"X-Forwarded-For: " + (xff + b", " + peer if xff else peer))
    append(forwarded[:-2])  # CRLF-separated lines, the last CRLF added by the join
    if host is not None:
        append(b"X-Forwarded-Host: " + host)
    if chunked:
        append(b"Transfer-Encoding: chunked")
        req.chunked = True
    elif length is None or length == b"0":
        req.state = RQ_COMPLETE  # no body
    req.head = b"".join((method, b" ", path, b" HTTP/1.1\r\n", b"\r\n".join(lines), b"\r\n\r\n"))
    return req
