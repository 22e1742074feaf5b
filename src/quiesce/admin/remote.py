"""Changes another node wrote to the shared store (etcd), applied here through the
registry. Part of :class:`~quiesce.admin.AdminService`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from quiesce.admin.base import STORE_ACTOR, ServiceBase, _sane, log
from quiesce.admin.context import CommandContext
from quiesce.admin.persist import reloads_removal
from quiesce.config.models import HealthMonitor, ServerConfig
from quiesce.core.admin import AdminCommand
from quiesce.core.cluster import cluster_guard
from quiesce.core.errors import GuardRefused, QuiesceError
from quiesce.core.events import EventKind
from quiesce.core.states import Admin, Cause, CloseMode, Oper
from quiesce.state.events import make_event
from quiesce.state.registry import ServerRuntime
from quiesce.store.base import RemoteChange, SharedStore

CONFIRM_TIMEOUT = 5.0
"""How long a command waits for etcd to confirm its writes (``confirm_writes``)."""


class RemoteChanges(ServiceBase):
    def write_mark(self) -> int | None:
        """Before a command: where its writes to a shared store will start (None: the store
        is this node's own). Hand it to :meth:`confirm_writes` after the command."""
        return self.store.mark() if isinstance(self.store, SharedStore) else None

    async def confirm_writes(self, mark: int | None, timeout: float = CONFIRM_TIMEOUT) -> None:
        """Wait until the writes since ``mark`` are in the shared store (etcd). Raises
        :class:`~quiesce.store.base.ConflictError` (409) when one lost to a newer change
        another node made first (it was not applied), :class:`StoreError` (503) when etcd did
        not answer within ``timeout``. Returns at once for a local store, or a change made
        while the link is not up (``--local``: it is reconciled when the link is back)."""
        if mark is None or not isinstance(self.store, SharedStore):
            return
        cluster = getattr(self.store, "cluster", None)
        if cluster is not None and cluster.link.state(cluster.clock()) != "up":
            return
        await self.store.confirm(mark, timeout)

    def _verdicts(self) -> dict[str, Any]:
        """This node's health, published for the other nodes (quiesce.store.cluster), in a
        size that follows what is wrong, not the number of servers: the verdict of each server
        neither up nor unmonitored, and the servers each pool cannot use (not eligible)."""
        oper: dict[str, str] = {}
        out: dict[str, list[str]] = {}
        for pool in self.registry.pools.values():
            for s in pool.servers:
                if s.oper is not Oper.UP and s.oper is not Oper.UNMONITORED:
                    oper[s.key] = s.oper.value
                if not s.eligible:
                    out.setdefault(pool.name, []).append(s.name)
        return {"oper": oper, "out": out}

    def _cluster_guard(
        self, server: ServerRuntime, cmd: AdminCommand, ctx: CommandContext, force: bool
    ) -> None:
        """``min_servers_up`` against every node's view (as each published it, less what
        the shared admin state took out since): refused (409, ``admin_refused``) when taking
        ``server`` out would leave the node that sees the fewest below the minimum. Allowed,
        it holds in the write's transaction: the write lands only if the views it counted on
        are unchanged (``EtcdStore.guard_with``)."""
        cluster = getattr(self.store, "cluster", None)
        guard_with = getattr(self.store, "guard_with", None)
        if cluster is None or guard_with is None:
            return
        guard_with(server.key, [])
        pool = self.registry.pools[server.pool]
        if force or cmd.target is Admin.ENABLED or not pool.config.min_servers_up:
            return
        if server.admin.state is not Admin.ENABLED:
            return  # already out: nothing changes for the guard

        def still_eligible(name: str) -> bool:
            other = next((s for s in pool.servers if s.name == name), None)
            return other is None or other.admin.state is Admin.ENABLED

        views = {  # what each other node sees eligible: the pool less what it cannot use
            node: [s.name for s in pool.servers if s.name not in out]
            for node, out in cluster.unusable(pool.name).items()
        }
        worst = cluster_guard(views, server.name, still_eligible, pool.config.min_servers_up)
        if worst is None:
            guard_with(server.key, sorted(n for n, names in views.items() if server.name in names))
            return
        node, left = worst
        self._refuse_with(
            server,
            cmd.target,
            ctx,
            GuardRefused(
                f"pool {pool.name!r}: setting {server.name!r} to {cmd.target.value} would "
                f"leave {left} eligible server(s) on node {node}, below min_servers_up "
                f"{pool.config.min_servers_up} (node {node}'s health checks see fewer "
                "servers up than this node's)"
            ),
        )

    def _on_cluster_event(self, kind: str, reason: str, detail: dict[str, Any]) -> None:
        """What this node saw of the cluster (quiesce.store.cluster): its link to the store
        isolated or back, another node joined or left, a write of this node lost to a newer change
        (``write_conflict``). An event of this node's log."""
        pool, server = detail.get("pool"), detail.get("server")  # a lost write of a server's
        event = make_event(
            self.clock,
            EventKind(kind),
            pool if isinstance(pool, str) and pool in self.registry.pools else None,
            server=server if isinstance(server, str) else None,
            actor=STORE_ACTOR,
            reason=reason,
            detail=detail,
        )
        self.registry.emit(event)

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
                server, record = reg.find_server(name), _sane(value)
                before = server.admin
                same = replace(record, since=before.since) == before
                if same and before.state is Admin.ENABLED and change.close is CloseMode.NONE:
                    # its addition's record, from the node that added it: only the time
                    # differs (the time it was added there), so no change and no event here
                    reg.restore_admin(server, record)
                elif reg.apply_replicated_admin(server, record, change.close, node=change.node):
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
            ctx = CommandContext(actor, cause, change.reason)
            self._apply_remote_server(name, value, ctx, change.node)
        elif change.kind == "pool_monitors" and reg.pool(name).pool_monitors != value:
            reg.set_pool_monitors(name, list(value), actor=actor, cause=cause)
            self._monitors_changed()

    def _apply_remote_server(
        self, key: str, value: dict[str, Any] | None, ctx: CommandContext, node: str = "?"
    ) -> None:
        """A server another node added, changed or deleted: the same here (a deletion waits
        for this node's connections to the server to end). An addition is admitted against
        this node's connection budget as a local one (it re-plans it); one the budget cannot
        hold is committed on every node already, so it is applied all the same and reported
        (:meth:`_over_budget`)."""
        pool_name, _, name = key.partition("/")
        pool = self.registry.pool(pool_name)
        existing = next((s for s in pool.servers if s.name == name), None)
        if reloads_removal(value):  # a node of an earlier version: its file, not ours
            log.warning("state store: server %s: node %s's reload removal ignored", key, node)
            return
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
            over = self._admit_remote(pool_name, config)
            existing = self.registry.add_server(
                pool_name, config, actor=ctx.actor, cause=ctx.cause, reason=ctx.reason
            )
            if over is not None:
                self._over_budget(existing, over, ctx, node)
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

    def _admit_remote(self, pool: str, config: ServerConfig) -> str | None:
        """The connection budget with a server another node added (quiesce.app.budget):
        re-planned when it fits; else why not (nothing re-planned)."""
        admit = getattr(self, "admit_server", None)
        if admit is None:
            return None
        try:
            admit(pool, config)
        except QuiesceError as exc:
            return str(getattr(exc, "limit", "") or exc.message)
        return None

    def _over_budget(
        self, server: ServerRuntime, limit: str, ctx: CommandContext, node: str
    ) -> None:
        """A WARNING line and a ``budget_exceeded`` event (this node's log only; counted in
        ``quiesce_events_total{kind="budget_exceeded"}``): the server runs here, past the budget."""
        by = f"node {node}" if ctx.actor == f"node {node}" else f"{ctx.actor} on node {node}"
        message = (
            f"server {server.key}, added by {by}, does not fit this "
            f"node's connection budget: {limit}; it is applied here all the same (every node "
            "has it), the limits in force stay as they were, and this node's next reload or "
            "restart is refused until it fits"
        )
        log.warning("state store: %s", message)
        event = make_event(
            self.clock,
            EventKind.BUDGET_EXCEEDED,
            self.registry.pools[server.pool],
            server=server.name,
            cause=ctx.cause,
            actor=ctx.actor,
            reason=message,
            detail={"limits": limit},
        )
        self.registry.emit(event)
