"""Live reload and restart agree on what the state store holds (issue 14, reviewer): a pool
removed from the file by a reload and put back by a later one gets back its servers' admin
states, runtime weights and runtime-added servers, as a restart gives them back. Driven as an
operator drives it: ``quiesce run``, the CLI's ``set``/``alter``/``create server`` and
``reload``, plain HTTP through the service."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_reload import Running, _hash, start
from tests.e2e.test_run_and_demo import Proc
from tests.support.backend import Backend, serve_in_thread

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def config_text(web: list[tuple[str, int]] | None, api_port: int) -> str:
    pool = site = ""
    if web is not None:
        lines = "\n".join(f"      - {{name: {n}, address: 127.0.0.1:{p}}}" for n, p in web)
        pool = f"""
  web:
    algorithm: weighted_round_robin
    servers:
{lines}"""
        site = """
  site: {listen: 127.0.0.1:0, pool: web}"""
    return f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state:
  sqlite: ./state.db
pools:
  api:
    servers:
      - {{name: a1, address: 127.0.0.1:{api_port}}}{pool}
services:
  www: {{listen: 127.0.0.1:0, pool: api}}{site}
"""


def site_port(q: Running) -> int:
    """The port service ``site`` listens on now (GET /api/v1/services)."""
    status, services = q.api("GET", "/api/v1/services")
    assert status == 200, services
    return int(next(s["port"] for s in services if s["name"] == "site"))


def ok(q: Running, *args: str) -> str:
    r = q.cli(*args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def runtime_state(q: Running) -> dict[str, Any]:
    return {
        k: (s["admin"], s["weight"], s["address"])
        for k, s in q.servers().items()
        if k.startswith("web/")
    }


def answered_by(port: int, n: int) -> set[str]:
    import http.client

    names = set()
    for _ in range(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        r = conn.getresponse()
        assert r.status == 200
        names.add(r.getheader("X-Backend") or "")
        r.read()
        conn.close()
    return names


def test_a_pool_removed_and_put_back_by_reloads_keeps_its_runtime_state(tmp_path: Path) -> None:
    backends = [Backend(n) for n in ("b1", "b2", "b5", "b6", "ba")]
    with serve_in_thread(*backends) as (b1, b2, b5, b6, ba):
        web = [("web1", b1.port), ("web2", b2.port)]
        full = config_text(web, ba.port)
        q = start(tmp_path, full)
        try:
            ok(q, "set", "server", "web/web2", "maintenance")
            ok(q, "alter", "server", "web/web1", "weight", "5")
            ok(q, "create", "server", "web/web5", f"127.0.0.1:{b5.port}")
            ok(q, "create", "server", "web/web6", f"127.0.0.1:{b6.port}")
            wanted = runtime_state(q)
            assert wanted["web/web2"][0] == "maintenance" and wanted["web/web1"][1] == 5
            assert {"web/web5", "web/web6"} <= wanted.keys()
            assert "b2" not in answered_by(site_port(q), 12)

            q.write(config_text(None, ba.port))  # pool web and its service gone
            out = ok(q, "reload")
            assert "pool web: removed" in out, out
            assert not runtime_state(q)
            q.write(full)  # and back
            out = ok(q, "reload")
            assert "pool web: added" in out, out
            # fails before: web2 enabled, web1 weight 1, web5 and web6 gone
            assert runtime_state(q) == wanted
            assert "web/web2: maintenance restored" in out, out
            got = answered_by(site_port(q), 12)
            assert "b2" not in got and {"b5", "b6"} <= got, got
        finally:
            assert q.proc.stop(signal.SIGKILL) == -signal.SIGKILL
        # a restart gives back the same
        q = Running(tmp_path, Proc(["run", "-c", "quiesce.yaml"], tmp_path))
        try:
            assert runtime_state(q) == wanted
        finally:
            code = q.proc.stop(signal.SIGTERM)
        assert code == 0, q.proc.output


def test_a_single_server_removed_and_put_back_starts_as_the_file_says_both_ways(
    tmp_path: Path,
) -> None:
    """The rule for one server (docs/admin.md): the file removed that server, so its admin
    state goes with it; put back, by a reload or at a restart, it is the file's, enabled.
    The two ways agree (pins the documented rule)."""
    with serve_in_thread(Backend("b1"), Backend("b2"), Backend("ba")) as (b1, b2, ba):
        full = config_text([("web1", b1.port), ("web2", b2.port)], ba.port)
        q = start(tmp_path, full)
        try:
            ok(q, "set", "server", "web/web2", "maintenance")
            q.write(config_text([("web1", b1.port)], ba.port))
            assert "web/web2: removed" in ok(q, "reload")
            assert "web/web2" not in runtime_state(q)  # in maintenance: deleted at once
            q.write(full)
            ok(q, "reload")
            by_reload = runtime_state(q)
            assert by_reload["web/web2"][0] == "enabled", by_reload
        finally:
            assert q.proc.stop(signal.SIGKILL) == -signal.SIGKILL
        q = Running(tmp_path, Proc(["run", "-c", "quiesce.yaml"], tmp_path))
        try:
            assert runtime_state(q) == by_reload
        finally:
            code = q.proc.stop(signal.SIGTERM)
        assert code == 0, q.proc.output


def test_a_restart_while_the_pool_is_out_of_the_file_keeps_its_admin_states(
    tmp_path: Path,
) -> None:
    """The pool removed by a reload, quiesce restarted without it, the pool put back by a
    reload: web2 is still in maintenance (before, the restart forgot its admin state: 'no
    such server')."""
    with serve_in_thread(Backend("b1"), Backend("b2"), Backend("ba")) as (b1, b2, ba):
        full = config_text([("web1", b1.port), ("web2", b2.port)], ba.port)
        q = start(tmp_path, full)
        try:
            ok(q, "set", "server", "web/web2", "maintenance", "--reason", "3 a.m. page")
            q.write(config_text(None, ba.port))
            ok(q, "reload")
        finally:
            assert q.proc.stop(signal.SIGKILL) == -signal.SIGKILL
        q = Running(tmp_path, Proc(["run", "-c", "quiesce.yaml"], tmp_path))
        try:
            q.proc.wait_for(r"admin state of web/web2 \(maintenance\) kept: no pool 'web'")
            q.write(full)
            assert "web/web2: maintenance restored" in ok(q, "reload")
            state = runtime_state(q)
            assert state["web/web2"][0] == "maintenance", state
            assert "b2" not in answered_by(site_port(q), 12)
        finally:
            code = q.proc.stop(signal.SIGTERM)
        assert code == 0, q.proc.output
