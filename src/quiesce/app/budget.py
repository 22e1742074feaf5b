"""The connection budget (quiesce.dataplane.limits) over the servers the pools *run*: those
of the config file and those added at runtime (REST ``POST /api/v1/pools/P/servers``, CLI
``create server``, the runtime socket's ``add server``, restored from the state store at
start or a takeover). Review 14 R14: 1,230 servers added at runtime were outside the
budget (the start line counted the file's 10; the same servers in the file refuse the start),
so the derived client limit promised descriptors the idle upstream pools could take.

- :func:`admit`: a runtime add that would no longer fit is refused (409, naming the limit
  and the setting to lower), as a reload that does not fit is; one that fits re-plans the
  budget (a derived limit follows the servers), logged ``old → new`` at INFO. A derived
  limit is guarded (review 90 F14: 283 adds answered 201 with no log line took it from 9,140
  to 20): an add that would take it under :func:`bounds`' floor (the smaller of 1,000 and
  half what the file's servers alone derive) is refused, nothing changed; one that leaves
  it under three quarters of the file's is logged at WARNING and answered with a warning.
- :func:`check_restored`: at start, once the store's runtime servers are back, the whole
  budget is planned again (servers of the file deleted at runtime not counted); a start
  that does not fit is refused as with the same servers in the file.
- :func:`follow_removals`: a server deleted at runtime (REST ``DELETE``, CLI ``destroy
  server``, the runtime socket's ``del server``, a drained removal deleted at its end)
  gives its descriptors back: the budget is planned again (a derived limit goes back up),
  once per turn of the event loop however many were deleted in it.
- :func:`live_after_reload`: a reload's new file plus the runtime servers it keeps.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from quiesce.config.models import Config, ServerConfig
from quiesce.core.errors import QuiesceError
from quiesce.core.events import Event, EventKind
from quiesce.core.states import Cause

if TYPE_CHECKING:
    from quiesce.dataplane.limits import Budget, Live
    from quiesce.state.registry import Registry

log = logging.getLogger("quiesce")


class BudgetRefused(QuiesceError):
    """A runtime server that the descriptor budget cannot hold."""

    status_hint = 409
    limit = ""  # why (the LimitError): the budget's parts and the setting to change


def live_servers(registry: Registry) -> dict[str, list[ServerConfig]]:
    """The servers each pool runs now, by pool (runtime ones, and those being removed)."""
    return {name: [s.config for s in pool.servers] for name, pool in registry.pools.items()}


def live_after_reload(new: Config, registry: Registry) -> Live:
    """A reload's pools: the new file's servers and, in each pool the file keeps, the
    servers added at runtime that the file does not name (a reload keeps them)."""
    live: dict[str, list[ServerConfig]] = {}
    for name, pool in new.pools.items():
        running = registry.pools.get(name)
        servers = list(pool.servers)
        if running is not None:
            named = {s.name for s in servers}
            servers += [
                s.config for s in running.servers if s.runtime_defined and s.name not in named
            ]
        live[name] = servers
    return live


FLOOR = 1000  # a derived client limit no runtime add may take it under (or half the file's)


def bounds(app: Any) -> tuple[int, int, int]:
    """(what the file's servers alone derive, the floor, the warning level) for the derived
    client limit: a runtime add that takes it under the floor is refused, one that leaves
    it under the warning level (three quarters of the file's) is answered with a warning."""
    from quiesce.dataplane.limits import reserve_for

    nofile = app.budget.nofile
    own = max(0, (nofile - reserve_for(app.config, nofile).total) // 2)
    return own, min(FLOOR, own // 2), own * 3 // 4


def _plan(app: Any, live: Live) -> Budget:
    from quiesce.dataplane.limits import plan

    return plan(app.config, app.budget.nofile, live)


def admit(app: Any, pool: str, config: ServerConfig) -> str | None:
    """Before a runtime add of ``config`` to ``pool``: the budget with it, applied; raises
    :class:`BudgetRefused` (nothing changed) when it does not fit in RLIMIT_NOFILE or would
    take a derived limit under the floor. Returns a warning for the answer when the derived
    limit is left under three quarters of the file's (else None)."""
    from quiesce.dataplane.limits import LimitError

    if app.budget is None or pool not in app.registry.pools:
        return None  # no budget (tests, no start), or the add's own 404 follows
    live = live_servers(app.registry)
    live[pool].append(config)
    try:
        budget = _plan(app, live)
    except LimitError as exc:
        refused = BudgetRefused(
            f"server {pool}/{config.name} not added: the connection budget would not fit: "
            f"limits: {exc}"
        )
        refused.limit = str(exc)
        raise refused from None
    old, new = app.budget.max_connections, budget.max_connections
    if budget.configured or new >= old:
        apply(app, budget, f"server {pool}/{config.name} added")
        return None
    own, floor, warn = bounds(app)
    cost = budget.reserve.total - app.budget.reserve.total
    why = (
        f"the client connection limit is derived (limits.max_connections is not set) from "
        f"RLIMIT_NOFILE {budget.nofile} less what is reserved, and each server of pool {pool} "
        f"reserves descriptors for its idle upstream connections (this one {cost}; "
        f"pools.{pool}.max_idle_per_server)"
    )
    if new < floor:
        refused = BudgetRefused(
            f"server {pool}/{config.name} not added: it would cut the client connection limit "
            f"from {old} to {new}, under the floor of {floor} (the smaller of {FLOOR} and half "
            f"the {own} the config file's servers alone allow): {why}; delete servers, lower "
            f"pools.{pool}.max_idle_per_server, raise RLIMIT_NOFILE, or set "
            "limits.max_connections to the limit you accept"
        )
        refused.limit = refused.message
        raise refused
    if new < warn:
        apply(app, budget, f"server {pool}/{config.name} added", logging.WARNING)
        return (
            f"client connection limit cut from {old} to {new} ({own} with the config file's "
            f"servers alone): {why}; adds that would take it under {floor} are refused"
        )
    apply(app, budget, f"server {pool}/{config.name} added")
    return None


def check_restored(app: Any) -> None:
    """At start, the state store's runtime servers restored: the budget planned over every
    server the pools run; raises LimitError (the start is refused) when it does not fit."""
    if app.budget is None:
        return
    pools = app.registry.pools
    if all(not s.runtime_defined for p in pools.values() for s in p.servers) and all(
        len(pools[name].servers) == len(pool.servers) for name, pool in app.config.pools.items()
    ):
        return  # the file's servers only: _plan_connections counted them
    # servers added at runtime, or some of the file's deleted at runtime (fewer to count)
    budget = _plan(app, live_servers(app.registry))
    low = not budget.configured and budget.max_connections < bounds(app)[2]
    apply(app, budget, "runtime servers restored", logging.WARNING if low else logging.INFO)


def follow_removals(app: Any) -> None:
    """Re-plan the budget after servers are deleted at runtime (a ``server_removed`` event
    not of a reload's: a reload plans its own budget over what it keeps). Coalesced: one
    plan at the next turn of the event loop for every deletion made before it (a thousand
    drained servers deleted at once plan once); while a reload is being applied, at its
    end (its own budget, planned before, is applied then and would undo it)."""
    scheduled = False

    def replan() -> None:
        nonlocal scheduled
        scheduled = False
        from quiesce.dataplane.limits import LimitError

        if app.budget is None:
            return
        reloader = getattr(app, "reloader", None)
        if reloader is not None and reloader.lock.locked():
            schedule(after=reloader.lock)
            return
        try:
            budget = _plan(app, live_servers(app.registry))
        except LimitError as exc:  # fewer servers than a budget that fitted: not expected
            log.warning("servers deleted: the connection budget not planned again: %s", exc)
            return
        apply(app, budget, "servers deleted at runtime")

    def schedule(after: Any = None) -> None:
        nonlocal scheduled
        if scheduled:
            return
        scheduled = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test driving the admin service by hand): now
            replan()
            return
        if after is None:
            loop.call_soon(replan)
            return

        async def when_free() -> None:
            async with after:
                pass
            replan()

        task = loop.create_task(when_free())
        _waiting.add(task)
        task.add_done_callback(_waiting.discard)

    def on_event(event: Event) -> None:
        if event.kind is EventKind.SERVER_REMOVED and event.cause != Cause.CONFIG:
            schedule()

    app.registry.listeners.append(on_event)


_waiting: set[asyncio.Task[None]] = set()  # (a task is kept until done)


def apply(app: Any, budget: Budget, why: str, level: int = logging.INFO) -> None:
    """The budget in force: the data plane's descriptor ceiling, the gate's limit (a
    derived one follows the servers), a log line when the client limit moved."""
    from quiesce.dataplane import park

    old = app.budget
    if budget == old:
        return
    app.budget = budget
    park.set_fd_ceiling(budget.data_plane_ceiling)
    if app.gate is not None:
        app.gate.limit = budget.max_connections
        app.gate.cause = budget.cause()
        app.gate._room_changed()  # the native-accept threshold follows the limit
    if old.max_connections != budget.max_connections:
        log.log(
            level,
            "%s: connection limit %d → %d client connections (%s)",
            why,
            old.max_connections,
            budget.max_connections,
            budget.describe(),
        )
