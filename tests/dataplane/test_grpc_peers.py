"""An h2 pool with external clients (issue 16, item 5): curl ``--http2-prior-knowledge``
through quiesce to an h2c back end (a grpcio server): the trailers reach curl as trailing
HEADERS; curl ``--http1.1`` gets them in its chunked body; h2load sends 2,000 gRPC calls on
40 streams at once, all answered, one connection to the server."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from quiesce.dataplane.h2client.links import links_of
from tests.dataplane.conftest import curl, make_config, start_proxy

pytest.importorskip("grpc")
from tests.support.grpc_echo import SERVICE, EchoServer

pytestmark = [pytest.mark.peers, pytest.mark.one_path]

GRPC = ["-H", "content-type: application/grpc", "-H", "te: trailers"]


async def test_curl_and_h2load_through_quiesce_to_an_h2c_server(tmp_path: Path) -> None:
    msg = tmp_path / "msg.bin"
    msg.write_bytes(b"\0" + struct.pack(">I", 5) + b"hello")
    body = tmp_path / "body.bin"
    with EchoServer("a") as a:
        raw = make_config([a.address], pool={"protocol": "h2"})
        async with start_proxy(raw) as p:
            url = f"{p.url}/{SERVICE}/Say"
            r = await curl(
                "--http2-prior-knowledge", "-D", "-", "-o", str(body), *GRPC,
                "--data-binary", f"@{msg}", url,
            )  # fmt: skip
            assert r.code == 0, r.stderr
            head, _, trailers = r.stdout.decode().partition("\r\n\r\n")
            assert head.startswith("HTTP/2 200")
            assert "grpc-status: 0" in trailers and "x-served-by: a" in trailers
            assert body.read_bytes() == b"\0\0\0\0\x07a:hello"
            # HTTP/1.1: the trailers in the chunked body (--raw keeps the framing)
            r = await curl("--http1.1", "--raw", *GRPC, "--data-binary", f"@{msg}", url)
            assert r.code == 0, r.stderr
            assert r.stdout.endswith(b"\r\n0\r\ngrpc-status: 0\r\ngrpc-message: \r\n"
                                     b"x-served-by: a\r\n\r\n")  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                "h2load", "-n", "2000", "-c", "4", "-m", "10", "-d", str(msg), *GRPC, url,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert "2000 succeeded, 0 failed, 0 errored" in out.decode(), out.decode()
            assert a.calls["Say"] == 2002
            assert len(links_of(p.table).live) == 1
            assert p.registry.pool("web").servers[0].grpc_statuses == {0: 2002}
