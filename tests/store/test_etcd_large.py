"""Review 90, F12: a prefix over gRPC's 4 MiB receive limit (the event log: ~8,000 events, the
default retention is 100,000). A node starts on it, and a node whose watch is lost (etcd
restarted) re-reads it and follows the other nodes' changes again: the full reads go in pages
at one revision. A re-read that keeps failing turns the link down, with the reason, and is
logged. Real etcd."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from quiesce.core.cluster import Link
from quiesce.core.events import Event, EventKind, EventQuery
from quiesce.core.states import Admin
from quiesce.store import EtcdStore, StoreError
from quiesce.store.etcd import pages
from tests.store.test_etcd import ETCD, A, Etcd, Node, start_node, stop_node, until

pytestmark = [
    pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd server not installed"),
    pytest.mark.peers,
]

BIG = 100_000  # bytes of reason an event: 50 of them are ~5 MB, over the 4 MiB limit
EVENTS = 50


async def fill(node: Node, prefix: str, tag: str = "") -> None:
    """Over 4 MiB of events of another (gone) node under the prefix, put directly."""
    client = node.store._get_client()
    for i in range(EVENTS):
        event = Event(time.time(), EventKind.FLAG_CHANGE, reason=f"{tag}{i:03d} " + "r" * BIG)
        body = event.to_dict()
        del body["id"]
        value = {"node": "X", "instance": "gone", "time": time.time(), "value": body}
        key = f"{prefix}events/gone{tag}/{i:012d}"
        await client.put(key.encode(), json.dumps(value).encode())


def big_events(node: Node, tag: str = "") -> int:
    events = node.store.list_events(EventQuery(limit=100_000))
    return sum(1 for e in events if (e.reason or "").startswith(tag) and len(e.reason or "") > BIG)


async def test_a_node_starts_on_a_prefix_over_4_mib(etcd: Etcd) -> None:
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    a = await start_node(etcd, prefix, "A")
    nodes = [a]
    try:
        a.service.drain("web/w1", replace(A, reason="deploy"))
        a.service.set_flag("color", "blue", A)
        await fill(a, prefix)
        assert await a.store.flush(5)
        b = await start_node(etcd, prefix, "B")  # without pages: "larger than max"
        nodes.append(b)
        assert b.server("web/w1").admin.state is Admin.DRAIN
        assert b.registry.flags["color"] == "blue"
        assert big_events(b) == EVENTS
        # the read went in pages: fewer than PAGE_KEYS keys, but one answer would be too large
        end = prefix[:-1].encode() + b"0"
        snap = await pages.read_range(b.store._get_client(), prefix.encode(), end)
        assert len(snap.kvs) < pages.PAGE_KEYS and snap.size > 4 * 1024 * 1024
        assert snap.pages > 1
        assert len({bytes(kv.key) for kv in snap.kvs}) == len(snap.kvs) >= EVENTS
    finally:
        for n in nodes:
            await stop_node(n)


async def test_pages_are_one_snapshot(etcd: Etcd) -> None:
    """A key written between two pages is not in the read; a key deleted meanwhile is."""
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    a = await start_node(etcd, prefix, "A")
    try:
        client = a.store._get_client()
        for i in range(10):
            await client.put(f"{prefix}zz/{i:02d}".encode(), b"x")
        first = await pages.read_range(client, f"{prefix}zz/".encode(), f"{prefix}zz0".encode())
        await client.put(f"{prefix}zz/99".encode(), b"late")
        await client.delete(f"{prefix}zz/05".encode())
        snap = await pages.read_range(
            client,
            f"{prefix}zz/".encode(),
            f"{prefix}zz0".encode(),
            revision=first.revision,
            page_keys=3,
        )
        keys = [bytes(kv.key).decode()[len(prefix) :] for kv in snap.kvs]
        assert keys == [f"zz/{i:02d}" for i in range(10)] and snap.pages == 4
    finally:
        await stop_node(a)


class CompactingClient:
    """The store's client, compacting etcd's history after the first page is answered."""

    def __init__(self, client: Any) -> None:
        self.client, self._timeout, self.metadata = client, client._timeout, client.metadata
        self.answers = 0

    async def connect(self) -> None:
        await self.client.connect()

    @property
    def kvstub(self) -> Any:
        return self

    async def Range(self, request: Any, **kw: Any) -> Any:
        answer = await self.client.kvstub.Range(request, **kw)
        self.answers += 1
        if self.answers == 1:
            rev = (await self.client.put(b"/quiesce-test/compact", b"x")).header.revision
            await self.client.compact(rev)
        return answer


async def test_a_revision_compacted_between_pages_reads_anew(etcd: Etcd) -> None:
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    a = await start_node(etcd, prefix, "A")
    try:
        client = a.store._get_client()
        for i in range(10):
            await client.put(f"{prefix}zz/{i:02d}".encode(), b"x")
        await client.delete(f"{prefix}zz/05".encode())
        compacting = CompactingClient(client)
        start, end = f"{prefix}zz/".encode(), f"{prefix}zz0".encode()
        snap = await pages.read_range(compacting, start, end, page_keys=4)
        keys = [bytes(kv.key).decode()[len(prefix) :] for kv in snap.kvs]
        assert keys == [f"zz/{i:02d}" for i in range(10) if i != 5]
        assert snap.pages == 3 and compacting.answers == 4  # 1 at the old revision, 3 anew
    finally:
        await stop_node(a)


async def test_a_node_resyncs_a_prefix_over_4_mib_after_etcd_restarts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = Etcd(tmp_path / "etcd")
    server.start()
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    nodes: list[Node] = []
    try:
        a = await start_node(server, prefix, "A")
        b = await start_node(server, prefix, "B")
        nodes += [a, b]
        await fill(a, prefix)
        await until(lambda: big_events(b) == EVENTS, 15)
        caplog.set_level(logging.INFO, logger="quiesce.store.etcd")
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        # B's change after the restart reaches A: A's watch re-read the prefix
        await until(lambda: b.store.connected, 15)
        b.service.maintenance("web/w2", replace(A, reason="after the restart"))
        await until(lambda: a.server("web/w2").admin.state is Admin.MAINTENANCE, 15)
        await fill(b, prefix, "second")  # and events written since
        await until(lambda: big_events(a, "second") == EVENTS, 15)
        assert a.store.cluster.view()["link"] == "up"
        # the re-read took the events' keys, not the values A had: well under 1 MB
        reads = [r.getMessage() for r in caplog.records if "re-read" in r.getMessage()]
        assert reads and all(" 0.0 MB " in m or " 0.1 MB " in m for m in reads), reads
    finally:
        for n in nodes:
            await stop_node(n)
        server.stop()


async def test_a_resync_that_keeps_failing_turns_the_link_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Etcd(tmp_path / "etcd")
    server.start()
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    nodes: list[Node] = []
    failing = True

    try:
        a = await start_node(server, prefix, "A")
        b = await start_node(server, prefix, "B")
        nodes += [a, b]
        a.store.cluster.stale_after = a.store.cluster.link.stale_after = 1.0
        caplog.set_level(logging.INFO, logger="quiesce.store.etcd")
        real = a.store._read_prefix

        async def read_prefix(client: Any, since: int) -> tuple[pages.Snapshot, set[str]]:
            if failing:
                raise RuntimeError("Received message larger than max (injected)")
            return await real(client, since)

        monkeypatch.setattr(a.store, "_read_prefix", read_prefix)
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        # etcd answers A's probe and writes, but A cannot follow: down, with the reason
        await until(lambda: a.store.cluster.view()["link"] == "down", 15)
        view = a.store.cluster.view()
        assert "does not follow etcd's changes" in view["error"], view
        assert "injected" in view["error"]
        await until(lambda: "other nodes' changes are not applied here" in caplog.text, 5)
        b.service.maintenance("web/w2", replace(A, reason="while A cannot follow"))
        failing = False
        await until(lambda: a.server("web/w2").admin.state is Admin.MAINTENANCE, 15)
        await until(lambda: a.store.cluster.view()["link"] == "up", 5)
        assert "following etcd's changes again" in caplog.text
    finally:
        for n in nodes:
            await stop_node(n)
        server.stop()


async def test_a_slow_start_is_not_a_stale_link(
    etcd: Etcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Applying what the read found takes time (seconds for 100,000 events): the link is
    seen at the end of it, not before, so the first poll does not find it stale."""
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    a = await start_node(etcd, prefix, "A")
    await fill(a, prefix)
    await stop_node(a)
    now = [0.0]
    on_kv = EtcdStore._on_kv

    def slow(self: EtcdStore, key: str, value: bytes | None, rev: int) -> None:
        now[0] += 0.1  # 50 events: 5 s
        on_kv(self, key, value, rev)

    monkeypatch.setattr(EtcdStore, "_on_kv", slow)
    store = EtcdStore([etcd.endpoint], prefix, node="B")
    store.cluster.clock = lambda: now[0]
    store.cluster.link = Link(store.cluster.stale_after, 0.0)
    client = store._make_client(etcd.endpoint)
    try:
        await store._sync(client)
        assert now[0] >= 5 and store.cluster.link.state(now[0]) == "up"
        assert store.count_events() >= EVENTS
    finally:
        await client.close()
        store.close()


