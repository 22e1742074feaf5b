"""Issue 15, cases 3 and 6: every write to etcd is a compare-and-swap on the revision the
writing node had seen. Two nodes (Registry + AdminService) on one real etcd, in-process."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from quiesce.core.errors import GuardRefused
from quiesce.core.events import EventKind
from quiesce.core.states import Admin
from quiesce.store import StoreError
from quiesce.store.base import ConflictError
from tests.store.test_etcd import ETCD, RAW, A, Etcd, Node, start_node, stop_node, until

pytestmark = [
    pytest.mark.skipif(not __import__("pathlib").Path(ETCD).exists(), reason="no etcd server"),
    pytest.mark.peers,
]
B = replace(A, actor="bob")


@pytest.fixture
async def pair(etcd: Etcd) -> AsyncIterator[tuple[Node, Node]]:
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    a = await start_node(etcd, prefix, "A")
    b = await start_node(etcd, prefix, "B")
    yield a, b
    for n in (a, b):
        await stop_node(n)


async def admin_on_both(nodes: tuple[Node, Node], ref: str, state: Admin) -> None:
    for n in nodes:
        await until(lambda n=n: n.server(ref).admin.state is state)  # type: ignore[misc]


async def outcome(node: Node, mark: int | None) -> ConflictError | None:
    try:
        await node.service.confirm_writes(mark)
    except ConflictError as exc:
        return exc
    return None


def shared_changes(node: Node, server: str, origin: str) -> list[Any]:
    """The admin_change events of ``server`` that ``origin`` made (its own, shared)."""
    return [
        e
        for e in node.events()
        if e.kind is EventKind.ADMIN_CHANGE
        and e.server == server
        and e.detail.get("node") == origin
        and "replicated_from" not in e.detail
    ]


async def test_two_nodes_at_once_one_wins_the_other_gets_a_conflict(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    # both commands are taken before either node can see the other's write
    mark_a = a.service.write_mark()
    a.service.maintenance("web/w1", replace(A, reason="disk swap"))
    mark_b = b.service.write_mark()
    b.service.drain("web/w1", replace(B, reason="deploy"))
    lost_a, lost_b = await outcome(a, mark_a), await outcome(b, mark_b)
    assert (lost_a is None) != (lost_b is None), (lost_a, lost_b)  # exactly one lost
    winner, loser, lost = (a, b, lost_b) if lost_a is None else (b, a, lost_a)
    won_state = Admin.MAINTENANCE if winner is a else Admin.DRAIN
    assert lost is not None and lost.status_hint == 409
    who = "alice" if winner is a else "bob"
    assert f"{who} on node {winner.store.node}" in lost.message
    assert f"now {won_state.value}" in lost.message and "not applied" in lost.message
    assert lost.current["node"] == winner.store.node and lost.current["revision"] > 0
    # nobody silently disagrees: the loser takes the winner's state
    await admin_on_both(pair, "web/w1", won_state)
    conflict = [e for e in loser.events() if e.kind is EventKind.WRITE_CONFLICT]
    assert len(conflict) == 1 and conflict[0].server == "w1" and conflict[0].pool == "web"
    assert conflict[0].detail["current"]["node"] == winner.store.node
    # the losing command is in no other node's log: the winner's newest change is its own
    await winner.store.flush(5)
    await loser.store.flush(5)
    assert shared_changes(winner, "w1", loser.store.node) == []
    newest = [e for e in winner.events() if e.kind is EventKind.ADMIN_CHANGE][-1]
    assert newest.to == won_state.value
    # on the loser, the log reads: its command, the conflict, then the winner's state
    kinds = [e.kind for e in loser.events() if e.server == "w1"]
    assert kinds.index(EventKind.WRITE_CONFLICT) < len(kinds) - 1
    last = [e for e in loser.events() if e.kind is EventKind.ADMIN_CHANGE][-1]
    assert last.to == won_state.value and last.detail["replicated_from"] == winner.store.node
    # a retry with the fresh state succeeds and reaches the other node
    mark = loser.service.write_mark()
    loser.service.enable("web/w1", replace(A, reason="retry"))
    assert await outcome(loser, mark) is None
    await until(lambda: winner.server("web/w1").admin.state is Admin.ENABLED)


async def test_the_same_change_at_once_is_no_conflict(pair: tuple[Node, Node]) -> None:
    a, b = pair
    mark_a = a.service.write_mark()
    a.service.maintenance("web/w2", replace(A, reason="one"))
    mark_b = b.service.write_mark()
    b.service.maintenance("web/w2", replace(B, reason="two"))
    assert await outcome(a, mark_a) is None and await outcome(b, mark_b) is None
    for n in (a, b):
        assert n.server("web/w2").admin.state is Admin.MAINTENANCE
        assert not [e for e in n.events() if e.kind is EventKind.WRITE_CONFLICT]


async def test_flags_conflict_too_and_converge(pair: tuple[Node, Node]) -> None:
    a, b = pair
    mark_a = a.service.write_mark()
    a.service.set_flag("color", "blue", A)
    mark_b = b.service.write_mark()
    b.service.set_flag("color", "red", B)
    results = [await outcome(a, mark_a), await outcome(b, mark_b)]
    assert sum(r is not None for r in results) == 1
    lost = next(r for r in results if r is not None)
    assert "flag color" in lost.message
    won = "blue" if results[0] is None else "red"
    await until(lambda: a.registry.flags.get("color") == won == b.registry.flags.get("color"))


async def test_a_write_queued_before_a_newer_change_is_not_replayed(
    pair: tuple[Node, Node],
) -> None:
    """Case 3: node A's write, based on an old revision, reaches etcd after B's newer change
    (A was cut off): it is refused, and A takes B's state, instead of every node flipping
    back to A's older command."""
    a, b = pair
    # A's writer is held: its command waits in the queue as if etcd were unreachable
    assert await a.store.flush(5)
    await hold_writer(a)
    a.service.maintenance("web/w3", replace(A, reason="old"))
    assert a.store.pending >= 1
    mark_b = b.service.write_mark()
    b.service.drain("web/w3", replace(B, reason="newer"))
    assert await outcome(b, mark_b) is None
    await until(lambda: a.store._seen.get(f"{a.store.prefix}admin/web/w3", 0) > 0)
    assert a.server("web/w3").admin.state is Admin.MAINTENANCE  # A's own pending write wins here
    a.store._tasks[0] = asyncio.create_task(a.store._run_writer())  # A reconnects
    await admin_on_both(pair, "web/w3", Admin.DRAIN)
    assert b.server("web/w3").admin.reason == "newer"
    assert any(e.kind is EventKind.WRITE_CONFLICT for e in a.events())
    assert shared_changes(b, "w3", "A") == []


