"""A stand-in for quiesce.admin.AdminService (same signatures), used until the real one lands
and whenever a test wants the control plane without the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from quiesce.config.models import HealthMonitor
from quiesce.core import admin as admin_sm
from quiesce.core.admin import AdminCommand
from quiesce.core.events import Event
from quiesce.core.states import Admin, Cause
from quiesce.registry import Registry, ServerRuntime


@dataclass
class CommandResult:
    server: ServerRuntime
    changed: bool
    message: str
    closed: int


class FakeAdminService:
    def __init__(
        self,
        registry: Registry,
        store: Any = None,
        clock: Any = None,
        on_monitors_changed: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.log: list[Event] = []
        self.queues: list[asyncio.Queue[Event]] = []
        registry.listeners.append(self._on_event)

    def _on_event(self, e: Event) -> None:
        e = replace(e, id=len(self.log) + 1)
        self.log.append(e)
        for q in self.queues:
            q.put_nowait(e)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def _cmd(self, ref: str, cmd: AdminCommand, force_guard: bool = False) -> CommandResult:
        s = self.registry.find_server(ref)
        t = self.registry.admin_command(s, cmd, force_guard=force_guard)
        return CommandResult(s, t.changed, t.message, s.connections if cmd.force else 0)

    def maintenance(
        self,
        ref: str,
        *,
        actor: str,
        cause: Cause,
        reason: str = "",
        force: bool = False,
        expires: float | None = None,
        force_guard: bool = False,
    ) -> CommandResult:
        return self._cmd(
            ref,
            AdminCommand(Admin.MAINTENANCE, actor, reason, cause, force=force, expires=expires),
            force_guard,
        )

    def drain(
        self,
        ref: str,
        *,
        actor: str,
        cause: Cause,
        reason: str = "",
        timeout: float | None = None,
        expires: float | None = None,
        force_guard: bool = False,
    ) -> CommandResult:
        now = self.registry.clock.time()
        deadline = None if timeout is None or timeout < 0 else now + timeout
        return self._cmd(
            ref,
            AdminCommand(Admin.DRAIN, actor, reason, cause, deadline=deadline, expires=expires),
            force_guard,
        )

    def disable(
        self,
        ref: str,
        *,
        actor: str,
        cause: Cause,
        reason: str = "",
        graceful: bool = False,
        timeout: float | None = None,
        expires: float | None = None,
        force_guard: bool = False,
    ) -> CommandResult:
        s = self.registry.find_server(ref)
        pool = self.registry.pools[s.pool]
        cmd = admin_sm.disable_command(
            actor=actor,
            reason=reason,
            cause=cause,
            now=self.registry.clock.time(),
            graceful=graceful,
            timeout=timeout,
            pool_default=pool.config.graceful_disable_timeout,
            expires=expires,
        )
        return self._cmd(ref, cmd, force_guard)

    def enable(self, ref: str, *, actor: str, cause: Cause, reason: str = "") -> CommandResult:
        return self._cmd(ref, AdminCommand(Admin.ENABLED, actor, reason, cause))

    def clear(
        self,
        ref: str,
        state: Literal["maintenance", "drain"],
        *,
        actor: str,
        cause: Cause,
        reason: str = "",
    ) -> CommandResult:
        s = self.registry.find_server(ref)
        if s.admin.state.value != state:
            return CommandResult(s, False, f"not in {state}", 0)
        return self.enable(ref, actor=actor, cause=cause, reason=reason)

    def set_weight(self, ref: str, weight: int, *, actor: str, cause: Cause) -> None:
        self.registry.set_weight(self.registry.find_server(ref), weight)

    def set_flag(
        self, name: str, value: bool | str, *, actor: str, cause: Cause, reason: str = ""
    ) -> None:
        self.registry.set_flag(name, value, actor=actor, cause=cause, reason=reason)

    def clear_flag(self, name: str, *, actor: str, cause: Cause, reason: str = "") -> None:
        self.registry.clear_flag(name, actor=actor, cause=cause, reason=reason)

    def put_monitor(self, name: str, monitor: HealthMonitor, *, actor: str, cause: Cause) -> bool:
        return self.registry.put_monitor(name, monitor, actor=actor, cause=cause)

    def delete_monitor(self, name: str, *, actor: str, cause: Cause) -> None:
        self.registry.delete_monitor(name, actor=actor, cause=cause)

    def set_pool_monitors(self, pool: str, names: list[str], *, actor: str, cause: Cause) -> None:
        self.registry.set_pool_monitors(pool, names, actor=actor, cause=cause)

    def events(
        self,
        *,
        pool: str | None = None,
        server: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[Event]:
        out = [
            e
            for e in self.log
            if (pool is None or e.pool == pool)
            and (server is None or e.server == server)
            and (kind is None or e.kind.value == kind)
            and (since is None or e.time >= since)
            and (until is None or e.time <= until)
            and (after_id is None or (e.id or 0) > after_id)
        ]
        return out[-limit:]

    async def subscribe(self) -> AsyncIterator[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue()
        self.queues.append(q)
        try:
            while True:
                yield await q.get()
        finally:
            self.queues.remove(q)

    async def wait_drained(self, ref: str, timeout: float | None = None) -> AsyncIterator[int]:
        s = self.registry.find_server(ref)
        yield s.connections
