"""What every part of :class:`~quiesce.admin.AdminService` shares: its state (one
``__init__``), the result of a command, and the helpers that find a server, refuse a command
with an ``admin_refused`` event, apply a core command and word its answer, wake the timer and
tell the health manager that monitors changed.

The service is assembled from parts, one module each, all subclasses of :class:`ServiceBase`:
:mod:`~quiesce.admin.commands` (admin state, weight, health, flags, monitors),
:mod:`~quiesce.admin.servers` (servers added, changed and removed at runtime; a reload's
batches), :mod:`~quiesce.admin.persist` (restore at start, save from events),
:mod:`~quiesce.admin.remote` (changes other nodes wrote to a shared store) and
:mod:`~quiesce.admin.service` (life cycle, the timer, the event log and bus).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

from quiesce.admin.bus import EventBus
from quiesce.admin.context import CommandContext
from quiesce.core.admin import AdminCommand, AdminRecord, Transition
from quiesce.core.clock import Clock
from quiesce.core.errors import NotFound, QuiesceError
from quiesce.core.events import Event, EventKind, EventQuery
from quiesce.core.states import Admin, Cause, CloseMode
from quiesce.state.events import make_event
from quiesce.state.registry import Registry, ServerRuntime
from quiesce.state.sessions import OPAQUE, session_counts
from quiesce.store.base import SharedStore, StateStore, StoreError

log = logging.getLogger("quiesce.admin")

STORE_ACTOR = "state-store"
"""The actor of what the state store puts back (at a start, or a removal nobody is known to
have asked for)."""

_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}\Z")  # \Z: "$" also matches before a final "\n"
_STATE_WORDS = {
    Admin.ENABLED: "enabled",
    Admin.DRAIN: "draining",
    Admin.MAINTENANCE: "in maintenance",
}


@dataclass
class CommandResult:
    server: ServerRuntime
    changed: bool  # False for idempotent commands ("already in maintenance")
    message: str
    closed: int  # connections closed now by this command
    # the command's transition, when its words were not made (``_apply(words=False)``)
    transition: Transition | None = None


class ServiceBase:
    """The state of :class:`~quiesce.admin.AdminService` and the helpers its parts share."""

    def __init__(
        self,
        registry: Registry,
        store: StateStore,
        clock: Clock | None = None,
        on_monitors_changed: Callable[[], None] | None = None,
        *,
        subscriber_queue: int = 1000,
    ) -> None:
        self.registry = registry
        self.store = store
        self.clock: Clock = clock or registry.clock
        self.on_monitors_changed = on_monitors_changed
        self.bus = EventBus(self._history, subscriber_queue)
        self._timer: asyncio.Task[None] | None = None
        self._rearm = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._next_prune = 0.0
        self._started = False
        # drain-then-delete (issue 14): who asked, for the server_removed event
        self._removals: dict[ServerRuntime, CommandContext] = {}
        self.removals_cut = False  # the last _finish_removals stopped at its budget
        # the admin record each had when its removal began (put back if it is cancelled)
        self._before_removal: dict[ServerRuntime, AdminRecord] = {}
        self._removing_saved: set[str] = set()  # keys whose stored record says "removing"
        self._server_records: set[str] = set()  # keys with a stored server record
        self._file_index: dict[str, Any] = {}  # persist.Persistence._in_file
        # a reload applying many changes (batch()): health.sync() once at its end
        self._batching = False
        self._batch_monitors_changed = False
        self._sync_held = False  # holding_sync(): one health.sync() at its end
        # remove_server(drain=True) of a server with no connection: its drain is deleted in
        # the same call, so the drain's record is not written (servers.py); the event whose
        # writes were skipped, replayed if the server is not deleted after all
        self._unwritten: ServerRuntime | None = None
        self._unwritten_event: Event | None = None
        # a store other nodes read (etcd): they drain a server by its admin record before
        # they delete it, so every write of a drain is made there
        self._shared_store = isinstance(store, SharedStore)

    def _history(self, after_id: int, limit: int) -> list[Event]:
        return self.store.list_events(EventQuery(after_id=after_id, limit=limit))

    def _persist_state(self, event: Event) -> None:
        """Save what ``event`` changed in the state store (:mod:`~quiesce.admin.persist`)."""
        raise NotImplementedError

    def _poke(self) -> None:
        if self._loop is None or threading.get_ident() == self._thread:
            self._rearm.set()
        else:
            self._loop.call_soon_threadsafe(self._rearm.set)

    # helpers --------------------------------------------------------------------------------

    def _monitors_changed(self) -> None:
        if self._sync_held:
            return  # synced at the end of holding_sync()
        if self._batching:
            self._batch_monitors_changed = True
            return
        if self.on_monitors_changed is not None:
            self.on_monitors_changed()

    def _command(self, ref: str, cmd: AdminCommand, force_guard: bool) -> CommandResult:
        server = self._find(ref, cmd.target, CommandContext(cmd.actor, cmd.cause, cmd.reason))
        return self._apply(server, cmd, force_guard)

    def _apply(
        self, server: ServerRuntime, cmd: AdminCommand, force_guard: bool, *, words: bool = True
    ) -> CommandResult:
        """``words`` False: the answer's message is not made (empty; its ``transition`` kept
        for whoever needs it after all): a caller that answers in its own words."""
        before = server.connections
        ctx = CommandContext(cmd.actor, cmd.cause, cmd.reason)
        self._cluster_guard(server, cmd, ctx, force_guard)
        t = self.registry.admin_command(server, cmd, force_guard=force_guard)
        self._poke()
        closed = before if t.close is CloseMode.ALL else 0
        if not words:
            return CommandResult(server, t.changed, "", closed, t)
        return CommandResult(server, t.changed, self._message(server, t, closed), closed)

    def _cluster_guard(
        self, server: ServerRuntime, cmd: AdminCommand, ctx: CommandContext, force: bool
    ) -> None:
        """``min_servers_up`` against the other nodes' views (a shared store: remote.py)."""

    def _message(self, server: ServerRuntime, t: Transition, closed: int) -> str:
        rec = t.after
        if t.changed or rec != t.before:
            text = f"{server.key}: {t.message}"
        else:
            text = f"{server.key} is already {_STATE_WORDS[rec.state]}: nothing changed"
        extra = []
        if closed:
            extra.append(f"{closed} connection(s) closed")
        elif t.close is CloseMode.AT_BOUNDARY and server.connections:
            extra.extend(_boundary_words(server))
        if rec.state is Admin.DRAIN and (t.changed or rec != t.before):
            if rec.deadline is not None:
                extra.append(f"remaining connections closed at {_iso(rec.deadline)}")
            else:
                extra.append("no deadline")
        if rec.expires is not None and (t.changed or rec != t.before):
            extra.append(f"back to enabled at {_iso(rec.expires)}")
        return "; ".join([text, *extra])

    def _find(self, ref: str, target: Admin | None, ctx: CommandContext) -> ServerRuntime:
        try:
            return self.registry.find_server(ref)
        except NotFound as exc:
            pool, _, name = ref.partition("/") if "/" in ref else (None, "", ref)
            self.registry.emit(
                make_event(
                    self.clock,
                    EventKind.ADMIN_REFUSED,
                    pool if pool in self.registry.pools else None,
                    server=name,
                    to=None if target is None else target,
                    cause=ctx.cause,
                    actor=ctx.actor,
                    reason=ctx.reason,
                    detail={"error": exc.message, "ref": ref},
                )
            )
            raise

    def _refuse_with(
        self,
        server: ServerRuntime,
        target: Admin,
        ctx: CommandContext,
        exc: QuiesceError,
    ) -> NoReturn:
        pool = self.registry.pools[server.pool]
        self.registry.emit(
            make_event(
                self.clock,
                EventKind.ADMIN_REFUSED,
                pool,
                server=server.name,
                from_=server.admin.state,
                to=target,
                cause=ctx.cause,
                actor=ctx.actor,
                reason=ctx.reason,
                detail={"error": exc.message},
            )
        )
        raise exc

    def _emit_command(
        self,
        server: ServerRuntime,
        ctx: CommandContext,
        message: str,
        detail: dict[str, object],
    ) -> None:
        pool = self.registry.pools[server.pool]
        state = server.admin.state.value
        self.registry.emit(
            make_event(
                self.clock,
                EventKind.ADMIN_COMMAND,
                pool,
                server=server.name,
                from_=state,
                to=state,
                cause=ctx.cause,
                actor=ctx.actor,
                reason=ctx.reason,
                detail={"message": message, **detail},
            )
        )


