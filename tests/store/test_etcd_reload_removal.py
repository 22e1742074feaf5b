"""Review 90 F1 on etcd: a server one node's reload removes from its file is that node's
business. The reload drains and deletes it there, and writes nothing to the shared store that
makes the other nodes drain or delete it (their files still have it: a config rolled out node
by node); put back in the file, a reload adds it again, and a restart of that node keeps it
(a reload and a restart agree). Nodes are in-process Apps (admin API, reload worker) on a real
etcd (docs/admin.md, "Several nodes" and "Live reload")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quiesce.admin import CommandContext
from quiesce.app import App
from quiesce.core.states import Admin, Cause
from tests.store.test_etcd import ETCD, Etcd, node_config, until
from tests.store.test_etcd_reload_hold import etcd_store, started

pytestmark = [
    pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd server not installed"),
    pytest.mark.peers,
]
OPERATOR = CommandContext("alice", Cause.API, "3 a.m.")


def config(head: str, f1: bool = True) -> str:
    """``head``: :func:`node_config`'s (made once a node: its password hash is salted anew
    each time, which a reload would apply as a change of admin.users)."""
    servers = ["{name: s0, address: 127.0.0.1:9000}"]
    if f1:
        servers.append("{name: f1, address: 127.0.0.1:9001}")
    return head + (
        f"pools:\n  web:\n    servers: [{', '.join(servers)}]\n"
        "services:\n  www: {listen: 127.0.0.1:0, pool: web}\n"
    )


async def barrier(a: App, b: App) -> None:
    """Until B has followed every write A made so far: A's queue flushed, then a key put
    after it seen by B's watch (it follows the prefix in revision order)."""
    sa, sb = etcd_store(a), etcd_store(b)
    assert await sa.flush(10)
    client = sa._get_client()
    rev = int((await client.put(f"{sa.prefix}zz-barrier".encode(), b"1")).header.revision)
    await until(lambda: sb._rev >= rev, 20)


async def records(app: App, key: str) -> dict[str, bytes]:
    """The etcd keys (without the prefix) of server ``key``'s records, and their values."""
    store = etcd_store(app)
    client = store._get_client()
    out = {}
    for kv in await client.get_prefix(store.prefix.encode()):
        name = kv.key.decode()[len(store.prefix) :]
        if name in (f"admin/{key}", f"servers/{key}"):
            out[name] = bytes(kv.value)
    return out


def serving(app: App, name: str) -> bool:
    pool = app.registry.pools["web"]
    if not pool.has(name):
        return False
    server = pool.server(name)
    return server.admin.state is Admin.ENABLED and not server.removing


async def restarted(app: App, root: Path) -> App:
    await app.stop(1.0)
    return await started(root, (root / "quiesce.yaml").read_text())


async def test_a_reload_removing_a_file_server_leaves_the_other_nodes_alone(
    tmp_path: Path, etcd: Etcd
) -> None:
    """The review's steps: f1 in both files; removed from A's file, A's reload drains and
    deletes it on A only (B keeps serving it, nothing of the drain in etcd); put back, A's
    reload adds it (both serve it); A restarted keeps it; B's reload and restart change
    nothing."""
    prefix = f"/quiesce-test/{tmp_path.name}/"
    ha, hb = node_config(etcd, prefix, "A"), node_config(etcd, prefix, "B")
    a = await started(tmp_path / "a", config(ha))
    b = await started(tmp_path / "b", config(hb))
    try:
        assert serving(a, "f1") and serving(b, "f1")
        (tmp_path / "a" / "quiesce.yaml").write_text(config(ha, f1=False))
        plan = await a.reload("test")
        assert [c.target for c in plan.changes] == ["web/f1"]
        await until(lambda: not a.registry.pools["web"].has("f1"))
        await barrier(a, b)
        assert serving(b, "f1")  # B's file has it: B's business
        assert await records(a, "web/f1") == {}  # no drain, no "removing", no tombstone
        again = await b.reload("test")
        assert not again.changes and not again.kept
        assert serving(b, "f1")
        # rolled back: f1 in A's file again
        (tmp_path / "a" / "quiesce.yaml").write_text(config(ha))
        plan = await a.reload("test")
        assert [c.message for c in plan.changes] == ["web/f1: added at 127.0.0.1:9001"]
        await barrier(a, b)
        assert serving(a, "f1") and serving(b, "f1")
        assert await records(a, "web/f1") == {}
        # a restart of A gives what its reload gave
        a = await restarted(a, tmp_path / "a")
        assert serving(a, "f1") and serving(b, "f1")
        assert not (await a.reload("test")).changes
        b = await restarted(b, tmp_path / "b")
        assert serving(a, "f1") and serving(b, "f1")
    finally:
        await b.stop(1.0)
        await a.stop(1.0)


