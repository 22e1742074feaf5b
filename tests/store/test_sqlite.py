"""The SQLite state store: round trips, tombstones, the event log's filters, retention, schema."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from quiesce.config.models import EventRetention, StateConfig
from quiesce.core.admin import AdminRecord
from quiesce.core.events import Event, EventKind, EventQuery
from quiesce.core.states import Admin, Cause
from quiesce.store import SCHEMA_VERSION, SqliteStore, StoreError, open_store


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "state.db")
    yield s  # type: ignore[misc]
    s.close()


def ev(
    t: float,
    kind: EventKind = EventKind.ADMIN_CHANGE,
    pool: str | None = "web",
    server: str | None = "web1",
    **kw: object,
) -> Event:
    return Event(time=t, kind=kind, pool=pool, server=server, **kw)  # type: ignore[arg-type]


def test_wal_and_synchronous_normal(store: SqliteStore) -> None:
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert store.schema_version == SCHEMA_VERSION


def test_events_indexed_by_time_pool_server_kind(store: SqliteStore) -> None:
    indexes = {
        r[0]: r[1]
        for r in store._db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
        )
    }
    cols = " ".join(indexes.values())
    for col in ("time", "pool", "server", "kind"):
        assert f"({col}" in cols, col
    plan = store._db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM events WHERE kind = ? ORDER BY id DESC", ("x",)
    ).fetchall()
    assert "events_kind" in str(plan)


def test_admin_round_trip_survives_reopen(tmp_path: Path) -> None:
    rec = AdminRecord(Admin.DRAIN, "alice", "patching", 100.0, Cause.CLI, 500.0, 200.0)
    s = SqliteStore(tmp_path / "a.db")
    s.save_admin("web/web1", rec)
    s.save_admin("web/web2", AdminRecord(Admin.MAINTENANCE, "bob", "disk", 50.0, Cause.API))
    s.save_admin("web/web1", rec)  # upsert
    s.close()
    s = SqliteStore(tmp_path / "a.db")
    loaded = s.load_admin()
    assert loaded["web/web1"] == rec
    assert loaded["web/web2"].state is Admin.MAINTENANCE
    s.delete_admin("web/web2")
    assert list(s.load_admin()) == ["web/web1"]
    s.close()


def test_flags_keep_type_and_tombstones(store: SqliteStore) -> None:
    store.save_flag("maintenance_mode", True)
    store.save_flag("banner", "true")  # a string that looks like a bool stays a string
    store.save_flag("old", False)
    store.delete_flag("old")
    assert store.load_flags() == {"maintenance_mode": True, "banner": "true"}
    assert store.load_cleared_flags() == {"old"}
    store.save_flag("old", False)
    assert store.load_flags()["old"] is False
    assert store.load_cleared_flags() == set()


def test_monitors_and_pool_attachments(store: SqliteStore) -> None:
    store.save_monitor("m1", {"type": "tcp", "send_interval": 2.0})
    store.save_monitor("m2", {"type": "http"})
    store.delete_monitor("m2")
    store.save_pool_monitors("web", ["m1"])
    store.save_pool_monitors("api", [])
    assert store.load_monitors() == {"m1": {"type": "tcp", "send_interval": 2.0}}
    assert store.load_deleted_monitors() == {"m2"}
    assert store.load_pool_monitors() == {"api": [], "web": ["m1"]}


def test_append_gives_increasing_ids_and_round_trips(store: SqliteStore) -> None:
    a = store.append_event(
        ev(
            1.0,
            detail={"deadline": 5.0, "close": "all"},
            from_="enabled",
            to="drain",
            cause="cli",
            actor="alice",
            reason="r",
            eligible=2,
            sessions=7,
        )
    )
    b = store.append_event(ev(2.0))
    assert a.id is not None and b.id is not None and b.id > a.id
    (got,) = store.list_events(EventQuery(after_id=0, limit=1))
    assert got == a


def test_details_and_rows_are_stored_as_json_that_reads_back(tmp_path: Path) -> None:
    """What a detail holds comes back from the file as JSON says it: text in any script,
    floats exactly (infinities as json.dumps writes them), tuples as lists, enum members
    as their text, anything else as its str(); server and admin rows the same. Enum
    members for from/to/cause are stored as their text."""

    class Thing:
        def __str__(self) -> str:
            return "a thing"

    detail = {
        "message": "enabled → drain",
        "deadline": 1765000000.123456,
        "big": 1e16,
        "never": float("inf"),
        "pair": (1, 2),
        "cause": Cause.CONFIG,
        "thing": Thing(),
        "server": {"name": "w1", "healthmonitors": [], "max_connections": None},
    }
    s = SqliteStore(tmp_path / "state.db")
    s.append_event(ev(1.0, detail=detail, from_=Admin.ENABLED, to=Admin.DRAIN, cause=Cause.API))
    s.save_server("web/w1", {"address": "ñ.example:80", "weight": 2})
    s.save_admin("web/w1", AdminRecord(Admin.DRAIN, "zoë", "r", 3.5, Cause.API, None, 9.25))
    s.close()
    s = SqliteStore(tmp_path / "state.db")
    try:
        (got,) = s.list_events(EventQuery(after_id=0, limit=1))
        assert (got.from_, got.to, got.cause) == ("enabled", "drain", "api")
        assert got.detail == {
            **detail,
            "pair": [1, 2],
            "cause": "config",
            "thing": "a thing",
        }
        assert s.load_servers() == {"web/w1": {"address": "ñ.example:80", "weight": 2}}
        record = s.load_admin()["web/w1"]
        assert (record.state, record.actor, record.deadline) == (Admin.DRAIN, "zoë", 9.25)
    finally:
        s.close()


def test_list_filters(store: SqliteStore) -> None:
    store.append_event(ev(10.0, pool="web", server="web1", kind=EventKind.ADMIN_CHANGE))
    store.append_event(ev(20.0, pool="web", server="web2", kind=EventKind.OPER_CHANGE))
    store.append_event(ev(30.0, pool="api", server="web1", kind=EventKind.ADMIN_CHANGE))
    store.append_event(ev(40.0, pool=None, server=None, kind=EventKind.FLAG_CHANGE))

    def times(**kw: object) -> list[float]:
        return [e.time for e in store.list_events(EventQuery(**kw))]  # type: ignore[arg-type]

    assert times() == [10.0, 20.0, 30.0, 40.0]  # oldest first
    assert times(pool="web") == [10.0, 20.0]
    assert times(server="web1") == [10.0, 30.0]
    assert times(pool="web", server="web1") == [10.0]
    assert times(kind="admin_change") == [10.0, 30.0]
    assert times(since=20.0) == [20.0, 30.0, 40.0]
    assert times(until=30.0) == [10.0, 20.0]
    assert times(since=15.0, until=35.0, kind="admin_change") == [30.0]
    assert times(limit=2) == [30.0, 40.0]  # the newest two
    first = store.list_events(EventQuery(limit=1, after_id=0))[0].id
    assert times(after_id=first, limit=2) == [20.0, 30.0]  # the next two
    assert times(pool="nope") == []


def test_prune_by_age(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "p.db", retention_rows=1000, retention_age=100.0)
    for t in (0.0, 50.0, 150.0, 200.0):
        s.append_event(ev(t))
    assert s.prune(now=200.0) == 2  # older than now - age = 100
    assert [e.time for e in s.list_events(EventQuery())] == [150.0, 200.0]
    assert s.prune(now=200.0) == 0
    s.close()


def test_prune_by_rows(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "r.db", retention_rows=100, retention_age=1e9, prune_every=10**9)
    for i in range(250):
        s.append_event(ev(float(i)))
    assert s.prune(now=250.0) == 150
    kept = s.list_events(EventQuery(limit=1000))
    assert len(kept) == 100 and kept[0].time == 150.0 and kept[-1].time == 249.0
    assert s.prune(now=250.0) == 0
    s.close()


def test_prunes_by_itself_while_appending(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "auto.db", retention_rows=100, retention_age=1e9)
    assert s.prune_every == 10
    for i in range(1000):
        s.append_event(ev(float(i)))
    assert 100 <= s.count_events() < 110
    s.close()


def test_open_store_paths(tmp_path: Path) -> None:
    cfg = StateConfig(sqlite="sub/state.db", event_retention=EventRetention(rows=500, age="1d"))
    with pytest.raises(StoreError, match="does not exist"):
        open_store(cfg, tmp_path)
    (tmp_path / "sub").mkdir()
    s = open_store(cfg, tmp_path)
    assert isinstance(s, SqliteStore)
    assert Path(s.path) == tmp_path / "sub" / "state.db"
    assert (s.retention_rows, s.retention_age) == (500, 86400.0)
    s.close()


def test_null_sqlite_is_in_memory(tmp_path: Path) -> None:
    s = open_store(StateConfig(sqlite=None), tmp_path)
    assert isinstance(s, SqliteStore) and s.path == ":memory:"
    s.save_flag("x", True)
    assert s.load_flags() == {"x": True}
    s.close()
    assert list(tmp_path.iterdir()) == []


def test_not_a_database(tmp_path: Path) -> None:
    p = tmp_path / "junk.db"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable quiesce state store"):
        SqliteStore(p)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "new.db"
    db = sqlite3.connect(p)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer quiesce"):
        SqliteStore(p)


def test_filtered_listing_needs_no_sort(store: SqliteStore) -> None:
    sql = "SELECT * FROM events WHERE pool = ? AND server = ? AND kind = ? ORDER BY id DESC LIMIT 5"
    plan = str(store._db.execute("EXPLAIN QUERY PLAN " + sql, ("a", "b", "c")).fetchall())
    assert "TEMP B-TREE" not in plan, plan


def test_migrates_a_version_1_file(tmp_path: Path) -> None:
    from quiesce.store.sqlite import MIGRATIONS

    p = tmp_path / "v1.db"
    db = sqlite3.connect(p)
    db.executescript(MIGRATIONS[1] + "; PRAGMA user_version = 1;")
    db.execute(
        "INSERT INTO events (time, kind, pool, server, detail) VALUES (1.0, 'startup', 'web', "
        "'w1', '{}')"
    )
    db.execute(
        "INSERT INTO admin (key, data, updated) VALUES ('web/w1', ?, 0)",
        ('{"state": "maintenance", "actor": "a"}',),
    )
    db.commit()
    db.close()
    s = SqliteStore(p)
    assert s.schema_version == SCHEMA_VERSION == 3
    assert [e.kind for e in s.list_events(EventQuery(pool="web"))] == [EventKind.STARTUP]
    assert s.load_admin()["web/w1"].state is Admin.MAINTENANCE
    assert s.load_servers() == {}  # version 3: servers added, changed or deleted at runtime
    s.close()


def test_runtime_server_records_keep_their_order_and_tombstones(store: SqliteStore) -> None:
    store.save_server("web/b", {"name": "b", "address": "127.0.0.1:2"})
    store.save_server("web/a", None)
    store.save_server("web/b", {"name": "b", "address": "127.0.0.1:3"})
    store.save_server("web/c", {"name": "c", "address": "127.0.0.1:4"})
    assert store.load_servers() == {
        "web/b": {"name": "b", "address": "127.0.0.1:3"},
        "web/a": None,
        "web/c": {"name": "c", "address": "127.0.0.1:4"},
    }
    store.forget_server("web/b")
    assert list(store.load_servers()) == ["web/a", "web/c"]


def test_a_damaged_admin_row_is_skipped(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.save_admin("web/ok", AdminRecord(Admin.DRAIN, "a"))
    store._db.execute("INSERT INTO admin (key, data, updated) VALUES ('web/bad', '{\"x\": 1}', 0)")
    store._db.execute("INSERT INTO admin (key, data, updated) VALUES ('web/ugly', 'nope', 0)")
    assert list(store.load_admin()) == ["web/ok"]
    assert "web/bad" in caplog.text and "web/ugly" in caplog.text


def _modes(db: Path) -> dict[str, int]:
    return {
        suffix: stat.S_IMODE(os.stat(f"{db}{suffix}").st_mode) for suffix in ("", "-wal", "-shm")
    }


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_database_wal_and_shm_are_private(tmp_path: Path, umask: int) -> None:
    # They hold actors, reasons, runtime monitors (request headers) and the event log: 0600,
    # whatever the umask (0o000: what a service manager may leave).
    db = tmp_path / "state.db"
    old = os.umask(umask)
    try:
        s = SqliteStore(db)
        s.save_admin("web/web1", AdminRecord(Admin.DRAIN, "alice", "patching"))
        s.append_event(ev(1.0))
        assert _modes(db) == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
        s.close()
    finally:
        os.umask(old)


def test_an_existing_world_readable_database_is_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A file left by an older quiesce (0644) and its WAL and shared memory, still in use (as
    # after a kill -9): all three are tightened at open, with a warning; the data stays.
    db = tmp_path / "state.db"
    first = SqliteStore(db)
    first.save_flag("maintenance_mode", True)
    for suffix in ("", "-wal", "-shm"):
        os.chmod(f"{db}{suffix}", 0o644)
    with caplog.at_level(logging.WARNING, logger="quiesce.store"):
        second = SqliteStore(db)
    assert _modes(db) == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
    assert "0644" in caplog.text and "0600" in caplog.text and str(db) in caplog.text
    assert second.load_flags() == {"maintenance_mode": True}
    second.close()
    first.close()
    # Owner-only files are left alone, silently.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="quiesce.store"):
        SqliteStore(db).close()
    assert caplog.text == ""


def test_a_batch_is_one_transaction_recorded_whole_or_not_at_all(tmp_path: Path) -> None:
    """A live reload's writes (store.batch()): nothing is visible to another connection (as
    after a crash) until the block ends, then all of it is; ids keep increasing; nested
    blocks join the outer one; an exception still commits what was written."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    other = sqlite3.connect(path)
    try:
        with store.batch():
            first = store.append_event(ev(1.0))
            with store.batch():
                store.save_flag("f", True)
            second = store.append_event(ev(2.0))
            assert second.id == (first.id or 0) + 1
            assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
            assert other.execute("SELECT COUNT(*) FROM flags").fetchone()[0] == 0
        assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2
        assert other.execute("SELECT COUNT(*) FROM flags").fetchone()[0] == 1
        with pytest.raises(RuntimeError), store.batch():
            store.save_flag("g", "x")
            raise RuntimeError("apply failed half-way")
        assert other.execute("SELECT COUNT(*) FROM flags").fetchone()[0] == 2
        assert not store._db.in_transaction
        store.save_flag("h", False)  # back to one transaction per write
        assert other.execute("SELECT COUNT(*) FROM flags").fetchone()[0] == 3
    finally:
        other.close()
        store.close()


@pytest.mark.peers  # a Python process killed half-way through a batch
def test_a_crash_inside_a_batch_records_none_of_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    code = (
        "import os, sys\n"
        "from quiesce.store import SqliteStore\n"
        "from quiesce.core.events import Event, EventKind\n"
        "s = SqliteStore(sys.argv[1])\n"
        "s.save_flag('before', True)\n"
        "with s.batch():\n"
        "    s.save_flag('inside', True)\n"
        "    s.append_event(Event(time=1.0, kind=EventKind.CONFIG_CHANGE))\n"
        "    os._exit(9)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(path)], timeout=60)
    assert r.returncode == 9
    store = SqliteStore(path)
    try:
        assert store.load_flags() == {"before": True}
        assert store.count_events() == 0
    finally:
        store.close()
