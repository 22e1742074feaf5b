"""Issue 12's wire defects, each driven by a raw client against a recording back end:
``Connection`` naming a framing header (request smuggling, both directions), a request sent
twice after the server took it and died, bodies on HEAD/204/304 responses, absolute-form
targets whose authority differs from Host, a 101 nobody asked for, and a body sent too slowly.
The back end here parses what reaches it itself (strict Content-Length / chunked framing), so a
smuggled second request is seen as one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from quiesce.dataplane import pool as pool_mod
from quiesce.dataplane.h1 import exchange as http_mod
from quiesce.dataplane.h1.exchange import ConnState
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import make_config, start_proxy, wait_for

pytestmark = pytest.mark.loopback


@dataclass
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    conn: int

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


# answer(request, writer) -> keep the connection open?
Answer = Callable[[Received, asyncio.StreamWriter], Awaitable[bool]]


async def echo_target(req: Received, writer: asyncio.StreamWriter) -> bool:
    body = req.target.encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return True


@dataclass
class Recorder:
    """Reads requests with its own strict framing, records each, answers with ``answer``."""

    answer: Answer = echo_target
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def targets(self) -> list[str]:
        return [r.target for r in self.requests]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].split(b"\r\n")
                method, target, _ = lines[0].decode("latin-1").split(" ", 2)
                headers = []
                for line in lines[1:]:
                    k, _, v = line.decode("latin-1").partition(":")
                    headers.append((k, v.strip()))
                req = Received(method, target, headers, b"", conn)
                te = (req.header("transfer-encoding") or "").lower()
                if te.endswith("chunked"):
                    body = b""
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        if size == 0:
                            await reader.readuntil(b"\r\n")
                            break
                        body += await reader.readexactly(size)
                        await reader.readexactly(2)
                    req.body = body
                elif req.header("content-length"):
                    req.body = await reader.readexactly(int(req.header("content-length") or 0))
                self.requests.append(req)
                if not await self.answer(req, writer):
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.transport.abort()


@contextlib.asynccontextmanager
async def recorder(answer: Answer = echo_target) -> AsyncIterator[Recorder]:
    rec = Recorder(answer)
    server = await asyncio.start_server(rec._handle, "127.0.0.1", 0)
    rec.port = server.sockets[0].getsockname()[1]
    try:
        yield rec
    finally:
        server.close()


async def read_response(
    reader: asyncio.StreamReader, head_only: bool = False
) -> tuple[bytes, bytes]:
    """One response framed by Content-Length (what the proxy sends in these tests)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    no_body = head_only or head.startswith((b"HTTP/1.1 204", b"HTTP/1.1 304"))
    body = b"" if no_body else await asyncio.wait_for(reader.readexactly(length), 10)
    return head, body


