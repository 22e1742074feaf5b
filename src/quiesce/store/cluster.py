"""This node's link to etcd and its membership, the I/O shell around :mod:`quiesce.core.cluster`.

:class:`ClusterAgent` belongs to an :class:`~quiesce.store.etcd.EtcdStore` and runs one task:

- **the probe**: every ``interval`` (a quarter of ``stale_after``) it reads this node's own
  key (a linearizable read: a member without quorum cannot answer it). Whatever etcd answers
  (the watch, the writer, this read) marks the link seen at that revision. A call that is
  still running is not started again and never waited for: the link turns stale while etcd
  hangs, however long the call hangs.
- **membership**: the node registers itself under ``nodes/<name>`` with a lease of
  ``lease_ttl`` seconds, keeps it alive and rewrites its record (version, listeners, last
  heartbeat) every third of the TTL; when the lease was lost (the node was cut off longer
  than the TTL) it takes a new one. The watch hands every ``nodes/`` key to :meth:`on_node`:
  a new name is ``node_joined``, a deleted key (the lease expired: the node died or was cut
  off) ``node_left``.
- **health views**: each turn (at most once a probe interval), if an event happened since
  (the store sets :attr:`health_dirty` on every one), it publishes this node's health verdicts
  when they changed, under ``health/<name>`` with the node's lease (gone when the node is):
  ``{"oper": {pool/server: verdict}, "out": {pool: [servers]}}`` (verdicts other than up or
  unmonitored; the servers a pool cannot use), from
  :attr:`verdicts_of` (the admin service sets it). The watch hands every ``health/`` key to
  :meth:`on_health`: the view shows every node's verdicts and where they disagree, and
  ``min_servers_up`` is checked against every node's eligible servers
  (:func:`quiesce.core.cluster.cluster_guard`).
- **events**: each turn it polls the link; ``node_isolated`` / ``node_rejoined`` go, with the
  membership events, to the handler the admin service sets (:meth:`set_handler`). These
  events are this node's observations: they go to its own log and are not shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from quiesce import __version__
from quiesce.core.cluster import Link, Members, disagreements

log = logging.getLogger("quiesce.store.etcd")

ClusterHandler = Callable[[str, str, dict[str, Any]], None]
"""``handler(kind, reason, detail)``: kind is node_isolated, node_rejoined, node_joined or
node_left."""


class ClusterAgent:
    def __init__(
        self,
        store: Any,  # the EtcdStore (its client, prefix, node name)
        *,
        stale_after: float = 3.0,
        lease_ttl: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.clock = clock
        self.stale_after = stale_after
        self.lease_ttl = lease_ttl
        self.interval = min(1.0, max(0.05, stale_after / 4))
        self.link = Link(stale_after, clock())
        self.members = Members(store.node)
        self.info: dict[str, Any] = {"version": __version__, "listeners": {}}
        self.key = f"{store.prefix}nodes/{store.node}"
        self._handler: ClusterHandler | None = None
        self._lease: int | None = None
        self._next_beat = 0.0
        self._call: asyncio.Task[None] | None = None
        self.local = False
        self.verdicts_of: Callable[[], dict[str, Any]] | None = None
        self.health: dict[str, dict[str, Any]] = {}  # node → its published verdicts
        self.health_revs: dict[str, int] = {}  # node → its health record's mod revision
        self._published: bytes | None = None
        self.health_dirty = True  # an event since the last publication: verdicts may differ

    def set_handler(self, handler: ClusterHandler | None) -> None:
        self._handler = handler

    @contextlib.contextmanager
    def local_changes(self) -> Iterator[None]:
        """A command taken while the link is not up, for this node only (``--local``): the
        events it causes are marked ``detail.local``."""
        self.local = True
        try:
            yield
        finally:
            self.local = False

    def announce(self, listeners: dict[str, int]) -> None:
        """The ports this node listens on, in its record from the next probe on."""
        self.info["listeners"] = dict(listeners)
        self._next_beat = 0.0

    # what the store tells us ----------------------------------------------------------------

    def seen(self, revision: int | None = None) -> None:
        self.link.seen(self.clock(), revision)

    def failed(self, error: str) -> None:
        self.link.failed(self.clock(), error)

    def on_node(self, name: str, value: bytes | None) -> None:
        """A ``nodes/<name>`` key from the watch or a full read."""
        if value is None:
            if self.members.remove(name):
                self.emit("node_left", f"node {name} left (its lease ended)", {"peer": name})
            return
        record = _record("node", name, value)
        if record is not None and self.members.put(name, record):
            self.emit("node_joined", f"node {name} joined", {"peer": name, **_brief(record)})

    def on_health(self, name: str, value: bytes | None, revision: int = 0) -> None:
        """A ``health/<name>`` key from the watch or a full read (None: the node is gone)."""
        if value is None:
            self.health.pop(name, None)
            self.health_revs.pop(name, None)
            return
        self.health_revs[name] = revision
        record = _record("health", name, value)
        if record is not None:
            self.health[name] = record

    def unusable(self, pool: str) -> dict[str, set[str]]:
        """The servers of ``pool`` each other node cannot use (not eligible there), as it
        published them."""
        return {
            node: {str(n) for n in record.get("out", {}).get(pool, [])}
            for node, record in self.health.items()
            if node != self.store.node and isinstance(record.get("out"), dict)
        }

    def synced(self, names: set[str]) -> None:
        """A full read found these node keys: the others left while we were not watching."""
        for name in self.members.keep_only(names):
            self.emit("node_left", f"node {name} left (its lease ended)", {"peer": name})

    # the view -------------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """``GET /api/v1/cluster``: this node's link and the nodes it knows."""
        now = self.clock()
        link = self.link
        nodes = []
        for name, record in sorted(self.members.nodes.items()):
            beat = record.get("heartbeat")
            nodes.append(
                {
                    "name": name,
                    "self": name == self.store.node,
                    **_brief(record),
                    "heartbeat": beat,
                    "heartbeat_age": None if beat is None else round(time.time() - beat, 3),
                }
            )
        state = link.state(now)
        verdicts = {n: dict(r.get("oper", {})) for n, r in self.health.items()}
        if self.verdicts_of is not None:
            verdicts[self.store.node] = dict(self.verdicts_of().get("oper", {}))
        return {
            "node": self.store.node,
            "store": "etcd",
            "endpoint": self.store.endpoint,
            "link": state,
            "error": link.error if state == "down" else "",
            "revision": link.revision,
            "lag_seconds": round(link.lag(now), 3),
            "stale_after": self.stale_after,
            "lease_ttl": self.lease_ttl,
            "pending_writes": self.store.pending,
            "nodes": nodes,
            "health": dict(sorted(verdicts.items())),
            "disagreements": disagreements(verdicts, default="up"),
        }

    # the task -------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            if self._call is None or self._call.done():
                self._call = asyncio.create_task(self._probe(), name="quiesce etcd probe")
            await asyncio.sleep(self.interval)
            change = self.link.poll(self.clock())
            if change is not None:
                self._on_link_change(change)

    async def stop(self) -> None:
        call, self._call = self._call, None
        if call is not None and not call.done():
            call.cancel()
            await asyncio.wait([call], timeout=1.0)
        lease, self._lease = self._lease, None
        client = self.store._client
        if lease is not None and client is not None:  # leave at once, not at the TTL
            try:
                await asyncio.wait_for(client.revoke_lease(lease), 1.0)
            except (Exception, asyncio.CancelledError):
                pass

    async def _probe(self) -> None:
        client = self.store._get_client()
        try:
            result = await client.get(self.key.encode())
            self.seen(None if result is None else _revision(result))
            if self.clock() >= self._next_beat:
                await self._beat(client)
            if self._lease is not None:
                await self._publish_health(client)
        except Exception as exc:
            self.failed(f"{type(exc).__name__}: {exc}".splitlines()[0])

    async def _beat(self, client: Any) -> None:
        """Keep the lease alive (a new one when it was lost) and rewrite the record."""
        if self._lease is not None:
            reply = await client.refresh_lease(self._lease)
            if reply is None or int(reply.TTL) <= 0:
                self._lease = None
        if self._lease is None:
            self._lease = int((await client.lease(self.lease_ttl)).id)
            self._published = None  # the old record went with the old lease
            self.health_dirty = True
        record = {**self.info, "node": self.store.node, "heartbeat": round(time.time(), 3)}
        resp = await client.put(self.key.encode(), json.dumps(record).encode(), lease=self._lease)
        self.seen(int(resp.header.revision))
        self.members.put(self.store.node, record)
        self._next_beat = self.clock() + self.lease_ttl / 3

    async def _publish_health(self, client: Any) -> None:
        """This node's verdicts, when they changed since the last publication. A failure is
        logged, not the link's: the probe's read said whether etcd answers."""
        if self.verdicts_of is None or not self.health_dirty:
            return  # nothing happened: no pass over the servers
        self.health_dirty = False
        record = self.verdicts_of()
        value = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        if value == self._published:
            return
        try:
            await client.put(
                f"{self.store.prefix}health/{self.store.node}".encode(), value, lease=self._lease
            )
        except Exception as exc:
            self.health_dirty = True  # try again next turn
            log.warning("state store: publishing this node's health failed: %s", exc)
            return
        self._published = value
        self.health[self.store.node] = record

    def _on_link_change(self, change: str) -> None:
        link, endpoint = self.link, self.store.endpoint
        if change == "node_isolated":
            why = link.error or f"no answer for {link.stale_after:g} s"
            log.warning("state store: isolated from etcd %s (%s)", endpoint, why)
            reason = f"etcd {endpoint} {link.state(self.clock())}: {why}"
        else:
            gone = self.clock() - (link.isolated_since or self.clock())
            log.info("state store: etcd %s answers again after %.1f s", endpoint, gone)
            reason = f"etcd {endpoint} answers again after {gone:.1f} s"
        self.emit(change, reason, {"revision": link.revision, "endpoint": endpoint})

    def emit(self, kind: str, reason: str, detail: dict[str, Any]) -> None:
        if self._handler is None:
            return
        try:
            self._handler(kind, reason, detail)
        except Exception:
            log.exception("state store: the %s event failed", kind)


def _record(what: str, name: str, value: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(value)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        log.warning("state store: %s record %s unreadable: %s", what, name, exc)
        return None
    return record


def _brief(record: dict[str, Any]) -> dict[str, Any]:
    return {"version": record.get("version"), "listeners": record.get("listeners", {})}


def _revision(result: Any) -> int | None:
    header = getattr(result, "header", None)
    return None if header is None else int(header.revision)


__all__ = ["ClusterAgent", "ClusterHandler"]
