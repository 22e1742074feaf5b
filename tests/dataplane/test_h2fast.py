"""quiesce._h2fast.answer, an HTTP/2 stream's answer head read in C, against its Python twin
(quiesce.dataplane.h2.stream.answer_fields): the same header list, Content-Length and body,
or both decline, answer by answer (a corpus of the heads the exchange writes and of what it
never writes, and random ones)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quiesce import _accel
from quiesce.dataplane.h1.exchange import Request
from quiesce.dataplane.h2.stream import answer_fields

pytestmark = [
    pytest.mark.skipif(_accel.h2fast is None, reason="C accelerator not built"),
    pytest.mark.one_path,
]

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 09:40:01 GMT\r\n"
    b"Content-Type: text/html\r\nContent-Length: 5\r\nLast-Modified: x\r\n"
    b'Connection: keep-alive\r\nETag: "AbC"\r\nAccept-Ranges: bytes\r\n\r\nhello'
)

CORPUS = [
    NGINX,
    NGINX[:-2],  # the body not whole: the caller compares the length
    b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\ngrpc-status: 0\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\nno",
    b"HTTP/1.1 200 OK\r\nSet-Cookie:ID=Xy; Path=/\r\nX-Sp:  \t v \t\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nKeep-Alive: 5\r\nTE: x\r\nUpgrade: h2c\r\nProxy-Connection: x\r\n"
    b"Content-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 1\r\n\r\nx",
    # declined: interim, chunked, a Content-Length not a number, no whole head, not 1.1
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 2x0 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
    b"",
    b"HTTP/1.1 ",
]


@pytest.mark.parametrize("data", CORPUS)
def test_c_and_python_read_an_answer_alike(data: bytes) -> None:
    assert _accel.h2fast is not None
    assert _accel.h2fast.answer(data) == answer_fields(data)


def test_the_header_list() -> None:
    assert _accel.h2fast is not None
    got = _accel.h2fast.answer(NGINX)
    assert got == (
        [
            (b":status", b"200"),
            (b"server", b"nginx/1.22.1"),
            (b"date", b"Sat, 21 Nov 2026 09:40:01 GMT"),
            (b"content-type", b"text/html"),
            (b"content-length", b"5"),
            (b"last-modified", b"x"),
            (b"etag", b'"AbC"'),
            (b"accept-ranges", b"bytes"),
        ],
        5,
        b"hello",
    )
    assert _accel.h2fast.answer(CORPUS[-4]) is None  # (a line without a colon)


_names = st.sampled_from(
    [b"Content-Length", b"content-length", b"Transfer-Encoding", b"Connection", b"TE", b"X-A"]
)
_values = st.sampled_from([b"0", b"5", b"12", b"x", b" 5 ", b"chunked", b"", b"\t7"])


@given(
    code=st.sampled_from([b"100", b"200", b"204", b"304", b"404", b"999", b"2a0"]),
    fields=st.lists(st.tuples(_names, _values), max_size=5),
    body=st.binary(max_size=8),
    cut=st.integers(0, 3),
)
def test_random_heads(
    code: bytes, fields: list[tuple[bytes, bytes]], body: bytes, cut: int
) -> None:
    assert _accel.h2fast is not None
    head = b"HTTP/1.1 " + code + b" R\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in fields)
    data = (head + b"\r\n" + body)[: len(head) + 2 + len(body) - cut]
    assert _accel.h2fast.answer(data) == answer_fields(data)


# ---- a stream's request: quiesce._h2fast.request against request.slow_request ----------------

_REQ_NAMES = [
    b":method",
    b":path",
    b":authority",
    b":scheme",
    b"host",
    b"cookie",
    b"content-length",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"expect",
    b"te",
    b"transfer-encoding",
    b"connection",
    b"accept",
    b"proxy-authorization",
]
_REQ_VALUES = [b"GET", b"HEAD", b"/", b"/a?b", b"h", b"h2", b"0", b"5", b"x", b"", b"100-Continue"]


def both(
    headers: Sequence[tuple[bytes, bytes]], end: bool, line: int = 99, size: int = 999
) -> None:
    """The C and the Python request are the same Request, or the same refusal."""
    from quiesce.dataplane.h2 import request as mod

    fast = mod._fast_request
    assert fast is not None
    fwd = b"X-Forwarded-Proto: https\r\n"
    try:
        want: object = mod.slow_request(headers, end, b"10.1.1.1", fwd, line, size)
    except mod.Malformed:
        want = "malformed"
    except mod.TooLarge as exc:
        want = exc.status
    try:
        got: object = mod.stream_request(headers, end, b"10.1.1.1", fwd, line, size)
    except mod.Malformed:
        got = "malformed"
    except mod.TooLarge as exc:
        got = exc.status
    if isinstance(want, Request):
        assert isinstance(got, Request), (headers, got)
        assert {s: getattr(got, s) for s in SLOTS} == {s: getattr(want, s) for s in SLOTS}
    else:
        assert got == want, headers


SLOTS = (
    "method",
    "url",
    "host",
    "cookie",
    "head",
    "headers",
    "chunked",
    "expect",
    "state",
    "head_only",
)


@pytest.mark.parametrize("end", [True, False])
def test_c_and_python_make_the_same_request(end: bool) -> None:
    get = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/x")]
    for extra in [
        [],
        [(b":authority", b"a"), (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2")],
        [(b"host", b"h"), (b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2")],
        [(b"content-length", b"0")],
        [(b"content-length", b"12"), (b"expect", b"100-continue")],
        [(b"expect", b"other"), (b"te", b"trailers"), (b"x-forwarded-host", b"evil")],
        [(b"host", b"a"), (b"host", b"b")],
        [(b"content-length", b"1"), (b"content-length", b"2")],
        [(b"content-length", b"1"), (b"content-length", b"1")],
        [(b"content-length", b"")],
        [(b"transfer-encoding", b"chunked")],
        [(b"x", b"v" * 990)],
        [(b"x", b"v" * 989)],
    ]:
        both([*get, *extra], end)
    both([(b":method", b"GET"), (b":path", b"/" + b"a" * 99)], end)
    both([(b":method", b"GET"), (b":path", b"/" + b"a" * 98)], end)
    both([(b":method", b"CONNECT"), (b":authority", b"h:443")], end)
    both([(b":method", b"HEAD"), (b":path", b"/")] + [(b"a", b"b")] * 200, end, size=99999)


@given(
    fields=st.lists(
        st.tuples(st.sampled_from(_REQ_NAMES), st.sampled_from(_REQ_VALUES)), max_size=10
    ),
    end=st.booleans(),
)
def test_random_requests(fields: list[tuple[bytes, bytes]], end: bool) -> None:
    both([(b":method", b"POST"), (b":path", b"/p"), *fields], end)
    both(((b":method", b"POST"), (b":path", b"/p"), *fields), end)  # (ngh2 gives a tuple)
