"""gRPC end to end (issue 16, item 5): a real grpcio server behind a pool with ``protocol:
h2`` and a real grpcio client through quiesce's HTTP/2 front end (h2c): unary and
server-streaming calls, trailers and a non-OK grpc-status arriving intact, the
``quiesce_server_grpc_responses_total`` series counting them; an HTTP/1.1 client to the same
pool (trailers in its chunked body); a drain under load with no failed call, and ``--force``
resetting the server's stream. The grpcio client is the synchronous one, in threads (the
data plane runs on uvloop here). Hostile servers: test_grpc_hostile.py; curl:
test_grpc_peers.py."""

from __future__ import annotations

import asyncio
import json
import ssl
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from quiesce.core.admin import AdminCommand
from quiesce.core.states import Admin, Cause
from quiesce.dataplane.h2client.links import links_of
from quiesce.frontends.grpc_metrics import grpc_metrics
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import make_config, start_proxy, wait_for
from tests.dataplane.test_access_log import logged
from tests.support.certs import Certs

grpc = pytest.importorskip("grpc")
from tests.support.grpc_echo import SERVICE, EchoServer  # noqa: E402

pytestmark = pytest.mark.loopback


def stub(channel: Any, method: str, streaming: bool = False) -> Any:
    path = f"/{SERVICE}/{method}"
    return channel.unary_stream(path) if streaming else channel.unary_unary(path)


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def h2_pool(servers: list[EchoServer], **pool: Any) -> dict[str, Any]:
    return make_config([s.address for s in servers], pool={"protocol": "h2", **pool})


async def test_unary_streaming_trailers_and_status_through_quiesce() -> None:
    with EchoServer("a") as a, EchoServer("b") as b:
        async with start_proxy(h2_pool([a, b])) as p:
            sa, sb = p.registry.pool("web").servers
            with grpc.insecure_channel(f"127.0.0.1:{p.port}") as ch:

                def unary() -> tuple[bytes, Any]:
                    reply, call = stub(ch, "Say").with_call(b"hello", timeout=10)
                    return reply, call.trailing_metadata()

                seen = set()
                for _ in range(4):
                    reply, trailing = await in_thread(unary)
                    name = dict(trailing)["x-served-by"]  # a trailer, passed through
                    assert reply == name.encode() + b":hello"
                    seen.add(name)
                assert seen == {"a", "b"}  # balanced per call (round robin)

                def streaming() -> list[bytes]:
                    return list(stub(ch, "Count", streaming=True)(b"50", timeout=10))

                msgs = await in_thread(streaming)
                assert len(msgs) == 50 and msgs[0].endswith(b":0") and msgs[49].endswith(b":49")

                def failing() -> Any:
                    with pytest.raises(grpc.RpcError) as info:
                        stub(ch, "Fail")(b"no such thing here", timeout=10)
                    return info.value

                err = await in_thread(failing)
                assert err.code() == grpc.StatusCode.NOT_FOUND
                assert err.details() == "no such thing here"
                # a trailers-only answer: its fields as the server sent them, no content-length
                # (the h2 pool's HTTP/1.1 head has one; an HTTP/2 client is not given it)
                assert [k for k, _ in err.trailing_metadata()] == []

                # many calls at once: multiplexed on one connection per server
                def many() -> list[bytes]:
                    with ThreadPoolExecutor(16) as pool:
                        return list(pool.map(lambda i: stub(ch, "Say")(b"%d" % i), range(200)))

                assert len(await in_thread(many)) == 200
            counts = {0: 0, 5: 0}
            for s in (sa, sb):
                for code, n in s.grpc_statuses.items():
                    counts[code] += n
            assert counts == {0: 4 + 1 + 200, 5: 1}
            assert a.calls["Say"] + b.calls["Say"] == 204
            # /metrics: by pool, server and grpc-status
            (family,) = grpc_metrics(p.registry.pools.values(), True)
            series = {
                (s.labels["server"], s.labels["grpc_status"]): s.value for s in family.samples
            }
            assert sum(v for (_, code), v in series.items() if code == "0") == 205
            assert sum(v for (_, code), v in series.items() if code == "5") == 1
            # one HTTP/2 connection per server, whatever the number of calls
            live = links_of(p.table).live
            assert set(live) == {sa, sb}
            assert all(len(link.channels) >= 1 for link in live.values())


