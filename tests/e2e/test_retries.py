"""Retries as a user sees them (issue 17, part 3): a real ``quiesce run`` in front of two back
ends, one answering 503, with ``retries: 2, retry_on: [503]``: every client gets a 200 from
the other; each retry is in the access log (``retries``), in the runtime socket's ``show
stat`` (``wretr``/``wredis`` on the failing server, their sums on ``BACKEND``) and in
``/metrics`` (quiesce's and HAProxy's names); ``quiesce check`` names a bad key's path."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_outlier import AUTH, _hash
from tests.support.backend import Backend, serve_in_thread
from tests.support.process import run_quiesce, until
from tests.support.process import runtime_command as runtime

pytestmark = pytest.mark.peers


def config(ports: list[int], log: Path) -> str:
    return f"""
admin:
  listen: 127.0.0.1:0
  runtime_socket: ./quiesce.sock
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state: {{sqlite: ./state.db}}
metrics: {{haproxy_compatible: true}}
logging: {{access: {{format: json, path: {log}}}}}
pools:
  web:
    algorithm: round_robin
    retries: 2
    retry_on: [connect_failure, empty_response, 503]
    retry_budget: {{percent: 20, min_retries: 3}}
    servers:
      - {{name: a, address: 127.0.0.1:{ports[0]}}}
      - {{name: b, address: 127.0.0.1:{ports[1]}}}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""


def test_a_503_is_retried_on_the_other_server_and_counted(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with serve_in_thread(Backend("a"), Backend("b")) as (a, b):
        a.status = 503
        (tmp_path / "quiesce.yaml").write_text(config([a.port, b.port], log))
        proc, www, api = run_quiesce(tmp_path)
        admin = api.split("/api/")[0]
        try:
            with httpx.Client(timeout=10) as client:
                got = [client.get(www + "p") for _ in range(6)]
            assert [(r.status_code, r.headers["x-server"]) for r in got] == [(200, "b")] * 6
            assert len(a.paths) == 3 and len(b.paths) == 6  # round robin: every other one

            stat = runtime(tmp_path / "quiesce.sock", "show stat")
            rows = {(r["pxname"], r["svname"]): r for r in csv.DictReader(io.StringIO(stat[2:]))}
            assert (rows["web", "a"]["wretr"], rows["web", "a"]["wredis"]) == ("3", "3")
            assert (rows["web", "b"]["wretr"], rows["web", "b"]["wredis"]) == ("0", "0")
            assert (rows["web", "BACKEND"]["wretr"], rows["web", "BACKEND"]["wredis"]) == (
                "3",
                "3",
            )
            assert rows["web", "a"]["hrsp_5xx"] == "3"  # the failed attempts, as they were

            with httpx.Client(auth=AUTH, timeout=10) as http:
                metrics = http.get(f"{admin}/metrics").text
            for line in (
                'quiesce_server_retries_total{pool="web",server="a"} 3.0',
                'quiesce_server_redispatches_total{pool="web",server="a"} 3.0',
                'quiesce_server_retries_total{pool="web",server="b"} 0.0',
                'haproxy_backend_retry_warnings_total{proxy="web"} 3.0',
                'haproxy_server_redispatch_warnings_total{proxy="web",server="a"} 3.0',
            ):
                assert line in metrics, line

            until(lambda: log.exists() and len(log.read_text().splitlines()) == 6)
            entries = [json.loads(x) for x in log.read_text().splitlines()]
            assert sorted(e["retries"] for e in entries) == [0, 0, 0, 1, 1, 1]
            assert {(e["server"], e["status"]) for e in entries} == {("b", 200)}
        finally:
            proc.stop()


def test_bad_retry_keys_are_named_by_quiesce_check(tmp_path: Path) -> None:
    text = config([1, 2], tmp_path / "x.log").replace(
        "retry_on: [connect_failure, empty_response, 503]", "retry_on: [connect_failure, 999]"
    )
    text = text.replace("min_retries: 3", "min_retries: 3, max: 1")
    (tmp_path / "quiesce.yaml").write_text(text)
    r = subprocess.run(
        [sys.executable, "-m", "quiesce", "check", "-c", "quiesce.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "pools.web.retry_on[1]: 999 is not a status to retry on (400-599)" in out
    assert "pools.web.retry_budget.max: unknown key" in out