_F = TypeVar("_F", bound=Callable[..., Any])


def shared(method: _F) -> _F:
    """A command that changes state the nodes share: refused with a 503 (:class:`StoreError`)
    while this node's link to the shared store is not up, unless its context says ``local``;
    then it is applied here, its events marked ``detail.local``. No-op on a local store."""

    @functools.wraps(method)
    def guarded(self: ServiceBase, *args: Any, **kwargs: Any) -> Any:
        cluster = getattr(self.store, "cluster", None)
        if cluster is None:
            return method(self, *args, **kwargs)
        ctx = next(a for a in (*args, *kwargs.values()) if isinstance(a, CommandContext))
        link = cluster.link
        state = link.state(cluster.clock())
        if state == "up" or ctx.cause is Cause.CONFIG:  # a reload applies this node's file
            return method(self, *args, **kwargs)
        if not ctx.local:
            why = link.error or f"no answer for {link.lag(cluster.clock()):.1f} s"
            raise StoreError(
                f"the shared store (etcd {cluster.store.endpoint}) is {state} ({why}): this "
                "change would not reach the other nodes; retry when it is back, or make it on "
                "this node only with --local (API: ?local=true; runtime socket: local <command>)"
            )
        with cluster.local_changes():
            return method(self, *args, **kwargs)

    return guarded  # type: ignore[return-value]


def _command(target: Admin, ctx: CommandContext, **kw: Any) -> AdminCommand:
    return AdminCommand(target, ctx.actor, ctx.reason, ctx.cause, **kw)


def _sane(record: AdminRecord) -> AdminRecord:
    """A persisted record as the state machine would have left it (an enabled server has no
    expiry, only a drain has a deadline), so a hand-edited file cannot wedge the timer."""
    if record.state is Admin.ENABLED and record.expires is not None:
        record = replace(record, expires=None)
    if record.state is not Admin.DRAIN and record.deadline is not None:
        record = replace(record, deadline=None)
    return record


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _boundary_words(server: ServerRuntime) -> list[str]:
    """What a maintenance does to the server's open connections, said per kind: HTTP/TCP
    connections at their next request boundary, database sessions (``postgresql``/``mysql``)
    at their transaction boundary, and the TLS sessions a mysql relay cannot follow drained
    at connection level (never closed by it: ``show server`` counts them ``tls``)."""
    sessions = session_counts(server)
    if sessions is None:
        return [f"{server.connections} connection(s) close at their next request boundary"]
    tls = sessions.get(OPAQUE, 0)
    followed = max(0, server.connections - tls)
    out = []
    if followed:
        out.append(f"{followed} session(s) close at their transaction boundary (idle ones now)")
    if tls:
        out.append(f"{tls} TLS session(s) drained at connection level (not closed by quiesce)")
    return out