async def test_confirm_times_out_with_a_clear_error(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    await hold_writer(a)
    mark = a.store.mark()
    a.service.set_flag("color", "green", A)
    with pytest.raises(StoreError, match=r"did not confirm the change within 0\.2 s"):
        await a.store.confirm(mark, 0.2)
    a.store._tasks[0] = asyncio.create_task(a.store._run_writer())
    await a.store.confirm(mark, 5)  # then it lands


async def hold_writer(node: Node) -> None:
    """Stop the node's writer task: its writes wait in the queue (etcd unreachable, as far
    as they are concerned; the watch still runs)."""
    task = node.store._tasks[0]
    assert task.get_name() == "quiesce etcd writer"
    task.cancel()
    await until(task.done, 2)


async def test_on_a_three_member_cluster_through_different_members(tmp_path: Path) -> None:
    """A on member 0, B on member 1: the compare-and-swap is decided by the cluster (raft
    orders both transactions), so one wins and the other is refused there as well."""
    from tests.store.test_cluster import EtcdCluster

    members = EtcdCluster(tmp_path / "etcd3")
    members.start()
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    nodes: list[Node] = []
    try:
        a = await start_node(members.members[0].endpoint, prefix, "A")
        nodes.append(a)
        b = await start_node(members.members[1].endpoint, prefix, "B")
        nodes.append(b)
        mark_a = a.service.write_mark()
        a.service.maintenance("web/w1", replace(A, reason="on m0"))
        mark_b = b.service.write_mark()
        b.service.drain("web/w1", replace(B, reason="on m1"))
        lost = [await outcome(a, mark_a), await outcome(b, mark_b)]
        assert sum(x is not None for x in lost) == 1, lost
        won = Admin.MAINTENANCE if lost[0] is None else Admin.DRAIN
        await admin_on_both((a, b), "web/w1", won)
    finally:
        for n in nodes:
            await stop_node(n)
        members.stop()


async def test_the_cluster_guard_holds_in_the_write_transaction(etcd: Etcd) -> None:
    """A's maintenance passed the cluster-wide guard on B's view (w1, w2, w3 up there), but
    B's view changes (w2 and w3 down) before A's write reaches etcd: the write is refused,
    undone on A, and the retry is refused by the guard on B's new view."""
    raw = copy.deepcopy(RAW)
    raw["pools"]["web"]["min_servers_up"] = 1
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    a = await start_node(etcd, prefix, "A", raw)
    b = await start_node(etcd, prefix, "B", raw)
    try:
        await until(lambda: "B" in a.store.cluster.health and "A" in b.store.cluster.health)
        await hold_writer(a)
        mark = a.service.write_mark()
        a.service.maintenance("web/w1", replace(A, reason="passes on B's old view"))
        assert a.server("web/w1").admin.state is Admin.MAINTENANCE
        # B's health checks now see w2 and w3 down (its record, as B would publish it)
        client = a.store._get_client()
        view = {"oper": {"web/w2": "down", "web/w3": "down"}, "out": {"web": ["w2", "w3"]}}
        await client.put(f"{prefix}health/B".encode(), json.dumps(view).encode())
        await until(lambda: "w2" in a.store.cluster.health["B"].get("out", {}).get("web", []))
        a.store._tasks[0] = asyncio.create_task(a.store._run_writer())
        lost = await outcome(a, mark)
        assert lost is not None and "health checks of node B changed" in lost.message, lost
        assert a.server("web/w1").admin.state is Admin.ENABLED  # undone
        assert b.server("web/w1").admin.state is Admin.ENABLED  # never applied there
        assert any(e.kind is EventKind.WRITE_CONFLICT for e in a.events())
        with pytest.raises(GuardRefused, match="leave 0 eligible server\\(s\\) on node B"):
            a.service.maintenance("web/w1", replace(A, reason="retry"))
    finally:
        for n in (a, b):
            await stop_node(n)
