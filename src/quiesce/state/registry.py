"""The registry: the runtime state of every pool and server, and the one place that changes it.

Theory of operation
-------------------
Data flows into the registry from two sides (DESIGN §3): health check results
(:meth:`Registry.record_check`) move the operational axis, admin commands
(:meth:`Registry.admin_command`) move the administrative axis. After every change the registry
moves that one server in its pool's eligible sets and settles the pool (candidates,
active-standby election, availability) in O(log n) (:mod:`quiesce.state.poolstate`), and
emits :class:`~quiesce.core.events.Event` objects to its subscribers (event log, store,
metrics, SSE streams). What must happen to existing connections is handed to
``close_handlers`` as a :class:`~quiesce.core.states.CloseMode`; the data plane's connection
table carries it out. Servers, pools and monitors defined at runtime or by a reload change
through the methods of its base, :class:`~quiesce.state.definitions.Definitions`.

The registry is sans-IO: it never sleeps or touches a socket; time comes from an injectable
clock, and :meth:`Registry.tick` fires drain deadlines and expiries when the caller says so.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from itertools import count

from quiesce.config.models import Config, HealthMonitor
from quiesce.core import admin as admin_sm
from quiesce.core.admin import AdminCommand, AdminRecord, Transition
from quiesce.core.checks import CheckResult
from quiesce.core.clock import Clock, SystemClock
from quiesce.core.errors import GuardRefused, InvalidCommand, NotFound
from quiesce.core.events import Event, EventKind
from quiesce.core.oper import AT_REST, TRANSITIONS, Stay, combine
from quiesce.core.states import Admin, Cause, CloseMode, Oper, Verdict
from quiesce.state import poolstate
from quiesce.state.definitions import Definitions
from quiesce.state.ejections import Ejections
from quiesce.state.events import make_event
from quiesce.state.runtime import (
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


DUE_COMPACT_MIN = 1024
"""The drain-deadline and expiry heap's stale entries are not counted below this length."""


