"""A reload's events say what a pool, a service and a monitor were before and are after (review
14 R8: ``config_change … detail={"change": "pool_changed", "target": "pool web"}`` and
``monitor_change … updated {"monitor": "hm"}`` after ``algorithm: round_robin →
least_connections``; only ``server_updated`` carried ``changed: {weight: [1, 3]}``). A real
``quiesce run``, reloaded with ``quiesce reload``, its events read with the API."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_reload import _hash, start
from tests.support.backend import Backend, serve_in_thread

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def config(port: int, *, algorithm: str, interval: str, idle: str) -> str:
    return f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state: {{sqlite: ./state.db}}
healthmonitors:
  hm: {{type: http, send_interval: {interval}, receive_timeout: 500ms}}
pools:
  web:
    algorithm: {algorithm}
    healthmonitors: [hm]
    servers:
      - {{name: w1, address: 127.0.0.1:{port}}}
services:
  www: {{listen: 127.0.0.1:0, pool: web, client_idle_timeout: {idle}}}
"""


def last(q: Any, kind: str) -> dict[str, Any]:
    status, events = q.api("GET", f"/api/v1/events?kind={kind}")
    assert status == 200 and events, events
    return dict(events[-1])


def test_reload_events_carry_old_and_new_values(tmp_path: Path) -> None:
    with serve_in_thread(Backend("b1")) as (b1,):
        q = start(tmp_path, config(b1.port, algorithm="round_robin", interval="1s", idle="60s"))
        try:
            q.write(config(b1.port, algorithm="least_connections", interval="2s", idle="30s"))
            r = q.cli("reload")
            assert r.returncode == 0, r
            assert "pool web: algorithm changed" in r.stdout, r.stdout
            _, events = q.api("GET", "/api/v1/events?kind=config_change")
            by = {e["detail"]["change"]: e["detail"] for e in events}
            assert by["pool_changed"]["changed"] == {
                "algorithm": ["round_robin", "least_connections"]
            }, by
            assert by["service_changed"]["changed"] == {"client_idle_timeout": [60.0, 30.0]}, by
            monitor = last(q, "monitor_change")
            assert monitor["to"] == "updated" and monitor["cause"] == "config", monitor
            assert monitor["detail"]["changed"] == {"send_interval": [1.0, 2.0]}, monitor
        finally:
            q.proc.stop(signal.SIGTERM)
