"""TLS driven as an operator drives it (issue 16, items 1 and 6): a real ``quiesce run`` with a
TLS service, curl with ``--cacert``, plain HTTP to the TLS port (400), an expired
certificate warned about at start, and a renewed certificate taken by ``kill -HUP``."""

from __future__ import annotations

import datetime
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.backend import Backend, serve_in_thread
from tests.support.certs import Certs
from tests.support.process import Proc

pytestmark = pytest.mark.peers

CONFIG = """
admin: {{listen: 127.0.0.1:0}}
state: {{sqlite: null}}
pools:
  web:
    servers: [{{name: w1, address: "127.0.0.1:{port}"}}]
services:
  www:
    listen: 127.0.0.1:0
    pool: web
    tls: {{certificates: [{{cert: site.pem, key: site.key}}]}}
"""


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=30, check=False)


def install(certs: Certs, tmp_path: Path, **kw: datetime.datetime) -> None:
    cert, key = certs.leaf("issued", "site.example", **kw)
    (tmp_path / "site.pem").write_bytes(cert.read_bytes())
    (tmp_path / "site.key").write_bytes(key.read_bytes())


def test_quiesce_run_serves_https_and_a_sighup_renews_the_certificate(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old, new = Certs(tmp_path / "old"), Certs(tmp_path / "new")
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    install(old, tmp_path, not_after=past)  # expired: a warning, the service still starts
    with serve_in_thread(Backend("w1")) as (backend,):
        (tmp_path / "quiesce.yaml").write_text(CONFIG.format(port=backend.port))
        proc = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
        try:
            proc.wait_for(
                r"warning: services\.www\.tls\.certificates\[0\]\.cert: 'site\.pem' expired"
            )
            port = int(proc.wait_for(r"service www listening on port (\d+)").group(1))
            proc.wait_for("quiesce: ready")
            url = ["--resolve", f"site.example:{port}:127.0.0.1", f"https://site.example:{port}/"]
            r = curl("--cacert", str(old.ca_file), *url)
            assert r.returncode != 0 and b"expired" in r.stderr  # curl refuses it
            r = curl("--insecure", "-w", " %{http_code}", *url)
            assert r.stdout == b"hello from w1\n 200"
            r = curl("-w", " %{http_code}", f"http://127.0.0.1:{port}/")
            assert r.stdout.endswith(b"a plain HTTP request to an HTTPS port\n 400")
            install(new, tmp_path)  # renewed, same file names: a SIGHUP re-reads them
            proc.p.send_signal(signal.SIGHUP)
            proc.wait_for(r"reload by SIGHUP: \d+ change")
            r = curl("--cacert", str(new.ca_file), *url)
            assert r.returncode == 0 and r.stdout == b"hello from w1\n", r.stderr
        finally:
            assert proc.stop() == 0