async def rest_of(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionError:
        return b""


SMUGGLED = b"GET /admin/delete-all HTTP/1.1\r\nHost: x\r\n\r\n"
ADMIN_403 = {"rules": [{"if": {"path_prefix": "/admin"}, "then": {"respond": {"status": 403}}}]}


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


# 1. Connection never removes Content-Length, Transfer-Encoding or Host -------------------------

CONNECTION_NAMED = {
    "content-length": (b"Connection: Content-Length\r\nContent-Length: %d\r\n" % len(SMUGGLED))
    + b"\r\n"
    + SMUGGLED,
    "content-length-listed": (
        b"Connection: keep-alive, content-length\r\nContent-Length: %d\r\n" % len(SMUGGLED)
    )
    + b"\r\n"
    + SMUGGLED,
    "content-length-upper": (
        b"Connection: CONTENT-LENGTH\r\nContent-Length: %d\r\n" % len(SMUGGLED)
    )
    + b"\r\n"
    + SMUGGLED,
    "transfer-encoding": b"Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
    + _chunked(SMUGGLED),
    "host": (b"Connection: Host\r\nContent-Length: %d\r\n" % len(SMUGGLED)) + b"\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("case", sorted(CONNECTION_NAMED))
async def test_connection_cannot_strip_framing_so_nothing_is_smuggled(case: str) -> None:
    async with recorder() as rec, start_proxy(make_config([rec.address], service=ADMIN_403)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: www\r\n" + CONNECTION_NAMED[case])
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"/upload", (head, body)
        # Another client's POST, on the same upstream connection: its own answer.
        r2, w2 = await asyncio.open_connection("127.0.0.1", p.port)
        w2.write(b"POST /mine HTTP/1.1\r\nHost: www\r\nContent-Length: 2\r\n\r\nhi")
        head2, body2 = await read_response(r2)
        assert head2.startswith(b"HTTP/1.1 200 ") and body2 == b"/mine"
        writer.close()
        w2.close()
    assert rec.targets() == ["/upload", "/mine"]  # /admin/delete-all never reached it
    first = rec.requests[0]
    assert first.body == SMUGGLED
    assert first.header("host") == "www"
    assert first.header("connection") is None  # Connection itself is hop-by-hop
    # Any other header Connection names is still removed, as RFC 9110 §7.6.1 asks.
    async with recorder() as rec, start_proxy(make_config([rec.address])) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(
            b"GET /x HTTP/1.1\r\nHost: www\r\nConnection: X-Secret, Content-Length\r\n"
            b"X-Secret: 1\r\nX-Kept: 2\r\n\r\n"
        )
        await read_response(reader)
        writer.close()
    assert rec.requests[0].header("x-secret") is None
    assert rec.requests[0].header("x-kept") == "2"


async def test_response_naming_content_length_keeps_its_framing() -> None:
    async def answer(req: Received, writer: asyncio.StreamWriter) -> bool:
        body = req.target.encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        return True

    async with recorder(answer) as rec, start_proxy(make_config([rec.address])) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        for target in (b"/one", b"/two"):  # one keep-alive client connection
            writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = await read_response(reader)
            assert b"\r\nContent-Length: %d\r\n" % len(target) in head, head
            assert body == target
        writer.close()
    assert rec.targets() == ["/one", "/two"]


# 2. a request the server took and died on is not sent again --------------------------------


def crashing(after_seconds: float, executed: list[str]) -> Answer:
    """Answers the first request of a connection; the second (on the reused connection) is
    executed, then the server works ``after_seconds`` and dies without answering. Every later
    connection is a restarted server that executes and answers."""
    seen: dict[int, int] = {}

    async def answer(req: Received, writer: asyncio.StreamWriter) -> bool:
        executed.append(f"{req.method} {req.target}")
        seen[req.conn] = seen.get(req.conn, 0) + 1
        if req.conn == 1 and seen[req.conn] == 2:
            await asyncio.sleep(after_seconds)
            return False  # dies: the connection is reset, no answer
        return await echo_target(req, writer)

    return answer


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_request_the_server_worked_on_and_died_is_not_resent(method: str) -> None:
    executed: list[str] = []
    async with (
        recorder(crashing(1.0, executed)) as rec,  # the issue: it worked 1 s, then died
        start_proxy(make_config([rec.address])) as p,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 ")
        body = b"" if method == "GET" else b"Content-Length: 5\r\n\r\norder"
        writer.write(method.encode() + b" /charge HTTP/1.1\r\nHost: x\r\n" + (body or b"\r\n"))
        head, _ = await read_response(reader)
        writer.close()
    # The first one took it and died: 502, and it ran exactly once (RFC 9110 §9.2.2 for the
    # POST; for the GET the failure came too late to be the keep-alive race).
    assert head.startswith(b"HTTP/1.1 502 "), head
    assert executed.count(f"{method} /charge") == 1, executed


async def test_keep_alive_race_resends_only_what_may_be_sent_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx

    async with (
        Backend("racy", drop_reused=True) as b,
        start_proxy(make_config([b.address])) as p,
        httpx.AsyncClient() as c,
    ):
        for i in range(3):
            # idempotent: resent on a fresh connection
            assert (await c.get(p.url + f"/?n={i}")).status_code == 200
            # an Idempotency-Key makes a POST resendable too
            r = await c.post(
                p.url + "/sink", content=b"y" * 1000, headers={"Idempotency-Key": f"k{i}"}
            )
            assert r.status_code == 200 and r.json()["length"] == 1000
        # A plain POST on a connection idle for less than SAFE_REUSE_IDLE: the server
        # dropped it after reading it, so it is not sent again.
        assert (await c.get(p.url + "/")).status_code == 200
        seen = len(b.requests)
        r = await c.post(p.url + "/sink", content=b"z" * 10)
        assert r.status_code == 502
        assert [q.target for q in b.requests[seen:]] == ["/sink"]
        # A plain POST never takes a connection idle for SAFE_REUSE_IDLE or longer: with
        # the limit at 0 it always gets a fresh one, and the race cannot happen to it.
        monkeypatch.setattr(pool_mod, "SAFE_REUSE_IDLE", 0.0)
        for _ in range(3):
            assert (await c.get(p.url + "/")).status_code == 200
            r = await c.post(p.url + "/sink", content=b"z" * 10)
            assert r.status_code == 200 and r.json()["length"] == 10


def test_may_resend_is_the_race_only() -> None:
    req = http_mod.Request()
    req.method = b"GET"
    req.replay = []
    w = http_mod.RACE_WINDOW
    assert w < 1.0  # a server that worked 1 s on a request and died is not the race
    assert http_mod.may_resend(req, reused=True, got_byte=False, sent_for=0.001)
    assert http_mod.may_resend(req, reused=True, got_byte=False, sent_for=-1.0)  # body sending
    assert not http_mod.may_resend(req, reused=True, got_byte=False, sent_for=w + 0.001)
    assert not http_mod.may_resend(req, reused=False, got_byte=False, sent_for=0.0)
    assert not http_mod.may_resend(req, reused=True, got_byte=True, sent_for=0.0)
    req.replay = None  # body too big to hold
    assert not http_mod.may_resend(req, reused=True, got_byte=False, sent_for=0.0)
    req.replay = []
    req.method = b"POST"
    assert not http_mod.may_resend(req, reused=True, got_byte=False, sent_for=0.0)
    req.headers = [(b"Idempotency-Key", b"abc")]
    assert http_mod.may_resend(req, reused=True, got_byte=False, sent_for=0.0)
    req.headers = []
    req.raw = b"POST / HTTP/1.1\r\nHost: x\r\nidempotency-key: 1\r\n\r\n"  # the C path's head
    assert http_mod.may_resend(req, reused=True, got_byte=False, sent_for=0.0)


# 4. no body is passed on for HEAD, 204 or 304 --------------------------------------------------

FORGED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"


async def with_trailing_bytes(req: Received, writer: asyncio.StreamWriter) -> bool:
    if req.target == "/204":
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n" + FORGED)
    elif req.target == "/304":
        writer.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 6\r\n\r\n" + FORGED)
    elif req.method == "HEAD":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(FORGED), FORGED))
    else:
        return await echo_target(req, writer)
    return True


@pytest.mark.parametrize("first", ["HEAD /h", "GET /204", "GET /304"])
@pytest.mark.parametrize("pipelined", [True, False])
async def test_no_body_is_passed_on_for_head_204_304(first: str, pipelined: bool) -> None:
    async with (
        recorder(with_trailing_bytes) as rec,
        start_proxy(make_config([rec.address])) as p,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        one = first.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        two = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
        writer.write(one + two if pipelined else one)
        head, _ = await read_response(reader, head_only=first.startswith("HEAD"))
        assert head.startswith(b"HTTP/1.1 "), head
        if not pipelined:
            writer.write(two)
        head2, body2 = await read_response(reader)
        writer.close()
    assert head2.startswith(b"HTTP/1.1 200 ") and body2 == b"/next", (head2, body2)
    # the server that sent bytes past its answer had its connection closed
    assert [r.conn for r in rec.requests] == [1, 2]


# 5. absolute-form targets, 101 without Upgrade, client_body_timeout -----------------------------


async def test_absolute_form_authority_replaces_host_for_rules_and_server() -> None:
    rules = {"rules": [{"if": {"host": "admin.example"}, "then": {"respond": {"status": 403}}}]}
    async with recorder() as rec, start_proxy(make_config([rec.address], service=rules)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET http://admin.example/x HTTP/1.1\r\nHost: www.example\r\n\r\n")
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 403 "), head  # routed on the authority
        writer.write(b"GET http://api.example:8080/y?q=1 HTTP/1.1\r\nHost: admin.example\r\n\r\n")
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"http://api.example:8080/y?q=1"
        writer.close()
        assert rec.requests[0].header("host") == "api.example:8080"
        assert [k.lower() for k, _ in rec.requests[0].headers].count("host") == 1
        assert rec.requests[0].header("x-forwarded-host") == "api.example:8080"
        for bad in (b"http://user@evil.example/", b"http:///nohost", b"gopher://x/"):
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(b"GET " + bad + b" HTTP/1.1\r\nHost: www\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.close()
            assert head.startswith(b"HTTP/1.1 400 "), (bad, head)
    assert len(rec.requests) == 1


async def test_101_to_a_request_without_upgrade_is_502_not_a_tunnel() -> None:
    async def switch(req: Received, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: evil\r\n\r\n"
            b"raw bytes of another protocol"
        )
        return True

    async with recorder(switch) as rec, start_proxy(make_config([rec.address])) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        rest = await rest_of(reader)
        writer.close()
        assert head.startswith(b"HTTP/1.1 502 "), head
        assert b"raw bytes" not in rest
        assert p.service.stats.errors == {502: 1}


async def test_client_body_timeout_bounds_the_whole_body() -> None:
    async with recorder() as rec:
        cfg = make_config([rec.address], service={"client_body_timeout": "30s"})
        async with start_proxy(cfg) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
            await writer.drain()
            await wait_for(lambda: rec.connections == 1)  # the request is on its way
            (conn,) = p.service._ctx.conns
            loop = asyncio.get_running_loop()
            # The sweep's clock, moved by hand: the client keeps sending (never idle for
            # client_idle_timeout), but the whole body is not there 30 s after its head.
            conn.last_rx = loop.time() + 29.0
            conn.check(loop.time() + 29.0)
            assert not conn.closed and conn.state is ConnState.OPEN
            conn.last_rx = loop.time() + 31.0
            conn.check(loop.time() + 31.0)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.close()
            assert head.startswith(b"HTTP/1.1 408 "), head
            assert p.service.stats.errors == {408: 1}
    assert rec.requests == []  # the server never got a whole request


# Found by the differential corpus (test_smuggling_corpus.py) -------------------------------


async def test_http10_chunked_request_closes_after_its_response() -> None:
    """RFC 9112 §6.1: chunked in an HTTP/1.0 request; the server MUST close after responding.
    A request pipelined behind it is never read (HAProxy does the same)."""
    async with recorder() as rec, start_proxy(make_config([rec.address])) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(
            b"POST /first HTTP/1.0\r\nHost: www\r\nConnection: keep-alive\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + _chunked(b"hello")
            + b"GET /second HTTP/1.1\r\nHost: www\r\n\r\n"
        )
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"/first"
        assert await rest_of(reader) == b""  # closed: /second was never read
        writer.close()
    assert rec.targets() == ["/first"]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_upgrade_with_a_body_is_refused(framing: str) -> None:
    """An Upgrade request carrying a body: the parser would switch after the head and leave
    the body on the server's connection as the start of the next request. 400, nothing sent."""
    body = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    frame = (
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        if framing == "content-length"
        else b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(body)
    )
    async with recorder() as rec, start_proxy(make_config([rec.address])) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(
            b"POST /a HTTP/1.1\r\nHost: www\r\nConnection: Upgrade\r\nUpgrade: foo\r\n" + frame
        )
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 400 "), head
        writer.close()
    assert rec.targets() == []
