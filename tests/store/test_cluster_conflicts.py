"""Issue 15, cases 3 and 6, with real ``quiesce run`` processes on a real etcd: a write that
lost to a newer change of another node is refused (409 through the API, the CLI's message and
exit status 1, an error line on the runtime socket), undone where it was made, and never in
the other nodes' state or logs; a command queued while a node was cut off is not replayed
over a newer one. Node B reaches etcd through a relay (tests/support/relay.py) that holds
what etcd sends it (B writes but does not see) or cuts it off."""

from __future__ import annotations

import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from tests.store.test_cluster import AUTH, cluster, events, run_cli
from tests.store.test_etcd import ETCD, Etcd, node_config
from tests.support.process import BackendThread, Started, run_quiesce, until
from tests.support.relay import Relay

pytestmark = [
    pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd server not installed"),
    pytest.mark.peers,
]


class Pair:
    """Nodes A (straight to etcd) and B (through the relay), one server web/b1."""

    def __init__(self, tmp_path: Path, etcd: Etcd, port: int) -> None:
        self.relay = Relay(("127.0.0.1", etcd.client_port))
        prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
        self.nodes: list[Started] = []
        self.dirs: dict[str, Path] = {}
        for name, endpoint in (("A", etcd), ("B", SimpleNamespace(endpoint=self.relay.endpoint))):
            d = tmp_path / name
            d.mkdir()
            head = node_config(endpoint, prefix, name, ", stale_after: 4s")  # type: ignore[arg-type]
            head = head.replace("role: admin}]\n", "role: admin}]\n  runtime_socket: ./q.sock\n")
            (d / "quiesce.yaml").write_text(
                head
                + f"pools:\n  web:\n    servers: [{{name: b1, address: 127.0.0.1:{port}}}]\n"
                + "services:\n  www: {listen: 127.0.0.1:0, pool: web}\n"
            )
            self.dirs[name] = d
            self.nodes.append(run_quiesce(d))
        self.a, self.b = self.nodes
        for n in self.nodes:
            until(lambda n=n: len(cluster(n)["nodes"]) == 2 and cluster(n)["link"] == "up", 10)

    def stop(self) -> None:
        self.relay.close()
        for n in self.nodes:
            n.proc.stop()


@pytest.fixture
def pair(tmp_path: Path, etcd: Etcd) -> Iterator[Pair]:
    with BackendThread(["b1"]) as backends:
        p = Pair(tmp_path, etcd, backends.backends[0].port)
        try:
            yield p
        finally:
            p.stop()


def admin_state(node: Started) -> str:
    r = httpx.get(f"{node.api}/servers/web/b1", auth=AUTH, timeout=5)
    assert r.status_code == 200, r.text
    return str(r.json()["admin"])


