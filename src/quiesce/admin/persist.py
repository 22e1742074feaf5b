"""Persistence: every event appended to the store, and from the same events, what changed
saved (a server's admin record or runtime definition, a flag, a monitor, a pool's monitor
list), so a change that reaches the registry any other way is saved too; and at a start,
what the store holds put back into the registry before anything is served. Part of
:class:`~quiesce.admin.AdminService`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from pydantic import ValidationError

from quiesce.admin.base import STORE_ACTOR, ServiceBase, _sane, log
from quiesce.admin.context import CommandContext
from quiesce.config.models import HealthMonitor, PoolConfig, ServerConfig
from quiesce.core.admin import AdminRecord
from quiesce.core.errors import GuardRefused, NotFound, QuiesceError
from quiesce.core.events import Event, EventKind
from quiesce.core.states import Admin, Cause
from quiesce.state.registry import ServerRuntime
from quiesce.store.base import SharedStore

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


class Persistence(ServiceBase):
    _held: list[Event] | None = None  # a takeover's events until it has taken over

    def _on_event(self, event: Event) -> None:
        if self._held is not None and not getattr(self.store, "replaying", False):
            self._held.append(event)  # recorded (or never) by announce_startup
            return
        try:
            event = self.store.append_event(event)
        except Exception:
            log.exception("could not persist event %s", event.kind.value)
        try:
            self._persist_state(event)
        except Exception:
            log.exception("could not persist the state changed by event %s", event.kind.value)
        self.bus.publish(event)
        if event.kind is EventKind.SERVER_EJECTED:
            self._poke()  # the timer returns it at the end of its ejection time

    def _persist_state(self, event: Event) -> None:
        kind = event.kind
        if self._shared_store and self._reloads_own(event):
            return  # this node's file's business (review 90 F1): not the other nodes'
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
                if self._shared_store and self._removed_by_reload(server):
                    return  # an operator's command: shared; the removal: not (above)
                if server.removing or server.key in self._removing_saved:
                    self._save_server(server)
        elif kind in (EventKind.SERVER_ADDED, EventKind.SERVER_UPDATED):
            if event.pool in self.registry.pools and event.server is not None:
                server = self.registry.pools[event.pool].server(event.server)
                if kind is EventKind.SERVER_ADDED and server.key in self._server_records:
                    # added again after a delete: its record (the tombstone) goes, so the new
                    # one is stored after the servers added meanwhile, as a restart adds them
                    self.store.forget_server(server.key)
                    self._server_records.discard(server.key)
                self._save_server(server)
                if kind is EventKind.SERVER_ADDED and server.runtime_defined:
                    # who added it and when (its admin record until a command changes it):
                    # a restart puts it back, as it does a file server's record
                    self.store.save_admin(server.key, server.admin)
        elif kind is EventKind.SERVER_REMOVED:
            key = f"{event.pool}/{event.server}"
            self._removing_saved.discard(key)
            if self._shared_store or self._in_file(key) is not None:
                # a server of the file: its deletion (a tombstone) wins over the file; on a
                # shared store, the other nodes delete their copy by it
                self.store.save_server(key, None)
                self._server_records.add(key)
            elif key in self._server_records:
                # added at runtime, the file has no server of that name: nothing of it is
                # left to override, no tombstone (a later file server of that name is
                # served, not "kept deleted": review 14 R9)
                self.store.forget_server(key)
                self._server_records.discard(key)
            self._drop_admin(key)  # after the tombstone: the other nodes delete by that
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

    def _drop_admin(self, key: str) -> None:
        """The admin record of a server deleted at runtime, deleted: on a shared store from
        every node's (review 90 F10: etcd kept a ``drain`` or ``maintenance`` record of every
        server so deleted, and each start warned "forgotten" about each)."""
        if self._shared_store:
            cast(SharedStore, self.store).drop_admin(key)
        else:
            self.store.delete_admin(key)

    def _reloads_own(self, event: Event) -> bool:
        """On a shared store, what a reload of this node's file does to a server and
        nothing stores (review 90 F1): the other nodes' files may still have the server (a
        config rolled out node by node), and they drain and delete a server by its shared
        records. So a reload's drain of a server its file dropped, that drain's deadline and
        expiry, the cancelled removal of one put back, and its deletion are this node's
        alone: neither etcd nor the mirror (which keeps the other nodes' records of it, as
        a restart of this node would read them) gets a write. Admin events of cause
        ``config`` are a reload's only."""
        if event.cause == Cause.CONFIG.value:
            return event.kind in (
                EventKind.ADMIN_CHANGE,
                EventKind.ADMIN_COMMAND,
                EventKind.SERVER_REMOVED,
            )
        if event.kind not in (EventKind.ADMIN_CHANGE, EventKind.ADMIN_COMMAND):
            return False
        if event.cause not in (Cause.DEADLINE.value, Cause.EXPIRY.value):
            return False
        pool = self.registry.pools.get(event.pool) if event.pool is not None else None
        if pool is None or event.server is None or not pool.has(event.server):
            return False
        return self._removed_by_reload(pool.server(event.server))

    def _removed_by_reload(self, server: ServerRuntime) -> bool:
        ctx = self._removals.get(server)
        return server.removing and ctx is not None and ctx.cause is Cause.CONFIG

    def restore_file_server(
        self, server: ServerRuntime, records: Mapping[str, AdminRecord]
    ) -> str | None:
        """A server a reload adds from the file, on a shared store: the admin record the
        store holds for it (the other nodes', left there while this node's file lacked it)
        put back, as a start puts it back; its state unless enabled (the reload's report)."""
        record = records.get(server.key)
        if record is None:
            return None
        self.registry.restore_admin(server, _sane(record))
        return None if record.state is Admin.ENABLED else record.state.value

    def _save_server(self, server: ServerRuntime) -> None:
        """The server's stored record: its definition when it was added or changed at
        runtime or is being removed (with who asked); none when the file's applies."""
        key = server.key
        if (
            server.runtime_defined
            and not server.removing
            and not self._shared_store
            and self._in_file(key) == server.config
        ):
            # set back to the file's definition at runtime (alter, or added again with the
            # file's values): it follows the file again, its runtime record goes (docs/admin.md
            # "Which wins"). Not on a shared store: the other nodes keep their record.
            server.runtime_defined = False
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

    def _in_file(self, key: str) -> ServerConfig | None:
        """The running config file's server ``key`` ("pool/server"), if it has one. Each
        pool's servers indexed by name once per config (a runtime change of a server in a
        pool of 10,000 does not walk the pool's list)."""
        pool_name, _, name = key.partition("/")
        pool = self.registry.config.pools.get(pool_name)
        if pool is None:
            return None
        cached: tuple[PoolConfig, dict[str, ServerConfig]] | None
        cached = self._file_index.get(pool_name)
        if cached is None or cached[0] is not pool:
            cached = (pool, {s.name: s for s in pool.servers})
            self._file_index[pool_name] = cached
        return cached[1].get(name)

    def _restore_servers(
        self, ignore: Callable[[str], None], pools: frozenset[str] | None = None
    ) -> dict[str, int]:
        """Servers added, changed or deleted at runtime, over the config file's: a stored
        definition wins, a tombstone deletes the file's server. ``pools``: only theirs (a
        reload bringing pools back, :meth:`restore_pools`)."""
        reg = self.registry
        counts = {"added": 0, "changed": 0, "deleted": 0}
        for key, data in self.store.load_servers().items():
            pool_name, _, name = key.partition("/")
            if pools is not None and pool_name not in pools:
                continue
            if self._shared_store and reloads_removal(data):
                ignore(
                    f"server {key}: record of a reload's removal on node(s) whose file dropped "
                    "it ignored (an earlier version shared it; this node's file decides)"
                )
                continue
            self._server_records.add(key)
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
                config = _without_lost_monitors(key, config, reg.monitors, ignore)
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
        restored_admin = self._restore_admin(ignore)
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

    def _restore_admin(
        self, ignore: Callable[[str], None], pools: frozenset[str] | None = None
    ) -> dict[str, str]:
        """The stored admin records put back (maintenance, drain, their expiry), by server;
        a record of a server its pool in the config does not have is forgotten, one of a
        pool the config does not have kept (the pool may come back, by a reload or at a
        restart: docs/admin.md). One of a server deleted at runtime (its tombstone: deleted
        on every node) is deleted from the store without a warning, on etcd for every node:
        an earlier version left them (review 90 F10)."""
        reg, store = self.registry, self.store
        restored: dict[str, str] = {}
        deleted: set[str] | None = None  # servers with a tombstone, read at the first need
        dropped = 0
        for key, record in store.load_admin().items():
            if pools is not None and key.partition("/")[0] not in pools:
                continue
            try:
                server = reg.find_server(key)
            except NotFound:
                if deleted is None:
                    deleted = {k for k, v in store.load_servers().items() if v is None}
                if key in deleted:  # deleted at runtime by an earlier version (review 90 F10)
                    self._drop_admin(key)
                    dropped += 1
                    continue
                state, pool = record.state.value, key.partition("/")[0]
                if pool not in reg.pools:  # the pool is out of the file: kept for its return
                    ignore(f"admin state of {key} ({state}) kept: no pool {pool!r} in the config")
                    continue
                ignore(f"admin state of {key} ({state}) forgotten: no such server")
                store.delete_admin(key)
                continue
            reg.restore_admin(server, _sane(record))
            if record.state is not Admin.ENABLED:
                restored[key] = record.state.value
        if dropped:
            log.info(
                "state store: %d admin record(s) of server(s) deleted at runtime removed "
                "(left by an earlier version)",
                dropped,
            )
        return restored

    def restore_pools(self, pools: frozenset[str]) -> list[str]:
        """Pools a reload added back to the file after an earlier reload removed them: what
        the store holds for their servers (runtime definitions and deletions, admin states,
        the pool's monitor list) put back exactly as a start puts it back (docs/admin.md,
        "Live reload"), so a reload and a restart agree. Within the reload's batch; returns
        one line per thing restored, for the reload's report."""
        reg = self.registry
        done: list[str] = []

        def ignore(what: str) -> None:
            log.warning("state store: %s", what)
            done.append(what)

        before = {s.key: s.config for p in pools for s in reg.pools[p].servers}
        counts = self._restore_servers(ignore, pools)
        for pool in sorted(pools):
            for s in reg.pools[pool].servers:
                if s.key not in before:
                    done.append(f"{s.key}: added at runtime, restored at {s.config.address}")
                elif s.runtime_defined and before[s.key] != s.config:
                    done.append(f"{s.key}: its runtime definition restored")
        for key in before.keys() - {s.key for p in pools for s in reg.pools[p].servers}:
            done.append(f"{key}: deleted at runtime, kept deleted")
        names = self.store.load_pool_monitors()
        for pool in sorted(pools):
            if pool not in names or reg.pools[pool].pool_monitors == names[pool]:
                continue
            try:
                reg.set_pool_monitors(pool, names[pool], actor=STORE_ACTOR, cause=Cause.STARTUP)
            except QuiesceError as exc:
                ignore(f"monitors of pool {pool!r} not restored: {exc.message}")
                continue
            counts["changed"] += 1
            done.append(f"pool {pool}: monitors {names[pool]} restored")
        for key, state in self._restore_admin(ignore, pools).items():
            done.append(f"{key}: {state} restored")
        if any(counts.values()):
            self._monitors_changed()
        return done


