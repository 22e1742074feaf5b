"""Definitions changed while running (issue 14): servers, pools and health monitors added,
changed and removed at runtime (API, runtime socket, dashboard) or by a live reload. A part of
:class:`~quiesce.state.registry.Registry` (its base class): the same state, the same events,
each change settled in O(log n) per server (:mod:`quiesce.state.poolstate`). Sans-IO."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from quiesce.core.checks import CheckResult

from quiesce.balancing import make_algorithm
from quiesce.config.models import HealthMonitor, PoolConfig, ServerConfig
from quiesce.core.admin import AdminRecord
from quiesce.core.clock import Clock
from quiesce.core.errors import GuardRefused, InvalidCommand, NotFound
from quiesce.core.events import Event, EventKind
from quiesce.core.states import Admin, Cause, CloseMode
from quiesce.state import poolstate
from quiesce.state.events import make_event
from quiesce.state.recent import Recent
from quiesce.state.runtime import PoolRuntime, ServerRuntime


class Definitions:
    """Runtime edits of the registry's definitions; :class:`Registry` supplies the rest."""

    clock: Clock
    monitors: dict[str, HealthMonitor]
    pools: dict[str, PoolRuntime]

    if TYPE_CHECKING:

        def pool(self, name: str) -> PoolRuntime: ...
        def servers(self) -> Iterator[ServerRuntime]: ...
        def emit(self, event: Event) -> None: ...
        def _emit_all(self, events: list[Event]) -> None: ...
        def _close(self, server: ServerRuntime, mode: CloseMode) -> None: ...
        def _changed(
            self, pool: PoolRuntime, server: ServerRuntime, now: float, emit: bool = True
        ) -> list[Event]: ...
        def _settle(self, pool: PoolRuntime, emit: bool = True) -> list[Event]: ...
        def _set_oper(
            self,
            pool: PoolRuntime,
            server: ServerRuntime,
            cause: Cause,
            result: CheckResult | None,
            extra: dict[str, object] | None = None,
            *,
            actor: str | None = None,
        ) -> None: ...

    # servers added, changed and removed at runtime (issue 14) ----------------------------------

    def add_server(
        self,
        pool_name: str,
        config: ServerConfig,
        *,
        actor: str,
        cause: Cause,
        reason: str = "",
        emit: bool = True,
        runtime: bool = True,
    ) -> ServerRuntime:
        """A new server at the end of ``pool_name``: ``unknown`` with the pool's monitors (the
        health manager's ``sync()`` must follow) or ``unmonitored`` without; enabled, so a
        candidate as soon as it is eligible. A ``server_added`` event (none when ``emit`` is
        false: restoring at start-up). ``runtime`` False: a server of the config file (a
        reload), not stored over the file."""
        pool = self.pool(pool_name)
        if pool.has(config.name):
            raise InvalidCommand(
                f"name: pool {pool_name!r} already has a server named {config.name!r}",
                status_hint=409,
            )
        missing = [m for m in config.healthmonitors if m not in self.monitors]
        if missing:
            raise NotFound(f"healthmonitors: no health monitor named {missing[0]!r}")
        server = pool.add(config)
        server.runtime_defined = runtime
        now = self.clock.time()
        server.oper_since = now
        if runtime and emit:  # an operator's server: its record says who and when, not the file
            server.admin = AdminRecord(actor=actor, reason=reason, since=now, cause=cause)
        pending = self._changed(pool, server, now, emit=emit)
        if emit:
            detail = {"server": config.model_dump(mode="json")}
            self._server_event(
                EventKind.SERVER_ADDED,
                pool,
                server,
                pending,
                (cause, actor, reason),
                detail,
                to=config.address,
            )
        return server

    def update_server(
        self,
        server: ServerRuntime,
        changes: dict[str, object],
        *,
        actor: str,
        cause: Cause,
        reason: str = "",
        emit: bool = True,
        runtime: bool = True,
    ) -> dict[str, tuple[object, object]]:
        """Change a server's definition (``address``, ``weight``, ``backup``, ...), validated
        as the config file's server; returns ``{field: (old, new)}`` for what changed. A new
        address: idle upstream connections to the old one are closed now, busy ones after
        their response (``AT_BOUNDARY``), new connections go to the new address; the health
        manager's ``sync()`` must follow. A new weight is the runtime weight too."""
        pool = self.pools[server.pool]
        old = server.config
        unknown = sorted(set(changes) - set(ServerConfig.model_fields) | ({"name"} & set(changes)))
        if unknown:
            raise InvalidCommand(f"{unknown[0]}: cannot be changed")
        new = ServerConfig.model_validate({**old.model_dump(), **changes})
        diff = {
            k: (getattr(old, k), getattr(new, k))
            for k in ServerConfig.model_fields
            if getattr(old, k) != getattr(new, k)
        }
        if not diff:
            return diff
        missing = [m for m in new.healthmonitors if m not in self.monitors]
        if missing:
            raise NotFound(f"healthmonitors: no health monitor named {missing[0]!r}")
        server.config = new
        server.runtime_defined = server.runtime_defined or runtime
        if "weight" in diff:
            server.weight = new.weight
        if "healthmonitors" in diff:
            _track(server, pool.pool_monitors)
        now = self.clock.time()
        pending = self._changed(pool, server, now, emit=emit)
        if emit:
            detail = {
                "changed": {k: [_jsonable(a), _jsonable(b)] for k, (a, b) in diff.items()},
                "server": new.model_dump(mode="json"),
            }
            moved = "address" in diff
            self._server_event(
                EventKind.SERVER_UPDATED,
                pool,
                server,
                pending,
                (cause, actor, reason),
                detail,
                from_=old.address if moved else None,
                to=new.address if moved else None,
            )
        if "healthmonitors" in diff:
            self._set_oper(pool, server, cause, None, actor=actor)
        if "address" in diff:
            self._close(server, CloseMode.AT_BOUNDARY)
        return diff

    def removable(self, server: ServerRuntime) -> str | None:
        """Why ``server`` cannot be deleted now (HAProxy's words), or None: it must be in
        maintenance, or draining with no connection left, and have no connection."""
        state = server.admin.state
        if state is Admin.ENABLED or (state is Admin.DRAIN and server.connections):
            return "Only servers in maintenance mode can be deleted."
        if server.connections:
            return "Server still has connections attached to it, cannot remove it."
        return None

    def remove_server(
        self,
        server: ServerRuntime,
        *,
        actor: str,
        cause: Cause,
        reason: str = "",
        emit: bool = True,
    ) -> None:
        """Delete ``server`` from its pool (refused unless :meth:`removable`): what is left of
        it in the data plane (idle upstream connections) is closed, idle client connections
        that last used it are detached; a ``server_removed``
        event. The health manager's ``sync()`` must follow."""
        pool = self.pools[server.pool]
        why = self.removable(server) if emit else None
        if why is not None:
            raise GuardRefused(f"{server.key}: {why}")
        poolstate.unplace(server)
        pool.remove(server)
        server.removing = False
        # AT_BOUNDARY, not ALL: it has no busy connection left; its idle upstream ones are
        # closed, and idle client keep-alive connections that last used it are detached
        # (their next request is balanced afresh), never closed: closing one races with
        # the request its client may be sending (a reset; docs/admin.md, maintenance).
        self._close(server, CloseMode.AT_BOUNDARY)
        pending = self._settle(pool, emit=emit)
        if emit:
            detail = {"server": server.config.model_dump(mode="json")}
            self._server_event(
                EventKind.SERVER_REMOVED,
                pool,
                server,
                pending,
                (cause, actor, reason),
                detail,
                from_=server.address,
            )

    def _server_event(
        self,
        kind: EventKind,
        pool: PoolRuntime,
        server: ServerRuntime,
        pending: list[Event],
        why: tuple[Cause, str, str],
        detail: dict[str, Any],
        *,
        from_: str | None = None,
        to: str | None = None,
    ) -> None:
        """Emit ``kind`` about ``server``'s definition (``why``: cause, actor, reason), then
        the pool events it caused."""
        cause, actor, reason = why
        self.emit(
            make_event(
                self.clock,
                kind,
                pool,
                server=server.name,
                from_=from_,
                to=to,
                cause=cause.value,
                actor=actor,
                reason=reason,
                detail=detail,
            )
        )
        self._emit_all(pending)

    # pools added, changed and removed by a reload (issue 14) ----------------------------------

    def add_pool(self, name: str, config: PoolConfig) -> PoolRuntime:
        """A new pool with the servers of ``config`` (``unknown`` with monitors, else
        ``unmonitored``); the health manager's ``sync()`` must follow."""
        if name in self.pools:
            raise InvalidCommand(f"a pool named {name!r} exists", status_hint=409)
        missing = [m for m in config.healthmonitors if m not in self.monitors]
        if missing:
            raise InvalidCommand(f"healthmonitors: no health monitor named {missing[0]!r}")
        pool = self.pools[name] = PoolRuntime(name, config, self.monitors)
        now = self.clock.time()
        for s in pool.servers:
            s.oper_since = now
        poolstate.rebuild(pool, now)
        self._emit_all(self._settle(pool))
        return pool

    def update_pool(self, name: str, config: PoolConfig) -> None:
        """The pool's settings from a reloaded file (algorithm, mode, guards, timeouts, slow
        start, persistence...): its servers, their admin and operational state and its
        monitor list are left as they are (those change through their own methods)."""
        pool = self.pool(name)
        old = pool.config
        pool.config = config
        pool.track_outliers()  # outlier_detection on, off or changed
        if (old.algorithm, old.mode) != (config.algorithm, config.mode):
            pool.algorithm = make_algorithm(config.algorithm)
        if old.mode != config.mode:
            pool.primary = None
        poolstate.rebuild(pool, self.clock.time())  # the pool's settings: every rank anew
        if old.min_health_monitors_up != config.min_health_monitors_up:
            for s in pool.servers:
                self._set_oper(pool, s, Cause.CONFIG, None)
        self._emit_all(self._settle(pool))

    def remove_pool(self, name: str) -> PoolRuntime:
        """Forget a pool (no service routes to it any more): requests in flight to its
        servers finish, their connections close at the next boundary; the health manager's
        ``sync()`` must follow."""
        pool = self.pools.pop(name)
        for s in pool.servers:
            self._close(s, CloseMode.AT_BOUNDARY)
        return pool

    # runtime monitor edits (control plane, dashboard) ------------------------------------------

    def put_monitor(self, name: str, monitor: HealthMonitor, *, actor: str, cause: Cause) -> bool:
        """Create or replace a monitor definition; returns True when it was created. Servers
        keep their track state: the new definition applies from the next check."""
        before = self.monitors.get(name)
        self.monitors[name] = monitor
        detail: dict[str, object] = {"monitor": name}
        if before is not None:  # what it was and is, field by field (review 14 R8)
            a, b = before.model_dump(mode="json"), monitor.model_dump(mode="json")
            detail["changed"] = {k: [a.get(k), b[k]] for k in b if a.get(k) != b[k]}
        self.emit(
            make_event(
                self.clock,
                EventKind.MONITOR_CHANGE,
                None,
                cause=cause.value,
                actor=actor,
                to="created" if before is None else "updated",
                detail=detail,
            )
        )
        return before is None

    def delete_monitor(self, name: str, *, actor: str, cause: Cause) -> None:
        if name not in self.monitors:
            raise NotFound(f"no health monitor named {name!r}")
        pools = sorted(p for p, pool in self.pools.items() if name in pool.pool_monitors)
        own = sorted(
            s.key for s in self.servers() if name in s.config.healthmonitors and s.pool not in pools
        )  # a server's own list (review 90 F17: "pool(s) solo" named the pool of such a one)
        if pools or own:
            users = [f"pool(s) {', '.join(pools)}"] if pools else []
            if own:
                shown = ", ".join(own[:10]) + (f" and {len(own) - 10} more" if own[10:] else "")
                users.append(f"server(s) {shown}")
            raise GuardRefused(
                f"health monitor {name!r} is attached to {' and '.join(users)}: detach it first"
            )
        del self.monitors[name]
        self.emit(
            make_event(
                self.clock,
                EventKind.MONITOR_CHANGE,
                None,
                cause=cause.value,
                actor=actor,
                to="deleted",
                detail={"monitor": name},
            )
        )

    def set_pool_monitors(
        self, pool_name: str, names: list[str], *, actor: str, cause: Cause
    ) -> None:
        """Attach/detach pool monitors. A newly attached monitor starts ``unknown`` for each
        server; a detached one is forgotten. The health manager's ``sync()`` must follow."""
        pool = self.pool(pool_name)
        missing = [n for n in names if n not in self.monitors]
        if missing:
            raise NotFound(f"no health monitor named {missing[0]!r}")
        if len(set(names)) != len(names):
            raise InvalidCommand("a monitor is listed twice")
        old = list(pool.pool_monitors)
        pool.pool_monitors = list(names)
        for s in pool.servers:
            _track(s, names)
            self._set_oper(pool, s, cause, None)
        self.emit(
            make_event(
                self.clock,
                EventKind.MONITOR_CHANGE,
                pool,
                cause=cause.value,
                actor=actor,
                from_=",".join(old),
                to=",".join(names),
                detail={"attached": list(names)},
            )
        )


def _track(server: ServerRuntime, pool_monitors: list[str]) -> None:
    """The server's monitors: the pool's, then its own; a new one starts ``unknown``, a
    detached one is forgotten."""
    own = server.config.healthmonitors
    wanted = [*pool_monitors, *(m for m in own if m not in pool_monitors)]
    for m in list(server.last_checks):
        if m not in wanted:
            del server.last_checks[m]  # its results and its track
            if (moved := server.tally.moved) is not None:  # the live series: its newest
                moved.add(server)  # check may be older now
    for m in wanted:
        if m not in server.last_checks:
            server.last_checks[m] = Recent(m)  # unknown
    server.monitors = wanted


def _jsonable(value: object) -> object:
    return list(value) if isinstance(value, list | tuple) else value


__all__ = ["Definitions"]
