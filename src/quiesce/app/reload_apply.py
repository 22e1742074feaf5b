"""One change of a live reload's plan applied to the running registry
(:meth:`quiesce.app.reload.Reloader._apply_change`), and what a reload that failed while it
applied reports.

The changes are applied so that they converge on what runs (review 14 R12): a reload that
failed half-way (whatever the reason) leaves the running config as it was, so the next one
plans the same changes again against it; a server or pool to add that is there already is
then given the file's definition instead of refused, a server added at runtime meanwhile is
kept (its record wins, as at a start), a server to remove that is gone already is skipped,
and a server's removal already cancelled is not cancelled again (that would enable a server
an operator left in maintenance). So a failed reload never makes every later reload fail.
A server the plan puts back in the file while it was being removed that was deleted
meanwhile (its last connection ended while the reload planned: the admin timer runs) is
added again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from quiesce.core.admin import AdminRecord
from quiesce.core.events import EventKind
from quiesce.state.events import make_event
from quiesce.state.reload import Change, ReloadPlan


def apply_change(
    app: Any,
    change: Change,
    ctx: Any,
    stored: Callable[[], Mapping[str, AdminRecord]] | None = None,
) -> str | None:
    """Apply ``change`` (``ctx``: the reload's command context); returns why it was kept
    instead (a server added at runtime meanwhile) or what of the store it took (a server
    added with the admin state the shared store holds for it), else None. ``stored``: the
    shared store's admin records (None: not a shared store)."""
    admin, reg, kind, d = app.admin, app.registry, change.kind, change.data
    if kind == "server_added" and reg.pool(d["pool"]).has(d["config"].name):
        if reg.pool(d["pool"]).server(d["config"].name).runtime_defined:
            return f"{change.target}: kept (added at runtime)"
        fields = d["config"].model_dump(exclude={"name"})  # left by a failed reload
        admin.update_server(change.target, fields, ctx, runtime=False)
        return None
    if kind == "server_removed" and not (
        d["pool"] in reg.pools and reg.pools[d["pool"]].has(d["name"])
    ):
        return None  # gone already
    if kind in ("monitor_added", "monitor_changed"):
        admin.put_monitor(change.target, d["monitor"], ctx)
    elif kind == "pool_added" and d["pool"] in reg.pools:  # added by a failed reload
        reg.update_pool(d["pool"], d["config"])
    elif kind == "pool_added":
        reg.add_pool(d["pool"], d["config"])
        config_event(app, change, ctx)
    elif kind == "pool_changed":
        was = reg.pool(d["pool"]).config.protocol
        reg.update_pool(d["pool"], d["config"])
        if d["config"].protocol != was:  # no connection of the old protocol is reused
            h2 = d["config"].protocol == "h2"
            app.table.switch_protocol(reg.pool(d["pool"]).servers, h2)
        config_event(app, change, ctx)
    elif kind == "pool_monitors":
        admin.set_pool_monitors(d["pool"], d["monitors"], ctx)
    elif kind == "server_added":
        return _added(admin, admin.add_server(d["pool"], d["config"], ctx, runtime=False), stored)
    elif kind == "server_changed":
        admin.update_server(change.target, dict(d["changes"]), ctx, runtime=False)
    elif kind == "server_restored" and not reg.pool(d["pool"]).has(d["config"].name):
        # deleted meanwhile (its last connection ended while the reload planned): added again
        return _added(admin, admin.add_server(d["pool"], d["config"], ctx, runtime=False), stored)
    elif kind == "server_restored":  # back as it was before its removal (drain too)
        if reg.find_server(change.target).removing:  # (not cancelled by a failed reload)
            admin.cancel_removal(change.target, ctx)
        config = d["config"]
        admin.update_server(change.target, config.model_dump(exclude={"name"}), ctx, runtime=False)
    elif kind == "server_removed":
        admin.remove_server(change.target, ctx, drain=True)
    elif kind == "flag_set":
        admin.set_flag(d["flag"], d["value"], ctx)
    elif kind == "flag_cleared":
        admin.clear_flag(d["flag"], ctx)
    elif kind not in ("pool_removed", "monitor_removed"):
        config_event(app, change, ctx)  # services, pages, users...: applied later
    return None


class StoredAdmin:
    """The shared store's admin records, read once a reload at its first server added (the
    reload's own writes do not touch them, other nodes' changes wait for its end)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.records: Mapping[str, AdminRecord] | None = None

    def __call__(self) -> Mapping[str, AdminRecord]:
        if self.records is None:
            self.records = self.store.load_admin()
        return self.records


def _added(
    admin: Any, server: Any, stored: Callable[[], Mapping[str, AdminRecord]] | None
) -> str | None:
    """A server of the file added on a shared store takes the admin state the store holds
    for it, as this node's restart would (the other nodes' record, left there while this
    node's file lacked the server: review 90 F1)."""
    if stored is None:
        return None
    state = admin.restore_file_server(server, stored())
    return None if state is None else f"{server.key}: {state} restored"


def config_event(app: Any, change: Change, ctx: Any) -> None:
    """The ``config_change`` event of a change that has no event of its own."""
    pool = change.data.get("pool")
    app.registry.emit(
        make_event(
            app.clock,
            EventKind.CONFIG_CHANGE,
            app.registry.pools.get(pool, pool) if isinstance(pool, str) else None,
            to=change.kind,
            cause=ctx.cause,
            actor=ctx.actor,
            reason=change.message,
            detail={"change": change.kind, "target": change.target}
            | change.data.get("detail", {}),  # what it was and is (state.reload)
        )
    )


def failed_detail(
    plan: ReloadPlan, applied: int, exc: BaseException, via: str, took: float
) -> dict[str, Any]:
    """The ``config_reload`` event's detail of a reload that failed while it applied its
    plan after ``applied`` of its changes: what was applied, what was not, the error."""
    return {
        "via": via,
        "error": f"{type(exc).__name__}: {exc}",
        "applied": [c.message for c in plan.changes[:applied]],
        "not_applied": [c.message for c in plan.changes[applied:]],
        "seconds": round(took, 4),
    }


__all__ = ["StoredAdmin", "apply_change", "config_event", "failed_detail"]
