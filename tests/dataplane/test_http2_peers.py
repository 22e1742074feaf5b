"""HTTP/2 with external clients (issue 16, items 3 and 4): curl ``--http2`` over TLS (ALPN)
and ``--http2-prior-knowledge`` on cleartext, rules and the maintenance page answering
streams; h2load (nghttp2-client) with many streams over h2c and TLS; a server drained during
the load finishes its streams and loses none, and so does a rolling maintenance of three; a
``quiesce run`` shut down by SIGTERM under h2 load sends GOAWAY and every stream in flight
completes."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import hpack
import pytest

from quiesce.core.admin import AdminCommand
from quiesce.core.states import Admin, Cause
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import curl, make_config, start_proxy, wait_for
from tests.support.backend import serve_in_thread
from tests.support.certs import Certs
from tests.support.process import run_quiesce, write_simple_config

pytestmark = [pytest.mark.peers, pytest.mark.one_path]


def counts(out: str) -> dict[str, int]:
    """h2load's 'requests:' and 'status codes:' lines, as numbers."""
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        out,
    )
    assert m, out
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert s, out
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    found = dict(zip(keys, map(int, m.groups()), strict=True))
    found["2xx"] = int(s.group(1))
    return found


async def h2load(*args: str) -> dict[str, int]:
    proc = await asyncio.create_subprocess_exec(
        "h2load", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return counts(out.decode())


def tls(alpn: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"certificates": [{"cert": "a.pem", "key": "a.key"}]}
    if alpn is not None:
        out["alpn"] = alpn
    return {"tls": out}


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    c = Certs(tmp_path)
    c.leaf("a", "a.example", "localhost", "127.0.0.1")
    return c


async def test_curl_prior_knowledge_on_cleartext(backends: list[Backend]) -> None:
    raw = make_config([b.address for b in backends])
    async with start_proxy(raw) as p:
        # one URL a curl: curl 7.88 (Debian 12) fails to reuse a prior-knowledge connection
        # for a second URL (curl/curl#10634, fixed in 8.0): httpx below does many streams
        r = await curl("--http2-prior-knowledge", "-i", p.url + "/")
        assert r.code == 0, r.stderr
        assert r.stdout.startswith(b"HTTP/2 200"), r.stdout
        assert r.stdout.endswith(b"hello from a\n")
        r = await curl("--http2-prior-knowledge", "-i", p.url + "/headers?x=1")
        assert r.stdout.startswith(b"HTTP/2 200"), r.stdout
        seen = json.loads(r.stdout[r.stdout.index(b"{") :])
        assert seen["x-forwarded-proto"] == "http"
        assert seen["x-forwarded-for"] == "127.0.0.1"
        assert seen["host"] == f"127.0.0.1:{p.port}"
        assert p.service.stats.requests == 2
        # HTTP/1.1 still works on the same port
        r = await curl("-i", p.url + "/")
        assert r.stdout.startswith(b"HTTP/1.1 200"), r.stdout


async def test_curl_http2_over_tls_by_alpn(certs: Certs, tmp_path: Path, backend: Backend) -> None:
    raw = make_config([backend.address], service=tls(["h2", "http/1.1"]))
    async with start_proxy(raw, base_dir=tmp_path) as p:
        url = f"https://localhost:{p.port}"
        r = await curl("--http2", "--cacert", str(certs.ca_file), "-i", url + "/headers")
        assert r.code == 0, r.stderr
        assert r.stdout.startswith(b"HTTP/2 200"), r.stdout
        seen = json.loads(r.stdout[r.stdout.index(b"{") :])
        assert seen["x-forwarded-proto"] == "https"
        # a client that offers only http/1.1 gets it
        r = await curl("--http1.1", "--cacert", str(certs.ca_file), "-i", url + "/")
        assert r.stdout.startswith(b"HTTP/1.1 200"), r.stdout


async def test_tls_without_h2_in_alpn_stays_http11(
    certs: Certs, tmp_path: Path, backend: Backend
) -> None:
    raw = make_config([backend.address], service=tls())  # default alpn: [http/1.1]
    async with start_proxy(raw, base_dir=tmp_path) as p:
        r = await curl(
            "--http2", "--cacert", str(certs.ca_file), "-i", f"https://localhost:{p.port}/"
        )
        assert r.stdout.startswith(b"HTTP/1.1 200"), r.stdout


async def test_maintenance_page_and_rules_answer_streams(backend: Backend) -> None:
    raw = make_config([backend.address])
    raw["services"]["web"]["rules"] = [
        {"if": {"path_prefix": "/old"}, "then": {"redirect": {"location": "/new", "status": 301}}}
    ]
    async with start_proxy(raw) as p:
        r = await curl("--http2-prior-knowledge", "-i", p.url + "/old/x")
        assert r.stdout.startswith(b"HTTP/2 301"), r.stdout
        assert b"location: /new" in r.stdout.lower()
        server = p.registry.pool("web").servers[0]
        cmd = AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.CLI)
        p.registry.admin_command(server, cmd)
        r = await curl("--http2-prior-knowledge", "-i", p.url + "/")
        assert r.stdout.startswith(b"HTTP/2 503"), r.stdout
        assert p.service.stats.maintenance_pages == 1