async def test_a_file_server_back_on_a_node_takes_the_clusters_admin_state(
    tmp_path: Path, etcd: Etcd
) -> None:
    """While f1 is out of A's file, an operator puts it in maintenance on B: B's record
    stays in etcd (A ignores it, A's reload deleted nothing of it), and f1 put back in A's file
    comes back in maintenance on A at its reload (listed as kept), as A's restart has it."""
    prefix = f"/quiesce-test/{tmp_path.name}/"
    ha, hb = node_config(etcd, prefix, "A"), node_config(etcd, prefix, "B")
    a = await started(tmp_path / "a", config(ha))
    b = await started(tmp_path / "b", config(hb))
    try:
        (tmp_path / "a" / "quiesce.yaml").write_text(config(ha, f1=False))
        await a.reload("test")
        b.admin.maintenance("web/f1", OPERATOR)
        await barrier(b, a)
        assert serving(a, "s0") and not a.registry.pools["web"].has("f1")
        assert list(await records(a, "web/f1")) == ["admin/web/f1"]
        (tmp_path / "a" / "quiesce.yaml").write_text(config(ha))
        plan = await a.reload("test")
        assert [c.target for c in plan.changes] == ["web/f1"]
        assert [c.message for c in plan.kept] == ["web/f1: maintenance restored"]
        f1 = a.registry.pools["web"].server("f1")
        assert f1.admin.state is Admin.MAINTENANCE and f1.admin.actor == "alice"
        a = await restarted(a, tmp_path / "a")
        assert a.registry.pools["web"].server("f1").admin.state is Admin.MAINTENANCE
        assert b.registry.pools["web"].server("f1").admin.state is Admin.MAINTENANCE
    finally:
        await b.stop(1.0)
        await a.stop(1.0)


async def test_a_reload_removal_an_earlier_version_shared_is_ignored(
    tmp_path: Path, etcd: Etcd
) -> None:
    """The record an earlier version's reload wrote when its file dropped f1 (the server's
    definition with ``removing`` of cause ``config``; the review's ``servers/solo/f1``):
    neither a running node nor a restarted one deletes f1 by it, both files having it."""
    prefix = f"/quiesce-test/{tmp_path.name}/"
    ha, hb = node_config(etcd, prefix, "A"), node_config(etcd, prefix, "B")
    a = await started(tmp_path / "a", config(ha))
    b = await started(tmp_path / "b", config(hb))
    try:
        relic = {
            "node": "OLD",
            "instance": "old-1",
            "time": 1.0,
            "actor": "admin",
            "reason": "config reload",
            "cause": "config",
            "value": {
                "name": "f1",
                "address": "127.0.0.1:9001",
                "removing": {"actor": "admin", "cause": "config", "reason": "config reload"},
            },
        }
        client = etcd_store(a)._get_client()
        put = await client.put(f"{prefix}servers/web/f1".encode(), json.dumps(relic).encode())
        rev = int(put.header.revision)
        await until(lambda: etcd_store(a)._rev >= rev and etcd_store(b)._rev >= rev, 20)
        assert serving(a, "f1") and serving(b, "f1")
        a = await restarted(a, tmp_path / "a")
        assert serving(a, "f1") and serving(b, "f1")
        assert not (await a.reload("test")).changes
    finally:
        await b.stop(1.0)
        await a.stop(1.0)


async def test_a_busy_server_drained_by_a_reload_and_put_back_writes_nothing(
    tmp_path: Path, etcd: Etcd
) -> None:
    """f1 with a connection on A: A's reload drains it (``removing (1)``) on A only; put back
    before it is gone, A's reload cancels the removal (``server_restored``): nothing of either
    in etcd, B serving f1 throughout, A's restart serving it."""
    prefix = f"/quiesce-test/{tmp_path.name}/"
    ha, hb = node_config(etcd, prefix, "A"), node_config(etcd, prefix, "B")
    a = await started(tmp_path / "a", config(ha))
    b = await started(tmp_path / "b", config(hb))
    try:
        a.registry.pools["web"].server("f1").connections = 1
        (tmp_path / "a" / "quiesce.yaml").write_text(config(ha, f1=False))
        await a.reload("test")
        f1 = a.registry.pools["web"].server("f1")
        assert f1.removing and f1.admin.state is Admin.DRAIN
        await barrier(a, b)
        assert serving(b, "f1") and await records(a, "web/f1") == {}
        (tmp_path / "a" / "quiesce.yaml").write_text(config(ha))
        plan = await a.reload("test")
        assert [c.kind for c in plan.changes] == ["server_restored"]
        assert serving(a, "f1")
        await barrier(a, b)
        assert serving(b, "f1") and await records(a, "web/f1") == {}
        f1.connections = 0
        a = await restarted(a, tmp_path / "a")
        assert serving(a, "f1") and serving(b, "f1")
    finally:
        await b.stop(1.0)
        await a.stop(1.0)
