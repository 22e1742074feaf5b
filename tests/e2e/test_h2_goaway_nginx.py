"""An h2 pool's servers sending GOAWAY under load lose no request (reviewer, issue 16).

Two real nginx servers speak h2c (``listen … http2``) with ``keepalive_requests 10`` (nginx
sends GOAWAY NO_ERROR after that many streams on a connection, naming the last one it
took; the streams above it it never processes) and ``http2_max_concurrent_streams 8`` (so
libnghttp2 holds more requests unsent behind the limit when the GOAWAY comes); ``quiesce
run`` serves them as a pool with ``protocol: h2``; h2load drives it over HTTP/1.1 (50
connections) and over HTTP/2 (10 connections of 10 streams). Every request gets its 200, none
waits for the pool's ``response_timeout`` (before: 502 ``SH`` for answered streams whose
channel was closed under a new request, or lost with the connection's close; 504 ``sH`` after
the whole timeout for a request written to a channel already closed; 502s for streams
refused more than three times), and the ``info`` lines of the GOAWAYs count the requests
that went on a new connection."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.process import run_quiesce

pytestmark = [pytest.mark.peers, pytest.mark.slow]

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
H2LOAD = shutil.which("h2load")
TIMEOUT_MS = 20_000  # the pool's response_timeout
LINE = re.compile(r" 0/(-?\d+)/(-?\d+)/(\d+) (\d{3}) \d+ \d+ (\S\S) ")
MOVED = re.compile(r"GOAWAY \(code 0, last stream \d+\): (\d+) requests it did not process go on")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nginxes() -> Iterator[list[int]]:
    if NGINX is None or H2LOAD is None:
        pytest.skip("nginx or h2load is not installed")
    # not tmp_path: nginx's workers run as nobody when started as root
    root = Path(tempfile.mkdtemp(prefix="quiesce-goaway-"))
    root.chmod(0o755)
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for i in range(2):
            port = _free_port()
            d = root / str(i)
            d.mkdir()
            (d / "nginx.conf").write_text(
                f"""
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 10;
  http2_max_concurrent_streams 8;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port} http2;
    location = / {{ default_type text/plain; return 200 "hello from nginx {i}\\n"; }}
  }}
}}
"""
            )
            procs.append(
                subprocess.Popen(
                    [NGINX, "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            ports.append(port)
        deadline = time.monotonic() + 15
        for port in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "nginx did not start"
                    time.sleep(0.02)
        yield ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def _h2load(*args: str) -> str:
    done = subprocess.run([H2LOAD or "h2load", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_goaway_under_load_loses_no_request(tmp_path: Path, nginxes: list[int]) -> None:
    from quiesce.security import hash_password

    a, b = nginxes
    (tmp_path / "quiesce.yaml").write_text(
        f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{hash_password("pw")}", role: admin}}]
logging:
  access: {{format: httplog, path: ./access.log}}
  process: {{level: info}}
pools:
  web:
    protocol: h2
    response_timeout: {TIMEOUT_MS // 1000}s
    servers:
      - {{name: a, address: 127.0.0.1:{a}}}
      - {{name: b, address: 127.0.0.1:{b}}}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""
    )
    started = run_quiesce(tmp_path)
    try:
        url = started.www
        out1 = _h2load("--h1", "-n", "3000", "-c", "50", url)
        out2 = _h2load("-n", "3000", "-c", "10", "-m", "10", url)
    finally:
        assert started.proc.stop() == 0
    for out in (out1, out2):
        assert "3000 succeeded, 0 failed, 0 errored, 0 timeout" in out, out
    lines = (tmp_path / "access.log").read_text().splitlines()
    entries = [LINE.search(line) for line in lines]
    assert len(entries) == 6000 and all(entries), lines[:5]
    bad = [
        line
        for line, m in zip(lines, entries, strict=True)
        if m and (m[4] != "200" or m[5] != "--")
    ]
    assert not bad, bad[:10]
    # structurally fast: no request waited anywhere near the response timeout
    slowest = max(int(m[3]) for m in entries if m)
    assert slowest < TIMEOUT_MS // 2, slowest
    # the GOAWAYs came (10 requests a connection) and moved requests were counted
    moved = [int(m[1]) for m in MOVED.finditer(started.proc.output)]
    assert len(moved) > 100 and sum(moved) > 0, started.proc.output[-3000:]
