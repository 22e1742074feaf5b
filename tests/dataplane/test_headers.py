"""The header policy table (quiesce.dataplane.h1.headers.POLICY) and the two head codecs.

The Python path reads the table; the C fast path (src/quiesce/_ext/httpfast.c) has its own
``request_kind`` / ``response_kind`` switches, so it is checked against the table here, row
by row and in every letter case: where the table says the C declines, it must; elsewhere it
must accept the message and forward exactly what the Python path forwards. Then the C codec
and its Python twin (``HttptoolsHeads``) read the same fields from every message the C
accepts (hand-written and generated), like aiohttp's parser tests run over both parsers.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from quiesce import _accel
from quiesce.dataplane.h1 import headers
from quiesce.dataplane.h1.codec import HttptoolsHeads, RequestHead, ResponseHead
from quiesce.dataplane.h1.headers import FAST_DECLINES, H_DROP, H_FORWARD, POLICY
from tests.dataplane.test_httpfast import NGINX, WRK, requests, responses, same

C = _accel.httpfast
needs_c = pytest.mark.skipif(C is None, reason="C accelerator not built (or QUIESCE_PURE=1)")
TWIN = HttptoolsHeads()
pytestmark = pytest.mark.one_path  # the C and the twin, side by side

# a value each header may carry in a bodyless request / a Content-Length response
VALUES = {
    b"connection": b"keep-alive",
    b"keep-alive": b"timeout=5",
    b"proxy-connection": b"keep-alive",
    b"proxy-authenticate": b"Basic",
    b"proxy-authorization": b"Basic abc",
    b"te": b"trailers",
    b"trailer": b"X-Sum",
    b"transfer-encoding": b"chunked",
    b"upgrade": b"websocket",
    b"content-length": b"0",
    b"host": b"h",
    b"cookie": b"a=b",
    b"expect": b"100-continue",
    b"x-forwarded-for": b"192.0.2.1",
    b"x-forwarded-proto": b"https",
    b"x-forwarded-host": b"evil",
    b"x-forwarded-client-cert": b'Subject="CN=root"',
}
ORDINARY = [b"accept", b"user-agent", b"x-request-id", b"set-cookie", b"date", b"hosts"]


def spellings(name: bytes) -> list[bytes]:
    return [name, name.upper(), b"-".join(p.capitalize() for p in name.split(b"-"))]


def request_with(name: bytes, value: bytes) -> bytes:
    host = b"" if name.lower() == b"host" else b"Host: h\r\n"
    return b"GET / HTTP/1.1\r\n" + host + name + b": " + value + b"\r\n\r\n"


def response_with(name: bytes, value: bytes) -> bytes:
    if name.lower() == b"content-length":
        return b"HTTP/1.1 200 OK\r\n" + name + b": 2\r\n\r\nok"
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + name + b": " + value + b"\r\n\r\nok"


def test_the_table_is_the_policy_the_docs_state() -> None:
    assert {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    } == headers.HOP_BY_HOP
    # Connection never removes the framing and routing headers (request smuggling)
    assert {b"content-length", b"transfer-encoding", b"host"} <= headers.NEVER_HOP_BY_HOP
    assert {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-client-cert",  # set on a TLS listener only, dropped from every request
    } == headers.FORWARDED
    for name, rule in POLICY.items():
        assert name == name.lower()
        if rule.hop_by_hop:  # never forwarded as it came, either way
            assert rule.request != H_FORWARD and rule.response != H_FORWARD
        # the C either does what the Python path does, or leaves the message to it
        assert rule.fast_request in (rule.request, FAST_DECLINES) or (
            rule.request in (headers.H_UPGRADE, headers.H_EXPECT, headers.H_TE)
        )
    assert set(VALUES) == set(POLICY)


@needs_c
@pytest.mark.parametrize("name", [s for n in [*POLICY, *ORDINARY] for s in spellings(n)])
def test_the_c_request_path_follows_the_table(name: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert C is not None
    rule = POLICY.get(name.lower())
    value = VALUES.get(name.lower(), b"v")
    message = request_with(name, value)
    fast = C.request(message, b"192.0.2.7", 8192, 65536)
    if rule is not None and rule.fast_request == FAST_DECLINES:
        assert fast is None
        return
    assert fast is not None
    head = RequestHead(*fast).head
    kept = name + b": " + value + b"\r\n" in head  # the line as it came
    want = H_FORWARD if rule is None else rule.fast_request
    assert kept == (want not in (H_DROP, headers.H_XFF, headers.H_CONNECTION)), head
    same(message, [NGINX], monkeypatch)  # byte for byte what the Python path sends


@needs_c
@pytest.mark.parametrize("name", [s for n in [*POLICY, *ORDINARY] for s in spellings(n)])
def test_the_c_response_path_follows_the_table(
    name: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert C is not None
    rule = POLICY.get(name.lower())
    value = b"2" if name.lower() == b"content-length" else VALUES.get(name.lower(), b"v")
    message = response_with(name, value)
    fast = C.response(message, 65536, b"")
    if rule is not None and rule.fast_response == FAST_DECLINES:
        assert fast is None
        return
    assert fast is not None
    out = ResponseHead(*fast).out
    want = H_FORWARD if rule is None else rule.fast_response
    kept = name + b": " + value + b"\r\n" in out
    assert kept == (want not in (H_DROP, headers.H_CONNECTION)), out
    same(WRK, [message], monkeypatch)


CORPUS_REQUESTS = [
    WRK,
    b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\ncookie: b=2\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n"
    b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"DELETE /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:\th\r\nA:  b\r\n\r\n",
]
CORPUS_RESPONSES = [
    NGINX,
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nTE: x\r\n\r\nok",
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye",
]


def twins_agree_on_request(message: bytes) -> None:
    assert C is not None
    for peer, line, header in ((b"192.0.2.7", 8192, 65536), (b"::1", 16, 64)):
        fast = C.request(message, peer, line, header)
        if fast is not None:
            assert TWIN.request(message, peer, line, header) == RequestHead(*fast)


def twins_agree_on_response(message: bytes) -> None:
    assert C is not None
    for limit, extra in ((65536, b""), (65536, b"Set-Cookie: s=1\r\nConnection: close\r\n")):
        fast = C.response(message, limit, extra)
        if fast is not None:
            assert TWIN.response(message, limit, extra) == ResponseHead(*fast)


@needs_c
def test_the_twins_read_the_same_heads() -> None:
    assert C is not None
    for message in CORPUS_REQUESTS:
        assert C.request(message, b"p", 8192, 65536) is not None, message
        twins_agree_on_request(message)
    for message in CORPUS_RESPONSES:
        assert C.response(message, 65536, b"") is not None, message
        twins_agree_on_response(message)


@needs_c
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=requests())
def test_the_twins_read_the_same_generated_requests(message: bytes) -> None:
    twins_agree_on_request(message)


@needs_c
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=responses())
def test_the_twins_read_the_same_generated_responses(message: bytes) -> None:
    twins_agree_on_response(message)


def test_the_python_twin_declines_what_only_the_incremental_path_may_read() -> None:
    assert (
        TWIN.request(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", b"p", 99, 99)
        is None
    )
    assert TWIN.request(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"p", 99, 99) is None
    assert TWIN.request(WRK + WRK, b"p", 8192, 65536) is None  # pipelined
    assert TWIN.request(WRK[:-2], b"p", 8192, 65536) is None  # not whole
    assert TWIN.response(b"HTTP/1.1 200 OK\r\n\r\nok", 65536, b"") is None  # no length
    assert TWIN.response(NGINX[:-3], 65536, b"") is None
    r = TWIN.request(WRK, b"10.0.0.1", 8192, 65536)
    assert r is not None and r.host == b"127.0.0.1:18081" and r.keep_alive and not r.http10