async def http11(port: int, path: str, body: bytes, chunked: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: x\r\ncontent-type: application/grpc\r\nte: trailers\r\n"
        b"content-length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
    )
    data = b""
    while not data.endswith(b"\r\n\r\n") or (chunked and b"\r\n0\r\n" not in data):
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        assert chunk, data
        data += chunk
    writer.close()
    return data


async def test_http11_client_to_an_h2_pool_gets_trailers_in_its_chunked_body() -> None:
    with EchoServer("a") as a:
        async with start_proxy(h2_pool([a])) as p:
            msg = b"\0" + struct.pack(">I", 5) + b"hello"
            data = await http11(p.port, f"/{SERVICE}/Say", msg)
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert b"Transfer-Encoding: chunked" in head
            assert b"\0\0\0\0\x07a:hello" in body
            trailers = body.split(b"\r\n0\r\n", 1)[1]
            assert b"grpc-status: 0\r\n" in trailers
            assert b"x-served-by: a\r\n" in trailers
            # a trailers-only answer (an error before any message): its fields in the head
            data = await http11(p.port, f"/{SERVICE}/Nope", msg, chunked=False)
            assert b"grpc-status: 12\r\n" in data.partition(b"\r\n\r\n")[0]  # UNIMPLEMENTED
            assert b"content-length: 0\r\n" in data


@pytest.mark.one_path
async def test_drain_under_load_no_failed_call_and_force_resets_the_stream() -> None:
    with EchoServer("a") as a, EchoServer("b") as b:
        async with start_proxy(h2_pool([a, b])) as p:
            sa, _ = p.registry.pool("web").servers
            failures: list[BaseException] = []
            replies: list[bytes] = []
            stop = False

            def load(ch: Any) -> None:
                while not stop:
                    try:
                        replies.append(stub(ch, "Slow")(b"20", timeout=10))
                    except grpc.RpcError as exc:
                        failures.append(exc)

            with grpc.insecure_channel(f"127.0.0.1:{p.port}") as ch:
                with ThreadPoolExecutor(8) as pool:
                    workers = [pool.submit(load, ch) for _ in range(8)]
                    await wait_for(lambda: a.calls["Slow"] >= 20 and b.calls["Slow"] >= 20)
                    p.registry.admin_command(
                        sa, AdminCommand(Admin.DRAIN, actor="t", cause=Cause.CLI)
                    )
                    # a finishes what it has (each stream, not the connection, is counted)
                    await wait_for(lambda: sa.connections == 0)
                    after_drain = a.calls["Slow"]
                    done = len(replies)
                    await wait_for(lambda: len(replies) >= done + 50)
                    stop = True
                    for w in workers:
                        await asyncio.wrap_future(w)
                assert failures == []
                assert a.calls["Slow"] == after_drain  # nothing new went to a
                assert {r.split(b":")[0] for r in replies[-20:]} == {b"b"}

                # --force: a stream in flight on the server is answered (503: UNAVAILABLE)
                # and reset towards the server (RST_STREAM CANCEL: its handler sees it)
                p.registry.admin_command(
                    sa, AdminCommand(Admin.ENABLED, actor="t", cause=Cause.CLI)
                )
                p.registry.admin_command(
                    p.registry.pool("web").servers[1],
                    AdminCommand(Admin.DRAIN, actor="t", cause=Cause.CLI),
                )
                slow = asyncio.ensure_future(in_thread(lambda: stub(ch, "Slow")(b"5000")))
                await wait_for(lambda: sa.connections == 1)
                p.registry.admin_command(
                    sa,
                    AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.CLI, force=True),
                )
                with pytest.raises(grpc.RpcError) as info:
                    await slow
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                await wait_for(lambda: a.calls["cancelled"] == 1)
                # in maintenance, its idle slots closed: its HTTP/2 connection ends (GOAWAY)
                await wait_for(lambda: sa not in links_of(p.table).live)


