"""Issue 14 on etcd: a runtime server change made on another node, reaching this one through
the watch, is held while this node's live reload is being applied (review 14 R12, R13 across
nodes: it would collide with the reload's plan or be undone by it) and applied once it has
been, against its new state; and a server another node added is admitted against this node's
connection budget (re-planned when it fits; applied and reported when it does not: it is every
node's already). Nodes are in-process Apps (admin API, reload worker, budget) on a real etcd,
driven through the REST API; node B's reload is held deterministically between two slices of
its apply (tests/reload/test_runtime_during_reload.py's MidApply)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from quiesce.admin import CommandContext
from quiesce.app import App
from quiesce.config.loader import load_config
from quiesce.core.events import EventKind, EventQuery
from quiesce.core.states import Admin, Cause
from quiesce.dataplane.limits import raise_nofile, reserve_for
from quiesce.store import EtcdStore
from tests.reload.test_runtime_during_reload import MidApply
from tests.reload.test_runtime_during_reload import until as until_true
from tests.store.test_etcd import ETCD, Etcd, node_config

pytestmark = [
    pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd server not installed"),
    pytest.mark.peers,
]
AUTH = ("admin", "pw")
IDLE = 64  # each server of web reserves this many descriptors for idle upstream connections


def config(
    etcd: Etcd,
    prefix: str,
    node: str,
    weights: dict[str, int],
    extra: int = 0,
    max_connections: int | None = None,
    idle: int = IDLE,
) -> str:
    servers = [
        f"      - {{name: {name}, address: 127.0.0.1:{9000 + i}, weight: {w}}}"
        for i, (name, w) in enumerate(weights.items())
    ]
    servers += [f"      - {{name: y{i}, address: 127.0.0.2:{10000 + i}}}" for i in range(extra)]
    text = node_config(etcd, prefix, node) + (
        f"pools:\n  web:\n    max_idle_per_server: {idle}\n    servers:\n"
        + "\n".join(servers)
        + "\nservices:\n  www: {listen: 127.0.0.1:0, pool: web}\n"
    )
    if max_connections is not None:
        text += f"limits: {{max_connections: {max_connections}}}\n"
    return text


async def started(root: Path, text: str) -> App:
    root.mkdir(exist_ok=True)
    path = root / "quiesce.yaml"
    path.write_text(text)
    app = App(load_config(path), root, config_path=path)
    await app.start()
    return app


def api(app: App) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.admin_server.port}/api/v1", auth=AUTH, timeout=30
    )


BASE = {"s0": 1, "s1": 1, "s2": 1, "s3": 1}


def seen(app: App, key: str) -> bool:
    """Has ``app``'s watch had etcd's record of server ``key`` (A's server records: the
    deletion of s3 is its first, and the last of A's changes)?"""
    store = etcd_store(app)
    return f"{store.prefix}servers/{key}" in store._seen


def etcd_store(app: App) -> EtcdStore:
    store = app.store
    assert isinstance(store, EtcdStore)
    return store


async def test_changes_from_another_node_wait_for_this_nodes_reload(
    tmp_path: Path, etcd: Etcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B reloads a file adding 2,000 servers (the last y1999), setting s1's weight to 2 and
    removing s3; held between two slices of that apply, A adds y1999 (a name B's reload is
    about to add from its file) and r1, sets s1's weight to 9 and deletes s3. None of it
    touches B's registry before B's reload has been applied, which is applied whole; then
    each is applied there as a restart of B with its file and the shared store would have
    it (the store's record wins over the file): y1999 as A added it, r1, s1 at 9, s3 gone."""
    prefix = f"/quiesce-test/{tmp_path.name}/"
    a = await started(tmp_path / "a", config(etcd, prefix, "A", BASE, idle=1))
    b = await started(tmp_path / "b", config(etcd, prefix, "B", BASE, idle=1))
    hold = MidApply(b, monkeypatch)
    try:
        new = config(etcd, prefix, "B", {"s0": 1, "s1": 2, "s2": 1}, extra=2000, idle=1)
        (tmp_path / "b" / "quiesce.yaml").write_text(new)
        reload = asyncio.create_task(b.reload("test"))
        reached = asyncio.ensure_future(hold.reached.wait())
        await asyncio.wait([reached, reload], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        assert hold.reached.is_set(), reload.result() if reload.done() else "never held"
        pool = b.registry.pools["web"]
        assert not pool.has("y1999") and b.reloader.gate.closed  # in the middle of the apply
        async with api(a) as http:
            added = await http.post(
                "/pools/web/servers", json={"name": "y1999", "address": "127.0.0.3:1"}
            )
            assert added.status_code == 201, added.text
            added = await http.post(
                "/pools/web/servers", json={"name": "r1", "address": "127.0.0.3:2"}
            )
            assert added.status_code == 201, added.text
            patched = await http.patch("/servers/web/s1", json={"weight": 9})
            assert patched.status_code == 200, patched.text
            out = await http.post("/servers/web/s3/maintenance", json={})
            assert out.status_code == 200, out.text
            deleted = await http.delete("/servers/web/s3")
            assert deleted.status_code == 200, deleted.text
        # B's watch got them all (the last: s3's deletion); none of them applied yet, and the
        # watch goes on meanwhile: a flag set on A afterwards is B's at once
        await until_true(lambda: seen(b, "web/s3"), "B got A's changes")
        a.admin.set_flag("color", "blue", CommandContext("alice", Cause.API))
        await until_true(lambda: b.registry.flags.get("color") == "blue", "the flag on B")
        assert b.reloader.gate.closed
        assert not pool.has("r1") and not pool.has("y1999")
        assert pool.server("s1").weight != 9  # the reload's 2 (its first slice), or 1
        assert not pool.has("s3") or pool.server("s3").admin.state is not Admin.MAINTENANCE
        assert etcd_store(b).held >= 6  # definitions and admin records, in order
        hold.go.set()
        plan = await reload
        assert len(plan.changes) >= 2001 and not plan.kept  # applied whole, nothing failed
        reloads = b.admin.events(EventQuery(kind="config_reload"))
        assert [e.to for e in reloads] == ["applied"]
        assert etcd_store(b).held == 0 and not b.reloader.gate.closed
        # each of A's changes applied on B after its reload, against its new state
        assert pool.server("y1999").address == "127.0.0.3:1"  # A's record wins, as at a start
        assert pool.server("y1999").runtime_defined
        assert pool.has("r1") and pool.server("s1").weight == 9
        await until_true(lambda: not pool.has("s3"), "s3 gone on B")
        assert [s.name for s in pool.servers].count("y1999") == 1
        # a later reload of the same file keeps them (the store's records win over it)
        again = await b.reload("test")
        assert not again.changes, [c.message for c in again.changes]
        # ... and one that edits y1999 in the file lists it as kept (changed at runtime)
        (tmp_path / "b" / "quiesce.yaml").write_text(new.replace(":11999", ":12999"))
        again = await b.reload("test")
        assert not again.changes and [c.target for c in again.kept] == ["web/y1999"]
        assert pool.server("y1999").address == "127.0.0.3:1" and pool.server("s1").weight == 9
    finally:
        hold.go.set()
        await b.stop(1.0)
        await a.stop(1.0)


def room(path: Path) -> int:
    """The most client connections the file at ``path`` leaves room for: configured so, it
    fits exactly and one more server of web does not."""
    nofile = raise_nofile()
    return (nofile - reserve_for(load_config(path), nofile).total) // 2


async def test_a_server_another_node_adds_counts_in_this_nodes_budget(
    tmp_path: Path, etcd: Etcd, caplog: pytest.LogCaptureFixture
) -> None:
    """A adds r1 (REST): on C (a derived limit) it re-plans the budget, the limit going down
    by r1's idle reserve, as a local add would; on B (limits.max_connections that fits the
    file exactly) it does not fit, but it is every node's already: applied, a WARNING line
    and a ``budget_exceeded`` event naming the server and the budget, counted in the
    metrics; B's limits stay as they were."""
    prefix = f"/quiesce-test/{tmp_path.name}/"
    probe = tmp_path / "probe.yaml"
    probe.write_text(config(etcd, prefix, "B", BASE))
    exact = room(probe)
    a = await started(tmp_path / "a", config(etcd, prefix, "A", BASE))
    b = await started(tmp_path / "b", config(etcd, prefix, "B", BASE, max_connections=exact))
    c = await started(tmp_path / "c", config(etcd, prefix, "C", BASE))
    try:
        assert b.budget is not None and c.budget is not None
        b_before, c_before = b.budget, c.budget.max_connections
        async with api(a) as http:
            caplog.set_level(logging.WARNING, "quiesce.admin")
            added = await http.post(
                "/pools/web/servers", json={"name": "r1", "address": "127.0.0.3:1"}
            )
            assert added.status_code == 201, added.text
        await until_true(lambda: b.registry.pools["web"].has("r1"), "r1 on B")
        await until_true(lambda: c.registry.pools["web"].has("r1"), "r1 on C")
        assert c.budget.max_connections == c_before - IDLE // 2  # re-planned
        assert c.admin.events(EventQuery(kind="budget_exceeded")) == []
        assert b.budget == b_before  # its limits stay
        [event] = b.admin.events(EventQuery(kind="budget_exceeded"))
        assert (event.kind, event.pool, event.server) == (EventKind.BUDGET_EXCEEDED, "web", "r1")
        assert event.detail["replicated_from"] == "A" and "RLIMIT_NOFILE" in event.detail["limits"]
        assert "does not fit this node's connection budget" in (event.reason or "")
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("web/r1" in w and "connection budget" in w for w in warnings), warnings
        assert a.admin.events(EventQuery(kind="budget_exceeded")) == []  # B's own log only
        async with httpx.AsyncClient(base_url=b.admin_server.url, auth=AUTH) as http:
            metrics = (await http.get("/metrics")).text
        assert 'quiesce_events_total{kind="budget_exceeded"} 1.0' in metrics
    finally:
        for app in (c, b, a):
            await app.stop(1.0)
