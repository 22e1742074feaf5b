"""The admin commands on one server (maintenance, drain, disable, enable, clear, weight,
health forced or its checks switched, sessions shut), and flags and monitors: each resolves
its target, applies through the registry and answers in words. Part of
:class:`~quiesce.admin.AdminService`."""

from __future__ import annotations

from typing import Literal

from quiesce.admin.base import _NAME, _STATE_WORDS, CommandResult, ServiceBase, _command, shared
from quiesce.admin.context import CommandContext
from quiesce.config.models import HealthMonitor
from quiesce.core.admin import disable_command
from quiesce.core.errors import InvalidCommand, QuiesceError
from quiesce.core.events import EventKind
from quiesce.core.states import Admin, Cause, Oper
from quiesce.state.events import make_event
from quiesce.state.registry import ServerRuntime


class StateCommands(ServiceBase):
    @shared
    def maintenance(self, ref: str, ctx: CommandContext, *, force: bool = False) -> CommandResult:
        """``force`` closes every connection now; otherwise L7 closes each at its next request
        boundary and L4 lets them end."""
        cmd = _command(Admin.MAINTENANCE, ctx, force=force, expires=ctx.expires)
        return self._command(ref, cmd, ctx.force_guard)

    @shared
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

    @shared
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
        return self._disable(self._find(ref, Admin.MAINTENANCE, ctx), ctx, graceful, timeout)

    def _disable(
        self,
        server: ServerRuntime,
        ctx: CommandContext,
        graceful: bool,
        timeout: float | None,
        *,
        words: bool = True,
    ) -> CommandResult:
        """:meth:`disable` of a server found (``words``: :meth:`_apply`'s)."""
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
        return self._apply(server, cmd, ctx.force_guard, words=words)

    @shared
    def enable(self, ref: str, ctx: CommandContext) -> CommandResult:
        """Enabled, and back in service now if passive outlier detection ejected it (an
        operator's word ends an ejection; a monitor's does not)."""
        result = self._command(ref, _command(Admin.ENABLED, ctx), False)
        server = result.server
        if not self.registry.end_ejection(server, ctx.cause, ctx.actor, ctx.reason):
            return result
        self._poke()
        message = (
            f"{result.message}; ejection ended"
            if result.changed
            else f"{server.key}: ejection ended"
        )
        return CommandResult(server, True, message, result.closed)

    @shared
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

    @shared
    def set_flag(self, name: str, value: bool | str, ctx: CommandContext) -> None:
        if not _NAME.match(name):
            raise InvalidCommand(
                f"flag name {name!r}: use 1-128 letters, digits, '_', '.', ':' or '-'"
            )
        if not isinstance(value, bool | str):
            raise InvalidCommand("a flag value is true, false or a string")
        self.registry.set_flag(name, value, actor=ctx.actor, cause=ctx.cause, reason=ctx.reason)

    @shared
    def clear_flag(self, name: str, ctx: CommandContext) -> None:
        self.registry.clear_flag(name, actor=ctx.actor, cause=ctx.cause, reason=ctx.reason)

    @shared
    def put_monitor(self, name: str, monitor: HealthMonitor, ctx: CommandContext) -> bool:
        if not _NAME.match(name):
            raise InvalidCommand(
                f"monitor name {name!r}: use 1-128 letters, digits, '_', '.', ':' or '-'"
            )
        created = self.registry.put_monitor(name, monitor, actor=ctx.actor, cause=ctx.cause)
        self._monitors_changed()
        return created

    @shared
    def delete_monitor(self, name: str, ctx: CommandContext) -> None:
        self.registry.delete_monitor(name, actor=ctx.actor, cause=ctx.cause)
        self._monitors_changed()

    @shared
    def set_pool_monitors(self, pool: str, names: list[str], ctx: CommandContext) -> None:
        self.registry.set_pool_monitors(pool, list(names), actor=ctx.actor, cause=ctx.cause)
        self._monitors_changed()
