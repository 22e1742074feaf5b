"""Issue 14: a server added at runtime keeps what the API shows of its admin record (who
added it, why, when: actor, cause, reason, since) across a ``kill -9`` and a restart, as a
server of the config file keeps its own. Added with ``quiesce create server``, the runtime
socket's ``add server`` and ``POST /api/v1/pools/{pool}/servers``; a real ``quiesce run``."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from quiesce.security import hash_password
from tests.support.process import BackendThread, quiesce_cli, run_quiesce, runtime_command

pytestmark = pytest.mark.peers

AUTH = ("admin", "pw")
SHOWN = ("admin", "actor", "cause", "reason", "since", "expires")


def shown(api: str, ref: str) -> dict[str, Any]:
    r = httpx.get(f"{api}/servers/{ref}", auth=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    return {k: body[k] for k in SHOWN}


def test_runtime_added_servers_keep_their_record_across_kill_9(tmp_path: Path) -> None:
    with BackendThread(["b1", "b2", "b3", "b4"]) as bt:
        b1, b2, b3, b4 = bt.backends
        (tmp_path / "quiesce.yaml").write_text(
            f"""
admin:
  listen: 127.0.0.1:0
  runtime_socket: ./quiesce.sock
  users: [{{name: admin, password_hash: "{hash_password("pw")}", role: admin}}]
state: {{sqlite: ./state.db}}
pools:
  web:
    servers:
      - {{name: b1, address: 127.0.0.1:{b1.port}}}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""
        )
        sock = tmp_path / "quiesce.sock"
        proc, _www, api = run_quiesce(tmp_path)
        try:
            port = int(api.rsplit(":", 1)[1].removesuffix("/api/v1"))
            done = quiesce_cli(
                port, "create", "server", "web/b2", f"127.0.0.1:{b2.port}", "--reason", "canary"
            )
            assert done.returncode == 0, done.stderr
            answer = runtime_command(sock, f"add server web/b3 127.0.0.1:{b3.port}")
            assert answer.startswith("New server registered."), answer
            r = httpx.post(
                f"{api}/pools/web/servers",
                json={"name": "b4", "address": f"127.0.0.1:{b4.port}", "reason": "scale out"},
                auth=AUTH,
            )
            assert r.status_code == 201, r.text
            r = httpx.post(
                f"{api}/servers/web/b4/maintenance", json={"reason": "kernel"}, auth=AUTH
            )
            assert r.status_code == 200, r.text
            r = httpx.post(f"{api}/servers/web/b1/drain", json={"reason": "move"}, auth=AUTH)
            assert r.status_code == 200, r.text
            before = {n: shown(api, f"web/{n}") for n in ("b1", "b2", "b3", "b4")}
        finally:
            assert proc.stop(signal.SIGKILL) == -signal.SIGKILL

        # what an operator added them with, not the config file's defaults
        assert before["b2"]["cause"] != "config" and before["b2"]["since"] > 0, before
        assert before["b2"]["reason"] == "canary", before
        assert before["b3"]["cause"] == "runtime-socket" and before["b3"]["since"] > 0, before

        proc, _www, api = run_quiesce(tmp_path)
        try:
            after = {n: shown(api, f"web/{n}") for n in ("b1", "b2", "b3", "b4")}
        finally:
            proc.stop(signal.SIGTERM)
        assert after == before
