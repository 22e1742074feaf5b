"""Live reload (issue 14, item 1), driven as an operator drives it: a real ``quiesce run``
in front of real back ends, reloaded through ``POST /api/v1/reload``, ``quiesce reload``,
the runtime socket's ``reload`` (with socat) and ``kill -HUP``; a bad file changes nothing
and every problem is reported. (20 reloads and a SIGHUP under a client load, with five
takeovers and a busy server removed, losing no request: test_change_everything.py.)"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_run_and_demo import Proc
from tests.support.backend import Backend, serve_in_thread
from tests.support.process import quiesce_cli

pytestmark = [pytest.mark.peers, pytest.mark.slow]

AUTH = "Basic " + base64.b64encode(b"admin:pw").decode()


def config_text(
    servers: list[tuple[str, int, int]],
    *,
    extra_pool: bool = False,
    flags: str = "{}",
    rules: str = "[]",
) -> str:
    lines = "\n".join(
        f"      - {{name: {n}, address: 127.0.0.1:{port}, weight: {w}}}" for n, port, w in servers
    )
    api = ""
    if extra_pool:
        api = f"""
  api:
    servers:
      - {{name: a1, address: 127.0.0.1:{servers[0][1]}}}"""
    return f"""
admin:
  listen: 127.0.0.1:0
  runtime_socket: ./quiesce.sock
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state:
  sqlite: ./state.db
flags: {flags}
pools:
  web:
    graceful_disable_timeout: 5s
    servers:
{lines}{api}
services:
  www:
    listen: 127.0.0.1:0
    pool: web
    rules: {rules}
"""


@functools.cache
def _hash() -> str:
    from quiesce.security import hash_password

    return hash_password("pw")


class Running:
    def __init__(self, tmp_path: Path, proc: Proc) -> None:
        self.dir = tmp_path
        self.proc = proc
        self.port = int(proc.wait_for(r"service www listening on port (\d+)").group(1))
        self.admin = int(proc.wait_for(r"admin listening on port (\d+)").group(1))
        proc.wait_for("quiesce: ready")

    def write(self, text: str) -> None:
        tmp = self.dir / "quiesce.yaml.tmp"
        tmp.write_text(text)
        tmp.replace(self.dir / "quiesce.yaml")

    def api(self, method: str, path: str) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=30)
        conn.request(method, path, headers={"Authorization": AUTH})
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return r.status, json.loads(body) if body else None

    def servers(self) -> dict[str, Any]:
        status, data = self.api("GET", "/api/v1/servers")
        assert status == 200
        return {f"{s['pool']}/{s['name']}": s for s in data}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return quiesce_cli(self.admin, *args)

    def socat(self, line: str) -> str:
        r = subprocess.run(
            ["socat", "-t", "30", "-", f"UNIX-CONNECT:{self.dir / 'quiesce.sock'}"],
            input=line + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        return r.stdout

    def get(self, path: str = "/") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", path)
        r = conn.getresponse()
        out = r.status, r.read()
        conn.close()
        return out


def start(tmp_path: Path, text: str) -> Running:
    (tmp_path / "quiesce.yaml").write_text(text)
    return Running(tmp_path, Proc(["run", "-c", "quiesce.yaml"], tmp_path))


BAD = """
pools:
  web:
    servers:
      - {name: w1, address: 127.0.0.1:1, weight: 999}
services:
  www: {listen: 127.0.0.1:0, pool: nowhere}
