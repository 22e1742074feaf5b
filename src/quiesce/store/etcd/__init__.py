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
    servers/<pool>/<server>    {"value": {server definition}|null}   null = deleted (tombstone;
                               added again: the key deleted and created anew, so a full read
                               in create-revision order has the pool's order)
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
command is one round of writes, not a loop. While this node's own live reload is being
applied, other nodes' changes of servers (definitions, admin records) are held in order and
applied when it has been (:meth:`~quiesce.store.etcd.watcher.Watcher.hold_remote`, called by
the reload's :class:`~quiesce.admin.reload_gate.RuntimeGate`). Events another node wrote
are appended to the mirror as they are; every event carries ``detail.node``, and the events
a replicated change caused here also ``detail.replicated_from``.

Two nodes writing one record at once: every write is a compare-and-swap on the revision this
node had seen (:mod:`~quiesce.store.etcd.writer`), so the first to reach etcd wins and the
other's write is refused, reported (:meth:`confirm`: the API's 409) and undone where it was
made. A node ignores a remote value of a record it has a write pending for (its own write
decides: it lands, or it loses and the newer value applies), or older than its own last
acknowledged write.

etcd lost: reads and writes go on against the mirror; the writer retries the head of its queue
with a backoff (so writes land in order when etcd is back), the watcher re-reads the prefix and
applies what changed meanwhile (this also covers a compacted watch history). Several endpoints
are tried in turn. Whether etcd answers, and which nodes are registered (``nodes/<name>``,
under a lease), is the :class:`~quiesce.store.cluster.ClusterAgent`'s part.

The parts, one module each: :mod:`~quiesce.store.etcd.base` (the state and the connection),
:mod:`~quiesce.store.etcd.writer` (the queue and the writer task),
:mod:`~quiesce.store.etcd.watcher` (the watch, full reads and applying remote changes) and this
module (the life cycle, and the store's reads and writes against the mirror).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import replace
from typing import Any

from quiesce.core.admin import AdminRecord
from quiesce.core.events import Event, EventQuery
from quiesce.store.base import RemoteChange, RemoteHandler, StoreError
from quiesce.store.etcd.base import (
    _OBSERVED,
    FLUSH_AT_CLOSE,
    _quiet_close,
    _why,
    log,
    refusal,
)
from quiesce.store.etcd.watcher import Watcher
from quiesce.store.etcd.writer import Writer


class EtcdStore(Writer, Watcher):
    """:class:`~quiesce.store.base.StateStore` shared through etcd, read from a local mirror."""

    # life cycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (trying each endpoint), read the shared state into the mirror, then follow
        it. Raises :class:`StoreError` naming the endpoints when none answers."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        errors, answered = [], False
        for i, endpoint in enumerate(self.endpoints):
            client = self._make_client(endpoint)
            try:
                await self._sync(client)
            except Exception as exc:
                await _quiet_close(client)
                if (why := refusal(exc, self.username, self.prefix)) is not None:
                    raise StoreError(f"state.etcd: {endpoint}: {why}") from None
                errors.append(f"{endpoint}: {_why(exc)}")
                answered = answered or not _unreachable(exc)
                continue
            self._client, self._endpoint = client, i
            break
        else:
            what = f"cannot read {self.prefix} from" if answered else "cannot reach"
            raise StoreError(
                f"state.etcd: {what} etcd at {', '.join(self.endpoints)} ({'; '.join(errors)})"
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

    def drop_admin(self, key: str) -> None:
        """Deleted here and from etcd (a server deleted at runtime: review 90 F10). Called
        right after the server's tombstone is queued: deleted in the tombstone's transaction,
        so after the writes of the record queued before it (the drain the other nodes drain
        the server by lands first) and only if the deletion lands. Without a tombstone queued
        (a start deleting what an earlier version left): a delete of its own, on the revision
        this node saw. No write for a record etcd does not have as far as this node knows."""
        self.mirror.delete_admin(key)
        k = self._key("admin", key)
        if self._replay_from is not None or (k not in self._known and k not in self._ops):
            return
        tombstone = self._ops.get(self._key("server", key))
        if tombstone is not None and tombstone is not self._inflight:
            if k not in tombstone.drops:
                tombstone.drops.append(k)
            return
        self._checks.pop(k, None)
        self._enqueue(k, None, max(self._seen.get(k, 0), self._acked.get(k, 0)))

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
        """A definition saved after :meth:`forget_server` (a server added again after its
        delete) is written to a key etcd creates anew: a full read (a restart, another node's
        start) orders the servers by their keys' creation, so it comes back after the servers
        added meanwhile, as it stands in the pool, not at its first addition's place."""
        recreate = data is not None and key in self._forgotten
        self._forgotten.discard(key)
        self.mirror.save_server(key, data)
        self._share("server", key, data, recreate=recreate)

    def forget_server(self, key: str) -> None:
        """Here only, as ``delete_admin``: another node may still use the record."""
        self.mirror.forget_server(key)
        self._forgotten.add(key)

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
        self.cluster.health_dirty = True
        self._last_event = stored
        self._last_event_key = None
        if self._replay_from is not None or event.kind in _OBSERVED:
            return stored  # a local consequence or observation: not shared
        self._event_seq += 1
        key = self._key("event", f"{self.instance}/{self._event_seq:012d}")
        body = stored.to_dict()
        del body["id"]
        self._event_keys[key] = stored.time
        self._enqueue(key, self._value(body))
        self._last_event_key = key
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


def _unreachable(exc: BaseException) -> bool:
    """Did the call fail for want of an answer (not an answer that was an error)?"""
    from aetcd import exceptions

    failed = (exceptions.ConnectionFailedError, exceptions.ConnectionTimeoutError)
    return isinstance(exc, (*failed, OSError, TimeoutError))


__all__ = ["EtcdStore", "RemoteChange", "RemoteHandler"]
