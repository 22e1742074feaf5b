"""The one internal command API: every front end (REST API, CLI, runtime socket, dashboard)
calls :class:`AdminService` and nothing else to change state (docs/architecture.md).

Theory of operation
-------------------
A command is resolved (``pool/server`` or a unique server name; an unknown one is a
:class:`NotFound` and an ``admin_refused`` event), turned into a core
:class:`~quiesce.core.admin.AdminCommand` and applied by the registry, which checks the
``min_servers_up`` guard, emits the events and hands close requests to the data plane. The
service adds what needs I/O:

- **persistence**: it listens to the registry, appends every event to the store (which gives
  it its id) and, from the same events, saves what changed: the server's admin record, a flag,
  a monitor definition, a pool's monitor list. Persisting from events rather than from the
  command methods means a change that reaches the registry any other way is saved too.
- **the timer**: one asyncio task sleeps until ``registry.next_due()`` (re-armed after every
  command, and at most :data:`MAX_SLEEP` so a wall-clock step is noticed) and calls
  ``registry.tick()``, which fires drain deadlines and expiries exactly once each.
- **the event bus** (:mod:`quiesce.admin.bus`): a bounded fan-out to live subscribers.
- **restart** (:meth:`AdminService.start`): persisted state is put back before anything is
  served; expiries and deadlines that passed while the process was down fire at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn

from pydantic import ValidationError

from quiesce.admin.bus import EventBus, Subscription
from quiesce.admin.context import CommandContext
from quiesce.config.loader import validation_problems
from quiesce.config.models import HealthMonitor, ServerConfig
from quiesce.core.admin import AdminCommand, AdminRecord, Transition, disable_command
from quiesce.core.clock import Clock
from quiesce.core.errors import GuardRefused, InvalidCommand, NotFound, QuiesceError
from quiesce.core.events import Event, EventKind, EventQuery
from quiesce.core.states import Admin, Cause, CloseMode, Oper
from quiesce.state.events import make_event
from quiesce.state.registry import Registry, ServerRuntime
from quiesce.state.reload import RuntimeOverrides
from quiesce.store.base import RemoteChange, SharedStore, StateStore

log = logging.getLogger("quiesce.admin")

MAX_SLEEP = 1.0
"""The timer never sleeps longer than this, so a wall-clock step delays a deadline by at most
this much."""
PRUNE_INTERVAL = 3600.0
WAIT_POLL = 0.05
"""``wait_drained`` polls the server's connection count this often (seconds)."""
STORE_ACTOR = "state-store"

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


