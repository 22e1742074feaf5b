"""Review 90 F1, as the review ran it: two ``quiesce run`` processes on one real etcd, the same
file; a server removed from node A's file only (a config rolled out node by node) and
``quiesce reload`` of A drains and deletes it on A, while B, whose file still has it, keeps
serving it; put back in A's file, A's reload adds it again; A restarted (SIGTERM, run again)
still has it; B's reload says 0 changes and B keeps it throughout (docs/admin.md, "Several
nodes")."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.store.test_etcd import ETCD, Etcd, node_config
from tests.support.process import BackendThread, Started, quiesce_cli, run_quiesce, until

pytestmark = [
    pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd server not installed"),
    pytest.mark.peers,
]
AUTH = ("admin", "pw")


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    server = Etcd(tmp_path / "etcd")
    server.start()
    yield server
    server.stop()


def config(head: str, port: int, f1: bool = True) -> str:
    servers = [f"{{name: a, address: 127.0.0.1:{port}}}"]
    if f1:
        servers.append(f"{{name: f1, address: 127.0.0.1:{port}}}")
    return head + (
        f"pools:\n  solo:\n    servers: [{', '.join(servers)}]\n"
        "services:\n  www: {listen: 127.0.0.1:0, pool: solo}\n"
    )


def cli(node: Started, *args: str) -> str:
    port = int(node.api.split(":")[2].split("/")[0])
    done = quiesce_cli(port, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def f1(node: Started) -> list[tuple[str, str]]:
    """The review's ``L``: f1 as ``quiesce list servers --json`` shows it (admin, status)."""
    listed: list[dict[str, Any]] = json.loads(cli(node, "list", "servers", "--json"))
    return [(s["admin"], s["status"]) for s in listed if s["name"] == "f1"]


def reloads_seen(node: Started, origin: str) -> int:
    """The ``config_reload`` events of node ``origin`` in ``node``'s log: one there means
    ``node`` has followed every write ``origin`` made before it (etcd's order)."""
    r = httpx.get(f"{node.api}/events", params={"kind": "config_reload"}, auth=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return sum(1 for e in r.json() if e["detail"].get("node") == origin)


def test_a_server_one_nodes_reload_removes_stays_on_the_others(tmp_path: Path, etcd: Etcd) -> None:
    heads = {n: node_config(etcd, "/rev90/", n.upper()) for n in ("a", "b")}
    with BackendThread(["b1"]) as bt:
        port = bt.backends[0].port
        for n in ("a", "b"):
            (tmp_path / n).mkdir()
            (tmp_path / n / "quiesce.yaml").write_text(config(heads[n], port))
        a, b = run_quiesce(tmp_path / "a"), run_quiesce(tmp_path / "b")
        try:
            up = [("enabled", "up")]
            until(lambda: f1(a) == up and f1(b) == up, 20)
            # 2. f1 removed from A's file only, A reloaded
            (tmp_path / "a" / "quiesce.yaml").write_text(config(heads["a"], port, f1=False))
            assert "solo/f1: removed (drained first)" in cli(a, "reload")
            until(lambda: reloads_seen(b, "A") == 1, 20)  # B followed A's writes
            assert f1(a) == [] and f1(b) == up
            assert "0 change(s)" in cli(b, "reload")
            assert f1(b) == up
            # 3. rolled back: f1 in A's file again, A reloaded
            (tmp_path / "a" / "quiesce.yaml").write_text(config(heads["a"], port))
            assert "solo/f1: added at" in cli(a, "reload")
            until(lambda: reloads_seen(b, "A") == 2, 20)
            until(lambda: f1(a) == up, 20)
            assert f1(b) == up
            # 4. A restarted: what its reload gave
            assert a.proc.stop(signal.SIGTERM) == 0
            a = run_quiesce(tmp_path / "a")
            until(lambda: f1(a) == up, 20)
            assert "0 change(s)" in cli(a, "reload") and f1(a) == up and f1(b) == up
        finally:
            a.proc.stop(signal.SIGTERM)
            b.proc.stop(signal.SIGTERM)
