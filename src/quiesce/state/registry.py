"""The registry: the runtime state of every pool and server, and the one place that changes it.

Theory of operation
-------------------
Data flows into the registry from two sides (DESIGN §3): health check results
(:meth:`Registry.record_check`) move the operational axis, admin commands
(:meth:`Registry.admin_command`) move the administrative axis. After every change the registry
recomputes the pool's candidate set (what the balancer picks from), holds an active-standby
election where the pool has one, and emits :class:`~quiesce.core.events.Event` objects to its
subscribers (event log, store, metrics, SSE streams). What must happen to existing connections
is handed to ``close_handlers`` as a :class:`~quiesce.core.states.CloseMode`; the data plane's
connection table carries it out.

The registry is sans-IO: it never sleeps or touches a socket; time comes from an injectable
clock, and :meth:`Registry.tick` fires drain deadlines and expiries when the caller says so.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from quiesce.balancing import make_algorithm
from quiesce.config.models import Config, HealthMonitor, PoolConfig, ServerConfig
from quiesce.core import admin as admin_sm
from quiesce.core.admin import AdminCommand, AdminRecord, Transition
from quiesce.core.checks import CheckResult
from quiesce.core.clock import Clock, SystemClock
from quiesce.core.errors import GuardRefused, InvalidCommand, NotFound
from quiesce.core.events import Event, EventKind
from quiesce.core.oper import TRANSITIONS, MonitorTrack, Stay, combine
from quiesce.core.pool import elect, guard_violation, slow_start_factor
from quiesce.core.states import Admin, Cause, CloseMode, Oper, Verdict
from quiesce.state.events import make_event
from quiesce.state.runtime import (
    LAST_CHECKS,
    CloseHandler,
    EventListener,
    PoolRuntime,
    ServerRuntime,
)

_STAYS_WITH: dict[Oper, Verdict] = {
    state: verdict
    for state, row in TRANSITIONS.items()
    for verdict, action in row.items()
    if isinstance(action, Stay)
}
"""For each operational state, the verdict that keeps a track as it is (from TRANSITIONS)."""


_FAIL = Verdict.FAIL  # read on every check result: a module global, not an enum lookup


class Registry:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        # Live monitor definitions: edited at runtime by the control plane; the health
        # manager and the pools read them from here, so an edit applies at the next check.
        self.monitors: dict[str, HealthMonitor] = dict(config.healthmonitors)
        self.pools: dict[str, PoolRuntime] = {
            name: PoolRuntime(name, pc, self.monitors) for name, pc in config.pools.items()
        }
        self.listeners: list[EventListener] = []
        # Runtime flags (issue 7): read on the request path with one dict lookup.
        self.flags: dict[str, bool | str] = dict(config.flags)
        self.close_handlers: list[CloseHandler] = []
        # While a reload applies many changes (:meth:`deferring`): the pools to recompute
        # once at the end, instead of after every change.
        self._deferred: dict[PoolRuntime, None] | None = None
        # While a whole reload applies (:meth:`freezing_counts`): the pools whose counts
        # events carry as they were when the reload first touched them.
        self._frozen: dict[PoolRuntime, None] | None = None
        now = self.clock.time()
        for pool in self.pools.values():
            self._recompute(pool, now, emit=False)

    # lookups ----------------------------------------------------------------------------

    def pool(self, name: str) -> PoolRuntime:
        try:
            return self.pools[name]
        except KeyError:
            raise NotFound(f"no pool named {name!r}") from None

    def servers(self) -> Iterator[ServerRuntime]:
        for pool in self.pools.values():
            yield from pool.servers

    def find_server(self, ref: str) -> ServerRuntime:
        """``pool/server``, or a server name that is unique across pools."""
        if "/" in ref:
            pool, _, name = ref.partition("/")
            return self.pool(pool).server(name)
        matches = [s for s in self.servers() if s.name == ref]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFound(f"no server named {ref!r}")
        pools = ", ".join(sorted(s.pool for s in matches))
        raise NotFound(f"server name {ref!r} is in several pools ({pools}): use POOL/SERVER")

    # events -----------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        for listener in list(self.listeners):
            listener(event)

    # the operational axis -----------------------------------------------------------------

    def record_check(self, server: ServerRuntime, result: CheckResult) -> None:
        """Feed one check result; moves the operational axis by the rules of DESIGN §1."""
        pool = self.pools[server.pool]
        monitor = result.monitor
        track = server.tracks.get(monitor)
        if track is None or not server.health_checks:
            return  # a monitor detached meanwhile, or checks disabled ("disable health")
        server.last_checks[monitor].append(result)
        verdict = result.verdict
        if verdict is _FAIL:
            server.checks_failed += 1
        if track.streak == 0 and _STAYS_WITH.get(track.state) is verdict:
            # The common case (an up server passes again): feed() would return an equal
            # track, so nothing else changes either (server.oper is always the combination
            # of its tracks: every change to a track goes through _set_oper).
            return
        server.tracks[monitor] = track.feed(result.verdict, pool.thresholds(monitor))
        self._set_oper(pool, server, Cause.HEALTH, result)

    def mark_passive_maintenance(self, server: ServerRuntime, detail: dict[str, object]) -> None:
        """A response seen on the data path says maintenance (issue 7's ``mark_server``).
        Every monitor track enters maintenance, so the next ordinary pass brings it back."""
        if server.oper is not Oper.MAINTENANCE:
            self.force_oper(server, Oper.MAINTENANCE, Cause.PASSIVE, detail)

    def force_oper(
        self,
        server: ServerRuntime,
        oper: Oper,
        cause: Cause,
        detail: dict[str, object],
        *,
        actor: str | None = None,
    ) -> None:
        """Set every monitor track of ``server`` to ``oper`` (HAProxy's ``set server … health``,
        passive maintenance); the next check result moves it on from there as usual. A server
        with no monitor is left unmonitored."""
        if not server.tracks:
            return
        for m in server.tracks:
            server.tracks[m] = MonitorTrack(oper, 0)
        self._set_oper(self.pools[server.pool], server, cause, None, detail, actor=actor)

    def _set_oper(
        self,
        pool: PoolRuntime,
        server: ServerRuntime,
        cause: Cause,
        result: CheckResult | None,
        extra: dict[str, object] | None = None,
        *,
        actor: str | None = None,
    ) -> None:
        new = combine(
            [server.tracks[m].state for m in server.monitors], pool.config.min_health_monitors_up
        )
        if new is server.oper:
            return
        old = server.oper
        server.oper = new
        now = self.clock.time()
        server.oper_since = now
        if new is Oper.DOWN:
            server.went_down += 1
            server.down_since = now
        elif server.down_since is not None:
            server.downtime += now - server.down_since
            server.down_since = None
        detail: dict[str, object] = dict(extra or {})
        if result is not None:
            detail.update(result.to_dict())
        pending = self._recompute(pool, now)
        self.emit(
            make_event(
                self.clock,
                EventKind.OPER_CHANGE,
                pool,
                server=server.name,
                from_=old.value,
                to=new.value,
                cause=cause.value,
                actor=actor,
                detail=detail,
            )
        )
        self._emit_all(pending)
        if new is Oper.DOWN and pool.config.on_server_down == "close":
            self._close(server, CloseMode.ALL)

    # the administrative axis ----------------------------------------------------------------

    def admin_command(
        self, server: ServerRuntime, cmd: AdminCommand, *, force_guard: bool = False
    ) -> Transition:
        """Apply an operator's command. Raises InvalidCommand or GuardRefused (both emitted as
        ``admin_refused`` events) and then changes nothing."""
        pool = self.pools[server.pool]
        now = self.clock.time()
        try:
            transition = admin_sm.apply(server.admin, cmd, now)
            if not force_guard:
                why = guard_violation(
                    pool.members(), server.name, transition.after.state, pool.config.min_servers_up
                )
                if why is not None:
                    raise GuardRefused(
                        f"pool {pool.name!r}: setting {server.name!r} to "
                        f"{cmd.target.value} {why} (override with --force-guard, API force_guard)"
                    )
        except Exception as exc:
            message = getattr(exc, "message", str(exc))
            self.emit(
                make_event(
                    self.clock,
                    EventKind.ADMIN_REFUSED,
                    pool,
                    server=server.name,
                    from_=server.admin.state,
                    to=cmd.target.value,
                    cause=cmd.cause.value,
                    actor=cmd.actor,
                    reason=cmd.reason,
                    detail={"error": message, "force": cmd.force},
                )
            )
            raise
        self._apply_transition(
            pool,
            server,
            transition,
            cmd.cause,
            cmd.actor,
            cmd.reason,
            command=True,
            force=cmd.force,
        )
        return transition

    def restore_admin(self, server: ServerRuntime, record: AdminRecord) -> None:
        """Put back a persisted admin record at start-up (no guard, no close)."""
        server.admin = record
        self._recompute(self.pools[server.pool], self.clock.time(), emit=False)

    def apply_replicated_admin(
        self, server: ServerRuntime, record: AdminRecord, close: CloseMode, *, node: str
    ) -> bool:
        """Take the admin record another node of the cluster wrote (the etcd store): the same
        eligibility, events and connection closing as the command had there, without the
        guard (the writing node checked it). False when it changes nothing here."""
        before = server.admin
        if record == before and close is CloseMode.NONE:
            return False
        if record.state is before.state:
            message = f"{record.state.value} (from node {node})"
        else:
            message = f"{before.state.value} → {record.state.value} (from node {node})"
        t = Transition(before, record, close, message)
        self._apply_transition(
            self.pools[server.pool],
            server,
            t,
            record.cause,
            record.actor,
            record.reason,
            command=True,
            force=close is CloseMode.ALL,
        )
        return True

    def _apply_transition(
        self,
        pool: PoolRuntime,
        server: ServerRuntime,
        t: Transition,
        cause: Cause,
        actor: str,
        reason: str,
        *,
        command: bool,
        force: bool = False,
    ) -> None:
        server.admin = t.after
        if server.removing and t.after.state is Admin.ENABLED:
            server.removing = False  # enabling cancels a drain-then-delete
        now = self.clock.time()
        pending = self._recompute(pool, now) if t.changed else []
        detail: dict[str, object] = {"message": t.message, "close": t.close.value}
        if force:
            detail["force"] = True
        if t.close is CloseMode.ALL:
            detail["closed"] = server.connections  # what the close below cuts
        if t.after.deadline is not None:
            detail["deadline"] = t.after.deadline
        if t.after.expires is not None:
            detail["expires"] = t.after.expires
        kind = EventKind.ADMIN_CHANGE if t.changed else EventKind.ADMIN_COMMAND
        self.emit(
            make_event(
                self.clock,
                kind,
                pool,
                server=server.name,
                from_=t.before.state.value,
                to=t.after.state.value,
                cause=cause.value,
                actor=actor,
                reason=reason,
                detail=detail,
            )
        )
        self._emit_all(pending)
        if t.close is not CloseMode.NONE:
            self._close(server, t.close)

    def tick(self) -> list[Transition]:
        """Fire every due drain deadline and expiry."""
        now = self.clock.time()
        fired = []
        for pool in self.pools.values():
            for server in pool.servers:
                while (t := admin_sm.tick(server.admin, now)) is not None:
                    fired.append(t)
                    self._apply_transition(
                        pool,
                        server,
                        t,
                        t.after.cause,
                        t.before.actor or "system",
                        t.after.reason,
                        command=False,
                    )
        return fired

    def next_due(self) -> float | None:
        # the timer asks after every command: a record with neither time needs no call
        times = [
            t
            for s in self.servers()
            if (s.admin.expires is not None or s.admin.deadline is not None)
            and (t := admin_sm.next_due(s.admin)) is not None
        ]
        return min(times) if times else None

    def shutdown_sessions(
        self, server: ServerRuntime, *, cause: Cause, actor: str, reason: str
    ) -> int:
        """Close every connection of ``server`` now (HAProxy's ``shutdown sessions server``),
        whatever its state; returns how many it had. A ``connections_closed`` event follows."""
        n = server.connections
        self._close(server, CloseMode.ALL)
        self.emit(
            make_event(
                self.clock,
                EventKind.CONNECTIONS_CLOSED,
                self.pools[server.pool],
                server=server.name,
                cause=cause.value,
                actor=actor,
                reason=reason,
                detail={"closed": n},
            )
        )
        return n

    def set_health_checks(self, server: ServerRuntime, enabled: bool) -> bool:
        """Health checks on or off for ``server`` (HAProxy's ``enable|disable health``): while
        off, check results are ignored and the operational state stays as it is. Returns
        whether it changed; the caller (AdminService) emits the event."""
        changed = server.health_checks is not enabled
        server.health_checks = enabled
        return changed

    def set_weight(self, server: ServerRuntime, weight: int) -> None:
        if not 0 <= weight <= 256:
            raise InvalidCommand(f"weight {weight} is outside 0-256")
        server.weight = weight
        pool = self.pools[server.pool]
        self._emit_all(self._recompute(pool, self.clock.time()))

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
            raise InvalidCommand(f"healthmonitors: no health monitor named {missing[0]!r}")
        server = pool.add(config)
        server.runtime_defined = runtime
        now = self.clock.time()
        server.oper_since = now
        pending = self._recompute(pool, now, emit=emit)
        if emit:
            self.emit(
                make_event(
                    self.clock,
                    EventKind.SERVER_ADDED,
                    pool,
                    server=server.name,
                    to=config.address,
                    cause=cause.value,
                    actor=actor,
                    reason=reason,
                    detail={"server": config.model_dump(mode="json")},
                )
            )
            self._emit_all(pending)
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
            raise InvalidCommand(f"healthmonitors: no health monitor named {missing[0]!r}")
        server.config = new
        server.runtime_defined = server.runtime_defined or runtime
        if "weight" in diff:
            server.weight = new.weight
        if "healthmonitors" in diff:
            wanted = [
                *pool.pool_monitors,
                *(m for m in new.healthmonitors if m not in pool.pool_monitors),
            ]
            for m in list(server.tracks):
                if m not in wanted:
                    del server.tracks[m]
                    del server.last_checks[m]
            for m in wanted:
                if m not in server.tracks:
                    server.tracks[m] = MonitorTrack()
                    server.last_checks[m] = deque(maxlen=LAST_CHECKS)
            server.monitors = wanted
        now = self.clock.time()
        pending = self._recompute(pool, now, emit=emit)
        if emit:
            self.emit(
                make_event(
                    self.clock,
                    EventKind.SERVER_UPDATED,
                    pool,
                    server=server.name,
                    from_=old.address if "address" in diff else None,
                    to=new.address if "address" in diff else None,
                    cause=cause.value,
                    actor=actor,
                    reason=reason,
                    detail={
                        "changed": {k: [_jsonable(a), _jsonable(b)] for k, (a, b) in diff.items()},
                        "server": new.model_dump(mode="json"),
                    },
                )
            )
            self._emit_all(pending)
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
        pool.remove(server)
        server.removing = False
        # AT_BOUNDARY, not ALL: it has no busy connection left; its idle upstream ones are
        # closed, and idle client keep-alive connections that last used it are detached
        # (their next request is balanced afresh), never closed: closing one races with
        # the request its client may be sending (a reset; docs/admin.md, maintenance).
        self._close(server, CloseMode.AT_BOUNDARY)
        pending = self._recompute(pool, self.clock.time(), emit=emit)
        if emit:
            self.emit(
                make_event(
                    self.clock,
                    EventKind.SERVER_REMOVED,
                    pool,
                    server=server.name,
                    from_=server.address,
                    cause=cause.value,
                    actor=actor,
                    reason=reason,
                    detail={"server": server.config.model_dump(mode="json")},
                )
            )
            self._emit_all(pending)

    # pools added, changed and removed by a reload (issue 14) ----------------------------------

    @contextmanager
    def deferring(self) -> Iterator[None]:
        """Recompute each pool touched inside the block once, at its end (a reload adding
        a thousand servers to a pool of ten thousand recomputes it once, not a thousand
        times). The block must not yield to the event loop: no request sees the pools
        half-recomputed. Events emitted inside carry each pool's eligible count and
        sessions as they were when the block first touched it."""
        if self._deferred is not None:
            yield
            return
        self._deferred = {}
        try:
            yield
        finally:
            pools, self._deferred = self._deferred, None
            now = self.clock.time()
            for pool in pools:
                if self._frozen is None:
                    pool.frozen_counts = None
                if self.pools.get(pool.name) is pool:
                    self._emit_all(self._recompute(pool, now))

    @contextmanager
    def freezing_counts(self) -> Iterator[None]:
        """Around many :meth:`deferring` blocks (a reload's slices, with turns of the event
        loop between them): events carry each pool's eligible count and sessions as they
        were when the first block touched it, counted once, not once per block."""
        if self._frozen is not None:
            yield
            return
        self._frozen = {}
        try:
            yield
        finally:
            pools, self._frozen = self._frozen, None
            for pool in pools:
                pool.frozen_counts = None

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
        self._emit_all(self._recompute(pool, now))
        return pool

    def update_pool(self, name: str, config: PoolConfig) -> None:
        """The pool's settings from a reloaded file (algorithm, mode, guards, timeouts, slow
        start, persistence...): its servers, their admin and operational state and its
        monitor list are left as they are (those change through their own methods)."""
        pool = self.pool(name)
        old = pool.config
        pool.config = config
        if (old.algorithm, old.mode) != (config.algorithm, config.mode):
            pool.algorithm = make_algorithm(config.algorithm)
        if old.mode != config.mode:
            pool.primary = None
        if old.min_health_monitors_up != config.min_health_monitors_up:
            for s in pool.servers:
                self._set_oper(pool, s, Cause.CONFIG, None)
        self._emit_all(self._recompute(pool, self.clock.time()))

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
        created = name not in self.monitors
        self.monitors[name] = monitor
        self.emit(
            make_event(
                self.clock,
                EventKind.MONITOR_CHANGE,
                None,
                cause=cause.value,
                actor=actor,
                to="created" if created else "updated",
                detail={"monitor": name},
            )
        )
        return created

    def delete_monitor(self, name: str, *, actor: str, cause: Cause) -> None:
        if name not in self.monitors:
            raise NotFound(f"no health monitor named {name!r}")
        users = sorted({s.pool for s in self.servers() if name in s.monitors})
        if users:
            raise GuardRefused(
                f"health monitor {name!r} is attached to pool(s) {', '.join(users)}: "
                "detach it first"
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
            wanted = [*names, *(m for m in s.config.healthmonitors if m not in names)]
            for m in list(s.tracks):
                if m not in wanted:
                    del s.tracks[m]
                    del s.last_checks[m]
            for m in wanted:
                if m not in s.tracks:
                    s.tracks[m] = MonitorTrack()
                    s.last_checks[m] = deque(maxlen=LAST_CHECKS)
            s.monitors = wanted
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

    # runtime flags ----------------------------------------------------------------------------

    def set_flag(
        self, name: str, value: bool | str, *, actor: str, cause: Cause, reason: str = ""
    ) -> None:
        old = self.flags.get(name)
        self.flags[name] = value
        self.emit(
            make_event(
                self.clock,
                EventKind.FLAG_CHANGE,
                None,
                from_=_flag_text(old),
                to=_flag_text(value),
                cause=cause.value,
                actor=actor,
                reason=reason,
                detail={"flag": name},
            )
        )

    def clear_flag(self, name: str, *, actor: str, cause: Cause, reason: str = "") -> None:
        if name not in self.flags:
            raise NotFound(f"no flag named {name!r}")
        old = self.flags.pop(name)
        self.emit(
            make_event(
                self.clock,
                EventKind.FLAG_CHANGE,
                None,
                from_=_flag_text(old),
                to=None,
                cause=cause.value,
                actor=actor,
                reason=reason,
                detail={"flag": name},
            )
        )

    # derived pool state ---------------------------------------------------------------------

    def _close(self, server: ServerRuntime, mode: CloseMode) -> None:
        for handler in list(self.close_handlers):
            handler(server, mode)

    def _emit_all(self, events: list[Event]) -> None:
        for e in events:
            self.emit(e)

    def _recompute(self, pool: PoolRuntime, now: float, emit: bool = True) -> list[Event]:
        """Recompute candidates and election; returns the events this caused, for the caller
        to emit after its own (a cause comes before its consequences in the log)."""
        if self._deferred is not None:
            if pool not in self._deferred:
                self._deferred[pool] = None
                if pool.frozen_counts is None:
                    pool.frozen_counts = (pool.eligible_count, pool.sessions)
                if self._frozen is not None:
                    self._frozen[pool] = None
            return []
        out: list[Event] = []
        eligible: list[ServerRuntime] = []  # eligibility read once per server: this is hot
        for s in pool.servers:
            if s.eligible:
                eligible.append(s)
                if s.eligible_since is None:
                    s.eligible_since = now
            else:
                s.eligible_since = None
        if pool.config.mode == "active_standby":
            new_primary = elect(pool.members(), pool.primary, pool.config.preempt)
            if new_primary != pool.primary:
                old = pool.primary
                pool.primary = new_primary
                if emit:
                    out.append(
                        make_event(
                            self.clock,
                            EventKind.ELECTION,
                            pool,
                            server=new_primary,
                            from_=old,
                            to=new_primary,
                            cause="election",
                        )
                    )
            pool.candidates = [pool.server(pool.primary)] if pool.primary else []
        else:
            # core.pool.candidates' rule (eligible primaries, else eligible backups) read
            # straight off the servers: this runs on every state change of every server.
            primaries = [s for s in eligible if not s.config.backup]
            pool.candidates = primaries or [s for s in eligible if s.config.backup]
        period = pool.config.slow_start
        if period > 0:
            for s in pool.candidates:
                s.effective_weight = s.weight * slow_start_factor(s.eligible_since, now, period)
        else:  # slow_start_factor is 1.0: one call fewer per server
            for s in pool.candidates:
                s.effective_weight = s.weight
        available = bool(pool.candidates)
        if available != pool.available:
            pool.available = available
            if emit:
                kind = EventKind.POOL_UP if available else EventKind.POOL_DOWN
                reason = None if available else "pool has no server available"
                out.append(make_event(self.clock, kind, pool, reason=reason))
        return out


def _jsonable(value: object) -> object:
    return list(value) if isinstance(value, list | tuple) else value


def _flag_text(value: bool | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


__all__ = ["PoolRuntime", "Registry", "ServerRuntime"]
