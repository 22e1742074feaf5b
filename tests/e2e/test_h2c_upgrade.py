"""curl ``--http2`` on cleartext (``Upgrade: h2c``, ``HTTP2-Settings``, ``Connection: Upgrade,
HTTP2-Settings``) against ``quiesce run``: served as HTTP/1.1, as nginx and HAProxy do, its
body and all; the back end never sees Upgrade or HTTP2-Settings. It was a 400 (``PR``) with a
body, and the upgrade was passed on without one."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backend import Backend, serve_in_thread
from tests.support.process import Started, run_quiesce, write_simple_config

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl"),
]


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Started, Backend]]:
    with serve_in_thread(Backend("b1")) as (b1,):
        write_simple_config(tmp_path, [b1])  # type: ignore[list-item]
        q = run_quiesce(tmp_path)
        try:
            yield q, b1
        finally:
            q.proc.stop(signal.SIGTERM)


OPTS = ("-sS", "--http2", "-w", "\n%{http_code} %{http_version} %{num_connects}\n")


def curl(*args: str) -> list[str]:
    """curl's output lines: each answer, then its status, HTTP version and the connections
    curl opened for it."""
    out = subprocess.run(
        ["curl", *OPTS, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.splitlines()


def no_upgrade(headers: dict[str, str]) -> None:
    assert "upgrade" not in headers and "http2-settings" not in headers, headers
    assert "upgrade" not in headers.get("connection", "").lower(), headers


def test_curl_http2_with_a_body_is_served_as_http11(proxied: tuple[Started, Backend]) -> None:
    q, b1 = proxied
    body = bytes(range(256)) * 400  # 100 KiB, from curl's stdin; then a second POST
    sink = q.www + "sink"
    proc = subprocess.run(
        ["curl", *OPTS, "--data-binary", "@-", sink, "--next", *OPTS, "-d", "x", sink],
        input=body,
        capture_output=True,
        timeout=30,
        check=True,
    )
    out = proc.stdout.decode().splitlines()
    assert out[1] == "200 1.1 1" and out[3] == "200 1.1 0", out  # one connection for both
    assert json.loads(out[0]) == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert json.loads(out[2])["length"] == 1
    seen = [r for r in b1.requests if r.target == "/sink"]
    assert len(seen) == 2
    for r in seen:
        assert r.method == "POST"
        no_upgrade(r.headers)


def test_curl_http2_get_and_post_small(proxied: tuple[Started, Backend]) -> None:
    q, b1 = proxied
    out = curl(q.www + "headers", "--next", *OPTS, "-d", "x", q.www + "sink")
    # one connection for both: the h2c request left the client connection usable
    assert out[-1] == "200 1.1 0" and out[-3] == "200 1.1 1", out
    assert json.loads(out[-2])["length"] == 1
    (get,) = [r for r in b1.requests if r.target == "/headers"]
    no_upgrade(get.headers)
    (post,) = [r for r in b1.requests if r.target == "/sink"]
    no_upgrade(post.headers)
    assert post.headers["content-length"] == "1"


def test_h2c_among_other_protocols_is_not_passed_on(proxied: tuple[Started, Backend]) -> None:
    q, b1 = proxied
    out = curl("-H", "Connection: Upgrade", "-H", "Upgrade: h2c, foo/2", q.www + "headers")
    assert out[-1] == "200 1.1 1", out
    (get,) = [r for r in b1.requests if r.target == "/headers"]
    assert get.headers["upgrade"] == "foo/2"


def test_pipelined_behind_an_h2c_request_with_a_body(proxied: tuple[Started, Backend]) -> None:
    """One write: an h2c POST with a chunked body, then a GET: both read and answered."""
    q, b1 = proxied
    port = int(q.www.rsplit(":", 1)[1].strip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(
            b"POST /sink HTTP/1.1\r\nHost: www\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            b"GET /headers HTTP/1.1\r\nHost: www\r\nConnection: close\r\n\r\n"
        )
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert got.count(b"HTTP/1.1 200 ") == 2, got
    assert [r.target for r in b1.requests if r.target != "/health"] == ["/sink", "/headers"]
    assert b'"length": 5' in got
    no_upgrade(b1.requests[-2].headers)


def test_many_h2c_requests_pipelined_in_one_read(proxied: tuple[Started, Backend]) -> None:
    """600 h2c requests in one write, each read again where the one before stopped: by one
    loop, not a call deeper each (that went past Python's recursion limit: none answered)."""
    q, b1 = proxied
    port = int(q.www.rsplit(":", 1)[1].strip("/"))
    one = (
        b"GET / HTTP/1.1\r\nHost: www\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(one * 600 + b"GET /last HTTP/1.1\r\nHost: www\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := s.recv(1 << 20):
            got += chunk
    assert got.count(b"HTTP/1.1 200 ") == 601
    assert b1.paths == ["/"] * 600 + ["/last"]
    assert all("upgrade" not in r.headers for r in b1.requests)
