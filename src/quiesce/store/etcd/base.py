"""The etcd store's state and its connection: what the writer, the watcher and the store
itself share (:mod:`quiesce.store.etcd` explains how they work together)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from quiesce.core.events import Event, EventKind
from quiesce.store.base import ConflictError, Kind, RemoteHandler, StoreError
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
    EventKind.WRITE_CONFLICT,
    EventKind.STORE_REPLACED,
    EventKind.LOCAL_RECONCILED,
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

AFTER_INFLIGHT = -1
"""The base of a write queued while the write of the same key is in flight: whatever
revision that one leaves (set when it lands)."""
MAX_CONFLICTS = 1000
"""Lost writes remembered for :meth:`~quiesce.store.etcd.EtcdStore.confirm` (by sequence)."""


@dataclass(slots=True)
class Op:
    """A queued write of one key: the newest value (None: delete), the mod revision it is
    conditioned on (the one this node had seen when the command was taken; None:
    unconditional, an event), the sequence numbers of the writes folded into it, and the
    events that go in the same transaction (the command's own event: never shared when the
    command loses)."""

    value: bytes | None
    base: int | None
    seqs: list[int]
    events: list[tuple[str, bytes]] = field(default_factory=list)
    local: bool = False  # made on this node only (--local): its landing is a reconciliation
    checks: dict[str, int] = field(default_factory=dict)  # other keys that must be unchanged
    # the key deleted first, so etcd creates it anew (a server added again after its delete:
    # a full read orders the servers by their keys' create revision, as they were added)
    recreate: bool = False
    # other keys deleted in the same transaction, unconditionally (a deleted server's admin
    # record, with its tombstone: after the writes queued before it, and only if it lands)
    drops: list[str] = field(default_factory=list)


class EtcdBase:
    """The state of :class:`~quiesce.store.etcd.EtcdStore` and its connection to etcd."""

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
        username: str | None = None,
        password: str | None = None,
        tls: tuple[bytes | None, bytes | None, bytes | None] | None = None,
    ) -> None:
        if not endpoints:
            raise StoreError("state.etcd.endpoints: give at least one host:port")
        if tls is None and any(e.startswith("https://") for e in endpoints):
            tls = (None, None, None)  # https://: TLS, the system's roots
        if (username is None) != (password is None):
            raise StoreError("state.etcd: give both username and password, or neither")
        self.username, self.password = username, password
        self.tls = tls
        """(ca, cert, key) PEM for TLS to etcd (None each: the system's roots, no client
        certificate), or None: plain gRPC."""
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
        # the write queue: keys in order; per key its pending write
        self._queue: deque[str] = deque()
        self._ops: dict[str, Op] = {}
        self._op_seq = 0
        self._inflight: Op | None = None  # the write the writer is sending now
        self._unsettled: set[int] = set()  # sequences neither acknowledged nor refused yet
        self._conflicts: OrderedDict[int, ConflictError] = OrderedDict()  # lost, by sequence
        self._owners: dict[int, int] = {}  # sequence → the request that queued it (writer)
        self._settled = asyncio.Event()  # set (and replaced) whenever writes settle
        self._last_event_key: str | None = None  # the shared event appended last
        self._known: dict[str, bytes] = {}  # state key → its value as last read or written
        self._checks: dict[str, dict[str, int]] = {}  # record key → keys its next write checks
        self._moved: list[str] = []  # the checked keys that had changed when a write lost
        self._cluster_id = 0  # etcd's cluster ID, from the first answer
        self._event_seq = 0
        self._max_queue = retention_rows + 10_000
        self._acked: dict[str, int] = {}  # key → revision of our last acknowledged write
        self._deferred: dict[str, tuple[int, bytes | None]] = {}  # remote values held back
        self._forgotten: set[str] = set()  # server records forgotten here (forget_server)
        self._seen: dict[str, int] = {}  # key → mod revision last applied or skipped
        self._event_keys: OrderedDict[str, float] = OrderedDict()  # etcd key → event time
        self._rev = 0  # the highest revision seen
        # re-reads of the prefix failed in a row (the watcher's), since when, whether logged
        self._resync_failures = 0
        self._resync_since = 0.0
        self._resync_logged = False
        self._replay_from: str | None = None  # origin node while applying a remote change
        # other nodes' changes of servers held while this node's reload is applied (in
        # order: key, value, revision, kind, name, body; quiesce.admin.reload_gate)
        self._holding = False
        self._held: deque[tuple[str, bytes | None, int, Kind, str, dict[str, Any] | None]]
        self._held = deque()
        self._last_event: Event | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._dropped = 0
        self.cluster = ClusterAgent(self, stale_after=stale_after, lease_ttl=lease_ttl)

    @property
    def endpoint(self) -> str:
        """The endpoint in use now."""
        return self.endpoints[self._endpoint]

    @property
    def replaying(self) -> bool:
        """Another node's change is being applied here (what it causes stays on this node)."""
        return self._replay_from is not None

    @property
    def held(self) -> int:
        """Other nodes' changes of servers waiting for this node's reload to be applied."""
        return len(self._held)

    @property
    def pending(self) -> int:
        """Writes queued and not yet acknowledged by etcd."""
        return len(self._queue)

    def _key(self, kind: Kind, name: str) -> str:
        section = next(s for s, k in _SECTIONS.items() if k == kind)
        return f"{self.prefix}{section}/{name}"

    def _value(self, value: object, **extra: object) -> bytes:
        body = {
            "node": self.node,
            "instance": self.instance,
            "time": round(time.time(), 3),
            "value": value,
            **extra,
        }
        return json.dumps(body, separators=(",", ":"), default=str).encode()

    # the connection -------------------------------------------------------------------------

    def _make_client(self, endpoint: str) -> Any:
        import aetcd

        host, _, port = endpoint.rpartition(":")
        kwargs: dict[str, Any] = {
            "host": host.strip("[]") or "127.0.0.1",
            "port": int(port),
            "username": self.username,
            "password": self.password,
            "timeout": self.timeout,
            "options": {
                "grpc.initial_reconnect_backoff_ms": 200,
                "grpc.max_reconnect_backoff_ms": 2000,
            },
        }
        if self.tls is None:
            return aetcd.Client(**kwargs)
        from quiesce.store.etcd.tls import TlsClient, credentials

        return TlsClient(credentials=credentials(*self.tls), **kwargs)

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

    def _on_kv(self, key: str, value: bytes | None, rev: int) -> None:
        """A key from the watch, a full read or a deferred remote value (the watcher's)."""
        raise NotImplementedError

    def _enqueue(self, key: str, value: bytes | None, base: int | None = None) -> Op:
        """Queue a write (the writer's)."""
        raise NotImplementedError

    def _apply_remote(self, kind: Kind, name: str, body: dict[str, Any] | None) -> None:
        """Apply a record as another node's change (the watcher's)."""
        raise NotImplementedError


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


def refusal(exc: BaseException, user: str | None, prefix: str) -> str | None:
    """What etcd's refusal of this node's credentials means, in the config's words, or None
    when the error is not about them."""
    text = str(exc)
    if any(w in text for w in ("SSL", "certificate", "handshake", "TSI_")):  # gRPC's TLS words
        return (
            f"the TLS handshake with etcd failed ({_why(exc)}): check state.etcd.tls (ca, and "
            "cert and key if etcd asks for a client certificate) and the endpoints' names"
        )
    if "user name is empty" in text:
        return "etcd requires authentication: set state.etcd.username and password"
    if "authentication failed" in text:
        return f"etcd refused user {user!r}: wrong state.etcd.username or password"
    if "permission denied" in text:
        return (
            f"etcd user {user!r} may not read and write {prefix}: grant its role readwrite on "
            "the prefix (docs/admin.md, 'etcd access')"
        )
    return None


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _quiet_close(client: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), 2.0)


__all__ = ["EtcdBase"]
