"""What a takeover hands over besides the sockets: every server's operational state, so the
new process serves from the first request exactly as the old one did (sans-IO).

Theory of operation
-------------------
The admin state, servers added at runtime, runtime monitors and flags are in the state store,
which the new process reads at start. What is not is the operational axis (each monitor's
:class:`~quiesce.core.oper.MonitorTrack`: its state and the streak of results that disagree
with it, HAProxy's rise/fall ``health`` counter), the check counters, ``disable health`` and
a weight set with ``set weight``. A new process that started them fresh saw every monitored
server ``unknown``, and one check that timed out under load made a server ``down`` at once
(from ``unknown`` one result decides) and answered 503s until ``successful_checks`` passes
brought it back. Seeded with the old process's tracks, a server that was ``up`` needs
``failed_checks`` failures in a row to go down, as it would have in the old process.

:func:`snapshot` (the old process, at ``_takeover``) makes plain JSON data;
:func:`seed` (the new process, after the store is restored and before any listener
accepts) puts it back where it still applies:

- a track only for a monitor of the same name whose definition is unchanged, on a server
  with the same address (a re-addressed server, a changed monitor: checked afresh);
- ``set weight``'s weight only where the file's weight for that server is unchanged (the
  rule a reload keeps: docs/admin.md);
- ``disable health`` as it was.

The pools are recomputed once each, at the end (:meth:`Registry.deferring`). Like HAProxy's
``server-state-file`` (``load-server-state-from-file``), which carries the same fields over a
reload.
"""

from __future__ import annotations

import json
from typing import Any

from quiesce.core.oper import MonitorTrack, combine
from quiesce.core.states import Oper
from quiesce.state.registry import Registry

VERSION = 1


def _monitor_key(definition: Any) -> str:
    return json.dumps(definition.model_dump(mode="json"), sort_keys=True, default=str)


def snapshot(registry: Registry) -> dict[str, Any]:
    """The operational state of every server, as plain JSON data."""
    servers: dict[str, list[Any]] = {}
    for s in registry.servers():
        tracks = [[m, t.state.value, t.streak] for m, t in s.tracks.items()]
        if not tracks and s.weight == s.config.weight and s.health_checks:
            continue  # nothing a fresh start would not have
        servers[s.key] = [
            s.address,
            tracks,
            s.weight,
            s.config.weight,
            s.health_checks,
            s.oper_since,
            s.checks_failed,
            s.went_down,
        ]
    monitors = {name: _monitor_key(m) for name, m in registry.monitors.items()}
    return {"version": VERSION, "monitors": monitors, "servers": servers}


def seed(registry: Registry, state: dict[str, Any]) -> int:
    """Put a :func:`snapshot` back into a registry whose servers are as the store restored
    them (before any request); returns how many servers took their operational state.
    Data that does not fit (another version, a server gone) is skipped, never an error."""
    if not isinstance(state, dict) or state.get("version") != VERSION:
        return 0
    theirs = state.get("monitors") or {}
    same = {
        name
        for name, m in registry.monitors.items()
        if isinstance(theirs, dict) and theirs.get(name) == _monitor_key(m)
    }
    seeded = 0
    servers = state.get("servers") or {}
    with registry.deferring():
        for key, row in servers.items():
            pool_name, _, name = str(key).partition("/")
            pool = registry.pools.get(pool_name)
            if pool is None or not pool.has(name):
                continue
            server = pool.server(name)
            try:
                address, tracks, weight, config_weight, checks, since, failed, down = row
            except (TypeError, ValueError):
                continue
            if weight != config_weight and server.config.weight == config_weight:
                registry.set_weight(server, int(weight))
            if checks is False:
                registry.set_health_checks(server, False)
            if address != server.address:
                continue
            took = False
            for monitor, oper, streak in tracks:
                if monitor in server.tracks and monitor in same:
                    server.tracks[monitor] = MonitorTrack(Oper(oper), int(streak))
                    took = True
            if not took:
                continue
            server.checks_failed, server.went_down = int(failed), int(down)
            oper = combine(
                [server.tracks[m].state for m in server.monitors],
                pool.config.min_health_monitors_up,
            )
            if oper is not server.oper:
                server.oper = oper
                server.oper_since = since
            # the pool is recomputed when the block ends (restore_admin: no event, no guard)
            registry.restore_admin(server, server.admin)
            seeded += 1
    return seeded


__all__ = ["seed", "snapshot"]
