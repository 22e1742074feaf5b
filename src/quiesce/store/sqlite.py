"""The SQLite state store: the embedded default.

Theory of operation
-------------------
WAL mode with ``synchronous=NORMAL``. In WAL mode a committed transaction survives a crash of
the process (``kill -9``); only a power loss or OS crash can lose the last few, which is the
trade-off HAProxy's server-state file and most embedded stores make.

Two ways to write. Until :meth:`SqliteStore.open` (a store used as a library, the tests of
this module): every write is its own transaction, committed before the call returns, except
inside :meth:`SqliteStore.batch` (one transaction, committed when the block ends). After
``open()`` (``quiesce run``): writes are handed to a writer thread
(:mod:`quiesce.store.sqlite_writer`) that commits whatever is queued in one transaction, so a
slow disk never holds the event loop (issue 21: a mass flap's commits held it for up to
350 ms). A change is durable once :meth:`SqliteStore.committed` returns; the API and the
runtime socket await it before they answer an admin command. Reads use their own
connection (WAL: they do not wait for the writer); a listing of events adds the ones still
queued. A lock makes the store safe to call from a worker thread too.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` brings an older file
up to date and a file written by a newer quiesce is refused rather than misread.

Events are append-only rows, indexed by time, pool (+ server), server and kind; each index
ends with the row id, so a filtered listing of the newest events needs no sort. The retention
(``state.event_retention``: rows and age) is applied by :meth:`SqliteStore.prune`, which the
store also runs by itself every ``prune_every`` appends so the table stays bounded even if
nobody calls it.

The file holds who changed what and why, runtime monitors (whose requests may carry
credentials) and the event log, so it is the owner's only (0600), as are its ``-wal`` and
``-shm``: :func:`_make_private` creates the database file 0600 before SQLite opens it, and
SQLite gives the files it makes next to it (``-wal``, ``-shm``, ``-journal``) the database
file's mode. A file that already exists with bits for group or others (written by an older
quiesce, or left by a crash next to such a database) is tightened to the owner's bits and a
warning says so, as ``sshd`` and PostgreSQL insist on private key and data files; one that
cannot be tightened (another owner) is a warning, not a refusal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import stat
import threading
import time as _time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic_core import to_json as _to_json

from quiesce.core.admin import AdminRecord
from quiesce.core.events import Event, EventKind, EventQuery
from quiesce.store.base import StoreError
from quiesce.store.sqlite_writer import Writer

log = logging.getLogger("quiesce.store")

SCHEMA_VERSION = 3

MIGRATIONS: dict[int, str] = {
    # version reached → script
    1: """
    CREATE TABLE admin (
        key TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE flags (
        name TEXT PRIMARY KEY,
        value TEXT,            -- JSON; NULL = cleared at runtime (tombstone)
        updated REAL NOT NULL
    );
    CREATE TABLE monitors (
        name TEXT PRIMARY KEY,
        data TEXT,             -- JSON; NULL = deleted at runtime (tombstone)
        updated REAL NOT NULL
    );
    CREATE TABLE pool_monitors (
        pool TEXT PRIMARY KEY,
        names TEXT NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        pool TEXT,
        server TEXT,
        from_state TEXT,
        to_state TEXT,
        cause TEXT,
        actor TEXT,
        reason TEXT,
        detail TEXT NOT NULL,
        eligible INTEGER,
        sessions INTEGER
    );
    CREATE INDEX events_time ON events (time);
    CREATE INDEX events_pool ON events (pool, server, time);
    CREATE INDEX events_server ON events (server, time);
    CREATE INDEX events_kind ON events (kind, time);
    """,
    # Listing is newest first by id: indexes whose last column is the rowid serve
    # "WHERE pool = ? [AND server = ?] ORDER BY id DESC LIMIT n" without a sort.
    2: """
    DROP INDEX events_pool;
    DROP INDEX events_server;
    DROP INDEX events_kind;
    CREATE INDEX events_pool ON events (pool, server);
    CREATE INDEX events_server ON events (server);
    CREATE INDEX events_kind ON events (kind);
    """,
    # Servers added, changed or deleted at runtime (issue 14); data NULL = deleted.
    3: """
    CREATE TABLE servers (
        key TEXT PRIMARY KEY,
        data TEXT,
        updated REAL NOT NULL
    );
    """,
}


def _json(value: object) -> str:
    """``value`` as stored: compact JSON, what JSON cannot say as its ``str()`` (as
    ``json.dumps(default=str)``), made by pydantic-core's serializer (a quarter of
    json.dumps's time: a server's definition 0.8 µs against 3.1; per change of a reload, the
    event's detail and the rows it writes). Read back with ``json.loads`` (non-ASCII text is
    kept as it is, not escaped; a set is a list)."""
    return _to_json(value, fallback=str).decode()


_EVENT_COLUMNS = (
    "id, time, kind, pool, server, from_state, to_state, cause, actor, reason, detail, "
    "eligible, sessions"
)


class SqliteStore:
    """:class:`~quiesce.store.base.StateStore` on one SQLite file (or ``":memory:"``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention_rows: int = 100_000,
        retention_age: float = 30 * 86400.0,
        prune_every: int | None = None,
    ) -> None:
        self.path = str(path)
        self.retention_rows = retention_rows
        self.retention_age = retention_age
        self.prune_every = prune_every or max(1, min(1000, retention_rows // 10))
        self._appends = 0
        self._lock = threading.Lock()
        self._batch_depth = 0  # open batch() blocks: writes join one transaction
        self._writer: Writer | None = None  # after open(): the writer thread
        if self.path not in ("", ":memory:"):
            _make_private(self.path)
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the state store {self.path}: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path} is not a usable quiesce state store: {exc}") from None

    # schema ---------------------------------------------------------------------------------

    def sharing_with(self, who: str, seconds: float) -> None:
        """The other process of a takeover writes events here too for ``seconds``
        (:meth:`Writer.sharing_with`)."""
        if self._writer is not None:
            self._writer.sharing_with(who, seconds)

    @property
    def schema_version(self) -> int:
        row = self._db.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, written by a newer quiesce "
                f"(this one knows up to {SCHEMA_VERSION})"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            try:
                self._db.executescript(
                    f"BEGIN IMMEDIATE; {MIGRATIONS[target]}; PRAGMA user_version = {target}; "
                    "COMMIT;"
                )
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every write inside the block in one transaction, committed when it ends (a live
        reload: about 0.5 ms per commit, thousands of events). A crash (``kill -9``) before
        the end records none of them: the block's writes are all in the file or none is.
        The block may span awaits: writes made meanwhile by anything else in the process
        (a health check's event, an operator's command) join the transaction and are
        committed with it, a second or so later. An exception ends the block with a commit
        too: what was applied in memory stays recorded (and event ids are never reused).
        Nested blocks join the outer one. After :meth:`open` the writes are held back and
        handed to the writer thread together when the block ends (one transaction)."""
        if self._writer is not None:
            self._writer.hold()
            try:
                yield
            finally:
                self._writer.release()
            return
        with self._lock:
            if self._batch_depth == 0 and not self._db.in_transaction:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise StoreError(f"state store {self.path}: {exc}") from exc
            self._batch_depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._batch_depth -= 1
                if self._batch_depth == 0 and self._db.in_transaction:
                    try:
                        self._db.execute("COMMIT")
                    except sqlite3.Error as exc:
                        raise StoreError(f"state store {self.path}: {exc}") from exc

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        if self._writer is not None:
            self._writer.write(sql, params)
            return
        with self._lock:
            try:
                self._db.execute(sql, params)
            except sqlite3.Error as exc:
                raise StoreError(f"state store {self.path}: {exc}") from exc

    def _write_inline(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._db.execute(sql, params)
            except sqlite3.Error as exc:
                raise StoreError(f"state store {self.path}: {exc}") from exc

    def _read(self, sql: str, params: tuple[Any, ...] = (), *, wait: bool = True) -> list[Any]:
        if wait and self._writer is not None:
            self._writer.wait()  # read what was written (startup, tests: not the hot path)
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"state store {self.path}: {exc}") from exc

    # admin records --------------------------------------------------------------------------

    def load_admin(self) -> dict[str, AdminRecord]:
        out: dict[str, AdminRecord] = {}
        for key, data in self._read("SELECT key, data FROM admin ORDER BY key"):
            try:
                out[key] = AdminRecord.from_dict(json.loads(data))
            except (ValueError, KeyError, TypeError) as exc:  # a damaged row: skip, say so
                log.warning(
                    "state store %s: admin record of %s unreadable: %s", self.path, key, exc
                )
        return out

    def save_admin(self, key: str, record: AdminRecord) -> None:
        self._write(
            "INSERT INTO admin (key, data, updated) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET data = excluded.data, updated = excluded.updated",
            (key, _json(record.to_dict()), record.since),
        )

    def delete_admin(self, key: str) -> None:
        self._write("DELETE FROM admin WHERE key = ?", (key,))

    # flags ----------------------------------------------------------------------------------

    def load_flags(self) -> dict[str, bool | str]:
        out: dict[str, bool | str] = {}
        for name, value in self._read("SELECT name, value FROM flags WHERE value IS NOT NULL"):
            v = json.loads(value)
            out[name] = v if isinstance(v, bool) else str(v)
        return out

    def load_cleared_flags(self) -> set[str]:
        return {r[0] for r in self._read("SELECT name FROM flags WHERE value IS NULL")}

    def save_flag(self, name: str, value: bool | str) -> None:
        self._upsert("flags", "name", "value", name, json.dumps(value))

    def delete_flag(self, name: str) -> None:
        self._upsert("flags", "name", "value", name, None)

    # monitors -------------------------------------------------------------------------------

    def load_monitors(self) -> dict[str, dict[str, Any]]:
        return {
            name: json.loads(data)
            for name, data in self._read(
                "SELECT name, data FROM monitors WHERE data IS NOT NULL ORDER BY name"
            )
        }

    def load_deleted_monitors(self) -> set[str]:
        return {r[0] for r in self._read("SELECT name FROM monitors WHERE data IS NULL")}

    def save_monitor(self, name: str, data: dict[str, Any]) -> None:
        self._upsert("monitors", "name", "data", name, json.dumps(data))

    def delete_monitor(self, name: str) -> None:
        self._upsert("monitors", "name", "data", name, None)

    def load_pool_monitors(self) -> dict[str, list[str]]:
        return {
            pool: list(json.loads(names))
            for pool, names in self._read("SELECT pool, names FROM pool_monitors ORDER BY pool")
        }

    def save_pool_monitors(self, pool: str, names: list[str]) -> None:
        self._upsert("pool_monitors", "pool", "names", pool, json.dumps(list(names)))

    # servers added, changed or deleted at runtime -------------------------------------------

    def load_servers(self) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for key, data in self._read("SELECT key, data FROM servers ORDER BY rowid"):
            try:
                out[key] = None if data is None else dict(json.loads(data))
            except (ValueError, TypeError) as exc:
                log.warning(
                    "state store %s: server record of %s unreadable: %s", self.path, key, exc
                )
        return out

    def save_server(self, key: str, data: dict[str, Any] | None) -> None:
        self._upsert("servers", "key", "data", key, None if data is None else _json(data))

    def forget_server(self, key: str) -> None:
        self._write("DELETE FROM servers WHERE key = ?", (key,))

    def _upsert(self, table: str, key_col: str, val_col: str, key: str, value: str | None) -> None:
        self._write(
            f"INSERT INTO {table} ({key_col}, {val_col}, updated) VALUES (?, ?, ?) "
            f"ON CONFLICT({key_col}) DO UPDATE SET {val_col} = excluded.{val_col}, "
            "updated = excluded.updated",
            (key, value, _time.time()),
        )

    # events ---------------------------------------------------------------------------------

    def append_event(self, event: Event) -> Event:
        frm, to, cause = event.from_, event.to, event.cause  # str, or an enum member
        row = (
            event.time,
            event.kind.value,
            event.pool,
            event.server,
            None if frm is None else str(frm),
            None if to is None else str(to),
            None if cause is None else str(cause),
            event.actor,
            event.reason,
            _json(event.detail),
            event.eligible,
            event.sessions,
        )
        self._appends += 1
        prune = self._appends % self.prune_every == 0
        if self._writer is not None:
            event = self._writer.event(event, row)
            if prune:
                self._writer.prune_soon(event.time)
            return event
        cur = self._write_inline(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (NULL{', ?' * 12})", row
        )
        if prune:
            self.prune(event.time)
        return _with_id(event, int(cur.lastrowid or 0))

    def list_events(self, query: EventQuery) -> list[Event]:
        q = query
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("pool", q.pool), ("server", q.server), ("kind", q.kind)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(str(value))
        if q.since is not None:
            where.append("time >= ?")
            params.append(q.since)
        if q.until is not None:
            where.append("time < ?")
            params.append(q.until)
        if q.after_id is not None:
            where.append("id > ?")
            params.append(q.after_id)
        sql = f"SELECT {_EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "ASC" if q.after_id is not None else "DESC"
        sql += f" ORDER BY id {order} LIMIT ?"
        params.append(q.limit)
        # events still queued for the writer: taken before the file is read, so an event
        # committed in between is in one of the two (or both: kept once, by id)
        queued = [] if self._writer is None else self._writer.unsaved()
        rows = self._read(sql, tuple(params), wait=False)
        if order == "DESC":
            rows.reverse()
        events = [_row_event(r) for r in rows]
        if queued:
            seen = {e.id for e in events}
            events += [e for e in queued if e.id not in seen and q.matches(e)]
            events.sort(key=lambda e: e.id or 0)
            events = events[: q.limit] if order == "ASC" else events[-q.limit :]
        return events

    def prune(self, now: float) -> int:
        if self._writer is not None:
            self._writer.wait()
        with self._lock:
            try:
                return self._prune_on(self._db, now)
            except sqlite3.Error as exc:
                raise StoreError(f"state store {self.path}: {exc}") from exc

    def _prune_on(self, db: sqlite3.Connection, now: float) -> int:
        deleted = int(
            db.execute("DELETE FROM events WHERE time < ?", (now - self.retention_age,)).rowcount
        )
        row = db.execute("SELECT MAX(id) FROM events").fetchone()
        if row[0] is not None:
            deleted += db.execute(
                "DELETE FROM events WHERE id <= ?", (int(row[0]) - self.retention_rows,)
            ).rowcount
        return deleted

    def count_events(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM events")[0][0])

    async def open(self) -> None:
        """Start the writer thread (the file was opened and checked by the constructor): from
        now on writes are queued, and durable once :meth:`committed` returns. An in-memory
        store has nothing to wait for and stays inline."""
        if self._writer is not None or self.path in ("", ":memory:"):
            return
        try:
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            db.execute("PRAGMA synchronous=NORMAL")
            with self._lock:
                top = self._db.execute("SELECT MAX(id) FROM events").fetchone()[0] or 0
                seq = self._db.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
                ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"state store {self.path}: {exc}") from None
        next_id = max(int(top), int(seq[0]) if seq else 0) + 1
        loop = asyncio.get_running_loop()
        self._writer = Writer(db, self.path, self._prune_on, next_id, loop)

    async def committed(self) -> None:
        """Wait until every write made before the call is in the file (committed); at once
        when there is no writer thread (every write was committed when it returned).
        Raises :class:`StoreError` when the transaction that carried one failed."""
        if self._writer is not None:
            await self._writer.committed()

    @property
    def writes(self) -> int:
        """Writes made through the writer thread so far (a front end compares two readings
        to learn whether a command wrote anything it must wait for)."""
        return 0 if self._writer is None else self._writer.made

    async def aclose(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._stop_writer)
        self.close()

    def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            writer.db.close()

    def close(self) -> None:
        self._stop_writer()
        with self._lock:
            self._db.close()


_COMPANIONS = ("-wal", "-shm", "-journal")
"""The files SQLite keeps next to a database."""


def _make_private(path: str) -> None:
    """Create the database file 0600 if it is missing; tighten it and the companions a
    previous run left to the owner's bits if group or others have any (with a warning)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open the state store {path}: {exc.strerror}") from None
    try:
        _tighten(fd, path)
    finally:
        os.close(fd)
    for suffix in _COMPANIONS:
        name = path + suffix
        try:
            # O_NOFOLLOW as SQLite opens them: a link planted there is not followed
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("state store %s: cannot check the mode of %s: %s", path, name, exc)
            continue
        try:
            _tighten(fd, name)
        finally:
            os.close(fd)


def _tighten(fd: int, name: str) -> None:
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode) or not mode & 0o077:
        return
    private = mode & 0o700
    try:
        os.fchmod(fd, private)
    except OSError as exc:
        log.warning(
            "%s is readable or writable by others (mode %04o) and cannot be made private: %s",
            name,
            mode,
            exc.strerror,
        )
        return
    log.warning(
        "%s was mode %04o (group or others could read or write it): tightened to %04o",
        name,
        mode,
        private,
    )


def _with_id(event: Event, event_id: int) -> Event:
    return event.with_id(event_id)


def _row_event(row: tuple[Any, ...]) -> Event:
    (eid, time, kind, pool, server, frm, to, cause, actor, reason, detail, eligible, sess) = row
    return Event(
        id=eid,
        time=time,
        kind=EventKind(kind),
        pool=pool,
        server=server,
        from_=frm,
        to=to,
        cause=cause,
        actor=actor,
        reason=reason,
        detail=json.loads(detail),
        eligible=eligible,
        sessions=sess,
    )


__all__ = ["SCHEMA_VERSION", "SqliteStore"]