class AdminService:
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
        self._removing_saved: set[str] = set()  # keys whose stored record says "removing"
        self._server_records: set[str] = set()  # keys with a stored server record
        # a reload applying many changes (batch()): health.sync() once at its end
        self._batching = False
        self._batch_monitors_changed = False
        self._sync_held = False  # holding_sync(): one health.sync() at its end

    # life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore persisted state, then persist every event, fire what is overdue and arm
        the timer. Call before any listener accepts: a server left in maintenance must not
        get a request after a restart."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self.bus.bind(self._loop)
        summary = self._restore()
        self.registry.listeners.insert(0, self._on_event)
        self._started = True
        if isinstance(self.store, SharedStore):  # several nodes share it (etcd)
            self.store.set_remote_handler(self._on_remote_change)
        self.registry.emit(
            make_event(
                self.clock,
                EventKind.STARTUP,
                cause=Cause.STARTUP,
                actor=STORE_ACTOR,
                reason="persisted state restored",
                detail=summary,
            )
        )
        self.registry.tick()  # expiries and deadlines that passed while we were down
        self._prune()
        self._timer = asyncio.create_task(self._run_timer(), name="quiesce admin timer")

    async def stop(self) -> None:
        """Stop the timer and end every subscription. The store is closed by its owner."""
        if not self._started:
            return
        self._started = False
        if isinstance(self.store, SharedStore):
            self.store.set_remote_handler(None)
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        with contextlib.suppress(ValueError):
            self.registry.listeners.remove(self._on_event)
        self.bus.close()

    # commands -------------------------------------------------------------------------------

    def maintenance(self, ref: str, ctx: CommandContext, *, force: bool = False) -> CommandResult:
        """``force`` closes every connection now; otherwise L7 closes each at its next request
        boundary and L4 lets them end."""
        cmd = _command(Admin.MAINTENANCE, ctx, force=force, expires=ctx.expires)
        return self._command(ref, cmd, ctx.force_guard)

    def drain(
        self, ref: str, ctx: CommandContext, *, timeout: float | None = None
    ) -> CommandResult:
        """``timeout`` None (or -1) = no deadline: the server stays draining, shown
        ``drained`` at 0 connections."""
        server = self._find(ref, Admin.DRAIN, ctx)
        deadline = None
        if timeout is not None and timeout != -1:
            if not timeout > 0:
                self._refuse_with(
                    server,
                    Admin.DRAIN,
                    ctx,
                    InvalidCommand(
                        f"a drain timeout must be above 0 (got {timeout:g}); "
                        "for an immediate stop use maintenance with force"
                    ),
                )
            deadline = self.clock.time() + timeout
        cmd = _command(Admin.DRAIN, ctx, deadline=deadline, expires=ctx.expires)
        return self._apply(server, cmd, ctx.force_guard)

    def disable(
        self,
        ref: str,
        ctx: CommandContext,
        *,
        graceful: bool = False,
        timeout: float | None = None,
    ) -> CommandResult:
        """Avi's three modes: immediate (``graceful=False``: maintenance with force);
        graceful with a timeout (drain with a deadline, then maintenance with force); graceful
        until all flows drain (``timeout=-1``: drain with no deadline). ``timeout`` None = the
        pool's ``graceful_disable_timeout``; 0 = immediate."""
        server = self._find(ref, Admin.MAINTENANCE, ctx)
        problem = None
        if timeout is not None and not graceful:
            problem = "a disable timeout needs graceful (an immediate disable has no timeout)"
        elif timeout is not None and timeout == float("inf"):
            timeout = -1.0
        elif timeout is not None and timeout < 0 and timeout != -1:
            problem = (
                f"a disable timeout is -1 (no timeout), 0 (immediate) or above; got {timeout:g}"
            )
        if problem is not None:
            target = Admin.DRAIN if graceful else Admin.MAINTENANCE
            self._refuse_with(server, target, ctx, InvalidCommand(problem))
        cmd = disable_command(
            actor=ctx.actor,
            reason=ctx.reason,
            cause=ctx.cause,
            now=self.clock.time(),
            graceful=graceful,
            timeout=timeout,
            pool_default=self.registry.pools[server.pool].config.graceful_disable_timeout,
            expires=ctx.expires,
        )
        return self._apply(server, cmd, ctx.force_guard)

    def enable(self, ref: str, ctx: CommandContext) -> CommandResult:
        return self._command(ref, _command(Admin.ENABLED, ctx), False)

    def clear(
        self, ref: str, state: Literal["maintenance", "drain"], ctx: CommandContext
    ) -> CommandResult:
        """MaxScale's ``clear server X maintenance|drain``: enable if in that state, else
        nothing changes (and the answer says so)."""
        server = self._find(ref, Admin.ENABLED, ctx)
        try:
            wanted = Admin(state)
            if wanted is Admin.ENABLED:
                raise ValueError(state)
        except ValueError:
            self._refuse_with(
                server,
                Admin.ENABLED,
                ctx,
                InvalidCommand(f"cannot clear {state!r}: use maintenance or drain"),
            )
        if server.admin.state is not wanted:
            now_state = _STATE_WORDS[server.admin.state]
            message = (
                f"{server.key} is not {_STATE_WORDS[wanted]} (it is {now_state}): nothing to clear"
            )
            self._emit_command(server, ctx, message, {"clear": state})
            return CommandResult(server, False, message, 0)
        return self._apply(server, _command(Admin.ENABLED, ctx), False)

    def set_weight(self, ref: str, weight: int, ctx: CommandContext) -> None:
        server = self._find(ref, Admin.ENABLED, ctx)
        old = server.weight
        try:
            self.registry.set_weight(server, weight)
        except QuiesceError as exc:
            self._refuse_with(server, server.admin.state, ctx, exc)
        self._emit_command(
            server,
            ctx,
            f"{server.key}: weight {old} → {weight}",
            {"weight": weight, "previous_weight": old},
        )

    def force_health(
        self, ref: str, oper: Oper, ctx: CommandContext, *, forced: str | None = None
    ) -> None:
        """Force the operational state as HAProxy's ``set server … health`` does: every monitor
        track of the server is set to ``oper`` (up or down), and the next check result moves
        it on from there. A server with no monitor is unchanged. ``forced`` is the word the
        operator typed (HAProxy's ``stopping`` is down), kept in the event's detail."""
        server = self._find(ref, None, ctx)
        if oper not in (Oper.UP, Oper.DOWN):
            raise InvalidCommand(f"health can be forced up or down, not {oper.value}")
        detail: dict[str, object] = {"actor": ctx.actor, "forced": forced or oper.value}
        self.registry.force_oper(server, oper, ctx.cause, detail, actor=ctx.actor)

    def set_health_checks(self, ref: str, enabled: bool, ctx: CommandContext) -> bool:
        """Health checks on or off for one server (HAProxy's ``enable|disable health``):
        while off, check results are ignored and the operational state stays as it is. Not
        persisted (HAProxy's is not either). An ``admin_command`` event; returns whether it
        changed."""
        server = self._find(ref, None, ctx)
        changed = self.registry.set_health_checks(server, enabled)
        word = "enabled" if enabled else "disabled"
        self._emit_command(
            server, ctx, f"{server.key}: health checks {word}", {"health_checks": enabled}
        )
        return changed

    def shutdown_sessions(self, ref: str, ctx: CommandContext) -> int:
        """Close every connection of the server now, whatever its state (HAProxy's ``shutdown
        sessions server``); returns how many there were. A ``connections_closed`` event."""
        server = self._find(ref, None, ctx)
        return self.registry.shutdown_sessions(
            server, cause=ctx.cause, actor=ctx.actor, reason=ctx.reason
        )

    def login_failed(self, actor: str, *, cause: Cause, reason: str, source: str, via: str) -> None:
        """Record a failed authentication (a ``login_failed`` event; the front end keeps the
        per-source rate limit)."""
        self.registry.emit(
            make_event(
                self.clock,
                EventKind.LOGIN_FAILED,
                cause=cause,
                actor=actor or None,
                reason=reason,
                detail={"source": source, "via": via},
            )
        )

    def set_flag(self, name: str, value: bool | str, ctx: CommandContext) -> None:
        if not _NAME.match(name):
            raise InvalidCommand(
                f"flag name {name!r}: use 1-128 letters, digits, '_', '.', ':' or '-'"
            )
        if not isinstance(value, bool | str):
            raise InvalidCommand("a flag value is true, false or a string")
        self.registry.set_flag(name, value, actor=ctx.actor, cause=ctx.cause, reason=ctx.reason)

    def clear_flag(self, name: str, ctx: CommandContext) -> None:
        self.registry.clear_flag(name, actor=ctx.actor, cause=ctx.cause, reason=ctx.reason)

    def put_monitor(self, name: str, monitor: HealthMonitor, ctx: CommandContext) -> bool:
        if not _NAME.match(name):
            raise InvalidCommand(
                f"monitor name {name!r}: use 1-128 letters, digits, '_', '.', ':' or '-'"
            )
        created = self.registry.put_monitor(name, monitor, actor=ctx.actor, cause=ctx.cause)
        self._monitors_changed()
        return created

    def delete_monitor(self, name: str, ctx: CommandContext) -> None:
        self.registry.delete_monitor(name, actor=ctx.actor, cause=ctx.cause)
        self._monitors_changed()

    def set_pool_monitors(self, pool: str, names: list[str], ctx: CommandContext) -> None:
        self.registry.set_pool_monitors(pool, list(names), actor=ctx.actor, cause=ctx.cause)
        self._monitors_changed()

    # servers added, changed and removed at runtime (issue 14) ---------------------------------

    def add_server(
        self, pool: str, config: ServerConfig, ctx: CommandContext, *, runtime: bool = True
    ) -> ServerRuntime:
        """Add ``config`` (validated by the caller as the config file's server model) to
        ``pool``: it starts ``unknown`` and the health manager starts checking it, or
        ``unmonitored`` when the pool has no monitor. A ``server_added`` event; persisted
        (``runtime`` False: a server of the config file, added by a reload, is not)."""
        try:
            server = self.registry.add_server(
                pool, config, actor=ctx.actor, cause=ctx.cause, reason=ctx.reason, runtime=runtime
            )
        except QuiesceError as exc:
            self._refuse_server(pool, config.name, ctx, exc, "add")
        self._monitors_changed()
        return server

    def update_server(
        self, ref: str, changes: dict[str, Any], ctx: CommandContext, *, runtime: bool = True
    ) -> tuple[ServerRuntime, dict[str, tuple[object, object]]]:
        """Change a server's ``address``, ``weight``, ``backup`` (any field of the config
        file's server but its name), validated as the config file is. A new address drains
        the old one: idle upstream connections are closed, busy ones after their response.
        A ``server_updated`` event when something changed; persisted."""
        server = self._find(ref, None, ctx)
        try:
            diff = self.registry.update_server(
                server,
                changes,
                actor=ctx.actor,
                cause=ctx.cause,
                reason=ctx.reason,
                runtime=runtime,
            )
        except ValidationError as exc:
            problems = InvalidCommand("; ".join(validation_problems(exc)), status_hint=422)
            self._refuse_server(server.pool, server.name, ctx, problems, "update")
        except QuiesceError as exc:
            self._refuse_server(server.pool, server.name, ctx, exc, "update")
        if diff.keys() & {"address", "healthmonitors"}:
            self._monitors_changed()
        return server, diff

    def remove_server(
        self,
        ref: str,
        ctx: CommandContext,
        *,
        drain: bool = False,
        timeout: float | None = None,
    ) -> CommandResult:
        """Delete a server. Without ``drain``: only one in maintenance, or draining with no
        connection left (HAProxy's ``del server``), else :class:`GuardRefused`. With
        ``drain``: deleted now if it may be, else drained first (a graceful disable:
        ``timeout`` None = the pool's ``graceful_disable_timeout``, -1 = none; the
        ``min_servers_up`` guard applies unless ``ctx.force_guard``), shown ``removing (N)``,
        and deleted at 0 connections or when the deadline has closed what was left.
        ``changed``: deleted now (False: removal pending)."""
        server = self._find(ref, None, ctx)
        why = self.registry.removable(server)
        if why is None:
            try:
                self.registry.remove_server(
                    server, actor=ctx.actor, cause=ctx.cause, reason=ctx.reason
                )
            except QuiesceError as exc:
                self._refuse_server(server.pool, server.name, ctx, exc, "remove")
            self._removals.pop(server, None)
            self._monitors_changed()
            return CommandResult(server, True, f"{server.key}: deleted", 0)
        if not drain:
            self._refuse_server(
                server.pool, server.name, ctx, GuardRefused(f"{server.key}: {why}"), "remove"
            )
        if server.removing:
            return CommandResult(
                server, False, f"{server.key} is already being removed: nothing changed", 0
            )
        self._removals[server] = ctx
        server.removing = True
        try:
            if server.admin.state is Admin.MAINTENANCE:
                message = f"{server.key}: removing once its {server.connections} connection(s) end"
                self._emit_command(server, ctx, message, {"removing": True})
                result = CommandResult(server, True, message, 0)
            else:
                result = self.disable(ref, ctx, graceful=True, timeout=timeout)
                result.message = f"{result.message}; deleted once drained"
        except BaseException:
            server.removing = False
            self._removals.pop(server, None)
            raise
        if server.removing and self.registry.removable(server) is None:  # deleted now
            rctx = self._removals.pop(server, None) or ctx
            self.registry.remove_server(
                server, actor=rctx.actor, cause=rctx.cause, reason=rctx.reason
            )
            self._monitors_changed()
        if not self.registry.pools[server.pool].has(server.name):
            return CommandResult(server, True, f"{server.key}: drained and deleted", 0)
        self._poke()
        return result

    def _finish_removals(self) -> bool:
        """Delete the servers being removed that may be now; True while some are left.
        Their pools are recomputed once at the end and the health manager synced once (a
        thousand servers drained by a reload are deleted with one recompute, not one
        each); not :meth:`batch`, whose poke would wake the timer that called this."""
        left = removed = False
        with self.registry.deferring():
            for pool in list(self.registry.pools.values()):
                for server in list(pool.servers):
                    if not server.removing:
                        continue
                    if self.registry.removable(server) is not None:
                        left = True
                        continue
                    ctx = self._removals.pop(server, None) or CommandContext(
                        STORE_ACTOR, Cause.STARTUP
                    )
                    self.registry.remove_server(
                        server, actor=ctx.actor, cause=ctx.cause, reason=ctx.reason
                    )
                    removed = True
        if removed:
            self._monitors_changed()
        for server in [s for s in self._removals if not s.removing]:
            del self._removals[server]  # enabled meanwhile: the removal is cancelled
        return left

    def _refuse_server(
        self, pool: str, name: str, ctx: CommandContext, exc: QuiesceError, what: str
    ) -> NoReturn:
        self.registry.emit(
            make_event(
                self.clock,
                EventKind.ADMIN_REFUSED,
                self.registry.pools.get(pool),
                server=name,
                cause=ctx.cause,
                actor=ctx.actor,
                reason=ctx.reason,
                detail={"error": exc.message, "command": f"{what} server"},
            )
        )
        raise exc

    # live reload (issue 14) -------------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Many changes at once (a reload): the pools are recomputed and the health manager
        synced once, at the end of the block, not after each change."""
        if self._batching:
            yield
            return
        self._batching, self._batch_monitors_changed = True, False
        try:
            with self.registry.deferring():
                yield
        finally:
            self._batching = False
            if self._batch_monitors_changed:
                self._monitors_changed()
            self._poke()

    @contextlib.contextmanager
    def holding_sync(self) -> Iterator[None]:
        """A whole reload (its batches, and the turns of the event loop between them): the
        health manager is synced once, at the end of the block, not after each batch (a
        sync looks at every server). New servers meanwhile wait ``unknown`` for their
        checks, which start at the end (a second at most)."""
        if self._sync_held:
            yield
            return
        self._sync_held = True
        try:
            yield
        finally:
            self._sync_held = False
            if self.on_monitors_changed is not None:
                self.on_monitors_changed()

    def overrides(self) -> RuntimeOverrides:
        """What the state store holds over the config file (it wins at a reload as at a
        start): servers added, changed or deleted at runtime, monitors, pool monitor lists
        and flags set at runtime, servers being removed."""
        store = self.store
        return RuntimeOverrides(
            servers=frozenset(
                k
                for k in self._server_records
                if k not in self._removing_saved or self._is_runtime(k)
            ),
            monitors=frozenset(store.load_monitors()) | frozenset(store.load_deleted_monitors()),
            pool_monitors=frozenset(store.load_pool_monitors()),
            flags=frozenset(store.load_flags()) | frozenset(store.load_cleared_flags()),
            removing=frozenset(s.key for s in self.registry.servers() if s.removing),
        )

    def _is_runtime(self, key: str) -> bool:
        try:
            return self.registry.find_server(key).runtime_defined
        except NotFound:
            return True  # a tombstone

    # events ---------------------------------------------------------------------------------

    def events(self, query: EventQuery | None = None) -> list[Event]:
        """The event log, oldest first, as ``query`` (built and validated by the front end)
        selects: by default the newest 100 events."""
        return self.store.list_events(query or EventQuery())

    def subscribe(self, after_id: int | None = None) -> Subscription:
        """Live events from now on (or, with ``after_id``, from the store after that id first).
        Open before reading history: nothing falls between the two. Close with ``aclose()``."""
        return self.bus.subscribe(after_id)

    async def wait_drained(
        self, ref: str, timeout: float | None = None, *, interval: float = WAIT_POLL
    ) -> AsyncIterator[int]:
        """Yield the server's live connection count now and whenever it changes; end after
        yielding 0. Raises TimeoutError after ``timeout`` seconds, and InvalidCommand if the
        server is (or becomes) enabled with connections left: it would never drain.

        The count is polled every ``interval`` (50 ms): the data plane keeps it as a plain
        counter, and a poll costs nothing next to a progress bar's refresh."""
        server = self.registry.find_server(ref)
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        last: int | None = None
        while True:
            n = server.connections
            if n != last:
                last = n
                yield n
            if n == 0:
                return
            if server.admin.state is Admin.ENABLED:
                raise InvalidCommand(
                    f"{server.key} is enabled with {n} connection(s): it will not drain"
                )
            delay = interval
            if end is not None:
                left = end - loop.time()
                if left <= 0:
                    raise TimeoutError(
                        f"{server.key} still has {n} connection(s) after {timeout:g}s"
                    )
                delay = min(interval, left)
            await asyncio.sleep(delay)

    # the timer ------------------------------------------------------------------------------

    def tick(self) -> list[Transition]:
        """Fire whatever is due now (the timer calls this; tests with a FakeClock too)."""
        fired = self.registry.tick()
        self._poke()
        return fired

    async def _run_timer(self) -> None:
        while True:
            self._rearm.clear()
            now = self.clock.time()
            if now >= self._next_prune:
                self._prune()
            due = self.registry.next_due()
            if due is not None and due <= now:
                if self.registry.tick():
                    continue
                delay = WAIT_POLL  # nothing fired (clock rounding): look again shortly
            else:
                delay = MAX_SLEEP if due is None else min(due - now, MAX_SLEEP)
            if self._finish_removals():
                delay = min(delay, WAIT_POLL)  # connection counts are polled, like wait_drained
            # Not asyncio.wait_for: on 3.11 it can swallow a cancel that races the wake-up.
            wake = asyncio.get_running_loop().call_later(delay, self._rearm.set)
            try:
                await self._rearm.wait()
            finally:
                wake.cancel()

    def _poke(self) -> None:
        if self._loop is None or threading.get_ident() == self._thread:
            self._rearm.set()
        else:
            self._loop.call_soon_threadsafe(self._rearm.set)

    def _prune(self) -> None:
        now = self.clock.time()
        self._next_prune = now + PRUNE_INTERVAL
        try:
            n = self.store.prune(now)
        except Exception:
            log.exception("pruning the event log failed")
            return
        if n:
            log.info("event log: pruned %d event(s) past the retention", n)

    # persistence ----------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        try:
            event = self.store.append_event(event)
        except Exception:
            log.exception("could not persist event %s", event.kind.value)
        try:
            self._persist_state(event)
        except Exception:
            log.exception("could not persist the state changed by event %s", event.kind.value)
        self.bus.publish(event)

    def _persist_state(self, event: Event) -> None:
        kind = event.kind
        if event.cause == Cause.CONFIG.value and kind in _FILE_KINDS:
            # A reload applying the config file: the file is its own record. Storing it
            # would make it a runtime change that wins over the next edit of the file.
            if kind is EventKind.SERVER_REMOVED:
                key = f"{event.pool}/{event.server}"
                self.store.delete_admin(key)
                if key in self._server_records:
                    self.store.forget_server(key)
                    self._server_records.discard(key)
                self._removing_saved.discard(key)
            return
        if kind in (EventKind.ADMIN_CHANGE, EventKind.ADMIN_COMMAND):
            if event.pool in self.registry.pools and event.server is not None:
                server = self.registry.pools[event.pool].server(event.server)
                self.store.save_admin(server.key, server.admin)
                if server.removing or server.key in self._removing_saved:
                    self._save_server(server)
        elif kind in (EventKind.SERVER_ADDED, EventKind.SERVER_UPDATED):
            if event.pool in self.registry.pools and event.server is not None:
                self._save_server(self.registry.pools[event.pool].server(event.server))
        elif kind is EventKind.SERVER_REMOVED:
            key = f"{event.pool}/{event.server}"
            self.store.save_server(key, None)
            self.store.delete_admin(key)
            self._removing_saved.discard(key)
            self._server_records.add(key)
        elif kind is EventKind.FLAG_CHANGE:
            name = str(event.detail.get("flag", ""))
            if name in self.registry.flags:
                self.store.save_flag(name, self.registry.flags[name])
            elif name:
                self.store.delete_flag(name)
        elif kind is EventKind.MONITOR_CHANGE:
            if event.pool is not None and event.pool in self.registry.pools:
                pool = self.registry.pools[event.pool]
                self.store.save_pool_monitors(pool.name, list(pool.pool_monitors))
            elif (name := str(event.detail.get("monitor", ""))) in self.registry.monitors:
                data = self.registry.monitors[name].model_dump(mode="json")
                self.store.save_monitor(name, data)
            elif name:
                self.store.delete_monitor(name)

    def _save_server(self, server: ServerRuntime) -> None:
        """The server's stored record: its definition when it was added or changed at
        runtime or is being removed (with who asked); none when the file's applies."""
        key = server.key
        if server.runtime_defined or server.removing:
            data: dict[str, Any] = server.config.model_dump(mode="json")
            if server.removing:
                ctx = self._removals.get(server) or CommandContext(STORE_ACTOR, Cause.STARTUP)
                data["removing"] = {
                    "actor": ctx.actor,
                    "cause": ctx.cause.value,
                    "reason": ctx.reason,
                }
                self._removing_saved.add(key)
            else:
                self._removing_saved.discard(key)
            self.store.save_server(key, data)
            self._server_records.add(key)
        elif key in self._server_records:
            self.store.forget_server(key)
            self._server_records.discard(key)
            self._removing_saved.discard(key)

    def _restore_servers(self, ignore: Callable[[str], None]) -> dict[str, int]:
        """Servers added, changed or deleted at runtime, over the config file's: a stored
        definition wins, a tombstone deletes the file's server."""
        reg = self.registry
        counts = {"added": 0, "changed": 0, "deleted": 0}
        for key, data in self.store.load_servers().items():
            self._server_records.add(key)
            pool_name, _, name = key.partition("/")
            pool = reg.pools.get(pool_name)
            if pool is None:
                ignore(f"server {key} ignored: no pool {pool_name!r} in the config")
                continue
            existing = next((s for s in pool.servers if s.name == name), None)
            if data is None:
                if existing is not None:
                    reg.remove_server(existing, actor=STORE_ACTOR, cause=Cause.STARTUP, emit=False)
                    counts["deleted"] += 1
                continue
            data = dict(data)
            removing = data.pop("removing", None)
            try:
                config = ServerConfig.model_validate({**data, "name": name})
                if existing is None:
                    server = reg.add_server(
                        pool_name, config, actor=STORE_ACTOR, cause=Cause.STARTUP, emit=False
                    )
                    counts["added"] += 1
                else:
                    server = existing
                    changes = config.model_dump(exclude={"name"})
                    if reg.update_server(
                        server, changes, actor=STORE_ACTOR, cause=Cause.STARTUP, emit=False
                    ):
                        counts["changed"] += 1
                    server.runtime_defined = True
            except (ValidationError, QuiesceError) as exc:
                ignore(f"server {key} not restored: {exc}")
                continue
            if isinstance(removing, dict):
                server.removing = True
                self._removing_saved.add(key)
                try:
                    cause = Cause(str(removing.get("cause")))
                except ValueError:
                    cause = Cause.STARTUP
                self._removals[server] = CommandContext(
                    str(removing.get("actor") or STORE_ACTOR),
                    cause,
                    str(removing.get("reason") or ""),
                )
        return counts

    def _on_remote_change(self, change: RemoteChange) -> None:
        """A change another node wrote to the shared store (etcd), applied here through the
        registry: eligibility, events and connection closing happen on this node too. The
        store keeps what this causes from being written back (no write loop); it logs what
        raises here (an unknown server, a monitor still attached here)."""
        reg = self.registry
        actor = change.actor or f"node {change.node}"
        try:
            cause = Cause(change.cause or "")
        except ValueError:
            cause = Cause.API
        name, value = change.name, change.value
        if change.kind == "event":
            self.bus.publish(value)
        elif change.kind == "admin":
            if value is not None:
                server = reg.find_server(name)
                if reg.apply_replicated_admin(server, _sane(value), change.close, node=change.node):
                    self._poke()
        elif change.kind == "flag":
            if value is None:
                if name in reg.flags:
                    reg.clear_flag(name, actor=actor, cause=cause, reason=change.reason)
            elif reg.flags.get(name) != value or type(reg.flags.get(name)) is not type(value):
                reg.set_flag(name, value, actor=actor, cause=cause, reason=change.reason)
        elif change.kind == "monitor":
            if value is None:
                if name in reg.monitors:
                    reg.delete_monitor(name, actor=actor, cause=cause)
                    self._monitors_changed()
            else:
                monitor = HealthMonitor.model_validate(value)
                if reg.monitors.get(name) != monitor:
                    reg.put_monitor(name, monitor, actor=actor, cause=cause)
                    self._monitors_changed()
        elif change.kind == "server":
            self._apply_remote_server(name, value, CommandContext(actor, cause, change.reason))
        elif change.kind == "pool_monitors" and reg.pool(name).pool_monitors != value:
            reg.set_pool_monitors(name, list(value), actor=actor, cause=cause)
            self._monitors_changed()

    def _apply_remote_server(
        self, key: str, value: dict[str, Any] | None, ctx: CommandContext
    ) -> None:
        """A server another node added, changed or deleted: the same here (a deletion waits
        for this node's connections to the server to end)."""
        pool_name, _, name = key.partition("/")
        pool = self.registry.pool(pool_name)
        existing = next((s for s in pool.servers if s.name == name), None)
        if value is None:
            if existing is not None and not existing.removing:
                self._removals[existing] = ctx
                existing.removing = True
                self._poke()
            return
        data = dict(value)
        removing = data.pop("removing", None)
        config = ServerConfig.model_validate({**data, "name": name})
        if existing is None:
            existing = self.registry.add_server(
                pool_name, config, actor=ctx.actor, cause=ctx.cause, reason=ctx.reason
            )
        else:
            self.registry.update_server(
                existing,
                config.model_dump(exclude={"name"}),
                actor=ctx.actor,
                cause=ctx.cause,
                reason=ctx.reason,
            )
        if removing and not existing.removing:
            self._removals[existing] = ctx
            existing.removing = True
            self._poke()
        self._monitors_changed()

    def _history(self, after_id: int, limit: int) -> list[Event]:
        return self.store.list_events(EventQuery(after_id=after_id, limit=limit))

    def _restore(self) -> dict[str, object]:
        """Put persisted state back into the registry (before our listener is attached, so
        restoring is not itself logged as changes; the startup event summarises it)."""
        reg, store = self.registry, self.store
        ignored: list[str] = []
        monitors_changed = False

        def ignore(what: str) -> None:
            log.warning("state store: %s", what)
            ignored.append(what)

        restored_monitors = 0
        for name, data in store.load_monitors().items():
            try:
                monitor = HealthMonitor.model_validate(data)
            except ValidationError as exc:
                ignore(f"monitor {name!r} no longer validates, config definition kept: {exc}")
                continue
            if reg.monitors.get(name) != monitor:
                reg.put_monitor(name, monitor, actor=STORE_ACTOR, cause=Cause.STARTUP)
                monitors_changed = True
            restored_monitors += 1
        restored_pools = 0
        servers = self._restore_servers(ignore)
        if any(servers.values()):
            monitors_changed = True
        for pool_name, names in store.load_pool_monitors().items():
            if pool_name not in reg.pools:
                ignore(f"monitors of pool {pool_name!r} ignored: no such pool in the config")
                continue
            if reg.pools[pool_name].pool_monitors == names:
                continue
            try:
                reg.set_pool_monitors(pool_name, names, actor=STORE_ACTOR, cause=Cause.STARTUP)
            except QuiesceError as exc:
                ignore(f"monitors of pool {pool_name!r} not restored: {exc.message}")
                continue
            monitors_changed = True
            restored_pools += 1
        for name in store.load_deleted_monitors():
            if name in reg.monitors:
                try:
                    reg.delete_monitor(name, actor=STORE_ACTOR, cause=Cause.STARTUP)
                    monitors_changed = True
                except GuardRefused as exc:
                    ignore(f"deleted monitor {name!r} kept: {exc.message}")
        for name in store.load_cleared_flags():
            if name in reg.flags:
                reg.clear_flag(name, actor=STORE_ACTOR, cause=Cause.STARTUP)
        flags = store.load_flags()
        for name, value in flags.items():
            if reg.flags.get(name) != value or type(reg.flags.get(name)) is not type(value):
                reg.set_flag(name, value, actor=STORE_ACTOR, cause=Cause.STARTUP)
        restored_admin: dict[str, str] = {}
        for key, record in store.load_admin().items():
            try:
                server = reg.find_server(key)
            except NotFound:
                ignore(f"admin state of {key} ({record.state.value}) forgotten: no such server")
                store.delete_admin(key)
                continue
            reg.restore_admin(server, _sane(record))
            if record.state is not Admin.ENABLED:
                restored_admin[key] = record.state.value
        if monitors_changed:
            self._monitors_changed()
        return {
            "admin": restored_admin,
            "flags": sorted(flags),
            "monitors": restored_monitors,
            "pool_monitors": restored_pools,
            "servers": servers,
            "ignored": ignored,
        }

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

    def _apply(self, server: ServerRuntime, cmd: AdminCommand, force_guard: bool) -> CommandResult:
        before = server.connections
        t = self.registry.admin_command(server, cmd, force_guard=force_guard)
        self._poke()
        closed = before if t.close is CloseMode.ALL else 0
        return CommandResult(server, t.changed, self._message(server, t, closed), closed)

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
            extra.append(f"{server.connections} connection(s) close at their next request boundary")
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


_FILE_KINDS = frozenset(
    {
        EventKind.SERVER_ADDED,
        EventKind.SERVER_UPDATED,
        EventKind.SERVER_REMOVED,
        EventKind.FLAG_CHANGE,
        EventKind.MONITOR_CHANGE,
    }
)
"""Events a reload (cause ``config``) emits for changes of the file, not stored as runtime
changes."""


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


__all__ = ["AdminService", "CommandContext", "CommandResult"]