"""


def test_reload_through_every_entry_point(tmp_path: Path) -> None:
    with serve_in_thread(Backend("b1"), Backend("b2"), Backend("b3")) as (b1, b2, b3):
        q = start(tmp_path, config_text([("w1", b1.port, 1), ("w2", b2.port, 1)]))
        try:
            # REST: a server added, one re-weighted, a pool and a flag, a rule
            rule = '[{if: {path_prefix: /hello}, then: {respond: {status: 200, body: "hi"}}}]'
            q.write(
                config_text(
                    [("w1", b1.port, 3), ("w2", b2.port, 1), ("w3", b3.port, 1)],
                    extra_pool=True,
                    flags="{promo: true}",
                    rules=rule,
                )
            )
            status, body = q.api("POST", "/api/v1/reload")
            assert status == 200, body
            kinds = sorted(c["kind"] for c in body["changes"])
            assert kinds == [
                "flag_set",
                "pool_added",
                "server_added",
                "server_changed",
                "service_changed",
            ], body
            servers = q.servers()
            assert servers["web/w3"]["status"] in ("unmonitored", "up"), servers["web/w3"]
            assert servers["web/w1"]["weight"] == 3 and "api/a1" in servers
            assert q.get("/hello") == (200, b"hi")
            status, events = q.api("GET", "/api/v1/events?kind=config_reload")
            assert events[-1]["actor"] == "admin" and events[-1]["cause"] == "config"

            # a bad file: nothing changes, every problem is reported, by all four
            q.write(BAD)
            status, body = q.api("POST", "/api/v1/reload")
            assert status == 422, body
            assert any("weight" in p for p in body["problems"]), body
            assert any("nowhere" in p for p in body["problems"]), body
            r = q.cli("reload")
            assert r.returncode == 1, r
            assert "weight" in r.stderr and "nowhere" in r.stderr, r.stderr
            out = q.socat("reload")
            assert "Reload refused: 2 problem(s)" in out and "nowhere" in out, out
            q.proc.p.send_signal(signal.SIGHUP)
            q.proc.wait_for(r"reload by SIGHUP refused: .*2 problem\(s\)")
            assert set(q.servers()) == {"web/w1", "web/w2", "web/w3", "api/a1"}
            assert q.get("/hello") == (200, b"hi")
            # an empty (truncated) file is refused too: it would remove every service, pool
            # and admin user, locking the operator out
            q.write("")
            status, body = q.api("POST", "/api/v1/reload")
            assert status == 422 and "the file is empty" in body["problems"][0], body
            assert set(q.servers()) == {"web/w1", "web/w2", "web/w3", "api/a1"}

            # a runtime change wins over the file: w2 re-weighted at runtime keeps 7
            conn = http.client.HTTPConnection("127.0.0.1", q.admin, timeout=10)
            conn.request(
                "PATCH",
                "/api/v1/servers/web/w2",
                body=json.dumps({"weight": 7}),
                headers={"Authorization": AUTH, "Content-Type": "application/json"},
            )
            assert conn.getresponse().status == 200
            conn.close()
            # maintenance survives a reload too
            conn = http.client.HTTPConnection("127.0.0.1", q.admin, timeout=10)
            conn.request(
                "POST",
                "/api/v1/servers/web/w1/maintenance",
                body=b"{}",
                headers={"Authorization": AUTH, "Content-Type": "application/json"},
            )
            assert conn.getresponse().status == 200
            conn.close()

            # CLI: w3 removed (drained first), w2's weight in the file is kept at runtime's
            q.write(config_text([("w1", b1.port, 3), ("w2", b2.port, 2)]))
            r = q.cli("reload")
            assert r.returncode == 0, r
            assert "web/w3: removed" in r.stdout and "kept" in r.stdout, r.stdout
            deadline = time.monotonic() + 10
            while "web/w3" in q.servers() and time.monotonic() < deadline:
                time.sleep(0.1)
            servers = q.servers()
            assert "web/w3" not in servers and "api/a1" not in servers
            assert servers["web/w2"]["weight"] == 7
            assert servers["web/w1"]["admin"] == "maintenance"

            # runtime socket, through socat: w3 back
            q.write(config_text([("w1", b1.port, 3), ("w2", b2.port, 2), ("w3", b3.port, 1)]))
            out = q.socat("reload")
            assert out.startswith("Reloaded: 1 change(s).") and "web/w3: added" in out, out

            # SIGHUP: w3 removed again
            q.write(config_text([("w1", b1.port, 3), ("w2", b2.port, 2)]))
            q.proc.p.send_signal(signal.SIGHUP)
            q.proc.wait_for(r"reload by SIGHUP: 1 change\(s\)")
            status, events = q.api("GET", "/api/v1/events?kind=server_removed")
            assert events[-1]["cause"] == "config"
            assert q.get("/")[0] == 200
        finally:
            code = q.proc.stop(signal.SIGTERM)
        assert code == 0, q.proc.output
