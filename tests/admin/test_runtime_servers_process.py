"""`quiesce run` killed with SIGKILL after servers were added, re-addressed and deleted at
runtime: they come back as left, over the config file, and take (or get no) traffic
(issue 14, item 2)."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from quiesce.security import hash_password
from tests.support.process import BackendThread, run_quiesce

pytestmark = pytest.mark.peers

AUTH = ("admin", "pw")


def test_kill_9_keeps_runtime_servers(tmp_path: Path) -> None:
    with BackendThread(["b1", "b2", "b3"]) as bt:
        b1, b2, b3 = bt.backends
        (tmp_path / "quiesce.yaml").write_text(
            f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{hash_password("pw")}", role: admin}}]
state: {{sqlite: ./state.db}}
pools:
  web:
    servers:
      - {{name: b1, address: 127.0.0.1:{b1.port}}}
      - {{name: old, address: 127.0.0.1:1}}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""
        )

        proc, www, api = run_quiesce(tmp_path)
        try:
            r = httpx.post(
                f"{api}/pools/web/servers",
                json={"name": "b3", "address": f"127.0.0.1:{b3.port}"},
                auth=AUTH,
            )
            assert r.status_code == 201, r.text
            r = httpx.patch(
                f"{api}/servers/web/b1", json={"address": f"127.0.0.1:{b2.port}"}, auth=AUTH
            )
            assert r.status_code == 200, r.text
            r = httpx.post(f"{api}/servers/web/old/maintenance", json={}, auth=AUTH)
            assert r.status_code == 200, r.text
            r = httpx.delete(f"{api}/servers/web/old", auth=AUTH)
            assert r.status_code == 200, r.text
        finally:
            code = proc.stop(signal.SIGKILL)
        assert code == -signal.SIGKILL

        proc, www, api = run_quiesce(tmp_path)
        try:
            servers = httpx.get(f"{api}/pools/web", auth=AUTH).json()["servers"]
            assert [(s["name"], s["address"]) for s in servers] == [
                ("b1", f"127.0.0.1:{b2.port}"),
                ("b3", f"127.0.0.1:{b3.port}"),
            ]
            hits = b1.hits
            seen = {httpx.get(www).headers["x-backend"] for _ in range(6)}
            assert seen == {"b2", "b3"}
            assert b1.hits == hits
        finally:
            proc.stop(signal.SIGTERM)