def post(node: Started, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(f"{node.api}{path}", json=body or {}, auth=AUTH, timeout=15)


def in_thread(fn: Any, *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a thread; the dict gets its result (or error) under "result"."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn(*args)
        except Exception as exc:
            out["result"] = exc

    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    return out


def test_a_lost_conflict_is_a_409_undone_where_it_was_made(pair: Pair) -> None:
    a, b = pair.a, pair.b
    pair.relay.hold()  # B writes to etcd but sees nothing from it
    r = post(a, "/servers/web/b1/maintenance", {"reason": "disk swap"})
    assert r.status_code == 200, r.text  # confirmed by etcd: A's change is in
    assert admin_state(b) == "enabled"  # B has not seen it
    pending = in_thread(post, b, "/servers/web/b1/drain", {"reason": "deploy"})
    until(lambda: admin_state(b) == "drain", 5)  # taken on B, on what B had seen
    pair.relay.release()
    pending["thread"].join(15)
    lost = pending["result"]
    assert isinstance(lost, httpx.Response) and lost.status_code == 409, lost
    body = lost.json()
    assert body["error"] == "conflict"
    detail = body["detail"]
    assert "server web/b1" in detail and "admin on node A" in detail, detail
    assert "now maintenance" in detail and "not applied" in detail and "retry" in detail
    assert body["current"]["node"] == "A" and body["current"]["reason"] == "disk swap"
    assert body["current"]["value"]["state"] == "maintenance"
    # nobody silently disagrees: B is back on A's state, A never saw B's drain
    until(lambda: admin_state(b) == "maintenance", 5)
    assert admin_state(a) == "maintenance"
    conflict = events(b, "write_conflict")
    assert (
        len(conflict) == 1 and conflict[0]["server"] == "b1" and "node A" in conflict[0]["reason"]
    )
    assert [e for e in events(a, "admin_change") if e["detail"].get("node") == "B"] == []
    assert events(a, "write_conflict") == []
    # a retry on fresh state succeeds and reaches A
    r = post(b, "/servers/web/b1/drain", {"reason": "deploy, again"})
    assert r.status_code == 200, r.text
    until(lambda: admin_state(a) == "drain", 5)


def test_the_cli_says_conflict_and_exits_1(pair: Pair) -> None:
    a, b = pair.a, pair.b
    pair.relay.hold()
    assert post(a, "/servers/web/b1/maintenance").status_code == 200
    pending = in_thread(run_cli, b, "set", "server", "web/b1", "drain")
    until(lambda: admin_state(b) == "drain", 10)
    pair.relay.release()
    pending["thread"].join(30)
    done = pending["result"]
    assert isinstance(done, subprocess.CompletedProcess), done
    assert done.returncode == 1, done
    assert "409" in done.stderr and "conflict" in done.stderr and "node A" in done.stderr
    assert "retry" in done.stderr, done.stderr
    until(lambda: admin_state(b) == "maintenance", 5)
    # the same command once B has seen A's change: no conflict
    assert run_cli(b, "set", "server", "web/b1", "drain").returncode == 0
    until(lambda: admin_state(a) == "drain", 5)


def runtime(node_dir: Path, line: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(15)
        s.connect(str(node_dir / "q.sock"))
        s.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_the_runtime_socket_answers_an_error_line(pair: Pair) -> None:
    a, b = pair.a, pair.b
    pair.relay.hold()
    assert post(a, "/servers/web/b1/maintenance").status_code == 200
    pending = in_thread(runtime, pair.dirs["B"], "set server web/b1 state drain")
    until(lambda: admin_state(b) == "drain", 10)
    pair.relay.release()
    pending["thread"].join(20)
    answer = pending["result"]
    assert isinstance(answer, str), answer
    assert answer.startswith("Conflict: ") and "node A" in answer, answer
    until(lambda: admin_state(b) == "maintenance", 5)


def test_a_command_queued_while_cut_off_does_not_overwrite_a_newer_one(pair: Pair) -> None:
    """Case 3: B, cut off, takes maintenance (--local); A then enables... the server was
    enabled: A drains it instead; when B is back, its older command is refused, not
    replayed: every node stays on A's newer change, and B says so."""
    a, b = pair.a, pair.b
    pair.relay.cut()
    until(lambda: cluster(b)["link"] != "up", 10)
    refused = run_cli(b, "set", "server", "web/b1", "maintenance")
    assert refused.returncode == 1 and "--local" in refused.stderr
    done = run_cli(b, "set", "server", "web/b1", "maintenance", "--local")
    assert done.returncode == 0, done.stderr
    assert admin_state(b) == "maintenance"
    assert post(a, "/servers/web/b1/drain", {"reason": "newer"}).status_code == 200
    pair.relay.restore()
    until(lambda: cluster(b)["link"] == "up", 15)
    until(lambda: admin_state(b) == "drain", 10)
    assert admin_state(a) == "drain"  # never flipped to B's older maintenance
    conflict = events(b, "write_conflict")
    assert conflict and "now drain" in conflict[-1]["reason"], conflict
    assert "(maintenance, made on this node only) was not applied" in conflict[-1]["reason"]
    assert events(b, "local_reconciled") == []
    assert [e for e in events(a, "admin_change") if e["detail"].get("node") == "B"] == []


def test_a_local_change_reaches_every_node_when_the_link_is_back(pair: Pair) -> None:
    """A change made on B only (--local) while cut off, that nobody else changed meanwhile,
    lands when B is back: every node has it, and B's log says so (local_reconciled)."""
    a, b = pair.a, pair.b
    pair.relay.cut()
    until(lambda: cluster(b)["link"] != "up", 10)
    done = run_cli(b, "set", "server", "web/b1", "maintenance", "--local")
    assert done.returncode == 0, done.stderr
    change = events(b, "admin_change")[-1]
    assert change["detail"].get("local") is True
    assert admin_state(a) == "enabled"
    pair.relay.restore()
    until(lambda: admin_state(a) == "maintenance", 15)
    reconciled = events(b, "local_reconciled")
    assert len(reconciled) == 1 and reconciled[0]["server"] == "b1", reconciled
    assert "made on this node only (maintenance) reached etcd" in reconciled[0]["reason"]
    assert events(b, "write_conflict") == [] and events(a, "local_reconciled") == []


def test_the_runtime_socket_takes_a_local_change_while_cut_off(pair: Pair) -> None:
    """``local <command>`` on the runtime socket is the CLI's --local: refused without it
    while B is cut off, taken with it (detail.local), and reconciled when B is back."""
    a, b = pair.a, pair.b
    pair.relay.cut()
    until(lambda: cluster(b)["link"] != "up", 10)
    refused = runtime(pair.dirs["B"], "set server web/b1 state maint")
    assert "this change would not reach the other nodes" in refused, refused
    assert "runtime socket: local <command>" in refused
    assert admin_state(b) == "enabled"
    taken = runtime(pair.dirs["B"], "local set server web/b1 state maint")
    assert taken.strip() == "", taken  # HAProxy's silence: done
    assert admin_state(b) == "maintenance"
    assert events(b, "admin_change")[-1]["detail"].get("local") is True
    pair.relay.restore()
    until(lambda: admin_state(a) == "maintenance", 15)
    until(lambda: events(b, "local_reconciled"), 5)
