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


def _server_requests(metrics: str) -> dict[str, float]:
    """quiesce_server_requests_total per server, from /metrics' text."""
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^quiesce_server_requests_total\{[^}]*server="(\w+)"[^}]*\} (\S+)$', metrics, re.M
        )
    }


def test_demo_drives_traffic_prints_undos_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    proc = Proc(["demo", "--port", "0", "--admin-port", "0"], tmp_path)
    try:
        api, password = proc.wait_for(
            r"dashboard and API\s+(http://\S+?)/\s.*password (\S+)\)"
        ).groups()
        metrics_line = proc.wait_for(r"metrics\s+(http://\S+/metrics)\s+\(.*curl -u\)")
        sock = Path(proc.wait_for(r"runtime socket\s+(/\S+)").group(1))
        proc.wait_for("quiesce: ready")
        out = proc.output
        # every command it suggests comes with the one that undoes it
        web2 = re.search(r"curl -s (http://\S+)/_demo/maintenance", out)
        assert web2 is not None and f"undo: curl -s {web2.group(1)}/_demo/ready" in out
        for undo in (
            "undo: quiesce clear server web/web1 drain",
            "undo: quiesce clear server web/web3 maintenance",
            "undo: quiesce clear flag maintenance_mode",
            f'undo: echo "set server web/web1 state ready" | socat stdio UNIX-CONNECT:{sock}',
            f'echo "show stat" | socat stdio UNIX-CONNECT:{sock}',
            f"curl -s -u admin:{password} {api}/metrics",
            "quiesce top   # a live view",
        ):
            assert undo in out
        # the socat line works as printed
        stat = subprocess.run(
            ["socat", "stdio", f"UNIX-CONNECT:{sock}"],
            input="show stat\n",
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        assert stat.startswith("# pxname,svname,") and "web,web1," in stat
        # /metrics needs the printed credentials...
        url = metrics_line.group(1)
        assert httpx.get(url).status_code == 401

        # ...and shows the demo's own traffic reaching every back end, with nobody sending any
        def all_served() -> bool:
            counts = _server_requests(httpx.get(url, auth=("admin", password)).text)
            return len(counts) == 3 and all(n > 0 for n in counts.values())

        until(all_served, 20)

        # ...and in the live series, second by second
        def in_series() -> bool:
            r = httpx.get(
                f"{api}/api/v1/series",
                params={"kind": "pool", "name": "web", "seconds": 30},
                auth=("admin", password),
            )
            return r.status_code == 200 and r.json()["totals"]["2xx"] > 0

        until(in_series, 10)
    finally:
        code = proc.stop(signal.SIGTERM)
    assert code == 0, proc.output
    assert sock.parent.parent == tmp and list(tmp.iterdir()) == [], "temp directory left"


def test_demo_no_traffic_stays_quiet(tmp_path: Path) -> None:
    proc = Proc(["demo", "--port", "0", "--admin-port", "0", "--no-traffic"], tmp_path)
    try:
        api, password = proc.wait_for(
            r"dashboard and API\s+(http://\S+?)/\s.*password (\S+)\)"
        ).groups()
        sock = Path(proc.wait_for(r"runtime socket\s+(/\S+)").group(1))
        proc.wait_for("quiesce: ready")
        auth = ("admin", password)

        def all_up() -> bool:
            r = httpx.get(f"{api}/api/v1/servers", auth=auth)
            return r.status_code == 200 and all(s["status"] == "up" for s in r.json())

        # the health checks take ~2 s: with traffic on, 4 requests a second would show by now
        until(all_up, 15)
        counts = _server_requests(httpx.get(f"{api}/metrics", auth=auth).text)
        assert counts == {"web1": 0, "web2": 0, "web3": 0}
        assert "Sending" not in proc.output
    finally:
        code = proc.stop(signal.SIGINT)
    assert code == 0, proc.output
    assert not sock.parent.exists()


def test_demo_on_a_busy_port_says_try_port_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    tmp = tmp_path / "tmp"  # the demo's temp directory is made here: it must be gone after
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = Proc(["demo", "--port", str(port), "--admin-port", "0"], tmp_path)
        assert proc.stop(None, timeout=30) == 1
    assert "address already in use" in proc.output.lower()
    assert "try --port 0" in proc.output
    assert list(tmp.iterdir()) == []
