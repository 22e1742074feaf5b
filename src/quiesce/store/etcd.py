"""The etcd state store: several quiesce nodes share admin state, flags, monitors and events.

Theory of operation
-------------------
The :class:`~quiesce.store.base.StateStore` protocol is synchronous (the admin service calls it
from registry listeners, inside the event loop), and the network must never block the loop. So
:class:`EtcdStore` keeps a **mirror**: an in-memory :class:`SqliteStore` that answers every read
at once and takes every write at once. A write is also queued for the **writer** task, which
puts it to etcd in order (one key per record, JSON values carrying the writing node's name and
process instance). Only the newest value of a record is kept while it waits, so the queue stays
bounded by the number of records plus the events not yet written.

Keys, under ``state.etcd.prefix``::

    admin/<pool>/<server>      {"value": AdminRecord, "close": "all"|..., actor, reason, cause}
    servers/<pool>/<server>    {"value": {server definition}|null}   null = deleted (tombstone)
    flags/<name>               {"value": true|false|"text"|null}     null = cleared (tombstone)
    monitors/<name>            {"value": {...}|null}                 null = deleted (tombstone)
    pool_monitors/<pool>       {"value": [names]}
    events/<instance>/<seq>    {"value": Event.to_dict() without id}

:meth:`EtcdStore.open` (awaited before ``AdminService.start``) reads the whole prefix into the
mirror, so the restore sees the cluster's state, then the **watcher** task follows the prefix
from that revision. A change written by another node is applied to the mirror and handed to
the remote handler (``set_remote_handler``; the admin service applies it through the
registry, so eligibility, events and connection closing happen here too). While the handler
runs, the store is in *replay* mode: whatever the handler causes (the local ``admin_change``,
a ``pool_down``, saving the record again) goes to the mirror only, never back to etcd, so one
command is one round of writes, not a loop. Events another node wrote are appended to the
mirror as they are; every event carries ``detail.node``, and the events a replicated change
caused here also ``detail.replicated_from``.

Two nodes writing one record at once: etcd's revision order decides. A node ignores a remote
value of a record it has a write pending for, or older than its own last acknowledged write,
and applies a deferred remote value when its own write turns out to be the older one.

etcd lost: reads and writes go on against the mirror; the writer retries the head of its queue
with a backoff (so writes land in order when etcd is back), the watcher re-reads the prefix and
applies what changed meanwhile (this also covers a compacted watch history). Several endpoints
are tried in turn. Whether etcd answers, and which nodes are registered (``nodes/<name>``,
under a lease), is the :class:`~quiesce.store.cluster.ClusterAgent`'s part.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from quiesce.core.admin import AdminRecord
from quiesce.core.events import Event, EventKind, EventQuery
from quiesce.core.states import CloseMode
from quiesce.store.base import Kind, RemoteChange, RemoteHandler, StoreError
from quiesce.store.cluster import ClusterAgent
from quiesce.store.sqlite import SqliteStore

log = logging.getLogger("quiesce.store.etcd")

RETRY_MIN = 0.2
RETRY_MAX = 5.0
"""Backoff between attempts while etcd is unreachable (seconds)."""
FLUSH_AT_CLOSE = 3.0
"""``aclose`` waits at most this long for queued writes to reach etcd."""

_SECTIONS: dict[str, Kind] = {
    "admin": "admin",
    "flags": "flag",
    "monitors": "monitor",
    "pool_monitors": "pool_monitors",
    "servers": "server",
    "events": "event",
}
_OBSERVED = {  # what this node saw of the cluster: its own log only
    EventKind.NODE_ISOLATED,
    EventKind.NODE_REJOINED,
    EventKind.NODE_JOINED,
    EventKind.NODE_LEFT,
}
_STATE_EVENTS = {
    "admin": (EventKind.ADMIN_CHANGE, EventKind.ADMIN_COMMAND),
    "flag": (EventKind.FLAG_CHANGE,),
    "monitor": (EventKind.MONITOR_CHANGE,),
    "pool_monitors": (EventKind.MONITOR_CHANGE,),
    "server": (
        EventKind.SERVER_ADDED,
        EventKind.SERVER_UPDATED,
        EventKind.SERVER_REMOVED,
        EventKind.ADMIN_CHANGE,
    ),
}


class EtcdStore:
    """:class:`~quiesce.store.base.StateStore` shared through etcd, read from a local mirror."""

    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str = "/quiesce/",
        *,
        node: str | None = None,
        retention_rows: int = 100_000,
        retention_age: float = 30 * 86400.0,
        timeout: float = 5.0,
        stale_after: float = 3.0,
        lease_ttl: int = 5,
    ) -> None:
        if not endpoints:
            raise StoreError("state.etcd.endpoints: give at least one host:port")
        self.endpoints = [_strip_scheme(e) for e in endpoints]
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self.instance = uuid.uuid4().hex[:12]
        self.timeout = timeout
        self.retention_rows = retention_rows
        self.retention_age = retention_age
        self.mirror = SqliteStore(
            ":memory:", retention_rows=retention_rows, retention_age=retention_age
        )
        self.writes = 0
        """Writes (puts and deletes) this node sent to etcd."""
        self.connected = False
        self._handler: RemoteHandler | None = None
        self._client: Any = None
        self._endpoint = 0
        self._bprefix = self.prefix.encode()
        # the write queue: keys in order; per key its newest (sequence, value); None = delete
        self._queue: deque[str] = deque()
        self._ops: dict[str, tuple[int, bytes | None]] = {}
        self._op_seq = 0
        self._event_seq = 0
        self._max_queue = retention_rows + 10_000
        self._acked: dict[str, int] = {}  # key → revision of our last acknowledged write
        self._deferred: dict[str, tuple[int, bytes | None]] = {}  # remote values held back
        self._seen: dict[str, int] = {}  # key → mod revision last applied or skipped
        self._event_keys: OrderedDict[str, float] = OrderedDict()  # etcd key → event time
        self._rev = 0  # the highest revision seen
        self._replay_from: str | None = None  # origin node while applying a remote change
        self._last_event: Event | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._dropped = 0
        self.cluster = ClusterAgent(self, stale_after=stale_after, lease_ttl=lease_ttl)

    # life cycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (trying each endpoint), read the shared state into the mirror, then follow
        it. Raises :class:`StoreError` naming the endpoints when none answers."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        errors = []
        for i, endpoint in enumerate(self.endpoints):
            client = self._make_client(endpoint)
            try:
                await self._sync(client)
            except Exception as exc:
                errors.append(f"{endpoint}: {_why(exc)}")
                await _quiet_close(client)
                continue
            self._client, self._endpoint = client, i
            break
        else:
            raise StoreError(
                f"state.etcd: cannot reach etcd at {', '.join(self.endpoints)} "
                f"({'; '.join(errors)})"
            )
        self.connected = True
        log.info(
            "state store: etcd %s, prefix %s, node %s",
            self.endpoints[self._endpoint],
            self.prefix,
            self.node,
        )
        self._tasks = [
            asyncio.create_task(self._run_writer(), name="quiesce etcd writer"),
            asyncio.create_task(self._run_watcher(), name="quiesce etcd watcher"),
            asyncio.create_task(self.cluster.run(), name="quiesce etcd cluster"),
        ]
        if self._queue:
            self._wake.set()

    def set_remote_handler(self, handler: RemoteHandler | None) -> None:
        """Who applies the changes other nodes write (the admin service), or None."""
        self._handler = handler

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued write reached etcd; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Write what is queued (for at most :data:`FLUSH_AT_CLOSE` seconds), then stop."""
        if self._tasks and self._queue and not await self.flush(FLUSH_AT_CLOSE):
            log.warning("state store: %d write(s) not sent to etcd at close", len(self._queue))
        await self.cluster.stop()
        await self._stop_tasks()
        client, self._client = self._client, None
        if client is not None:
            await _quiet_close(client)
        self.mirror.close()

    async def _stop_tasks(self) -> None:
        # Cancel until done: asyncio.wait_for inside aetcd (3.11) can swallow one cancel that
        # races the call it guards.
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            while not task.done():
                await asyncio.wait([task], timeout=0.2)
                task.cancel()
            if not task.cancelled() and task.exception() is not None:
                log.error("state store: %s ended", task.get_name(), exc_info=task.exception())

    def close(self) -> None:
        """Stop without waiting (prefer ``await aclose()``, which writes what is queued)."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        client, self._client = self._client, None
        if client is not None and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.create_task(_quiet_close(client))
        self.mirror.close()

    # reads: the mirror --------------------------------------------------------------------

    def load_admin(self) -> dict[str, AdminRecord]:
        return self.mirror.load_admin()

    def load_flags(self) -> dict[str, bool | str]:
        return self.mirror.load_flags()

    def load_cleared_flags(self) -> set[str]:
        return self.mirror.load_cleared_flags()

    def load_monitors(self) -> dict[str, dict[str, Any]]:
        return self.mirror.load_monitors()

    def load_deleted_monitors(self) -> set[str]:
        return self.mirror.load_deleted_monitors()

    def load_pool_monitors(self) -> dict[str, list[str]]:
        return self.mirror.load_pool_monitors()

    def list_events(self, query: EventQuery) -> list[Event]:
        return self.mirror.list_events(query)

    def load_servers(self) -> dict[str, dict[str, Any] | None]:
        return self.mirror.load_servers()

    # writes: the mirror now, etcd by the writer -------------------------------------------

    def save_admin(self, key: str, record: AdminRecord) -> None:
        self.mirror.save_admin(key, record)
        self._share("admin", key, record.to_dict())

    def delete_admin(self, key: str) -> None:
        """Forget the record here only: a node whose config lacks the server (a rolling config
        change) must not erase the record the other nodes still use."""
        self.mirror.delete_admin(key)

    def save_flag(self, name: str, value: bool | str) -> None:
        self.mirror.save_flag(name, value)
        self._share("flag", name, value)

    def delete_flag(self, name: str) -> None:
        self.mirror.delete_flag(name)
        self._share("flag", name, None)

    def save_monitor(self, name: str, data: dict[str, Any]) -> None:
        self.mirror.save_monitor(name, data)
        self._share("monitor", name, data)

    def delete_monitor(self, name: str) -> None:
        self.mirror.delete_monitor(name)
        self._share("monitor", name, None)

    def save_pool_monitors(self, pool: str, names: list[str]) -> None:
        self.mirror.save_pool_monitors(pool, names)
        self._share("pool_monitors", pool, list(names))

    def save_server(self, key: str, data: dict[str, Any] | None) -> None:
        self.mirror.save_server(key, data)
        self._share("server", key, data)

    def forget_server(self, key: str) -> None:
        """Here only, as ``delete_admin``: another node may still use the record."""
        self.mirror.forget_server(key)

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """The mirror's writes in one transaction (it is in memory: faster, nothing more).
        etcd itself still gets the writes one by one, in order, from the writer: a node
        that dies in the middle of a reload leaves the part already written in etcd."""
        return self.mirror.batch()

    def append_event(self, event: Event) -> Event:
        detail = dict(event.detail)
        detail.setdefault("node", self.node)
        detail.update({"local": True} if self.cluster.local else {})
        if self._replay_from is not None:
            detail.setdefault("replicated_from", self._replay_from)
        stored = self.mirror.append_event(replace(event, detail=detail))
        self._last_event = stored
        if self._replay_from is not None or event.kind in _OBSERVED:
            return stored  # a local consequence or observation: not shared
        self._event_seq += 1
        key = self._key("event", f"{self.instance}/{self._event_seq:012d}")
        body = stored.to_dict()
        del body["id"]
        self._event_keys[key] = stored.time
        self._enqueue(key, self._value(body))
        return stored

    def prune(self, now: float) -> int:
        """Apply the retention to the mirror, and to the events in etcd (any node may delete
        any node's old events: deleting twice is harmless)."""
        deleted = self.mirror.prune(now)
        cutoff = now - self.retention_age
        keys = self._event_keys
        while keys and (len(keys) > self.retention_rows or next(iter(keys.values())) < cutoff):
            key, _ = keys.popitem(last=False)
            self._enqueue(key, None)
        return deleted

    def count_events(self) -> int:
        return self.mirror.count_events()

    @property
    def endpoint(self) -> str:
        """The endpoint in use now."""
        return self.endpoints[self._endpoint]

    @property
    def pending(self) -> int:
        """Writes queued and not yet acknowledged by etcd."""
        return len(self._queue)

    def _key(self, kind: Kind, name: str) -> str:
        section = next(s for s, k in _SECTIONS.items() if k == kind)
        return f"{self.prefix}{section}/{name}"

    def _value(self, value: object, **extra: object) -> bytes:
        body = {"node": self.node, "instance": self.instance, "value": value, **extra}
        return json.dumps(body, separators=(",", ":"), default=str).encode()

    def _share(self, kind: Kind, name: str, value: object) -> None:
        if self._replay_from is not None:
            return
        extra: dict[str, object] = {}
        event = self._last_event
        if event is not None and event.kind in _STATE_EVENTS[kind] and _about(event, kind, name):
            extra = {"actor": event.actor or "", "reason": event.reason or "", "cause": event.cause}
            if kind == "admin":
                extra["close"] = event.detail.get("close", CloseMode.NONE.value)
        self._enqueue(self._key(kind, name), self._value(value, **extra))

    def _enqueue(self, key: str, value: bytes | None) -> None:
        self._op_seq += 1
        if key not in self._ops:
            self._queue.append(key)
        self._ops[key] = (self._op_seq, value)
        if len(self._queue) > self._max_queue:
            self._drop_oldest_event()
        self._idle.clear()
        if self._loop is None or threading.get_ident() == self._thread:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _drop_oldest_event(self) -> None:
        events = f"{self.prefix}events/"
        for i, key in enumerate(self._queue):
            if i > 0 and key.startswith(events):  # never the one in flight
                del self._queue[i]
                del self._ops[key]
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 1000 == 0:
                    log.warning(
                        "state store: etcd unreachable for long: %d event(s) not shared",
                        self._dropped,
                    )
                return

    # the writer -----------------------------------------------------------------------------

    async def _run_writer(self) -> None:
        delay = RETRY_MIN
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            key = self._queue[0]
            seq, value = self._ops[key]
            client = self._get_client()
            try:
                if value is None:
                    resp = await client.delete(key.encode())
                    rev = None if resp is None else int(resp.header.revision)
                else:
                    resp = await client.put(key.encode(), value)
                    rev = int(resp.header.revision)
            except (Exception, asyncio.CancelledError) as exc:
                _reraise_if_cancelled(exc)
                self._lost(client, "writing", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_MIN
            self._found(rev)
            self.writes += 1
            if self._ops.get(key, (None, None))[0] == seq:
                del self._ops[key]
                self._queue.popleft()
            if rev is not None and not key.startswith(f"{self.prefix}events/"):
                self._acked[key] = rev
            if key not in self._ops and key in self._deferred:
                drev, dvalue = self._deferred.pop(key)
                if rev is None or drev > rev:
                    self._on_kv(key, dvalue, drev)

    # the watcher ----------------------------------------------------------------------------

    async def _run_watcher(self) -> None:
        delay = RETRY_MIN
        resync = False
        while True:
            client = self._get_client()
            try:
                if resync:
                    await self._sync(client)
                watch = await client.watch_prefix(self._bprefix, start_revision=self._rev + 1)
                self._found()  # not an answer yet: the link is seen by the sync and the events
                delay = RETRY_MIN
                resync = False
                async for ev in watch:
                    kv = ev.kv
                    self.cluster.seen(int(kv.mod_revision))
                    value = None if ev.kind == "DELETE" else bytes(kv.value)
                    self._on_kv(kv.key.decode(), value, int(kv.mod_revision))
                raise ConnectionError("the watch ended")
            except (Exception, asyncio.CancelledError) as exc:
                _reraise_if_cancelled(exc)
                resync = True
                self._lost(client, "watching", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _sync(self, client: Any) -> None:
        """Read the whole prefix; apply every key that changed since we last saw it (all of
        them at open), and the deletion of state keys that are gone."""
        result = await client.get_prefix(self._bprefix)
        revision = int(result.header.revision)
        kvs = sorted(result, key=lambda kv: int(kv.create_revision))
        self.cluster.seen(revision)
        present = set()
        for kv in kvs:
            key = kv.key.decode()
            present.add(key)
            rev = int(kv.mod_revision)
            if self._seen.get(key) != rev:
                self._on_kv(key, bytes(kv.value), rev)
        for key in [k for k in self._seen if k not in present]:
            self._on_kv(key, None, revision)
        nodes = f"{self.prefix}nodes/"
        self.cluster.synced({k[len(nodes) :] for k in present if k.startswith(nodes)})
        self._rev = max(self._rev, revision)

    def _on_kv(self, key: str, value: bytes | None, rev: int) -> None:
        self._rev = max(self._rev, rev)
        if not key.startswith(self.prefix):
            return
        section, _, name = key[len(self.prefix) :].partition("/")
        if section == "nodes" and name:
            self.cluster.on_node(name, value)
            return
        kind = _SECTIONS.get(section)
        if kind is None or not name:
            return
        if value is None:
            self._seen.pop(key, None)
        else:
            self._seen[key] = rev
        try:
            body = None if value is None else json.loads(value)
            if body is not None and not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            log.warning("state store: etcd key %s unreadable: %s", key, exc)
            return
        if body is not None and body.get("instance") == self.instance:
            return  # our own write, back from the watch
        if kind == "event":
            self._on_remote_event(key, body)
            return
        if key in self._ops:  # our own write of this record is on its way: etcd orders them
            self._deferred[key] = (rev, value)
            return
        if rev <= self._acked.get(key, 0):
            return
        try:
            self._apply_remote(kind, name, body)
        except Exception:
            log.exception("state store: applying %s from etcd failed", key)

    def _on_remote_event(self, key: str, body: dict[str, Any] | None) -> None:
        if body is None:
            self._event_keys.pop(key, None)
            return
        if key in self._event_keys:
            return
        try:
            event = Event.from_dict(body["value"])
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("state store: event %s from etcd unreadable: %s", key, exc)
            return
        if "node" not in event.detail:
            event = replace(event, detail={**event.detail, "node": str(body.get("node", "?"))})
        stored = self.mirror.append_event(event)
        self._event_keys[key] = stored.time
        self._deliver(RemoteChange("event", key, stored, str(body.get("node", "?"))))

    def _apply_remote(self, kind: Kind, name: str, body: dict[str, Any] | None) -> None:
        value: Any = None if body is None else body.get("value")
        if kind == "admin":
            if value is None:
                self.mirror.delete_admin(name)
            else:
                value = AdminRecord.from_dict(value)
                self.mirror.save_admin(name, value)
        elif body is None:
            return  # a flag or monitor key deleted by hand: its tombstone is gone, keep ours
        elif kind == "flag":
            if value is None:
                self.mirror.delete_flag(name)
            else:
                value = value if isinstance(value, bool) else str(value)
                self.mirror.save_flag(name, value)
        elif kind == "monitor":
            if value is None:
                self.mirror.delete_monitor(name)
            else:
                self.mirror.save_monitor(name, dict(value))
        elif kind == "server":
            value = None if value is None else dict(value)
            self.mirror.save_server(name, value)
        else:
            value = [str(n) for n in value or []]
            self.mirror.save_pool_monitors(name, value)
        meta = body or {}
        try:
            close = CloseMode(str(meta.get("close", CloseMode.NONE.value)))
        except ValueError:
            close = CloseMode.NONE
        change = RemoteChange(
            kind,
            name,
            value,
            str(meta.get("node", "?")),
            actor=str(meta.get("actor") or ""),
            reason=str(meta.get("reason") or ""),
            cause=None if meta.get("cause") is None else str(meta["cause"]),
            close=close,
        )
        self._deliver(change)

    def _deliver(self, change: RemoteChange) -> None:
        if self._handler is None:
            return
        with self._replaying(change.node):
            try:
                self._handler(change)
            except Exception as exc:
                message = getattr(exc, "message", None) or repr(exc)
                log.warning(
                    "state store: %s %s from node %s not applied here: %s",
                    change.kind,
                    change.name,
                    change.node,
                    message,
                )

    @contextlib.contextmanager
    def _replaying(self, node: str) -> Iterator[None]:
        previous, self._replay_from = self._replay_from, node
        try:
            yield
        finally:
            self._replay_from = previous

    # the connection -------------------------------------------------------------------------

    def _make_client(self, endpoint: str) -> Any:
        import aetcd

        host, _, port = endpoint.rpartition(":")
        return aetcd.Client(
            host=host.strip("[]") or "127.0.0.1",
            port=int(port),
            timeout=self.timeout,
            options={
                "grpc.initial_reconnect_backoff_ms": 200,
                "grpc.max_reconnect_backoff_ms": 2000,
            },
        )

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = self._make_client(self.endpoints[self._endpoint])
        return self._client

    def _lost(self, client: Any, doing: str, exc: BaseException) -> None:
        self.cluster.failed(_why(exc))
        if self.connected:
            log.warning(
                "state store: etcd %s lost while %s (%s); serving from the local copy, "
                "%d write(s) queued",
                self.endpoints[self._endpoint],
                doing,
                _why(exc),
                len(self._queue),
            )
        self.connected = False
        if self._client is client:  # the other task may have replaced it already
            self._client = None
            self._endpoint = (self._endpoint + 1) % len(self.endpoints)
            if self._loop is not None:
                self._loop.create_task(_quiet_close(client))

    def _found(self, revision: int | None = None) -> None:
        if revision is not None:
            self.cluster.seen(revision)
        if not self.connected:
            log.info(
                "state store: etcd %s reachable again; %d write(s) queued",
                self.endpoints[self._endpoint],
                len(self._queue),
            )
        self.connected = True


def _about(event: Event, kind: Kind, name: str) -> bool:
    """Is ``event`` the one that made the store save this record?"""
    if kind in ("admin", "server"):
        return f"{event.pool}/{event.server}" == name
    if kind == "flag":
        return event.detail.get("flag") == name
    if kind == "monitor":
        return event.pool is None and event.detail.get("monitor") == name
    return event.pool == name


def _reraise_if_cancelled(exc: BaseException) -> None:
    """Re-raise a cancellation of this task; a call cancelled because its gRPC channel was
    closed (the other task dropped the connection) is only a failed call."""
    task = asyncio.current_task()
    if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
        raise exc


def _strip_scheme(endpoint: str) -> str:
    for scheme in ("http://", "https://"):
        if endpoint.startswith(scheme):
            endpoint = endpoint[len(scheme) :]
    return endpoint.rstrip("/")


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _quiet_close(client: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), 2.0)


__all__ = ["EtcdStore", "RemoteChange", "RemoteHandler"]
