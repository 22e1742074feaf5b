"""Issue 15, case 1, with real ``quiesce run`` processes: etcd replaced by a new, empty one
at the same address. Both nodes say so (``store_replaced``), the drain made before is written
back, a change after the swap reaches the other node at once, and a node started afterwards
restores the drain."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aetcd
import httpx
import pytest

from tests.store.test_cluster import AUTH, cli, cluster, events, start_node
from tests.store.test_etcd import ETCD, Etcd
from tests.support.process import BackendThread, Started, until

pytestmark = [
    pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd server not installed"),
    pytest.mark.peers,
]


def admin(node: Started) -> str:
    return str(httpx.get(f"{node.api}/servers/web/b1", auth=AUTH, timeout=5).json()["admin"])


def bump(etcd: Etcd, prefix: str, n: int) -> None:
    """``n`` writes outside the nodes' records: the old store's revision well past what the
    new one reaches while the nodes reconnect."""

    async def run() -> None:
        client = aetcd.Client(host="127.0.0.1", port=etcd.client_port, timeout=5)
        for i in range(n):
            await client.put(f"{prefix}zz/{i}".encode(), b"x")
        await client.close()

    asyncio.run(run())


def test_a_replaced_etcd_gets_the_state_back(tmp_path: Path) -> None:
    server = Etcd(tmp_path / "etcd-1")
    server.start()
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    started: list[Started] = []
    try:
        with BackendThread(["b1"]) as backends:
            port = backends.backends[0].port
            a = start_node(tmp_path, server, prefix, "A", port)
            started.append(a)
            b = start_node(tmp_path, server, prefix, "B", port)
            started.append(b)
            cli(a, "set", "server", "web/b1", "drain", "--reason", "deploy")
            until(lambda: admin(b) == "drain", 10)
            bump(server, prefix, 300)
            until(lambda: cluster(a)["revision"] >= 300, 10)
            old = cluster(a)["revision"]  # a floor: a health record may land after it
            server.stop()
            server.data_dir = tmp_path / "etcd-2"  # a new, empty etcd at the same address
            server.start()
            until(lambda: events(a, "store_replaced") and events(b, "store_replaced"), 20)
            swapped = events(a, "store_replaced")[-1]
            assert (
                swapped["detail"]["before"] >= old and "replaced or restored" in swapped["reason"]
            )
            until(lambda: cluster(a)["link"] == "up" and cluster(b)["link"] == "up", 10)
            # a change after the swap reaches the other node at once
            cli(b, "set", "flag", "color", "blue")
            until(lambda: httpx.get(f"{a.api}/flags", auth=AUTH).json().get("color") == "blue", 5)
            assert cluster(a)["revision"] < old
            # the drain was written back: a node started now has it
            c = start_node(tmp_path, server, prefix, "C", port)
            started.append(c)
            assert admin(c) == "drain"
            assert httpx.get(f"{c.api}/flags", auth=AUTH).json().get("color") == "blue"
    finally:
        for n in started:
            n.proc.stop()
        server.stop()
