"""The SQLite store's writer thread: the event loop hands writes over, one thread commits them.

Theory of operation
-------------------
Once :meth:`SqliteStore.open` has run (``quiesce run`` does it before anything is served),
every write of the store is an *op* put on a queue under a lock: the loop never waits on
the disk. One thread takes everything queued at once and writes it in one transaction
(``BEGIN IMMEDIATE`` ... ``COMMIT``, events with ``executemany``), so a burst of thousands
of state changes (a network blip flipping a pool) costs a few commits, not thousands, and a
disk that stalls for a second (a checkpoint, a slow VM disk) stalls that thread alone.

Every op gets a number when it is made (``made``); ``committed`` is the number through which
the file is up to date. An admin command is durable when the API answers: the front end
awaits :meth:`Writer.committed` (a future the thread resolves after its ``COMMIT``), which
waits for every op made before, the command's included. Writes from the monitors are not
awaited by anyone: they are batched with whatever else is queued.

Event ids are given here, in memory, when the event is made (the loop publishes the event
with its id at once); the thread inserts them with those ids. Another process writing the
same file meanwhile (the old process of a hand-over) could have taken an id: the thread
checks the highest id in the file inside its transaction and, if ours would collide, lets
SQLite number that transaction's events and moves the counter past them (with a warning).

Inside :meth:`Writer.hold` (the store's ``batch()``: a live reload) ops are kept back and
queued together when the outermost block ends, so they land in one transaction: all of the
reload or none of it after a crash.

A write lock held by another connection (the other process of a hand-over) is waited
for, try after try (each waits the connection's 5 s busy timeout), never given up on while
the process runs: the writes stay queued and new ones join them. At close, after three tries
they are given up, with an error in the log. Any other failure rolls the transaction back,
logs how many writes were lost, and is raised to whoever awaits them.

Events made and not yet committed are kept (``unsaved``) so that a listing of the event log
sees them: the store merges them with what it reads from the file.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from quiesce.core.events import Event
from quiesce.core.pace import ThreadPace
from quiesce.store.base import StoreError

log = logging.getLogger("quiesce.store")

Op = tuple[str, Any, Any]
"""``("sql", sql, params)``, ``("event", row, None)`` (row: id first) or
``("prune", now, None)``."""

INSERT_EVENT = (
    "INSERT INTO events (id, time, kind, pool, server, from_state, to_state, cause, actor, "
    "reason, detail, eligible, sessions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

Prune = Callable[[sqlite3.Connection, float], int]

BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
"""Another connection holds the lock: the thread tries again (each try waits the
connection's busy timeout) rather than lose the writes."""
BUSY_TRIES_AT_CLOSE = 3
EVENT_CHUNK = 64
"""Events inserted between two looks at the thread's pace (``executemany`` of a chunk)."""


class Writer:
    """The queue and the thread (see the module's docstring). ``db``: the thread's own
    connection; ``prune(db, now)``: the retention, run in the thread's transaction."""

    def __init__(
        self, db: sqlite3.Connection, name: str, prune: Prune, next_id: int, loop: Any
    ) -> None:
        self.db = db
        self.name = name
        self._prune = prune
        # a transaction of thousands of rows (a live reload's) rests 1 ms after each 1 ms
        # of work: the event loop's thread gets the GIL and a core back (quiesce.core.pace)
        self._pace = ThreadPace(time.perf_counter, time.sleep)
        self._loop: asyncio.AbstractEventLoop | None = loop
        # the condition's lock, taken directly where nothing waits on the condition (a
        # C-level context manager: the Condition's own __enter__ is a Python call, paid
        # twice per write of a reload's thousands)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._queue: list[Op] = []
        self._held: list[Op] | None = None  # inside hold(): kept back until it ends
        self._depth = 0
        self.made = 0  # ops made so far (held ones included)
        self._queued = 0  # the number of the last op put on the queue
        self.committed_upto = 0  # the file is up to date through this op (or it failed)
        self._next_id = next_id
        self._unsaved: deque[tuple[int, Event]] = deque()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._failures: deque[tuple[int, int, StoreError]] = deque(maxlen=16)
        self.transactions = 0  # committed, since the start
        # another process of a takeover writes events to this file too until this perf
        # counter time (sharing_with): renumbering is expected then, said at INFO
        self._shared_until = 0.0
        self._shared_with = ""
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="quiesce-store-writer", daemon=True)
        self._thread.start()

    # the loop's side ------------------------------------------------------------------------

    def sharing_with(self, who: str, seconds: float) -> None:
        """``who`` (the other process of a takeover) writes events to this file too for the
        next ``seconds``: ids renumbered meanwhile are the expected case (review 90 F16: a
        WARNING about its own predecessor at every other takeover)."""
        self._shared_with = who
        self._shared_until = time.perf_counter() + seconds

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            self._put(("sql", sql, params))

    def prune_soon(self, now: float) -> None:
        with self._lock:
            self._put(("prune", now, None))

    def event(self, event: Event, row: tuple[Any, ...]) -> Event:
        """``event`` with its id, queued to be inserted (``row``: its columns after the id)."""
        with self._lock:
            eid = self._next_id
            self._next_id += 1
            event = event.with_id(eid)
            self._put(("event", (eid, *row), None))
            self._unsaved.append((self.made, event))
        return event

    def _put(self, op: Op) -> None:
        self.made += 1
        if self._held is not None:
            self._held.append(op)
        else:
            self._queue.append(op)
            self._queued = self.made
            self._cond.notify()

    def hold(self) -> None:
        with self._cond:
            self._depth += 1
            if self._held is None:
                self._held = []

    def release(self) -> None:
        with self._cond:
            self._depth -= 1
            if self._depth == 0 and self._held is not None:
                self._queue.extend(self._held)
                self._held = None
                self._queued = self.made
                self._cond.notify()

    def unsaved(self) -> list[Event]:
        """Events made and not committed yet, oldest first."""
        with self._cond:
            return [e for _, e in self._unsaved]

    async def committed(self) -> None:
        """Return once every op made before the call is committed; :class:`StoreError` if
        the transaction that carried one of them failed."""
        loop = asyncio.get_running_loop()
        with self._cond:
            target = self.made
            if self.committed_upto >= target:
                self._raise_if_failed(target)
                return
            if self._loop is None:
                self._loop = loop
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((target, future))
        await future

    def wait(self) -> None:
        """Block the calling thread until every op made so far is committed (reads, prune,
        close: not on the loop's hot path)."""
        with self._cond:
            target = self.made
            if self._held is not None:
                return  # inside hold(): what is held cannot be committed before it ends
            while self.committed_upto < target and self._thread.is_alive():
                self._cond.wait()

    def close(self) -> None:
        """Commit what is queued (held ops too), then stop the thread."""
        with self._cond:
            if self._held is not None:
                self._queue.extend(self._held)
                self._held = None
                self._queued = self.made
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _raise_if_failed(self, target: int) -> None:
        for lo, hi, error in self._failures:
            if lo < target <= hi:
                raise error

    def _release(self, upto: int, error: StoreError | None) -> None:
        """On the loop: resolve the futures of the ops through ``upto``."""
        with self._cond:
            done = [(t, f) for t, f in self._waiters if t <= upto]
            self._waiters = [(t, f) for t, f in self._waiters if t > upto]
        for _, future in done:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    # the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        ops: list[Op] = []
        tries = 0
        while True:
            with self._cond:
                while not self._queue and not ops and not self._closing:
                    self._cond.wait()
                if not self._queue and not ops:
                    return
                ops += self._queue  # a retry takes what was queued meanwhile along
                self._queue = []
                upto = self._queued
                lo = self.committed_upto
            error, busy = self._apply(ops)
            if busy and (tries < BUSY_TRIES_AT_CLOSE or not self._closing):
                # another connection holds the write lock (each try waited BUSY_TIMEOUT)
                tries += 1
                if tries == 1:
                    log.warning("state store %s is locked by another writer: waiting", self.name)
                continue
            if error is not None:
                log.error("state store %s: %d write(s) lost: %s", self.name, len(ops), error)
            elif tries:
                log.warning("state store %s: written again after the lock", self.name)
            tries = 0
            ops = []
            with self._cond:
                self.committed_upto = upto
                while self._unsaved and self._unsaved[0][0] <= upto:
                    self._unsaved.popleft()
                if error is not None:
                    self._failures.append((lo, upto, error))
                else:
                    self.transactions += 1
                waiting = any(t <= upto for t, _ in self._waiters)
                self._cond.notify_all()
            if waiting and self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(self._release, upto, error)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    pass

    def _apply(self, ops: list[Op]) -> tuple[StoreError | None, bool]:
        """Write ``ops`` in one transaction: (None, False) when committed, else the error
        and whether it was another connection's lock (worth another try)."""
        db = self.db
        pace = self._pace
        pace.begin()
        try:
            db.execute("BEGIN IMMEDIATE")
            top = db.execute("SELECT MAX(id) FROM events").fetchone()[0] or 0
            renumber = False
            i, n = 0, len(ops)
            while i < n:
                kind, a, b = ops[i]
                if kind == "event":
                    j = i
                    while j < n and ops[j][0] == "event":
                        j += 1
                    rows = [op[1] for op in ops[i:j]]
                    if renumber or rows[0][0] <= top:
                        renumber = True
                        rows = [(None, *r[1:]) for r in rows]
                    for k in range(0, len(rows), EVENT_CHUNK):  # a rest between chunks
                        db.executemany(INSERT_EVENT, rows[k : k + EVENT_CHUNK])
                        pace.step()
                    i = j
                    continue
                if kind == "sql":
                    db.execute(a, b)
                else:
                    self._prune(db, a)
                pace.step()
                i += 1
            if renumber:
                last = int(db.execute("SELECT MAX(id) FROM events").fetchone()[0] or 0)
                with self._cond:
                    self._next_id = max(self._next_id, last + 1)
                if time.perf_counter() < self._shared_until:
                    log.info(
                        "state store %s: %s wrote events meanwhile; ids from %d on",
                        self.name,
                        self._shared_with,
                        last + 1,
                    )
                else:
                    log.warning(
                        "state store %s: another process wrote events meanwhile; ids from %d on",
                        self.name,
                        last + 1,
                    )
            db.execute("COMMIT")
        except Exception as exc:  # sqlite3.Error mostly; whatever it is, the thread goes on
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            return StoreError(f"state store {self.name}: {exc}"), code in BUSY_CODES
        return None, False


__all__ = ["Writer"]