async def test_a_start_that_cannot_read_the_prefix_says_so(
    etcd: Etcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """etcd answered, with an error: not "cannot reach etcd" (an operator debugs the network)."""

    async def read_prefix(self: Any, client: Any, since: int) -> Any:
        raise RuntimeError("Received message larger than max (injected)")

    monkeypatch.setattr(EtcdStore, "_read_prefix", read_prefix)
    store = EtcdStore([etcd.endpoint], "/quiesce-test/unreadable/", node="A")
    try:
        with pytest.raises(StoreError) as caught:
            await store.open()
    finally:
        store.close()
    assert str(caught.value) == (
        f"state.etcd: cannot read /quiesce-test/unreadable/ from etcd at {etcd.endpoint} "
        f"({etcd.endpoint}: RuntimeError: Received message larger than max (injected))"
    )


def test_a_link_behind_is_down_after_stale_after_with_its_reason() -> None:
    link = Link(3.0, last_seen=0.0)
    link.behind(1.0, "re-reading failed")
    link.seen(2.0)  # etcd answers (the probe): still behind
    assert link.state(3.9) == "up" and link.poll(3.9) is None  # a blip changes nothing
    link.seen(4.0)
    assert (link.state(4.0), link.error) == ("down", "re-reading failed")
    assert link.poll(4.0) == "node_isolated" and link.isolated_since == 1.0
    link.failed(4.5, "UNAVAILABLE")  # the reason says what failed (it has the error)
    assert link.error == "re-reading failed"
    link.behind(6.0, "")
    assert (link.state(6.0), link.error, link.poll(6.0)) == ("up", "", "node_rejoined")
