"""Servers added, changed and removed at runtime (issue 14; drain-then-delete), and a
reload's batches: many changes with one recompute and one health-manager sync. Part of
:class:`~quiesce.admin.AdminService`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from pydantic import ValidationError

from quiesce.admin.base import STORE_ACTOR, CommandResult, log, shared
from quiesce.admin.commands import StateCommands
from quiesce.admin.context import CommandContext
from quiesce.admin.reload_gate import RELOADING
from quiesce.config.loader import validation_problems
from quiesce.config.models import ServerConfig
from quiesce.core.admin import Transition
from quiesce.core.errors import GuardRefused, InvalidCommand, NotFound, QuiesceError
from quiesce.core.events import Event, EventKind
from quiesce.core.states import Admin, Cause, CloseMode
from quiesce.state.events import make_event
from quiesce.state.registry import ServerRuntime
from quiesce.state.reload import RuntimeOverrides


class ServerCommands(StateCommands):
    # a reload is being applied (quiesce.admin.reload_gate): a runtime add, change or removal
    # of a server now is refused (503), nothing changed: the reload's plan would not see it
    # (review 14 R12, R13). The front ends wait for the reload's end before they call.
    reload_applying = False

    # set by the App: refuses a runtime add the connection budget cannot hold (a 409 naming
    # the limit; quiesce.app.budget.admit, review 14 R14); returns a warning for the answer
    # when the add cut a derived client limit far (review 90 F14)
    admit_server: Callable[[str, ServerConfig], str | None] | None = None
    add_warning: str | None = None  # the last add_server's (read by the front end at once)

    @shared
    def add_server(
        self, pool: str, config: ServerConfig, ctx: CommandContext, *, runtime: bool = True
    ) -> ServerRuntime:
        """Add ``config`` (validated by the caller as the config file's server model) to
        ``pool``: it starts ``unknown`` and the health manager starts checking it, or
        ``unmonitored`` when the pool has no monitor. A ``server_added`` event; persisted
        (``runtime`` False: a server of the config file, added by a reload, is not)."""
        self._not_reloading(pool, config.name, ctx, "add")
        self.add_warning = None
        try:
            if (
                runtime
                and self.admit_server is not None
                and not self.registry.pool(pool).has(config.name)
            ):
                self.add_warning = self.admit_server(pool, config)
            server = self.registry.add_server(
                pool, config, actor=ctx.actor, cause=ctx.cause, reason=ctx.reason, runtime=runtime
            )
        except QuiesceError as exc:
            self._refuse_server(pool, config.name, ctx, exc, "add")
        self._monitors_changed()
        if runtime:
            _log_change(ctx, "added", server.key, _what(config.model_dump(exclude={"name"})))
        return server

    @shared
    def update_server(
        self, ref: str, changes: dict[str, Any], ctx: CommandContext, *, runtime: bool = True
    ) -> tuple[ServerRuntime, dict[str, tuple[object, object]]]:
        """Change a server's ``address``, ``weight``, ``backup`` (any field of the config
        file's server but its name), validated as the config file is. A new address drains
        the old one: idle upstream connections are closed, busy ones after their response.
        A ``server_updated`` event when something changed; persisted."""
        server = self._find(ref, None, ctx)
        self._not_reloading(server.pool, server.name, ctx, "update")
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
        if runtime and diff:
            what = ", ".join(f"{k} {_word(a)} -> {_word(b)}" for k, (a, b) in diff.items())
            _log_change(ctx, "changed", server.key, what)
        return server, diff

    @shared
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
        self._not_reloading(server.pool, server.name, ctx, "remove")
        why = self.registry.removable(server)
        if why is None:
            try:
                self.registry.remove_server(
                    server, actor=ctx.actor, cause=ctx.cause, reason=ctx.reason
                )
            except QuiesceError as exc:
                self._refuse_server(server.pool, server.name, ctx, exc, "remove")
            self._removals.pop(server, None)
            self._before_removal.pop(server, None)
            self._monitors_changed()
            _log_change(ctx, "deleted", server.key, server.address)
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
        self._before_removal.setdefault(server, server.admin)
        server.removing = True
        # No connection: drained and deleted below, in this call. The drain's writes (the
        # admin record, the "removing" definition) would be undone by the deletion's, queued
        # right after them (a reload's: in its one transaction): not made (a drained removal
        # by a reload writes 3 rows a server instead of 6), nor the drain's answer worded.
        # Not on a shared store, but for a reload's (the other nodes drain the server by
        # those writes; a reload's are this node's alone and not written: review 90 F1).
        quick = server.connections == 0 and (not self._shared_store or ctx.cause is Cause.CONFIG)
        self._unwritten, self._unwritten_event = (server if quick else None), None
        try:
            try:
                if server.admin.state is Admin.MAINTENANCE:
                    message = (
                        f"{server.key}: removing once its {server.connections} connection(s) end"
                    )
                    self._emit_command(server, ctx, message, {"removing": True})
                    result = CommandResult(server, True, message, 0)
                else:
                    result = self._disable(server, ctx, True, timeout, words=not quick)
                    if not quick:
                        result.message = f"{result.message}; deleted once drained"
            except BaseException:
                server.removing = False
                self._removals.pop(server, None)
                self._before_removal.pop(server, None)
                raise
            if server.removing and self.registry.removable(server) is None:  # deleted now
                self._unwritten = None
                rctx = self._removals.pop(server, None) or ctx
                self._before_removal.pop(server, None)  # kept every deleted server alive
                self.registry.remove_server(
                    server, actor=rctx.actor, cause=rctx.cause, reason=rctx.reason
                )
                self._monitors_changed()
                _log_change(rctx, "deleted", server.key, server.address)
        finally:
            self._unwritten, skipped, self._unwritten_event = None, self._unwritten_event, None
            if skipped is not None and self.registry.pools[server.pool].has(server.name):
                super()._persist_state(skipped)  # not deleted after all: written now
        if not self.registry.pools[server.pool].has(server.name):
            return CommandResult(server, True, f"{server.key}: drained and deleted", 0)
        if result.transition is not None:  # its words were not made above
            words = self._message(server, result.transition, result.closed)
            result.message = f"{words}; deleted once drained"
        self._poke()
        return result

    def _persist_state(self, event: Event) -> None:
        """What ``event`` changed, saved (:mod:`~quiesce.admin.persist`), but the drain of a
        server :meth:`remove_server` deletes in the same call (kept, to be written if the
        server is not deleted after all)."""
        server = self._unwritten
        if (
            server is not None
            and event.kind in _DRAIN_KINDS
            and event.server == server.name
            and event.pool == server.pool
        ):
            self._unwritten_event = event
            return
        super()._persist_state(event)

    def _finish_removals(self, budget: float | None = None) -> bool:
        """Delete the servers being removed that may be now; True while some are left.
        Their pools are recomputed once at the end and the health manager synced once (a
        thousand servers drained by a reload are deleted with one recompute, not one
        each); not :meth:`batch`, whose poke would wake the timer that called this.
        ``budget``: seconds of the admin clock this call may take; once spent, the rest
        waits for the next call (``removals_cut`` True: the timer calls again after a turn
        of the event loop): a thousand servers drained to 0 connections at once were
        deleted in one hold of the loop (~0.1 s, every request in flight waiting).

        It looks only at the servers that were at 0 connections since the last call (each
        pool's ``PoolTally.drained``, kept by the connection count), in the order their
        removals were asked, pools in order: those a walk of every server being removed
        would delete, in its order; one busy again is dropped until back at 0."""
        removed = self.removals_cut = False
        until = None if budget is None else self.clock.time() + budget
        with self.registry.deferring():
            for pool in list(self.registry.pools.values()):
                tally = pool.tally
                if not tally.drained:
                    continue
                for server in _drained(tally):
                    if self.registry.removable(server) is not None:
                        if server.connections:  # busy again: back once at 0
                            tally.drained.pop(server, None)
                        continue
                    if until is not None and removed and self.clock.time() >= until:
                        self.removals_cut = True
                        break
                    ctx = self._removals.pop(server, None) or CommandContext(
                        STORE_ACTOR, Cause.STARTUP
                    )
                    self._before_removal.pop(server, None)
                    self.registry.remove_server(
                        server, actor=ctx.actor, cause=ctx.cause, reason=ctx.reason
                    )
                    _log_change(ctx, "deleted (drained)", server.key, server.address)
                    removed = True
                if self.removals_cut:
                    break
        if removed:
            self._monitors_changed()
        for server in [s for s in self._removals if not s.removing]:
            del self._removals[server]  # enabled meanwhile: the removal is cancelled
            self._before_removal.pop(server, None)
        return self.removals_cut or any(p.tally.removing for p in self.registry.pools.values())

    @shared
    def cancel_removal(self, ref: str, ctx: CommandContext) -> CommandResult:
        """A server being removed (drained to be deleted) stays: back in the admin state it
        had before its removal began (a reload that put it back in the file: docs/admin.md,
        "Live reload"): enabled, or in drain or maintenance as an operator left it, with
        that record's own deadline and expiry, and who set it. One admin event (cause and
        actor ``ctx``'s); persisted. Not being removed: enabled, as ``enable``."""
        server = self._find(ref, None, ctx)
        before = self._before_removal.pop(server, None)
        if not server.removing or before is None or before.state is Admin.ENABLED:
            return self.enable(ref, ctx)
        server.removing = False
        self._removals.pop(server, None)
        # a drain's deadline that passed meanwhile fires at the admin timer's next turn
        t = Transition(
            server.admin, before, CloseMode.NONE, f"removal cancelled: {before.state.value} again"
        )
        self.registry.apply_admin_record(server, t, ctx.cause, ctx.actor, ctx.reason)
        self._poke()
        return CommandResult(server, t.changed, f"{server.key}: {t.message}", 0)

    def _not_reloading(self, pool: str, name: str, ctx: CommandContext, what: str) -> None:
        """Refuse (503, an ``admin_refused`` event) a runtime change of a server while a
        reload is being applied; the reload's own changes (cause ``config``) go on."""
        if self.reload_applying and ctx.cause is not Cause.CONFIG:
            refused = QuiesceError(RELOADING, status_hint=503)
            self._refuse_server(pool, name, ctx, refused, what)

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
        servers = frozenset(
            k for k in self._server_records if k not in self._removing_saved or self._is_runtime(k)
        )
        # each pool's own list of its servers being removed, not a walk of every server; a
        # removal an operator asked for (``destroy server --drain``) is theirs, not a reload's
        # (a reload took it for one of its own and cancelled it: review 14 R1)
        removing = [s for pool in self.registry.pools.values() for s in pool.removing()]
        removals = self._removals
        by_operator = frozenset(
            s.key
            for s in removing
            if (c := removals.get(s)) is not None and c.cause is not Cause.CONFIG
        )
        return RuntimeOverrides(
            servers=servers,
            deleted=frozenset(k for k in servers if self._deleted_at_runtime(k)),
            monitors=frozenset(store.load_monitors()) | frozenset(store.load_deleted_monitors()),
            pool_monitors=frozenset(store.load_pool_monitors()),
            flags=frozenset(store.load_flags()) | frozenset(store.load_cleared_flags()),
            removing=frozenset(s.key for s in removing) - by_operator,
            removing_at_runtime=by_operator,
        )

    def _deleted_at_runtime(self, key: str) -> bool:
        """A stored record of ``key`` whose pool runs without it: a deletion at runtime."""
        pool, _, name = key.partition("/")
        runtime = self.registry.pools.get(pool)
        return runtime is not None and not runtime.has(name)

    def _is_runtime(self, key: str) -> bool:
        try:
            return self.registry.find_server(key).runtime_defined
        except NotFound:
            return True  # a tombstone


_DRAIN_KINDS = frozenset({EventKind.ADMIN_CHANGE, EventKind.ADMIN_COMMAND})

# causes whose server changes come by the thousand and are summarised by their own lines
# (a reload: "reload: web/n3: added"; the start-up's restore): not logged one by one here
_SUMMARISED = frozenset({Cause.CONFIG, Cause.STARTUP})


def _drained(tally: Any) -> list[ServerRuntime]:
    """The servers of a pool's ``drained`` being removed, in the order their removals were
    asked (``removing``'s numbers)."""
    asked = tally.removing
    return sorted((s for s in tally.drained if s in asked), key=asked.__getitem__)


def _log_change(ctx: CommandContext, what: str, key: str, detail: str) -> None:
    """One process-log line for a server added, changed or deleted at runtime (API, CLI,
    dashboard, runtime socket): who and what, as the ``server_*`` events say it (review F3:
    those events are not logged one by one, a reload's are summarised by the reload)."""
    if ctx.cause in _SUMMARISED:
        return
    reason = f" ({ctx.reason})" if ctx.reason else ""
    log.info(
        "server %s: %s %s%s cause=%s actor=%s", what, key, detail, reason, ctx.cause, ctx.actor
    )


def _word(value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def _what(fields: dict[str, Any]) -> str:
    address = fields.pop("address", "")
    rest = " ".join(f"{k}={_word(v)}" for k, v in fields.items() if v not in (None, [], {}))
    return f"{address} {rest}".rstrip()