def reloads_removal(data: dict[str, Any] | None) -> bool:
    """A stored server record of a reload's removal (its ``removing`` of cause ``config``):
    on a shared store only an earlier version wrote one (review 90 F1: a reload's removal is
    its node's alone), and the nodes whose file has the server must not delete it by it."""
    removing = None if data is None else data.get("removing")
    return isinstance(removing, dict) and removing.get("cause") == Cause.CONFIG.value


def restore_reason(summary: dict[str, object]) -> str:
    """The start-up event's reason: whether the store gave anything back (a brand-new state
    file restores nothing, and the event should not claim it did)."""
    restored = any(v if not isinstance(v, dict) else any(v.values()) for v in summary.values())
    return "persisted state restored" if restored else "nothing persisted to restore"


def _without_lost_monitors(
    key: str, config: ServerConfig, monitors: Mapping[str, object], warn: Callable[[str], None]
) -> ServerConfig:
    """A stored server whose own monitor list names a monitor defined neither in the file
    nor in the store (the file dropped it while the process ran; a reload refuses that,
    review 90 F17): restored without it, loudly, rather than dropped (it was serving)."""
    lost = [m for m in config.healthmonitors if m not in monitors]
    if not lost:
        return config
    warn(
        f"server {key} restored without health monitor(s) {', '.join(lost)}: no longer "
        "defined (not in the config file nor the state store); it is not checked by them: "
        f"set its healthmonitors again (PATCH /api/v1/servers/{key}) or put the monitor back "
        "in the file"
    )
    kept = [m for m in config.healthmonitors if m in monitors]
    return config.model_copy(update={"healthmonitors": kept})
