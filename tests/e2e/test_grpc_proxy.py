"""gRPC through a real ``quiesce run`` (issue 16, item 5): two grpcio servers in a pool with
``protocol: h2`` and a ``type: grpc`` monitor; a grpcio client's calls are balanced over
both; ``quiesce set server api/a maintenance`` takes one out and no call fails; /metrics
counts the answers by grpc-status."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.process import quiesce_cli, run_quiesce, until

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_health.v1.health")
from tests.support.grpc_echo import SERVICE, EchoServer  # noqa: E402

pytestmark = [pytest.mark.peers, pytest.mark.slow]

AUTH = ("admin", "pw")


def config(a: EchoServer, b: EchoServer) -> str:
    from quiesce.security import hash_password

    return f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{hash_password("pw")}", role: admin}}]
healthmonitors:
  health:
    type: grpc
    send_interval: 0.5s
    receive_timeout: 0.4s
    successful_checks: 1
    failed_checks: 1
pools:
  api:
    protocol: h2
    healthmonitors: [health]
    servers:
      - {{name: a, address: {a.address}}}
      - {{name: b, address: {b.address}}}
services:
  www: {{listen: 127.0.0.1:0, pool: api}}
"""


def test_grpc_calls_through_quiesce_run_and_a_maintenance(tmp_path: Path) -> None:
    with EchoServer("a", health=True) as a, EchoServer("b", health=True) as b:
        (tmp_path / "quiesce.yaml").write_text(config(a, b))
        started = run_quiesce(tmp_path)
        admin = int(started.api.split(":")[2].split("/")[0])
        try:

            def oper(ref: str) -> Any:
                return httpx.get(f"{started.api}/servers/{ref}", auth=AUTH).json()["oper"]

            until(lambda: oper("api/a") == "up" and oper("api/b") == "up", 20)
            target = started.www.removeprefix("http://").rstrip("/")
            with grpc.insecure_channel(target) as ch:
                say = ch.unary_unary(f"/{SERVICE}/Say")
                with ThreadPoolExecutor(8) as pool:
                    replies = list(pool.map(lambda i: say(b"%d" % i, timeout=10), range(40)))
                assert {r.split(b":")[0] for r in replies} == {b"a", b"b"}
                done = quiesce_cli(admin, "set", "server", "api/a", "maintenance")
                assert done.returncode == 0, done.stderr
                before = a.calls["Say"]
                with ThreadPoolExecutor(8) as pool:
                    replies = list(pool.map(lambda i: say(b"%d" % i, timeout=10), range(40)))
                assert {r.split(b":")[0] for r in replies} == {b"b"}
                assert a.calls["Say"] == before
                with pytest.raises(grpc.RpcError) as info:
                    ch.unary_unary(f"/{SERVICE}/Fail")(b"nope", timeout=10)
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
            metrics = httpx.get(f"http://127.0.0.1:{admin}/metrics", auth=AUTH).text
            ok_a = 'quiesce_server_grpc_responses_total{grpc_status="0",pool="api",server="a"}'
            ok_b = 'quiesce_server_grpc_responses_total{grpc_status="0",pool="api",server="b"}'
            nf_b = 'quiesce_server_grpc_responses_total{grpc_status="5",pool="api",server="b"}'
            series = dict(
                line.rsplit(" ", 1) for line in metrics.splitlines() if line.startswith("quiesce_s")
            )
            assert float(series[ok_a]) + float(series[ok_b]) == 80.0
            assert float(series[nf_b]) == 1.0
        finally:
            started.proc.stop()
