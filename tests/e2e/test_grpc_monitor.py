"""``type: grpc`` monitors in a real ``quiesce run`` against a real grpcio server with the
standard health servicer (issue 16, item 5): the back end flips its status SERVING ->
NOT_SERVING -> maintenance -> SERVING and the server's oper state follows, with the reason, in
``quiesce list servers`` and the REST server view; a refusing port is down; a monitor asking
a service the server does not know is down with SERVICE_UNKNOWN; a monitor added over the
API with a bad key is refused naming it, and nothing changes; without grpcio, quiesce check
says how to install it and quiesce run refuses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.grpc_health import GrpcHealthServer
from tests.support.process import quiesce_cli, run_quiesce, until

pytestmark = [pytest.mark.peers, pytest.mark.slow]

AUTH = ("admin", "pw")
TIMING = "send_interval: 0.5s, receive_timeout: 0.4s, successful_checks: 1, failed_checks: 1"


def config(grpc_port: int, refused_port: int) -> str:
    from quiesce.security import hash_password

    return f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{hash_password("pw")}", role: admin}}]
state: {{sqlite: ./state.db}}
healthmonitors:
  orders:
    type: grpc
    {TIMING.replace(", ", chr(10) + "    ")}
    grpc_monitor: {{service: api.Orders, maintenance_service: quiesce.maintenance}}
  by_status:
    type: grpc
    {TIMING.replace(", ", chr(10) + "    ")}
    grpc_monitor: {{service: api.Orders, maintenance_status: NOT_SERVING}}
  unknown:
    type: grpc
    {TIMING.replace(", ", chr(10) + "    ")}
    grpc_monitor: {{service: api.Missing}}
pools:
  api:
    healthmonitors: [orders]
    servers:
      - {{name: g1, address: 127.0.0.1:{grpc_port}}}
      - {{name: g2, address: 127.0.0.1:{refused_port}}}
  legacy:
    healthmonitors: [by_status]
    servers: [{{name: g1, address: 127.0.0.1:{grpc_port}}}]
  other:
    healthmonitors: [unknown]
    servers: [{{name: g1, address: 127.0.0.1:{grpc_port}}}]
services:
  www: {{listen: 127.0.0.1:0, pool: api}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_the_oper_state_follows_the_health_servicer(tmp_path: Path) -> None:
    with GrpcHealthServer() as grpc_server:
        grpc_server.set("api.Orders", "SERVING")
        (tmp_path / "quiesce.yaml").write_text(config(grpc_server.port, free_port()))
        started = run_quiesce(tmp_path)
        admin = int(started.api.split(":")[2].split("/")[0])
        try:

            def view(ref: str) -> dict[str, Any]:
                r = httpx.get(f"{started.api}/servers/{ref}", auth=AUTH)
                assert r.status_code == 200, r.text
                return dict(r.json())

            def seen(ref: str) -> tuple[str, str, str]:
                v = view(ref)
                checks = v["last_checks"] or [{"reason": "", "detail": ""}]
                return v["oper"], checks[-1]["reason"], checks[-1]["detail"]

            def listed() -> dict[str, str]:
                r = quiesce_cli(admin, "--json", "list", "servers")
                assert r.returncode == 0, r.stderr
                return {f"{s['pool']}/{s['name']}": s["status"] for s in json.loads(r.stdout)}

            until(lambda: seen("api/g1") == ("up", "OK", "SERVING"), 20)
            until(lambda: seen("api/g2")[:2] == ("down", "CONNECTION_REFUSED"))
            assert "Connection refused" in seen("api/g2")[2]
            until(
                lambda: (
                    seen("other/g1") == ("down", "SERVICE_UNKNOWN", "service 'api.Missing' unknown")
                )
            )
            assert listed()["api/g1"] == "up" and listed()["api/g2"] == "down"

            grpc_server.set("api.Orders", "NOT_SERVING")
            until(lambda: seen("api/g1") == ("down", "NOT_SERVING", "NOT_SERVING"))
            until(
                lambda: (
                    seen("legacy/g1")
                    == ("maintenance", "MAINTENANCE_STATUS_MATCH", "NOT_SERVING (maintenance)")
                )
            )
            assert listed()["api/g1"] == "down"
            assert listed()["legacy/g1"] == "down for maintenance"

            # the back end marks itself down for maintenance (its service still NOT_SERVING:
            # maintenance wins)
            grpc_server.set("quiesce.maintenance", "SERVING")
            until(
                lambda: (
                    seen("api/g1")
                    == (
                        "maintenance",
                        "MAINTENANCE_SERVICE_MATCH",
                        "maintenance_service 'quiesce.maintenance': SERVING",
                    )
                )
            )
            assert view("api/g1")["status"] == "down for maintenance"
            assert listed()["api/g1"] == "down for maintenance"
            table = quiesce_cli(admin, "list", "servers")
            assert "down for maintenance" in table.stdout, table.stdout

            grpc_server.set("quiesce.maintenance", "NOT_SERVING")
            grpc_server.set("api.Orders", "SERVING")
            until(lambda: seen("api/g1") == ("up", "OK", "SERVING"))
            until(lambda: seen("legacy/g1") == ("up", "OK", "SERVING"))
            assert listed()["api/g1"] == "up"
            events = httpx.get(
                f"{started.api}/events", params={"pool": "api", "server": "g1"}, auth=AUTH
            ).json()
            # the event log tells the same story, each change with its check's reason
            trail = [
                (e["from"], e["to"], e["detail"]["reason"])
                for e in events
                if e["kind"] == "oper_change"
            ]
            assert trail == [
                ("unknown", "up", "OK"),
                ("up", "down", "NOT_SERVING"),
                ("down", "maintenance", "MAINTENANCE_SERVICE_MATCH"),
                ("maintenance", "up", "OK"),
            ], trail

            # a monitor with a bad key, over the API: refused naming it, nothing changes
            r = httpx.post(
                f"{started.api}/healthmonitors",
                json={"name": "bad", "type": "grpc", "grpc_monitor": {"servce": "x"}},
                auth=AUTH,
            )
            assert r.status_code == 422, r.text
            assert "grpc_monitor.servce" in r.text, r.text
            names = {
                m["name"] for m in httpx.get(f"{started.api}/healthmonitors", auth=AUTH).json()
            }
            assert "bad" not in names
        finally:
            started.proc.stop()


def test_without_grpcio_check_says_how_to_install_and_run_refuses(tmp_path: Path) -> None:
    """grpcio hidden (a ``grpc`` package first on PYTHONPATH that fails to import): ``quiesce
    check`` passes with a warning naming the extra, ``quiesce run`` refuses to start."""
    hidden = tmp_path / "hidden" / "grpc"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('grpcio hidden for this test')\n")
    (tmp_path / "quiesce.yaml").write_text(config(free_port(), free_port()))
    path = os.pathsep.join(p for p in (str(hidden.parent), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}

    def quiesce(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "quiesce", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    hint = "grpc monitors need grpcio and grpcio-health-checking: pip install 'quiesce[grpc]'"
    checked = quiesce("check", "-c", "quiesce.yaml")
    assert checked.returncode == 0, checked.stderr
    for name in ("by_status", "orders", "unknown"):
        assert f"warning: health monitor '{name}' (type grpc): {hint}" in checked.stderr
    ran = quiesce("run", "-c", "quiesce.yaml")
    assert ran.returncode != 0, ran.stdout
    assert f"health monitor 'orders' (type grpc): {hint}" in ran.stdout + ran.stderr
    assert "ready" not in ran.stdout
