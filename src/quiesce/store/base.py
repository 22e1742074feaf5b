"""The state-store interface: what survives a restart of the balancer (DESIGN §1, §2).

A store holds four kinds of runtime state, each keyed so that the config file stays the source
of pools and servers: admin records (``pool/server``), runtime flags, runtime monitor
definitions and pool monitor attachments, plus the event log. Writes are synchronous and small;
an implementation must make each one durable against a crash of the process (``kill -9``)
before it returns.

Deletions of flags and monitors are remembered as tombstones (``load_cleared_flags``,
``load_deleted_monitors``) so that a flag or monitor that also exists in the config file stays
cleared or deleted after a restart, as the operator left it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from quiesce.core.admin import AdminRecord
from quiesce.core.errors import QuiesceError
from quiesce.core.events import Event, EventQuery
from quiesce.core.states import CloseMode


class StoreError(QuiesceError):
    """The state store cannot be opened or used (bad path, not a quiesce database, ...)."""

    status_hint = 503


class ConflictError(QuiesceError):
    """A write to the shared store lost to a newer change another node made first (etcd's
    compare-and-swap on the revision this node had seen): the change was not applied.
    ``current``: the record as it is now (node, actor, reason, time, revision, value)."""

    status_hint = 409

    def __init__(self, message: str, current: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.current = current or {}


class StateStore(Protocol):
    async def open(self) -> None:
        """Called once before the admin service restores state: connect, read (a shared store
        reads the cluster's state here). Raises :class:`StoreError` when it cannot."""
        ...

    async def aclose(self) -> None:
        """Called once at the end: write what is queued, then release everything."""
        ...

    def load_admin(self) -> dict[str, AdminRecord]:
        """Every persisted admin record, by ``pool/server``."""
        ...

    def save_admin(self, key: str, record: AdminRecord) -> None: ...

    def delete_admin(self, key: str) -> None: ...

    def load_flags(self) -> dict[str, bool | str]: ...

    def load_cleared_flags(self) -> set[str]:
        """Flags cleared at runtime (tombstones)."""
        ...

    def save_flag(self, name: str, value: bool | str) -> None: ...

    def delete_flag(self, name: str) -> None: ...

    def load_monitors(self) -> dict[str, dict[str, Any]]:
        """Runtime monitor definitions, as ``HealthMonitor.model_dump(mode="json")``."""
        ...

    def load_deleted_monitors(self) -> set[str]:
        """Monitors deleted at runtime (tombstones)."""
        ...

    def save_monitor(self, name: str, data: dict[str, Any]) -> None: ...

    def delete_monitor(self, name: str) -> None: ...

    def load_pool_monitors(self) -> dict[str, list[str]]: ...

    def save_pool_monitors(self, pool: str, names: list[str]) -> None: ...

    def load_servers(self) -> dict[str, dict[str, Any] | None]:
        """Server definitions added or changed at runtime, by ``pool/server``, in the order
        they were first written (``ServerConfig.model_dump(mode="json")`` plus ``removing``);
        None: deleted at runtime (a tombstone, even if the config file defines it)."""
        ...

    def save_server(self, key: str, data: dict[str, Any] | None) -> None:
        """Store a server's definition, or None: its tombstone."""
        ...

    def forget_server(self, key: str) -> None:
        """Drop the record: the config file's definition applies again."""
        ...

    def append_event(self, event: Event) -> Event:
        """Persist one event; returns it with its id (ids increase with every append)."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """A block whose writes are made durable together when it ends, or not at all if
        the process dies before (a live reload's writes: one SQLite transaction). A store
        may make it a no-op (etcd writes in order in the background anyway)."""
        ...

    def list_events(self, query: EventQuery) -> list[Event]:
        """The events ``query`` selects, oldest first: with ``after_id`` the first ``limit``
        after it, without the newest ``limit``; ``since <= time < until``."""
        ...

    def prune(self, now: float) -> int:
        """Apply the retention (rows and age); returns the number of events deleted."""
        ...

    def close(self) -> None:
        """Release at once, without waiting for the network (tests, errors)."""
        ...


Kind = Literal["admin", "flag", "monitor", "pool_monitors", "server", "event"]


@dataclass(frozen=True)
class RemoteChange:
    """A change another node wrote to the shared store, for this node to apply.

    ``value``: an :class:`AdminRecord` (None: the record was deleted); a flag value (None:
    cleared); a monitor definition as a dict (None: deleted); a pool's monitor names; or, for
    ``kind == "event"``, the :class:`Event` as stored in this node's log."""

    kind: Kind
    name: str  # pool/server, flag, monitor or pool; the etcd key of an event
    value: Any
    node: str
    actor: str = ""
    reason: str = ""
    cause: str | None = None
    close: CloseMode = CloseMode.NONE


RemoteHandler = Callable[[RemoteChange], None]


@runtime_checkable
class SharedStore(StateStore, Protocol):
    """A store several nodes share (etcd): what only such a store has. The admin service
    applies the changes other nodes write through the handler it sets here."""

    connected: bool
    """Whether the link to the shared store is up now (a node that cannot see it says so)."""

    def set_remote_handler(self, handler: RemoteHandler | None) -> None:
        """Who applies the changes other nodes write (the admin service), or None."""
        ...

    def drop_admin(self, key: str) -> None:
        """The admin record of a server deleted on every node (its tombstone written first)
        deleted from the shared store too; :meth:`delete_admin` forgets it here only (a node
        whose config lacks the server must not erase the record the others use)."""
        ...

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued write reached the shared store; False on timeout."""
        ...

    @property
    def pending(self) -> int:
        """Writes queued and not yet acknowledged."""
        ...

    def mark(self) -> int:
        """The sequence number of the last write queued: :meth:`confirm` waits for the
        writes after it."""
        ...

    async def confirm(self, mark: int, timeout: float | None = None) -> None:
        """Wait until every write queued after ``mark`` is in the shared store. Raises
        :class:`ConflictError` when one lost to another node's newer change,
        :class:`StoreError` when not confirmed within ``timeout``."""
        ...


__all__ = [
    "Kind",
    "RemoteChange",
    "RemoteHandler",
    "SharedStore",
    "StateStore",
    "StoreError",
]
