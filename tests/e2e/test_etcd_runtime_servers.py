"""Issue 14 on etcd: servers added at runtime on one node come back, on a restarted node and
on the node that added them, in the order they stand in the pool: a server deleted and added
again at the end, as a single node with SQLite has it (tests/runtime_socket/
test_runtime_servers.py, test_added_servers_come_back_in_the_order_they_were_added). The
other node takes the added server's record of its addition without an admin event of its
own. Real etcd, two real ``quiesce run``."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.store.test_etcd import ETCD, Etcd, node_config
from tests.support.process import BackendThread, Started, run_quiesce, until

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


def config(etcd: Etcd, node: str, port: int, web: bool = True) -> str:
    """Pool ``api`` and service ``www``; pool ``web`` (server b1) and its service ``site``
    unless ``web`` is false."""
    text = (
        node_config(etcd, "/readd/", node)
        + f"""pools:
  api:
    servers: [{{name: a1, address: 127.0.0.1:{port}}}]
"""
    )
    if web:
        text += f"""  web:
    servers: [{{name: b1, address: 127.0.0.1:{port}}}]
"""
    text += "services:\n  www: {listen: 127.0.0.1:0, pool: api}\n"
    return text + ("  site: {listen: 127.0.0.1:0, pool: web}\n" if web else "")


def reload(node: Started) -> str:
    r = httpx.post(f"{node.api}/reload", auth=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return r.text


def names(node: Started) -> list[str]:
    r = httpx.get(f"{node.api}/pools/web", auth=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return [s["name"] for s in r.json()["servers"]]


def server(node: Started, name: str) -> dict[str, Any]:
    r = httpx.get(f"{node.api}/servers/web/{name}", auth=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_readded_server_comes_back_at_the_end_on_every_node(tmp_path: Path, etcd: Etcd) -> None:
    with BackendThread(["b1"]) as bt:
        port = bt.backends[0].port
        for node in ("a", "b"):
            (tmp_path / node).mkdir()
            (tmp_path / node / "quiesce.yaml").write_text(config(etcd, node, port))
        a, b = run_quiesce(tmp_path / "a"), run_quiesce(tmp_path / "b")
        try:
            for name in ("zz", "aa", "mm"):
                r = httpx.post(
                    f"{a.api}/pools/web/servers",
                    json={"name": name, "address": f"127.0.0.1:{port}"},
                    auth=AUTH,
                )
                assert r.status_code == 201, r.text
            r = httpx.post(f"{a.api}/servers/web/zz/maintenance", json={}, auth=AUTH)
            assert r.status_code == 200, r.text
            r = httpx.delete(f"{a.api}/servers/web/zz", auth=AUTH)
            assert r.status_code == 200, r.text
            r = httpx.post(
                f"{a.api}/pools/web/servers",
                json={"name": "zz", "address": f"127.0.0.1:{port}", "reason": "back"},
                auth=AUTH,
            )
            assert r.status_code == 201, r.text
            want = ["b1", "aa", "mm", "zz"]
            assert names(a) == want
            until(lambda: names(b) == want and server(b, "zz")["since"] == server(a, "zz")["since"])
            added = server(a, "zz")
            # node b took zz's record of its addition from a, with no admin event of its own
            r = httpx.get(
                f"{b.api}/events", params={"server": "zz", "kind": "admin_command"}, auth=AUTH
            )
            assert r.status_code == 200 and r.json() == [], r.text

            # node b's copy of the store has the new place too (its admin service forgets
            # the tombstone as node a's did): pool web removed from its file by a reload and
            # put back by another gets its servers back from that copy
            (tmp_path / "b" / "quiesce.yaml").write_text(config(etcd, "b", port, web=False))
            assert "pool web: removed" in reload(b)
            (tmp_path / "b" / "quiesce.yaml").write_text(config(etcd, "b", port))
            assert "pool web: added" in reload(b)
            assert names(b) == want

            assert b.proc.stop(signal.SIGKILL) == -signal.SIGKILL
            b = run_quiesce(tmp_path / "b")  # reads the servers from etcd
            assert names(b) == want
            kept = server(b, "zz")
            assert (kept["actor"], kept["cause"], kept["reason"], kept["since"]) == (
                added["actor"],
                added["cause"],
                "back",
                added["since"],
            )

            assert a.proc.stop(signal.SIGKILL) == -signal.SIGKILL
            a = run_quiesce(tmp_path / "a")
            assert names(a) == want
        finally:
            a.proc.stop(signal.SIGTERM)
            b.proc.stop(signal.SIGTERM)