async def test_openssl_s_client_negotiates_h2_by_alpn(
    certs: Certs, tmp_path: Path, backend: Backend
) -> None:
    raw = make_config([backend.address], service=tls(["h2", "http/1.1"]))
    async with start_proxy(raw, base_dir=tmp_path) as p:
        for offer, chosen in (("h2,http/1.1", "h2"), ("http/1.1", "http/1.1"), ("h3", None)):
            proc = await asyncio.create_subprocess_exec(
                "openssl", "s_client", "-connect", f"127.0.0.1:{p.port}", "-servername",
                "a.example", "-alpn", offer, "-CAfile", str(certs.ca_file),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out = (await asyncio.wait_for(proc.communicate(), 30))[0].decode()
            if chosen is None:
                assert "No ALPN negotiated" in out, out
            else:
                assert f"ALPN protocol: {chosen}" in out, out
            assert "Verify return code: 0 (ok)" in out


async def test_h2load_many_streams_h2c_and_tls(backends: list[Backend], tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    certs.leaf("a", "localhost", "127.0.0.1")
    tls = {"certificates": [{"cert": "a.pem", "key": "a.key"}], "alpn": ["h2", "http/1.1"]}
    raw = make_config([b.address for b in backends], service={"tls": tls})
    async with start_proxy(make_config([b.address for b in backends])) as p:
        c = await h2load("-n", "3000", "-c", "4", "-m", "25", p.url + "/")
        assert c["succeeded"] == 3000 and c["2xx"] == 3000, c
        assert p.service.stats.connections_total == 4
        assert all(len(b.requests) >= 900 for b in backends)  # round robin, per stream
    async with start_proxy(raw, base_dir=tmp_path) as p:
        c = await h2load("-n", "1000", "-c", "2", "-m", "20", f"https://127.0.0.1:{p.port}/")
        assert c["succeeded"] == 1000 and c["2xx"] == 1000, c


async def test_a_server_drained_under_h2_load_finishes_its_streams(
    backends: list[Backend],
) -> None:
    for b in backends:
        b.delay = 0.01
    async with start_proxy(make_config([b.address for b in backends])) as p:
        load = asyncio.create_task(h2load("-n", "3000", "-c", "4", "-m", "20", p.url + "/"))
        a = backends[0]
        await wait_for(lambda: len(a.requests) >= 100, 60)
        server = p.registry.pool("web").servers[0]
        in_flight = server.connections  # streams being served by a now
        seen = len(a.requests)
        p.registry.admin_command(server, AdminCommand(Admin.DRAIN, actor="t", cause=Cause.CLI))
        c = await load
        assert c["succeeded"] == 3000 and c["2xx"] == 3000, c  # none lost
        assert len(a.requests) <= seen + in_flight  # a took no new stream
        assert server.connections == 0  # and finished the ones it had


async def test_a_rolling_maintenance_of_three_servers_under_h2_load(
    backends: list[Backend],
) -> None:
    """Each server in turn: drained, to maintenance once its streams are done, back; the
    h2 load (200 streams in flight) loses none."""
    for b in backends:
        b.delay = 0.005
    async with start_proxy(make_config([b.address for b in backends])) as p:
        load = asyncio.create_task(h2load("-n", "20000", "-c", "10", "-m", "20", p.url + "/"))
        servers = p.registry.pool("web").servers
        for server, b in zip(servers, backends, strict=True):
            await wait_for(lambda: len(b.requests) >= 200, 60)  # noqa: B023
            drain = AdminCommand(Admin.DRAIN, actor="t", cause=Cause.CLI)
            p.registry.admin_command(server, drain)
            await wait_for(lambda: server.connections == 0, 30)  # noqa: B023
            maint = AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.CLI)
            p.registry.admin_command(server, maint)
            done = len(b.requests)
            total = sum(len(x.requests) for x in backends)
            await wait_for(lambda: sum(len(x.requests) for x in backends) > total + 300, 30)  # noqa: B023
            assert len(b.requests) == done  # nothing for a server in maintenance
            back = AdminCommand(Admin.ENABLED, actor="t", cause=Cause.CLI)
            p.registry.admin_command(server, back)
            assert not load.done(), "the load ended before the roll did: make it longer"
        c = await load
        assert c["succeeded"] == 20000 and c["2xx"] == 20000, c


def raw_h2_get(port: int, path: str) -> socket.socket:
    """A socket with the preface, SETTINGS and a GET for ``path`` on stream 1 sent."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    block = hpack.Encoder().encode(
        [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "t")]
    )
    s.sendall(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + b"\0\0\0\x04\0\0\0\0\0"  # SETTINGS, empty
        + struct.pack(">I", len(block))[1:]
        + b"\x01\x05\0\0\0\x01"
        + block
    )
    return s


def read_frames(s: socket.socket, until: object) -> list[tuple[int, int, bytes]]:
    raw = b""
    frames: list[tuple[int, int, bytes]] = []
    while not until(frames):  # type: ignore[operator]
        data = s.recv(65536)
        if not data:
            break
        raw += data
        frames = []
        i = 0
        while i + 9 <= len(raw):
            n = int.from_bytes(raw[i : i + 3], "big")
            if i + 9 + n > len(raw):
                break
            sid = int.from_bytes(raw[i + 5 : i + 9], "big") & 0x7FFFFFFF
            frames.append((raw[i + 3], sid, raw[i + 9 : i + 9 + n]))
            i += 9 + n
    return frames


def test_shutdown_under_h2_load_sends_goaway_and_loses_no_stream(tmp_path: Path) -> None:
    with serve_in_thread(Backend("a"), Backend("b")) as backends:
        write_simple_config(tmp_path, list(backends))  # type: ignore[arg-type]
        started = run_quiesce(tmp_path)
        port = int(started.www.rsplit(":", 1)[1].strip("/"))
        load = subprocess.Popen(
            ["h2load", "-n", "200", "-c", "2", "-m", "100", started.www + "hold"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            watcher = raw_h2_get(port, "/hold")
            deadline = time.monotonic() + 30
            while sum(b.holding for b in backends) < 201:
                assert time.monotonic() < deadline, [b.holding for b in backends]
                time.sleep(0.01)
            started.proc.p.send_signal(signal.SIGTERM)
            frames = read_frames(watcher, lambda fs: any(f[0] == 7 for f in fs))
            first = next(f for f in frames if f[0] == 7)
            assert int.from_bytes(first[2][4:8], "big") == 0  # GOAWAY NO_ERROR
            for b in backends:
                b.release()
            # its stream still answered, then the last GOAWAY names it, then the close
            frames = read_frames(watcher, lambda fs: False)
            headers = [f for f in frames if f[0] == 1 and f[1] == 1]
            assert headers and hpack.Decoder().decode(headers[0][2])[0] == (":status", "200")
            last = [f for f in frames if f[0] == 7][-1]
            assert int.from_bytes(last[2][:4], "big") == 1
            watcher.close()
            out, _ = load.communicate(timeout=60)
            c = counts(out)
            assert c["succeeded"] == 200 and c["2xx"] == 200, out
            assert started.proc.stop(None) == 0, started.proc.output
        finally:
            if load.poll() is None:
                load.kill()
            started.proc.stop(signal.SIGKILL)
