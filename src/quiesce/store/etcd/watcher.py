"""The etcd store's watcher: follows the prefix and applies what other nodes wrote. Part of
:class:`~quiesce.store.etcd.EtcdStore`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from quiesce.core.admin import AdminRecord
from quiesce.core.events import Event
from quiesce.core.states import CloseMode
from quiesce.store.base import Kind, RemoteChange
from quiesce.store.etcd.base import (
    _SECTIONS,
    RETRY_MAX,
    RETRY_MIN,
    EtcdBase,
    _reraise_if_cancelled,
    _why,
    log,
)
from quiesce.store.etcd.pages import KEY_PAGE_KEYS, Snapshot, read_range

_HELD: tuple[Kind, ...] = ("server", "admin")
"""What a reload being applied here holds back: servers' definitions, and their admin records
(an addition's record follows its definition; a server the reload removes or adds)."""


class Watcher(EtcdBase):
    async def _run_watcher(self) -> None:
        delay = RETRY_MIN
        resync = False
        while True:
            client = self._get_client()
            doing = "watching"
            try:
                if resync:
                    doing = "re-reading the prefix"
                    await self._sync(client)
                    self._following()
                    doing = "watching"
                watch = await client.watch_prefix(self._bprefix, start_revision=self._rev + 1)
                self._found()  # not an answer yet: the link is seen by the sync and the events
                delay = RETRY_MIN
                resync = False
                async for ev in watch:
                    kv = ev.kv
                    self.cluster.seen(int(kv.mod_revision))
                    value = None if ev.kind == "DELETE" else bytes(kv.value)
                    if value is not None and self._seen.get(kv.key.decode(), 0) >= kv.mod_revision:
                        continue  # applied already (the record a lost write found)
                    self._on_kv(kv.key.decode(), value, int(kv.mod_revision))
                raise ConnectionError("the watch ended")
            except (Exception, asyncio.CancelledError) as exc:
                _reraise_if_cancelled(exc)
                if resync:
                    self._not_following(exc)
                resync = True
                self._lost(client, doing, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    def _not_following(self, exc: BaseException) -> None:
        """Re-reading the prefix failed: this node does not see the other nodes' changes. After
        ``stale_after`` the link is down with this reason (the cluster view, ``show cluster``,
        shared commands refused but --local), and the log says so once, whatever else
        answers (the probe, the writer)."""
        now = self.cluster.clock()
        if not self._resync_failures:
            self._resync_since = now
        self._resync_failures += 1
        reason = (
            f"this node does not follow etcd's changes: re-reading {self.prefix} failed "
            f"{self._resync_failures} time(s) ({_why(exc)})"
        )
        self.cluster.link.behind(self._resync_since, reason)
        if not self._resync_logged and now - self._resync_since >= self.cluster.stale_after:
            self._resync_logged = True
            log.warning(
                "state store: %s; other nodes' changes are not applied here until it "
                "succeeds (retrying every %g s at most)",
                reason,
                RETRY_MAX,
            )

    def _following(self) -> None:
        """A re-read succeeded: the node follows etcd's changes again."""
        if self._resync_logged:
            log.info(
                "state store: following etcd's changes again, after %.1f s and %d failed "
                "re-read(s) of %s",
                self.cluster.clock() - self._resync_since,
                self._resync_failures,
                self.prefix,
            )
        self._resync_failures, self._resync_logged = 0, False
        self.cluster.link.behind(self.cluster.clock(), "")

    async def _sync(self, client: Any) -> None:
        """Read the whole prefix (in pages, at one revision: :mod:`~quiesce.store.etcd.pages`);
        apply every key that changed since we last saw it (all of them at open), and the
        deletion of state keys that are gone."""
        known = self._rev  # before the pages' awaits (the watch may go on meanwhile)
        result, unread = await self._read_prefix(client, known)
        revision = result.revision
        cluster_id = result.cluster_id
        before, self._cluster_id = self._cluster_id, cluster_id or self._cluster_id
        if revision < known or (before and cluster_id and cluster_id != before):
            why = (
                f"revision {known} -> {revision}"
                if revision < known
                else f"cluster ID {before:x} -> {cluster_id:x}"
            )
            if unread:  # every value, of the new store
                result, unread = await self._read_prefix(client, 0)
            kvs = sorted(result.kvs, key=lambda kv: int(kv.create_revision))
            self._replaced(kvs, result.revision, why)
            return
        present = set()
        for kv in sorted(result.kvs, key=lambda kv: int(kv.create_revision)):
            key = kv.key.decode()
            present.add(key)
            rev = int(kv.mod_revision)
            if self._seen.get(key) != rev and key not in unread:
                self._on_kv(key, bytes(kv.value), rev)
        for key in [k for k in self._seen if k not in present]:
            mine = self._known.get(key)
            if mine is not None and key not in self._ops:  # the store lost it: write it back
                del self._seen[key]
                self._enqueue(key, mine, 0)
            else:
                self._on_kv(key, None, revision)
        nodes, health = f"{self.prefix}nodes/", f"{self.prefix}health/"
        self.cluster.synced({k[len(nodes) :] for k in present if k.startswith(nodes)})
        for name in [n for n in self.cluster.health if f"{health}{n}" not in present]:
            if name != self.node:
                del self.cluster.health[name]  # its lease ended while we were not watching
        self._rev = max(self._rev, revision)
        # seen once applied: loading 100,000 events takes seconds, and the link is not stale
        # for that (a start with a large event log was node_isolated at once, then rejoined)
        self.cluster.seen(revision)

    async def _read_prefix(self, client: Any, since: int) -> tuple[Snapshot, set[str]]:
        """The prefix at one revision, and the keys read without their value. At open
        (``since`` 0) every value; later (a re-read after a lost watch) the events' keys,
        and the values only of those written after revision ``since``: the events this
        node has are not read again (~90% of the bytes at the default retention)."""
        prefix = self._bprefix
        end = prefix[:-1] + bytes([prefix[-1] + 1])  # the prefix ends in "/"
        if not since:
            snap = await read_range(client, prefix, end)
            self._read_log(snap, since)
            return snap, set()
        events, after = prefix + b"events/", prefix + b"events0"
        snap = await read_range(client, prefix, events)  # admin/
        at = snap.revision
        keys = await read_range(
            client, events, after, revision=at, keys_only=True, page_keys=KEY_PAGE_KEYS
        )
        new = await read_range(client, events, after, revision=at, min_mod_revision=since + 1)
        rest = await read_range(client, after, end, revision=at)
        valued = {bytes(kv.key): kv for kv in new.kvs}
        unread = {bytes(kv.key).decode() for kv in keys.kvs if bytes(kv.key) not in valued}
        snap.kvs += [valued.get(bytes(kv.key), kv) for kv in keys.kvs] + rest.kvs
        for part in (keys, new, rest):
            snap.pages, snap.size = snap.pages + part.pages, snap.size + part.size
        self._read_log(snap, since)
        return snap, unread

    def _read_log(self, snap: Snapshot, since: int) -> None:
        log.info(
            "state store: %s %s from etcd %s at revision %d: %d key(s), %.1f MB in %d page(s)",
            "re-read" if since else "read",
            self.prefix,
            self.endpoint,
            snap.revision,
            len(snap.kvs),
            snap.size / 1e6,
            snap.pages,
        )

    def _replaced(self, kvs: list[Any], revision: int, why: str) -> None:
        """etcd was replaced or restored from a backup (its revision went back, or its cluster
        ID changed): the revisions this node knew mean nothing there. Take the new store's
        records, except where this node knows a newer one (by the writer's clock); write back
        every record the store lost (conditioned on its absence: the first node to do so wins,
        the others' identical writes are no conflict); follow the new revisions."""
        old, self._rev = self._rev, revision
        self.cluster.link.revision = revision
        self.cluster.seen(revision)
        self._acked.clear()
        present = {kv.key.decode(): kv for kv in kvs}
        for key, op in self._ops.items():  # pending writes: on the new store's revisions
            if op.base is not None and op.base >= 0:
                op.base = int(present[key].mod_revision) if key in present else 0
        republished = applied = 0
        for key, kv in present.items():
            value, rev = bytes(kv.value), int(kv.mod_revision)
            mine = self._known.get(key)
            if mine == value or key in self._ops:
                self._seen[key] = rev
            elif mine is not None and _written_at(mine) > _written_at(value):
                self._seen[key] = rev
                self._enqueue(key, mine, rev)
                republished += 1
            else:
                self._seen.pop(key, None)
                self._on_kv(key, value, rev)
                applied += 1
        for key in [k for k in self._seen if k not in present]:
            del self._seen[key]
        for key, mine in list(self._known.items()):
            if key not in present and key not in self._ops:
                self._enqueue(key, mine, 0)
                republished += 1
        nodes = f"{self.prefix}nodes/"
        self.cluster.synced({k[len(nodes) :] for k in present if k.startswith(nodes)})
        reason = (
            f"etcd {self.endpoint} was replaced or restored ({why}): re-read {len(present)} "
            f"key(s), applied {applied}, republished {republished} record(s) it had lost"
        )
        log.warning("state store: %s", reason)
        detail = {"before": old, "revision": revision, "applied": applied}
        self.cluster.emit("store_replaced", reason, {**detail, "republished": republished})

    def _on_kv(self, key: str, value: bytes | None, rev: int) -> None:
        self._rev = max(self._rev, rev)
        if not key.startswith(self.prefix):
            return
        section, _, name = key[len(self.prefix) :].partition("/")
        if section == "nodes" and name:
            self.cluster.on_node(name, value)
            return
        if section == "health" and name:
            self.cluster.on_health(name, value, rev)
            return
        kind = _SECTIONS.get(section)
        if kind is None or not name:
            return
        if value is None:
            self._seen.pop(key, None)
            self._known.pop(key, None)
        else:
            self._seen[key] = rev
            if kind != "event":
                self._known[key] = value
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
        if self._holding and kind in _HELD:
            if not self._held:
                log.info(
                    "state store: changes of servers from other nodes wait for this node's "
                    "reload to be applied (%s first)",
                    key,
                )
            self._held.append((key, value, rev, kind, name, body))
            return
        self._take(key, value, rev, kind, name, body)

    def _take(
        self, key: str, value: bytes | None, rev: int, kind: Kind, name: str, body: Any
    ) -> None:
        if key in self._ops:  # our own write of this record is on its way: etcd orders them
            self._deferred[key] = (rev, value)
            return
        if rev <= self._acked.get(key, 0):
            return
        try:
            self._apply_remote(kind, name, body)
        except Exception:
            log.exception("state store: applying %s from etcd failed", key)

    def hold_remote(self) -> None:
        """This node's reload is being applied (:class:`~quiesce.admin.reload_gate.
        RuntimeGate` closed): other nodes' changes of servers (definitions and admin
        records) are held, in the order they come, until :meth:`release_remote`; the
        watch goes on (nothing else waits)."""
        self._holding = True

    def release_remote(self) -> int:
        """The reload applied (the gate opens): the held changes applied in order, against
        its new state, as if they came now; returns how many."""
        self._holding = False
        held, self._held = self._held, deque()
        for change in held:
            self._take(*change)
        if held:
            log.info(
                "state store: %d change(s) of servers from other nodes, held while this "
                "node's reload was applied, applied now",
                len(held),
            )
        return len(held)

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


def _written_at(value: bytes) -> float:
    """The writer's wall clock in a record (0 when it has none)."""
    try:
        when = json.loads(value).get("time")
    except (ValueError, AttributeError):
        return 0.0
    return float(when) if isinstance(when, int | float) else 0.0


__all__ = ["Watcher"]
