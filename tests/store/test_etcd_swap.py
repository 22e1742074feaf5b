"""Issue 15, case 1: etcd replaced by a new, empty one (or restored from a backup): its
revision goes back. Every node notices (``store_replaced``), re-reads, writes back the records
the store lost, and follows the new revisions at once instead of skipping every change until
the new store passes the old revision. Two nodes in-process on a real etcd."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from quiesce.core.events import Event, EventKind
from quiesce.core.states import Admin
from tests.store.test_etcd import ETCD, A, Etcd, Node, start_node, stop_node, until

pytestmark = [
    pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd server not installed"),
    pytest.mark.peers,
]


def replaced(node: Node) -> list[Event]:
    return [e for e in node.events() if e.kind is EventKind.STORE_REPLACED]


async def test_a_replaced_etcd_is_noticed_and_gets_the_state_back(tmp_path: Path) -> None:
    server = Etcd(tmp_path / "etcd-1")
    server.start()
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    nodes: list[Node] = []
    try:
        a = await start_node(server, prefix, "A")
        b = await start_node(server, prefix, "B")
        nodes += [a, b]
        a.service.drain("web/w1", replace(A, reason="deploy"))
        a.service.set_flag("color", "blue", A)
        await until(lambda: b.registry.flags.get("color") == "blue")
        # the old store's revision well past what the new one reaches while the nodes
        # reconnect and write back
        client = a.store._get_client()
        for i in range(300):
            await client.put(f"{prefix}zz/{i}".encode(), b"x")
        await until(lambda: a.store._rev >= 300 and b.store._rev >= 300)
        old = a.store._rev
        server.stop()  # replaced: a new, empty member on the same address
        server.data_dir = tmp_path / "etcd-2"
        server.start()
        await until(lambda: bool(replaced(a)) and bool(replaced(b)), 20)
        event = replaced(a)[0]
        assert "was replaced or restored" in (event.reason or "")
        # `old` is a floor: a node's periodic health record may land after it was read
        assert event.detail["before"] >= old and event.detail["republished"] >= 2
        # the records are back in the new store
        client = a.store._get_client()

        async def stored(key: str) -> object:
            got = await client.get(f"{prefix}{key}".encode())
            return None if got is None else json.loads(got.value)["value"]

        async def republished() -> bool:
            admin = await stored("admin/web/w1")
            return isinstance(admin, dict) and admin["state"] == "drain"

        for _ in range(100):
            if await republished() and await stored("flags/color") == "blue":
                break
            await asyncio.sleep(0.05)
        assert await republished() and await stored("flags/color") == "blue"
        # a change on B after the swap reaches A at once (no change skipped until the new
        # store passes revision `old`)
        b.service.maintenance("web/w2", replace(A, reason="after the swap"))
        await until(lambda: a.server("web/w2").admin.state is Admin.MAINTENANCE, 5)
        assert a.store._rev < old
        # a node started now restores what the old store had
        c = await start_node(server, prefix, "C")
        nodes.append(c)
        assert c.server("web/w1").admin.state is Admin.DRAIN
        assert c.registry.flags["color"] == "blue"
        assert c.server("web/w2").admin.state is Admin.MAINTENANCE
    finally:
        for n in nodes:
            await stop_node(n)
        server.stop()
