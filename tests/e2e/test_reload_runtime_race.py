"""Runtime server changes racing a live reload (review 14 R12, R13), driven as the reviewer
did: a real ``quiesce run``; ``quiesce reload`` (the CLI) of a file adding 2,000 servers and
re-weighting w1, while an autoscaler adds servers through ``POST /api/v1/pools/web/servers``
(names of the reload's own among them, from the end of the file: the apply reaches those
last) and an operator re-weights w1 with ``PATCH`` and w2 with the runtime socket's ``set
weight`` (socat), without pause. Every change is applied (after the reload, if it came
during it) or refused with a clear answer; none is lost or undone, the reload is applied
whole, and later reloads work. (The deterministic versions, a reload held mid-apply:
tests/reload/test_runtime_during_reload.py.)"""

from __future__ import annotations

import http.client
import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_reload import AUTH, start
from tests.e2e.test_reload import config_text as reload_config
from tests.support.backend import Backend, serve_in_thread

pytestmark = [pytest.mark.peers, pytest.mark.slow]

ADDED = 2000


def config_text(servers: list[tuple[str, int, int]]) -> str:
    """test_reload's file, with one idle upstream connection a server (2,000 servers at the
    default 64 would not fit the connection budget: the reload would be refused)."""
    text = reload_config(servers)
    assert "\n  web:\n" in text
    return text.replace("\n  web:\n", "\n  web:\n    max_idle_per_server: 1\n", 1)


def send(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": AUTH, "Content-Type": "application/json"}
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data) if data else None


def test_runtime_changes_racing_a_big_reload_are_never_lost(tmp_path: Path) -> None:
    with serve_in_thread(Backend("b1"), Backend("b2")) as (b1, b2):
        base = [("w1", b1.port, 1), ("w2", b2.port, 1)]
        q = start(tmp_path, config_text(base))
        try:
            q.cli("reload")  # the reload worker started: the next reload's timing is the apply's
            many = [(f"n{i}", b1.port, 1) for i in range(ADDED)]
            q.write(config_text([("w1", b1.port, 2), ("w2", b2.port, 1), *many]))
            done = threading.Event()
            adds: list[tuple[str, int, Any]] = []
            weights: list[tuple[int, int, Any]] = []
            socket_weights: list[tuple[int, str]] = []

            def autoscaler() -> None:
                i = 0
                while not done.is_set():
                    name = f"n{ADDED - 1 - i}" if i % 2 == 0 else f"r{i}"
                    status, body = send(
                        q.admin,
                        "POST",
                        "/api/v1/pools/web/servers",
                        {"name": name, "address": f"127.0.0.1:{b2.port}"},
                    )
                    adds.append((name, status, body))
                    i += 1

            def operator() -> None:
                i = 0
                while not done.is_set():
                    w = 3 + i % 50
                    status, body = send(q.admin, "PATCH", "/api/v1/servers/web/w1", {"weight": w})
                    weights.append((w, status, body))
                    socket_weights.append((w, q.socat(f"set weight web/w2 {w}")))
                    i += 1

            threads = [threading.Thread(target=autoscaler), threading.Thread(target=operator)]
            for t in threads:
                t.start()
            try:
                reload = q.cli("reload")
            finally:
                done.set()
                for t in threads:
                    t.join(60)
            assert reload.returncode == 0, reload
            assert "reloaded: " in reload.stdout, reload
            servers = q.servers()
            # every add: applied (and there), or a clear refusal (a name the file has: 409)
            for name, status, body in adds:
                if status == 201:
                    assert f"web/{name}" in servers, name
                elif status == 409:
                    assert name.startswith("n") and "already has a server" in body["detail"]
                else:
                    assert status == 503 and body["error"] == "reloading", (name, status, body)
            # the file's servers are all there: the reload was applied whole
            assert all(f"web/n{i}" in servers for i in range(ADDED))
            # the last weight answered 200 is the one that runs (R13: never undone)
            last = [w for w, status, _ in weights if status == 200][-1]
            assert all(status in (200, 503) for _, status, _ in weights), weights
            assert servers["web/w1"]["weight"] == last, (last, servers["web/w1"])
            applied = [w for w, answer in socket_weights if answer.strip() == ""]
            assert servers["web/w2"]["weight"] == applied[-1], socket_weights[-3:]
            assert all(
                answer.strip() == "" or answer.startswith("A reload of the config file")
                for _, answer in socket_weights
            ), socket_weights
            # later reloads work (CLI, SIGHUP) and keep what was changed at runtime
            again = q.cli("reload")
            assert again.returncode == 0 and "reloaded: 0 change(s)" in again.stdout, again
            q.write(config_text([("w1", b1.port, 4), ("w2", b2.port, 1), *many[:-1]]))
            again = q.cli("reload")
            assert again.returncode == 0, again
            assert "web/w1: kept" in again.stdout, again.stdout
            q.proc.p.send_signal(signal.SIGHUP)
            q.proc.wait_for(r"reload by SIGHUP: 0 change\(s\)")
            status, events = send(q.admin, "GET", "/api/v1/events?kind=config_reload&limit=1000")
            assert [e["to"] for e in events] == ["applied"] * 5, events
            assert q.servers()["web/w1"]["weight"] == last
        finally:
            code = q.proc.stop(signal.SIGTERM)
        assert code == 0, q.proc.output
