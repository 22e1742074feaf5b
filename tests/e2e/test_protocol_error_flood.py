"""An anonymous client sending garbage to a postgresql and a mysql service, 1,000 connections
each, through a real ``quiesce run`` with ``state.event_retention.rows: 100``: the admin
events stay in the event log (review F4: one persisted ``protocol_error`` per connection
pushed them out), the metric counts the connections, the log has the first few lines."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from quiesce.dataplane.protoerr import PROTOCOL_ERROR_BURST
from tests.e2e.test_reload import _hash
from tests.e2e.test_run_and_demo import Proc

pytestmark = [pytest.mark.peers, pytest.mark.slow]

AUTH = ("admin", "pw")
N = 1000


def config() -> str:
    return f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state:
  sqlite: ./state.db
  event_retention: {{rows: 100}}
pools:
  db:
    servers: [{{name: pg1, address: "127.0.0.1:1"}}]
  my:
    servers: [{{name: my1, address: "127.0.0.1:1"}}]
services:
  pg: {{listen: 127.0.0.1:0, protocol: postgresql, pool: db}}
  mysql: {{listen: 127.0.0.1:0, protocol: mysql, pool: my}}
"""


def garbage(port: int) -> None:
    for _ in range(N):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 2)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass


def test_a_flood_of_bad_connections_leaves_the_admin_events(tmp_path: Path) -> None:
    (tmp_path / "quiesce.yaml").write_text(config())
    q = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
    try:
        pg = int(q.wait_for(r"service pg listening on port (\d+)").group(1))
        my = int(q.wait_for(r"service mysql listening on port (\d+)").group(1))
        admin = int(q.wait_for(r"admin listening on port (\d+)").group(1))
        q.wait_for("quiesce: ready")
        api = f"http://127.0.0.1:{admin}/api/v1"
        r = httpx.put(f"{api}/flags/who_did_it", json={"value": True}, auth=AUTH)
        r.raise_for_status()
        garbage(pg)
        garbage(my)
        events = httpx.get(f"{api}/events", params={"limit": 10000}, auth=AUTH).json()
        flags = [e for e in events if e.get("flag") == "who_did_it" or "who_did_it" in str(e)]
        assert flags, events[:5]  # the audit trail kept
        errors = [e for e in events if e["kind"] == "protocol_error"]
        # per service: the first few recorded, the rest counted for one summary a period
        assert len(errors) <= 2 * (PROTOCOL_ERROR_BURST + 1), len(errors)
        metrics = httpx.get(f"http://127.0.0.1:{admin}/metrics", auth=AUTH).text
        counted = [
            line
            for line in metrics.splitlines()
            if line.startswith("quiesce_service_protocol_errors_total{")
        ]
        # the metric counts each (not quite N: a connection may end on no eligible server)
        assert len(counted) == 2, counted
        assert all(float(line.rsplit(" ", 1)[1]) > N * 0.9 for line in counted), counted
        lines = [ln for ln in q.output.splitlines() if "closing the connection of" in ln]
        assert len(lines) == 2 * PROTOCOL_ERROR_BURST, len(lines)
    finally:
        q.stop()
