"""The SQLite store after ``open()``: writes go to a writer thread (issue 21, a mass flap must
not stall the event loop on the disk). The "disk that does not take writes" is another
connection holding SQLite's write lock: the old inline store blocked the loop on it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from quiesce.admin import AdminService
from quiesce.config import parse_config
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import FakeClock
from quiesce.core.events import Event, EventKind, EventQuery
from quiesce.core.states import Verdict
from quiesce.state.registry import Registry
from quiesce.store import SqliteStore


def ev(t: float, kind: EventKind = EventKind.FLAG_CHANGE, **kw: Any) -> Event:
    return Event(time=t, kind=kind, **kw)


@contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holds the write lock (readers go on: WAL)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


def count(path: Path, table: str = "events", where: str = "") -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute(f"SELECT COUNT(*) FROM {table} {where}").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.aclose()


async def test_writes_return_at_once_and_are_committed_in_one_transaction(
    store: SqliteStore, tmp_path: Path
) -> None:
    path = tmp_path / "state.db"
    with write_lock(path):
        events = [store.append_event(ev(float(i), reason=str(i))) for i in range(500)]
        store.save_flag("maintenance_mode", True)
        # ids given at once, increasing; the listing already has the queued events
        ids = [e.id for e in events]
        assert ids == list(range(ids[0] or 0, (ids[0] or 0) + 500))
        listed = store.list_events(EventQuery(limit=3))
        assert [e.reason for e in listed] == ["497", "498", "499"]
        assert store.list_events(EventQuery(after_id=ids[9], limit=2)) == events[10:12]
        assert count(path) == 0  # nothing reached the file: the lock is held
        before = store._writer.transactions if store._writer else 0
    await store.committed()
    assert count(path) == 500 and count(path, "flags") == 1
    assert store._writer is not None and store._writer.transactions - before <= 2
    assert store.list_events(EventQuery(limit=1000)) == events  # read back from the file


async def test_a_burst_of_state_changes_does_not_wait_for_the_disk(tmp_path: Path) -> None:
    """Thousands of check results flip a pool of 1,000 servers between up and maintenance, in
    deliveries of 32 as the health engine hands them over, while another connection holds
    the write lock. The burst runs to the end on the loop, with a loop turn between every
    two deliveries (a probe task counts them); nothing reaches the file until the lock is
    released, then everything does, in a few transactions."""
    raw = {
        "healthmonitors": {"m": {"type": "tcp", "send_interval": 1, "receive_timeout": 0.5}},
        "pools": {
            "big": {
                "healthmonitors": ["m"],
                "servers": [
                    {"name": f"s{i}", "address": f"10.0.{i >> 8}.{i & 255}:80"} for i in range(1000)
                ],
            }
        },
    }
    clock = FakeClock()
    registry = Registry(parse_config(raw), clock)
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    await store.open()
    service = AdminService(registry, store, clock)
    await service.start()
    await service.durable()
    turns = 0
    stop = False

    async def probe() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    servers = registry.pool("big").servers
    deliveries = 0
    try:
        with write_lock(path):
            in_file = count(path)
            probe_task = asyncio.create_task(probe())
            await asyncio.sleep(0)
            for verdict in (Verdict.PASS, Verdict.MAINTENANCE) * 2:
                for start in range(0, len(servers), 32):
                    seen = turns
                    with registry.deferring(freeze=False):
                        for s in servers[start : start + 32]:
                            registry.record_check(
                                s, CheckResult("m", verdict, Reason.OK, clock.time(), 0.001)
                            )
                    deliveries += 1
                    await asyncio.sleep(0)
                    assert turns > seen  # the loop turned: the delivery did not hold it
            stop = True
            await probe_task
            changes = store.list_events(EventQuery(kind="oper_change", limit=10_000))
            assert len(changes) >= 3000  # unknown -> up, then maintenance, up, maintenance
            assert count(path) == in_file  # the lock is still held: nothing was written
            before = store._writer.transactions if store._writer else 0
        await service.durable()
        assert count(path, where="WHERE kind = 'oper_change'") == len(changes)
        assert store._writer is not None and store._writer.transactions - before <= 2
        assert deliveries == 4 * 32
    finally:
        stop = True
        await service.stop()
        await store.aclose()


async def test_a_batch_is_held_back_and_written_whole(store: SqliteStore, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with store.batch():
        store.save_flag("a", True)
        with store.batch():
            e = store.append_event(ev(1.0))
        await asyncio.sleep(0.05)  # the writer thread has had time: it must not have it
        assert count(path, "flags") == 0 and count(path) == 0
        assert store.list_events(EventQuery()) == [e]
    await store.committed()
    assert count(path, "flags") == 1 and count(path) == 1


async def test_ids_go_on_after_a_restart_and_past_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    s = SqliteStore(path)
    await s.open()
    first = s.append_event(ev(1.0))
    await s.aclose()
    s = SqliteStore(path)
    await s.open()
    second = s.append_event(ev(2.0))
    assert (second.id or 0) > (first.id or 0)
    await s.committed()
    # another process (the old one of a hand-over) takes the next ids meanwhile
    other = sqlite3.connect(path, isolation_level=None)
    other.execute(
        "INSERT INTO events (id, time, kind, detail) VALUES (?, 3.0, 'flag_change', '{}')",
        ((second.id or 0) + 1,),
    )
    other.close()
    s.append_event(ev(4.0, reason="after"))
    await s.committed()
    assert [e.time for e in s.list_events(EventQuery())] == [1.0, 2.0, 3.0, 4.0]
    fifth = s.append_event(ev(5.0))
    await s.committed()
    assert (fifth.id or 0) > max(e.id or 0 for e in s.list_events(EventQuery())[:-1])
    await s.aclose()


async def test_another_writer_is_a_warning_but_during_a_takeover_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """review 90 F16: the other process of a takeover writing events meanwhile is the
    expected case (INFO naming it); any other writer is still a WARNING."""
    path = tmp_path / "state.db"
    s = SqliteStore(path)
    await s.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        for sharing in (False, True):
            last = s.append_event(ev(1.0))
            await s.committed()
            other.execute(
                "INSERT INTO events (id, time, kind, detail) VALUES (?, 2.0, 'flag_change', '{}')",
                ((last.id or 0) + 1,),
            )
            if sharing:
                s.sharing_with("pid 42 (the process this one took over from)", 600.0)
            caplog.clear()
            with caplog.at_level("INFO", logger="quiesce"):
                s.append_event(ev(3.0))
                await s.committed()
            said = [
                (r.levelname, r.getMessage()) for r in caplog.records if "ids from" in r.message
            ]
            assert len(said) == 1, caplog.records
            level, message = said[0]
            if sharing:
                assert level == "INFO" and "pid 42 (the process this one took over from)" in message
            else:
                assert level == "WARNING" and "another process wrote events" in message
    finally:
        other.close()
        await s.aclose()


async def test_prunes_by_itself_in_the_writer(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "p.db", retention_rows=100, retention_age=1e9)
    await s.open()
    for i in range(1000):
        s.append_event(ev(float(i)))
    await s.committed()
    assert 100 <= s.count_events() < 110
    await s.aclose()


async def test_reads_see_the_writes_made_before_them(store: SqliteStore) -> None:
    store.save_flag("x", "1")
    store.save_monitor("m", {"type": "tcp"})
    assert store.load_flags() == {"x": "1"}
    assert store.load_monitors() == {"m": {"type": "tcp"}}


async def test_a_write_that_fails_is_reported_to_whoever_awaits_it(
    store: SqliteStore, tmp_path: Path
) -> None:
    store._write("INSERT INTO no_such_table VALUES (1)", ())
    with pytest.raises(Exception, match="no_such_table"):
        await store.committed()
    store.save_flag("ok", True)  # the writer goes on
    await store.committed()
    assert store.load_flags() == {"ok": True}