@pytest.mark.one_path
async def test_tls_to_the_server_with_alpn_h2_and_a_server_without_h2(tmp_path: Path) -> None:
    """pools.X.tls with protocol: h2: TLS verified with the pool's ca, ALPN h2; a TLS server
    that does not choose h2 (an HTTP/1.1 one) is a failed connect: 502, nothing sent."""
    certs = Certs(tmp_path)
    cert, key = certs.leaf("g", "grpc.example")
    tls = (key.read_bytes(), cert.read_bytes())
    with EchoServer("t", tls=tls) as t:
        pool = {"tls": {"ca": "ca.pem", "sni": "grpc.example"}}
        raw = h2_pool([t], **pool)
        async with start_proxy(raw, base_dir=tmp_path) as p:
            with grpc.insecure_channel(f"127.0.0.1:{p.port}") as ch:

                def unary() -> tuple[bytes, Any]:
                    reply, call = stub(ch, "Say").with_call(b"over tls", timeout=10)
                    return reply, call.trailing_metadata()

                reply, trailing = await in_thread(unary)
                assert reply == b"t:over tls" and dict(trailing)["x-served-by"] == "t"
            (link,) = links_of(p.table).live.values()
            assert link.transport.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.set_alpn_protocols(["http/1.1"])
    async with Backend("h1", tls=server_ctx) as b:
        raw = make_config([b.address], pool={"protocol": "h2", **pool})
        async with start_proxy(raw, base_dir=tmp_path) as p:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.close()
            assert head.startswith(b"HTTP/1.1 502")
            assert b.requests == []


@pytest.mark.parametrize("fmt", ["json", "{method} {path} {status} {grpc_status}"])
async def test_access_log_has_the_grpc_status(tmp_path: Path, fmt: str) -> None:
    """json lines of gRPC calls carry grpc_status (others do not); a template names it."""
    log = tmp_path / "access.log"
    with EchoServer("a") as a:
        raw = logged(h2_pool([a]), log, fmt)
        async with start_proxy(raw) as p:
            with grpc.insecure_channel(f"127.0.0.1:{p.port}") as ch:

                def calls() -> None:
                    stub(ch, "Say")(b"x", timeout=10)
                    with pytest.raises(grpc.RpcError):
                        stub(ch, "Fail")(b"gone", timeout=10)

                await in_thread(calls)
            await wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == 2)
    text = log.read_text().splitlines()
    if fmt == "json":
        say, fail = (json.loads(line) for line in text)
        assert (say["path"], say["status"], say["grpc_status"]) == (f"/{SERVICE}/Say", 200, 0)
        assert (fail["path"], fail["grpc_status"]) == (f"/{SERVICE}/Fail", 5)
        assert list(say)[-1] == "grpc_status"
    else:
        assert text == [f"POST /{SERVICE}/Say 200 0", f"POST /{SERVICE}/Fail 200 5"]


@pytest.mark.one_path
async def test_the_servers_max_concurrent_streams_makes_calls_wait_not_fail() -> None:
    """A server that takes 2 streams at a time (SETTINGS_MAX_CONCURRENT_STREAMS): 40 calls
    at once wait on its one connection (libnghttp2 holds the streams over the limit)."""
    with EchoServer("a", max_streams=2) as a:
        async with start_proxy(h2_pool([a])) as p:
            with grpc.insecure_channel(f"127.0.0.1:{p.port}") as ch:

                def calls() -> list[bytes]:
                    with ThreadPoolExecutor(20) as pool:
                        return list(pool.map(lambda i: stub(ch, "Slow")(b"20"), range(40)))

                assert len(await in_thread(calls)) == 40
            assert a.calls["Slow"] == 40
            assert len(links_of(p.table).live) == 1


@pytest.mark.one_path
async def test_a_rule_sends_grpc_to_an_h2_pool_and_the_maintenance_page_answers_it() -> None:
    """The service's default pool is HTTP/1.1; a path rule sends the gRPC calls to the h2
    pool; with its server in maintenance the call gets the maintenance page (503:
    UNAVAILABLE) and HTTP/1.1 requests still go to the default pool."""
    with EchoServer("g") as g:
        async with Backend("web") as web:
            raw = make_config(
                [web.address],
                extra_pools={
                    "grpc": {"protocol": "h2", "servers": [{"name": "g", "address": g.address}]}
                },
                service={
                    "rules": [{"if": {"path_prefix": f"/{SERVICE}/"}, "then": {"pool": "grpc"}}]
                },
            )
            async with start_proxy(raw) as p:
                with grpc.insecure_channel(f"127.0.0.1:{p.port}") as ch:
                    assert await in_thread(lambda: stub(ch, "Say")(b"r", timeout=10)) == b"g:r"
                    (sg,) = p.registry.pool("grpc").servers
                    p.registry.admin_command(
                        sg, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.CLI)
                    )

                    def refused() -> Any:
                        with pytest.raises(grpc.RpcError) as info:
                            stub(ch, "Say")(b"r", timeout=10)
                        return info.value

                    err = await in_thread(refused)
                    assert err.code() == grpc.StatusCode.UNAVAILABLE
                    assert g.calls["Say"] == 1
                reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                writer.close()
                assert head.startswith(b"HTTP/1.1 200") and len(web.requests) == 1
