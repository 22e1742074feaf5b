"""The C fast path for common message heads (quiesce._httpfast) against the httptools path.

Every request and response is run through the L7 protocol classes twice, once with the C
functions and once without, with recording transports: the bytes sent to the server and to
the client, and the state left behind, must be the same. The fast path may only decline
(return None); it must never answer differently.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiesce import _accel
from quiesce.config.models import Config
from quiesce.dataplane import ConnectionTable
from quiesce.dataplane.h1 import client as client_mod
from quiesce.dataplane.h1 import upstream as upstream_mod
from quiesce.dataplane.h1.client import ClientConnection
from quiesce.dataplane.h1.upstream import Upstream
from quiesce.dataplane.service import make_context
from quiesce.state.registry import Registry

pytestmark = [
    pytest.mark.skipif(_accel.httpfast is None, reason="C accelerator not built"),
    pytest.mark.one_path,  # each test sets the path itself
]

WRK = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18081\r\n\r\n"
NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 09:40:01 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\n"
    b"hello, world\n"
)


class Recorder:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        self.data += data

    def writelines(self, chunks: Any) -> None:
        for c in chunks:
            self.data += c

    def get_extra_info(self, key: str) -> Any:
        return ("192.0.2.7", 5555) if key == "peername" else None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed


def exchange(
    fast: bool, request: bytes, responses: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, ...]:
    """One client connection with one idle upstream connection ready: send ``request``,
    answer with ``responses`` (one upstream read each); what each side received, and state."""
    c_fast = _accel.httpfast
    assert c_fast is not None
    monkeypatch.setattr(client_mod, "_fast_request", c_fast.request if fast else None)
    monkeypatch.setattr(upstream_mod, "_fast_response", c_fast.response if fast else None)

    async def go() -> tuple[Any, ...]:
        cfg = Config.model_validate(
            {
                "pools": {"p": {"servers": [{"name": "s", "address": "127.0.0.1:1"}]}},
                "services": {"w": {"listen": "127.0.0.1:0", "pool": "p"}},
            }
        )
        registry = Registry(cfg)
        table = ConnectionTable(registry)
        pool = registry.pool("p")
        ctx = make_context("w", cfg.services["w"], registry, table, asyncio.get_running_loop())
        server = pool.servers[0]
        up = Upstream(server, table)
        up_t = Recorder()
        up.connection_made(up_t)  # type: ignore[arg-type]
        table.put_upstream(server, up, 10)
        client = ClientConnection(ctx)
        client_t = Recorder()
        client.connection_made(client_t)  # type: ignore[arg-type]
        client.data_received(request)
        for chunk in responses:
            if client.up is not up:
                break
            up.data_received(chunk)
            # what the loop runs right after the read (a pipelined request behind a response
            # the Python path parsed starts once that read is parsed: Upstream._settle)
            await asyncio.sleep(0)
        current = client.current
        return (
            bytes(up_t.data),
            bytes(client_t.data),
            client_t.closed,
            client_t.eof,
            up_t.closed,
            client.closed,
            current is not None,
            current and (current.method, current.url, current.host, current.cookie),
            current and (current.http10, current.keep_alive, current.complete),
            server.requests_total,
            server.requests_in_flight,
            dict(server.responses),
            dict(ctx.stats.responses),
            dict(ctx.stats.errors),
            table.idle_upstream_count(server),
            table.idle_count(server),
        )

    return asyncio.run(go())


def same(request: bytes, responses: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    slow = exchange(False, request, responses, monkeypatch)
    fast = exchange(True, request, responses, monkeypatch)
    assert fast == slow


def test_the_common_case_takes_the_fast_path() -> None:
    c = _accel.httpfast
    assert c is not None
    r = c.request(WRK, b"10.0.0.1", 8192, 65536)
    assert r is not None
    assert r[6] == (
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18081\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: 127.0.0.1:18081\r\n\r\n"
    )
    # limits at the ends of their range: no overflow, and a negative one declines
    assert c.request(WRK, b"p", sys.maxsize, sys.maxsize) is not None
    assert c.request(WRK, b"p", -1, 65536) is None
    out = c.response(NGINX, 65536, b"")
    assert out is not None and out[0] == 200 and out[1] is True
    assert b"Connection" not in out[2] and out[2].endswith(b"\r\n\r\nhello, world\n")


@pytest.mark.parametrize(
    "request_bytes",
    [
        WRK,
        b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\ncookie: b=2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n"
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"DELETE /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nKeep-Alive: 5\r\nTE: trailers\r\nTrailer: x\r\n"
        b"Proxy-Connection: x\r\nProxy-Authorization: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:\th\r\nA:  b\r\n\r\n",
        # declined by the fast path: must still be answered exactly as before
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nA: b \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n c\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nA: \xe9\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    ],
)
def test_requests_are_forwarded_the_same(
    request_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    same(request_bytes, [NGINX], monkeypatch)


@pytest.mark.parametrize(
    "response",
    [
        NGINX,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nRetry-After: 5\r\n\r\nbusy",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nUpgrade: h2\r\n\r\nok",
        # declined by the fast path
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nto the end",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n",
        b"garbage\r\n\r\n",
    ],
)
def test_responses_are_relayed_the_same(response: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    same(WRK, [response], monkeypatch)
    same(b"GET / HTTP/1.0\r\nHost: h\r\n\r\n", [response], monkeypatch)
    same(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", [response], monkeypatch)
    same(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", [response], monkeypatch)


def test_a_response_split_across_reads_is_relayed_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for cut in (5, 40, len(NGINX) - 3):
        same(WRK, [NGINX[:cut], NGINX[cut:]], monkeypatch)


# -- generated messages --------------------------------------------------------------------

_NAMES = [
    b"Host",
    b"host",
    b"HOST",
    b"Cookie",
    b"X-Forwarded-For",
    b"x-forwarded-host",
    b"X-Forwarded-Proto",
    b"Connection",
    b"Keep-Alive",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Upgrade",
    b"Expect",
    b"TE",
    b"Accept",
    b"User-Agent",
    b"X-A",
    b"Set-Cookie",
    b"Server",
    b"Proxy-Authenticate",
    b"Bad Name",
    b"",
]
_VALUES = [
    b"",
    b"x",
    b"0",
    b"2",
    b"13",
    b"keep-alive",
    b"Keep-Alive",
    b"close",
    b"upgrade",
    b"chunked",
    b"100-continue",
    b"a=1; b=2",
    b"1.2.3.4",
    b"x-a",
    b" spaced ",
    b"tab\there",
    b"\xe9t\xe9",
    b"ctl\x01",
]
_header = st.tuples(st.sampled_from(_NAMES), st.sampled_from([b": ", b":", b":\t", b" : "])).map(
    lambda t: t[0] + t[1]
)
_any_line = st.tuples(_header, st.sampled_from(_VALUES)).map(lambda t: t[0] + t[1])
# mostly lines the fast path takes, so that both paths are compared on many accepted heads
_good_line = st.sampled_from(
    [
        b"Host: h",
        b"Accept: */*",
        b"User-Agent: wrk",
        b"X-A: 1",
        b"Cookie: a=1",
        b"X-Forwarded-For: 1.2.3.4",
        b"x-forwarded-proto: https",
        b"Connection: keep-alive",
        b"connection: Close",
        b"Keep-Alive: timeout=5",
        b"Server: nginx",
        b"Set-Cookie: s=1",
    ]
)
_line = st.one_of(_good_line, _good_line, _good_line, _any_line)
_eol = st.sampled_from([b"\r\n"] * 9 + [b"\n"])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET"] * 4 + [b"HEAD", b"POST", b"OPTIONS", b"get", b"PRI"]))
    target = draw(st.sampled_from([b"/"] * 3 + [b"/a?b=c", b"/%7e", b"*", b"http://h/x", b"/<>"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]))
    lines = draw(st.lists(_line, max_size=8))
    eol = draw(_eol)
    tail = draw(st.sampled_from([b""] * 6 + [b"abc", b"GET / HTTP/1.1\r\n\r\n"]))
    return (
        method
        + b" "
        + target
        + b" "
        + version
        + eol
        + b"".join(line + eol for line in lines)
        + eol
        + tail
    )


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    status = draw(st.sampled_from([b"200"] * 4 + [b"201", b"302", b"404", b"503", b"204", b"101"]))
    reason = draw(st.sampled_from([b" OK"] * 4 + [b" Not Found", b" ", b""]))
    lines = draw(st.lists(_line, max_size=8))
    body = draw(st.sampled_from([b"", b"ok", b"hello, world\n", b"x" * 3000]))
    length = draw(st.sampled_from([len(body)] * 4 + [None, len(body) + 1, 0]))
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    draw(st.randoms()).shuffle(lines)
    eol = draw(_eol)
    return (
        version + b" " + status + reason + eol + b"".join(line + eol for line in lines) + eol + body
    )


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=requests())
def test_generated_requests_are_forwarded_the_same(
    request: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    same(request, [NGINX], monkeypatch)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(response=responses(), client=st.sampled_from([WRK, b"GET / HTTP/1.0\r\n\r\n"]))
def test_generated_responses_are_relayed_the_same(
    response: bytes, client: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    same(client, [response], monkeypatch)


def test_wrong_arguments_are_refused_with_a_type_error() -> None:
    c = _accel.httpfast
    assert c is not None
    with pytest.raises(TypeError, match=r"request\(data: bytes, peer: bytes"):
        c.request(bytearray(WRK), b"p", 8192, 65536)
    with pytest.raises(TypeError, match=r"request\(data: bytes, peer: bytes"):
        c.request(WRK, "p", 8192, 65536)
    with pytest.raises(TypeError, match=r"request\(data: bytes, peer: bytes"):
        c.request(WRK, b"p", 8192)
    with pytest.raises(TypeError):
        c.request(WRK, b"p", 8192.0, 65536)
    with pytest.raises(TypeError, match=r"response\(data: bytes, max_header, extra: bytes\)"):
        c.response(NGINX, 65536, "extra")
    with pytest.raises(TypeError, match=r"response\(data: bytes, max_header, extra: bytes\)"):
        c.response(memoryview(NGINX), 65536, b"")
