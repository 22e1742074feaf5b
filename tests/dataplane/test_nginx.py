"""Interop with a real server: nginx as the back end (skipped when nginx is not installed)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.dataplane.conftest import curl, dead_port, make_config, start_proxy, wait_for

pytestmark = pytest.mark.peers

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


@pytest.fixture
def www() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are private, and nginx's workers run as nobody
    # when started as root.
    path = Path(tempfile.mkdtemp(prefix="quiesce-nginx-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def nginx(www: Path) -> AsyncIterator[str]:
    if NGINX is None:
        pytest.skip("nginx is not installed")
    tmp_path = www
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "blob").write_bytes(os.urandom(3 * 1024 * 1024))
    port = dead_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {tmp_path}/body;
  proxy_temp_path {tmp_path}/proxy;
  fastcgi_temp_path {tmp_path}/fcgi;
  uwsgi_temp_path {tmp_path}/uwsgi;
  scgi_temp_path {tmp_path}/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {tmp_path}/www;
    location = / {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
  }}
}}
"""
    )
    proc = await asyncio.create_subprocess_exec(
        NGINX, "-c", str(conf), "-e", str(tmp_path / "error.log")
    )

    async def up() -> bool:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        w.close()
        return True

    ready = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not ready and loop.time() < deadline:
        ready = await up()
        if not ready:
            await asyncio.sleep(0.02)
    assert ready, (tmp_path / "error.log").read_text()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        await proc.wait()


async def test_through_nginx(nginx: str, www: Path) -> None:
    blob = (www / "www" / "blob").read_bytes()
    async with start_proxy(make_config([nginx])) as p:
        async with httpx.AsyncClient() as c:
            for _ in range(5):
                r = await c.get(p.url + "/")
                assert r.text == "hello from nginx\n"
            r = await c.get(p.url + "/blob")
            assert r.content == blob
            r = await c.head(p.url + "/blob")
            assert r.status_code == 200 and r.content == b""
            assert r.headers["content-length"] == str(len(blob))
            r = await c.get(p.url + "/missing")
            assert r.status_code == 404
            r = await c.get(p.url + "/")
            assert r.status_code == 200
        s0 = p.registry.pool("web").servers[0]
        assert s0.responses == {"2xx": 8, "4xx": 1}
        # keep-alive towards nginx: the requests shared one upstream connection
        assert p.table.idle_upstream_count(s0) == 1
        r2 = await curl("-0", "-i", p.url + "/blob")
        assert r2.stdout.split(b"\r\n\r\n", 1)[1] == blob, r2.stdout[:300]
        await wait_for(lambda: s0.requests_in_flight == 0)