class Registry(Definitions, Ejections):
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
        # While a batch of changes applies (:meth:`deferring`): the pools to settle once at
        # the end (one pool event each), instead of after every change.
        self._deferred: dict[PoolRuntime, None] | None = None
        self._freeze = True
        # Entered at a batch's first event, left at its end: the state store's transaction
        # (AdminService adds it), so a burst's events are written in one commit, not one each.
        self.batch_wrappers: list[Callable[[], AbstractContextManager[object]]] = []
        self._wrapped: ExitStack | None = None
        # While a whole reload applies (:meth:`freezing_counts`): the pools whose counts
        # events carry as they were when the reload first touched them.
        self._frozen: dict[PoolRuntime, None] | None = None
        # Drain deadlines and expiries: (due time, sequence, server), a heap; an entry is
        # stale once the server's record no longer has that time (see _scheduled).
        self._due: list[tuple[float, int, ServerRuntime]] = []
        self._due_seq = count()
        # the heap's length at which _schedule next counts its stale entries (twice its
        # length at the last count: amortised O(1) a push, not a walk of it every push)
        self._due_check_at = DUE_COMPACT_MIN
        self._returns: list[tuple[float, int, ServerRuntime]] = []  # quiesce.state.ejections
        now = self.clock.time()
        for pool in self.pools.values():
            poolstate.rebuild(pool, now)
            poolstate.settle(pool, self.clock, emit=False)

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
        if self._deferred is not None and self._wrapped is None and self.batch_wrappers:
            self._wrapped = ExitStack()
            for wrapper in self.batch_wrappers:
                self._wrapped.enter_context(wrapper())
        for listener in list(self.listeners):
            listener(event)

    # the operational axis -----------------------------------------------------------------

    def record_check(self, server: ServerRuntime, result: CheckResult) -> None:
        """Feed one check result; moves the operational axis by the rules of DESIGN §1."""
        pool = self.pools[server.pool]
        monitor = result.monitor
        recent = server.last_checks.get(monitor)
        if recent is None or not server.health_checks:
            return  # a monitor detached meanwhile, or checks disabled ("disable health")
        recent.append(result)
        if (moved := server.tally.moved) is not None:  # the live series counts it
            moved.add(server)
        track = recent.track
        verdict = result.verdict
        if verdict is _FAIL:
            server.checks_failed += 1
        if track.streak == 0 and _STAYS_WITH.get(track.state) is verdict:
            # The common case (an up server passes again): feed() would return an equal
            # track, so nothing else changes either (server.oper is always the combination
            # of its tracks: every change to a track goes through _set_oper).
            return
        recent.track = track.feed(result.verdict, pool.thresholds(monitor))
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
            server.tracks[m] = AT_REST[oper]
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
        pending = self._changed(pool, server, now)
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
                why = poolstate.guard_violation(pool, server, transition.after.state)
                if why is not None:
                    # No flag names: the text reaches the dashboard and the event log; each
                    # front end says how it overrides the guard (CLI --force-guard, API
                    # force_guard, the dashboard's checkbox).
                    raise GuardRefused(
                        f"pool {pool.name!r}: setting {server.name!r} to {cmd.target.value} {why}"
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
        self._schedule(server)
        self._changed(self.pools[server.pool], server, self.clock.time(), emit=False)

    def apply_admin_record(
        self, server: ServerRuntime, t: Transition, cause: Cause, actor: str, reason: str
    ) -> None:
        """Put ``t.after`` (a record the server had before: a cancelled removal's) in place,
        with its admin event (``cause``, ``actor``), eligibility and schedule, no guard."""
        self._apply_transition(
            self.pools[server.pool], server, t, cause, actor, reason, command=True
        )

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
        self._schedule(server)
        if server.removing and t.after.state is Admin.ENABLED:
            server.removing = False  # enabling cancels a drain-then-delete
        now = self.clock.time()
        pending = self._changed(pool, server, now) if t.changed else []
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
        """Fire every due drain deadline and expiry (the due ones only: a heap by time)."""
        now = self.clock.time()
        fired = []
        due = self._due
        while due and due[0][0] <= now:
            at, _, server = heapq.heappop(due)
            if not self._scheduled(server, at):
                continue
            pool = self.pools[server.pool]
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
        self._fire_returns(now)
        return fired

    def next_due(self) -> float | None:
        """When :meth:`tick` next has something to do (the timer asks after every command)."""
        due = self._due
        while due and not self._scheduled(due[0][2], due[0][0]):
            heapq.heappop(due)
        at = due[0][0] if due else None
        back = self._next_return()
        return back if at is None else at if back is None else min(at, back)

    def _schedule(self, server: ServerRuntime) -> None:
        at = admin_sm.next_due(server.admin)
        if at is None:
            return
        due = self._due
        if len(due) > self._due_check_at:
            # mostly stale (records changed again before their time, servers deleted):
            # compacted. Counted only when the heap has doubled since the last count: a
            # count at every push past 1,024 entries made a mass drain quadratic (2,000
            # servers drained in one batch: 1.6 ms a drain for the second thousand).
            live = [e for e in due if self._scheduled(e[2], e[0])]
            if 4 * len(live) < len(due):
                due[:] = live
                heapq.heapify(due)
            self._due_check_at = max(DUE_COMPACT_MIN, 2 * len(due))
        heapq.heappush(due, (at, next(self._due_seq), server))

    def _scheduled(self, server: ServerRuntime, at: float) -> bool:
        """The entry (``at``, ``server``) still stands: the server is in its pool and its
        record is due then."""
        pool = self.pools.get(server.pool)
        return (
            pool is not None
            and pool.server_or_none(server.name) is server
            and admin_sm.next_due(server.admin) == at
        )

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
        self._emit_all(self._changed(pool, server, self.clock.time()))

    # pools added, changed and removed by a reload (issue 14) ----------------------------------

    @contextmanager
    def deferring(self, *, freeze: bool = True) -> Iterator[None]:
        """A batch of changes (a reload's slice, the check results of one loop iteration,
        a batch of commands): each server's change moves it in its pool's eligible sets as
        it comes (O(log n)) and has its own event; each pool touched is settled once, at
        the end: one election, one pool event at most, never one per change. The block
        must not yield to the event loop: no request sees a pool half-settled. ``freeze``:
        events emitted inside carry each pool's eligible count and sessions as they were
        when the block first touched it (a reload's); else as they are at each event."""
        if self._deferred is not None:
            yield
            return
        self._deferred, self._freeze = {}, freeze
        try:
            yield
        finally:
            pools, self._deferred = self._deferred, None
            try:
                for pool in pools:
                    if self._frozen is None:
                        pool.frozen_counts = None
                    if self.pools.get(pool.name) is pool:
                        self._emit_all(poolstate.settle(pool, self.clock))
            finally:
                wrapped, self._wrapped = self._wrapped, None
                if wrapped is not None:
                    wrapped.close()

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

    def _changed(
        self, pool: PoolRuntime, server: ServerRuntime, now: float, emit: bool = True
    ) -> list[Event]:
        """``server``'s state changed: move it in the pool's eligible sets and settle the
        pool (O(log n)); returns the events this caused, for the caller to emit after its own
        (a cause comes before its consequences in the log)."""
        poolstate.place(pool, server, now)
        return self._settle(pool, emit=emit)

    def _settle(self, pool: PoolRuntime, emit: bool = True) -> list[Event]:
        if self._deferred is not None:
            if pool not in self._deferred:
                self._deferred[pool] = None
                if pool.frozen_counts is None and self._freeze:
                    pool.frozen_counts = (pool.eligible_count, pool.sessions)
                if self._frozen is not None:
                    self._frozen[pool] = None
            return []
        return poolstate.settle(pool, self.clock, emit=emit)


def _flag_text(value: bool | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


__all__ = ["PoolRuntime", "Registry", "ServerRuntime"]
