"""The etcd store's writer: the queue of writes and the task that puts them to etcd in order.
Part of :class:`~quiesce.store.etcd.EtcdStore`.

Every write of a record is a transaction conditioned on the record's ``mod_revision`` as this
node had seen it when the command was taken (``Op.base``): it lands only if nobody changed the
record since. When it does not, the write is **lost**, never replayed over the newer change:
the writer reads the record as it is, and unless it is the same (an idempotent repeat: no
conflict) it records a :class:`~quiesce.store.base.ConflictError` for the writes folded into
it (:meth:`Writer.confirm` raises it: the API's 409), writes a ``write_conflict`` event to
this node's log and applies the newer record here, as any change from another node. The
command's own event goes in the same transaction, so a lost command is never in the other
nodes' logs. A write queued during an outage is conditioned the same way: when the link is
back it lands only if nobody changed the record meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from quiesce.core.states import CloseMode
from quiesce.store.base import ConflictError, Kind, StoreError
from quiesce.store.etcd.base import (
    _SECTIONS,
    _STATE_EVENTS,
    AFTER_INFLIGHT,
    MAX_CONFLICTS,
    RETRY_MAX,
    RETRY_MIN,
    EtcdBase,
    Op,
    _about,
    _reraise_if_cancelled,
    log,
)

_WHAT = {
    "admin": "server {}",
    "flag": "flag {}",
    "monitor": "monitor {}",
    "pool_monitors": "the monitors of pool {}",
    "server": "the definition of server {}",
}
_ADMIN_META = ("actor", "reason", "since", "cause")  # who and when: not what the state is


# the request (a number of :meth:`Writer.mark`'s) the current task works for: the writes it
# queues are that request's, and its :meth:`Writer.confirm` answers for those alone
_REQUEST: ContextVar[int | None] = ContextVar("quiesce_etcd_request", default=None)
_requests = itertools.count(1)


class Writer(EtcdBase):
    def mark(self) -> int:
        """The sequence number of the last write queued (see :meth:`confirm`). Begins a
        request in the current context (an API request's task, a runtime socket's command):
        the writes queued in it from here are that request's."""
        _REQUEST.set(next(_requests))
        return self._op_seq

    async def confirm(self, mark: int, timeout: float | None = None) -> None:
        """Wait until every write the current request (:meth:`mark`, in this context) queued
        after ``mark`` (up to now) landed in etcd or lost; without one, every write queued
        after ``mark``. Raises :class:`ConflictError` (the first lost one) or, after
        ``timeout``, :class:`StoreError`. Another request's writes queued meanwhile are not
        this one's: a reload answered while a runtime change's write lost (review 90 F13)
        is answered by its own outcome, the runtime change by its conflict."""
        upto, request = self._op_seq, _REQUEST.get()
        owners = self._owners

        def mine(s: int) -> bool:
            return mark < s <= upto and (request is None or owners.get(s) == request)

        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        while any(mine(s) for s in self._unsettled):
            settled = self._settled
            left = None if end is None else end - loop.time()
            try:
                if left is not None and left <= 0:
                    raise TimeoutError
                await asyncio.wait_for(settled.wait(), left)
            except TimeoutError:
                raise StoreError(
                    f"etcd {self.endpoint} did not confirm the change within {timeout:g} s: it "
                    "is applied on this node and queued; it reaches the other nodes when etcd "
                    "answers, unless one of them changed the same record meanwhile (then a "
                    "write_conflict event says so)"
                ) from None
        lost = [c for s, c in self._conflicts.items() if mine(s)]
        if lost:
            raise lost[0]

    def guard_with(self, server: str, nodes: list[str]) -> None:
        """The next write of ``server``'s admin record lands only if the health records of
        ``nodes`` are still at the revisions this node saw (the cluster-wide
        ``min_servers_up`` guard counted on them: it holds in the write's transaction). An
        empty list clears it."""
        key = self._key("admin", server)
        health = f"{self.prefix}health/"
        if nodes:
            revs = self.cluster.health_revs
            self._checks[key] = {f"{health}{n}": revs.get(n, 0) for n in nodes}
        else:
            self._checks.pop(key, None)

    def _share(self, kind: Kind, name: str, value: object, *, recreate: bool = False) -> None:
        if self._replay_from is not None:
            return
        extra: dict[str, object] = {}
        event = self._last_event
        if event is not None and event.kind in _STATE_EVENTS[kind] and _about(event, kind, name):
            extra = {"actor": event.actor or "", "reason": event.reason or "", "cause": event.cause}
            if kind == "admin":
                extra["close"] = event.detail.get("close", CloseMode.NONE.value)
        key = self._key(kind, name)
        ekey, self._last_event_key = self._last_event_key, None
        event_op = None
        if extra and ekey is not None and self._queue and self._queue[-1] == ekey:
            # the command's own event, queued just before: it goes in the same transaction
            event_op = self._ops[ekey]
            if event_op is self._inflight or event_op.value is None:
                event_op = None
            else:
                self._queue.pop()
                del self._ops[ekey]
        base = max(self._seen.get(key, 0), self._acked.get(key, 0))
        op = self._enqueue(key, self._value(value, **extra), base)
        op.checks.update(self._checks.pop(key, {}))
        op.recreate = op.recreate or recreate
        if ekey is not None and event_op is not None and event_op.value is not None:
            op.events.append((ekey, event_op.value))
            op.seqs.extend(event_op.seqs)

    def _enqueue(self, key: str, value: bytes | None, base: int | None = None) -> Op:
        self._op_seq += 1
        seq = self._op_seq
        self._unsettled.add(seq)
        if (request := _REQUEST.get()) is not None:
            self._owners[seq] = request
        op = self._ops.get(key)
        if op is None:
            op = self._ops[key] = Op(value, base, [seq])
            self._queue.append(key)
        elif op is self._inflight:  # this one follows on whatever the one in flight leaves
            op = self._ops[key] = Op(value, None if base is None else AFTER_INFLIGHT, [seq])
        else:  # folded: the newest value, on the first one's base
            op.value = value
            op.seqs.append(seq)
        op.local = op.local or (base is not None and self.cluster.local)
        if len(self._queue) > self._max_queue:
            self._drop_oldest_event()
        self._idle.clear()
        if self._loop is None or threading.get_ident() == self._thread:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)
        return op

    def _drop_oldest_event(self) -> None:
        events = f"{self.prefix}events/"
        for i, key in enumerate(self._queue):
            if i > 0 and key.startswith(events):  # never the one in flight
                del self._queue[i]
                self._settle(self._ops.pop(key).seqs)
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 1000 == 0:
                    log.warning(
                        "state store: etcd unreachable for long: %d event(s) not shared",
                        self._dropped,
                    )
                return

    def _settle(self, seqs: list[int]) -> None:
        self._unsettled.difference_update(seqs)
        for seq in seqs:  # whose a lost write was: kept as long as its conflict
            if seq not in self._conflicts:
                self._owners.pop(seq, None)
        self._settled.set()
        self._settled = asyncio.Event()

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
            op = self._inflight = self._ops[key]
            client = self._get_client()
            try:
                ok, rev, current = await self._send(client, key, op)
            except (Exception, asyncio.CancelledError) as exc:
                self._inflight = None
                self._refold(key, op)
                _reraise_if_cancelled(exc)
                self._lost(client, "writing", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            self._inflight = None
            delay = RETRY_MIN
            self._found(rev)
            self.writes += 1
            if not ok:
                assert current is not None
                self._on_refused(key, op, *current)
                continue
            after = self._ops.get(key)
            if after is op:
                del self._ops[key]
                self._queue.popleft()
            elif after is not None and after.base == AFTER_INFLIGHT:
                after.base = rev or 0
            self._settle(op.seqs)
            if rev is not None and not key.startswith(f"{self.prefix}events/"):
                self._acked[key] = rev
                if op.value is not None:
                    self._known[key] = op.value
                else:  # deleted: not one to write back to a store that lost it
                    self._known.pop(key, None)
                for dropped in op.drops:
                    self._known.pop(dropped, None)
                if op.local:
                    self._reconciled(key, op, rev)
            if key not in self._ops and key in self._deferred:
                drev, dvalue = self._deferred.pop(key)
                if rev is None or drev > rev:
                    self._on_kv(key, dvalue, drev)

    async def _send(
        self, client: Any, key: str, op: Op
    ) -> tuple[bool, int | None, tuple[bytes | None, int] | None]:
        """Put (or delete) ``op``: (landed, its revision, the record as it is when it lost)."""
        bkey = key.encode()
        if op.base is None:  # an event: its key is this node's own
            if op.value is None:
                resp = await client.delete(bkey)
                return True, None if resp is None else int(resp.header.revision), None
            return True, int((await client.put(bkey, op.value)).header.revision), None
        from aetcd import transactions as txn

        if op.recreate and op.value is not None and op.base:
            # delete first (the put cannot be in the same transaction: one key), then put on
            # its absence; a delete that lost is this write lost, as below
            ok, responses = await client.transaction(
                compare=[txn.Mod(bkey) == op.base],
                success=[txn.Delete(bkey)],
                failure=[txn.Get(bkey)],
            )
            if not ok:
                self._moved = []
                return False, None, _record(responses[0])
            op.base, op.recreate = 0, False
        write = txn.Put(bkey, op.value) if op.value is not None else txn.Delete(bkey)
        checks = list(op.checks.items())
        ok, responses = await client.transaction(
            compare=[txn.Mod(bkey) == op.base, *(txn.Mod(k.encode()) == r for k, r in checks)],
            success=[  # in order
                *(txn.Put(k.encode(), v) for k, v in op.events),
                write,
                *(txn.Delete(k.encode()) for k in op.drops),
            ],
            failure=[txn.Get(bkey), *(txn.Get(k.encode()) for k, _ in checks)],
        )
        if ok:
            first = responses[0]
            return (
                True,
                int(getattr(first, str(first.WhichOneof("response"))).header.revision),
                None,
            )
        self._moved = [
            k
            for (k, r), kvs in zip(checks, responses[1:], strict=True)
            if (int(kvs[0][1].mod_revision) if kvs else 0) != r
        ]
        return False, None, _record(responses[0])

    def _refold(self, key: str, op: Op) -> None:
        """A write that may not have been sent: the one queued after it folds into it again."""
        after = self._ops.get(key)
        if after is not None and after is not op:
            op.value = after.value
            op.seqs.extend(after.seqs)
            op.events.extend(after.events)
            op.local = op.local or after.local
            op.checks = {**after.checks, **op.checks}
            op.recreate = op.recreate or after.recreate
            op.drops.extend(k for k in after.drops if k not in op.drops)
            self._ops[key] = op

    def _on_refused(self, key: str, op: Op, value: bytes | None, rev: int) -> None:
        """The record changed since ``op.base``: ours (a write whose answer was lost) is the
        base of the next attempt; the same value is no conflict; anything else wins."""
        body = _body(value)
        moved, self._moved = self._moved, []
        if moved and (rev == op.base or (value is None and op.base == 0)):
            self._guard_moved(key, op, body, rev, moved)
            return
        ours = body is not None and body.get("instance") == self.instance
        if ours or value is None or rev < (op.base or 0):
            # our own write (its answer was lost), or a record the store lost or holds older
            # than what this node saw (etcd replaced or restored): ours goes on top of it
            self._refold(key, op)
            op.base = rev
            return
        after = self._ops.pop(key, None)
        self._queue.popleft()
        self._deferred.pop(key, None)
        section, _, name = key[len(self.prefix) :].partition("/")
        kind = _SECTIONS[section]
        conflict = False
        for lost in (op, after) if after is not None and after is not op else (op,):
            if _same(kind, lost.value, body):
                for ekey, evalue in lost.events:  # an accepted repeat: its events are shared
                    self._enqueue(ekey, evalue)
            else:
                conflict = True
                self._lose(kind, name, lost, body, rev)
            self._settle(lost.seqs)
        if not conflict:
            self._seen[key] = self._acked[key] = rev
            return
        self._on_kv(key, value, rev)  # the newer record applies here too

    def _guard_moved(
        self, key: str, op: Op, body: dict[str, Any] | None, rev: int, moved: list[str]
    ) -> None:
        """The record is as this node saw it, but a health record the cluster-wide guard
        counted on changed: the write is refused (it may break ``min_servers_up`` on that
        node now) and undone here; a retry checks the guard on the new view."""
        after = self._ops.pop(key, None)
        self._queue.popleft()
        name = key[len(self.prefix) :].partition("/")[2]
        nodes = ", ".join(k.rpartition("/")[2] for k in moved)
        mine = _describe("admin", _body(op.value))
        message = (
            f"refused: the health checks of node {nodes} changed while setting server {name} to "
            f"{mine} was on its way to etcd, and min_servers_up counted on them: not applied; "
            "retry: the guard is checked again on the new view"
        )
        error = ConflictError(message, {"revision": rev, "nodes": nodes.split(", ")})
        for lost in (op, after) if after is not None and after is not op else (op,):
            for seq in lost.seqs:
                self._conflicts[seq] = error
            self._settle(lost.seqs)
        log.warning("state store: %s", message)
        pool, _, server = name.partition("/")
        detail = {"record": "admin", "name": name, "pool": pool, "server": server, "moved": moved}
        self.cluster.emit("write_conflict", message, detail)
        if body is None:  # never set in etcd: what the config file says (enabled)
            body = {"node": self.node, "value": {"state": "enabled"}}
        self._apply_remote("admin", name, body)  # as it is in etcd

    def _reconciled(self, key: str, op: Op, rev: int) -> None:
        """A change made on this node only (``--local``) while etcd was unreachable landed:
        nobody changed the record meanwhile, so it is every node's now."""
        section, _, name = key[len(self.prefix) :].partition("/")
        kind = _SECTIONS[section]
        what = _WHAT[kind].format(name)
        message = (
            f"the change of {what} made on this node only ({_describe(kind, _body(op.value))}) "
            f"reached etcd (revision {rev}): every node has it now"
        )
        log.info("state store: %s", message)
        detail: dict[str, Any] = {"record": kind, "name": name, "revision": rev}
        if kind in ("admin", "server"):
            detail["pool"], _, detail["server"] = name.partition("/")
        self.cluster.emit("local_reconciled", message, detail)

    def _lose(self, kind: Kind, name: str, op: Op, body: dict[str, Any] | None, rev: int) -> None:
        what = _WHAT[kind].format(name)
        meta = body or {}
        current = {
            "node": meta.get("node"),
            "actor": meta.get("actor"),
            "reason": meta.get("reason"),
            "time": meta.get("time"),
            "revision": rev,
            "value": meta.get("value"),
        }
        when = meta.get("time")
        stamp = (
            datetime.fromtimestamp(float(when), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
            if isinstance(when, int | float)
            else "an unknown time"
        )
        if body is None:
            newer = f"it was deleted from etcd (revision {rev})"
        else:
            by = (
                f"{meta.get('actor')} on node {meta.get('node')}"
                if meta.get("actor")
                else (f"node {meta.get('node')}")
            )
            newer = f"{by} changed it at {stamp} (etcd revision {rev}): now {_describe(kind, body)}"
        mine = _describe(kind, _body(op.value))
        if op.local:
            mine += ", made on this node only"
        message = (
            f"conflict: {what} changed on another node before this change reached etcd: "
            f"{newer}; this change ({mine}) was not applied: look at the current state and "
            "retry if it still applies"
        )
        error = ConflictError(message, current)
        for seq in op.seqs:
            self._conflicts[seq] = error
        while len(self._conflicts) > MAX_CONFLICTS:
            self._owners.pop(self._conflicts.popitem(last=False)[0], None)
        log.warning("state store: %s", message)
        pool, _, server = name.partition("/") if kind in ("admin", "server") else ("", "", "")
        detail: dict[str, Any] = {"record": kind, "name": name, "current": current, "lost": mine}
        if server:
            detail.update(pool=pool, server=server)
        self.cluster.emit("write_conflict", message, detail)


def _record(kvs: Any) -> tuple[bytes | None, int]:
    """A transaction's Get answer: the record's value and mod revision, (None, 0): none."""
    if not kvs:
        return None, 0
    value, meta = kvs[0]
    return bytes(value), int(meta.mod_revision)


def _body(value: bytes | None) -> dict[str, Any] | None:
    try:
        body = None if value is None else json.loads(value)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _same(kind: Kind, mine: bytes | None, body: dict[str, Any] | None) -> bool:
    """Would ``mine`` leave the record as it is (an idempotent repeat)? Who and when aside."""
    ours = _body(mine)
    if ours is None or body is None:
        return ours is None and body is None
    a, b = ours.get("value"), body.get("value")
    if kind == "admin" and isinstance(a, dict) and isinstance(b, dict):
        a = {k: v for k, v in a.items() if k not in _ADMIN_META}
        b = {k: v for k, v in b.items() if k not in _ADMIN_META}
    return bool(a == b)


def _describe(kind: Kind, body: dict[str, Any] | None) -> str:
    value = None if body is None else body.get("value")
    if kind == "admin" and isinstance(value, dict):
        return str(value.get("state"))
    if value is None:
        return "deleted"
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["Writer"]
