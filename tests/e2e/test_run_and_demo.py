"""`quiesce run` and `quiesce demo` driven as a user drives them: a real process, real sockets,
curl, signals."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.process import BackendThread as BackendThread
from tests.support.process import Proc as Proc
from tests.support.process import run_quiesce
from tests.support.process import until as until

pytestmark = [pytest.mark.peers, pytest.mark.slow]


@pytest.fixture
def backends() -> Iterator[BackendThread]:
    with BackendThread(["b1", "b2"]) as bt:
        yield bt


def test_run_serves_balances_and_stops_cleanly(tmp_path: Path, backends: BackendThread) -> None:
    from quiesce.security import hash_password

    b1, b2 = backends.backends
    (tmp_path / "quiesce.yaml").write_text(
        f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{hash_password("pw")}", role: admin}}]
state: {{sqlite: ./state.db}}
healthmonitors:
  hm:
    type: http
    send_interval: 200ms
    receive_timeout: 100ms
    http_monitor: {{http_request: "GET /health HTTP/1.0", maintenance_code: [503]}}
pools:
  web:
    healthmonitors: [hm]
    servers:
      - {{name: b1, address: 127.0.0.1:{b1.port}}}
      - {{name: b2, address: 127.0.0.1:{b2.port}}}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""
    )
    proc, url, api = run_quiesce(tmp_path)
    try:

        def both_up() -> bool:
            r = httpx.get(f"{api}/servers", auth=("admin", "pw"))
            return r.status_code == 200 and all(s["status"] == "up" for s in r.json())

        until(both_up)
        seen = set()
        for _ in range(4):
            out = subprocess.run(["curl", "-sS", url], capture_output=True, text=True, check=True)
            seen.add(out.stdout.split()[2])
        assert seen == {"b1", "b2"}
        # b2 says "maintenance" in its health reply: traffic goes to b1 only, no error.
        b2.maintenance = True

        def b2_in_maintenance() -> bool:
            r = httpx.get(f"{api}/servers/web/b2", auth=("admin", "pw"))
            return bool(r.json()["status"] == "down for maintenance")

        until(b2_in_maintenance)
        for _ in range(4):
            r = httpx.get(url)
            assert r.status_code == 200 and r.headers["x-backend"] == "b1"
    finally:
        code = proc.stop(signal.SIGTERM)
    assert code == 0, proc.output


def test_run_refuses_a_bad_config(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("pools: {web: {servers: [{name: a, address: x}]}}\n")
    proc = Proc(["run", "-c", "bad.yaml"], tmp_path)
    assert proc.stop(None, timeout=20) == 1
    assert "pools.web.servers[0].address" in proc.output


def test_demo_comes_up_proxies_and_shows_maintenance(tmp_path: Path) -> None:
    proc = Proc(["demo", "--port", "0", "--admin-port", "0"], tmp_path)
    try:
        www = proc.wait_for(r"balanced service\s+(http://\S+)").group(1)
        api, password = proc.wait_for(
            r"dashboard and API\s+(http://\S+?)/\s.*password (\S+)\)"
        ).groups()
        backends = dict(
            re.findall(r"(web\d) (http://\S+?)/", proc.wait_for(r"back ends .*").group(0))
        )
        auth = ("admin", password)

        def all_up() -> bool:
            r = httpx.get(f"{api}/api/v1/servers", auth=auth)
            return r.status_code == 200 and all(s["status"] == "up" for s in r.json())

        until(all_up, 15)
        r = httpx.get(www)
        assert r.status_code == 200 and r.text.startswith("hello from web")
        httpx.get(backends["web2"] + "/_demo/maintenance").raise_for_status()

        def web2_maint() -> bool:
            r = httpx.get(f"{api}/api/v1/servers/web/web2", auth=auth)
            return bool(r.json()["status"] == "down for maintenance")

        until(web2_maint, 15)
        names = {httpx.get(www).headers["x-backend"] for _ in range(6)}
        assert names == {"web1", "web3"}
    finally:
        code = proc.stop(signal.SIGINT)
    assert code == 0, proc.output
