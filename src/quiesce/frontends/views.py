"""The JSON views of servers and pools that the front ends answer with (the REST API, and the
dashboard through it). Read-only: built from the registry's runtime objects at request time."""

from __future__ import annotations

from quiesce.core.status import in_maintenance
from quiesce.state.registry import Registry
from quiesce.state.runtime import PoolRuntime, ServerRuntime
from quiesce.state.sessions import session_counts
from quiesce.state.traffic import averages_ms


def server_view(registry: Registry, server: ServerRuntime) -> dict[str, object]:
    """A server as the API and the dashboard show it (docs/api.md, "Server view")."""
    rec = server.admin
    ctime, rtime, ttime = averages_ms((server,))
    return {
        "pool": server.pool,
        "name": server.name,
        "address": server.address,
        "weight": server.weight,
        "backup": server.config.backup,
        "priority": server.config.priority,
        "oper": server.oper.value,
        "admin": rec.state.value,
        "status": server.status,
        "eligible": server.eligible,
        "in_maintenance": in_maintenance(rec.state, server.oper),
        "primary": registry.pools[server.pool].primary == server.name,
        "connections": server.connections,
        "requests_in_flight": server.requests_in_flight,
        # database services: their sessions by state (None: no database service uses it)
        "sessions": session_counts(server),
        "requests_total": server.requests_total,
        "bytes_in": server.bytes_in,
        "bytes_out": server.bytes_out,
        "connect_time_ms": ctime,
        "response_time_ms": rtime,
        "total_time_ms": ttime,
        "reason": rec.reason,
        "actor": rec.actor,
        "since": rec.since,
        "cause": rec.cause.value,
        "expires": rec.expires,
        "deadline": rec.deadline,
        "monitors": {m: server.tracks[m].state.value for m in server.monitors},
        "ejection": _ejection(server),
        "last_checks": [r.to_dict() for r in server.checks()],
    }


def _ejection(server: ServerRuntime) -> dict[str, object] | None:
    """Passive outlier detection's view of the server (None: its pool has none)."""
    o = server.outlier
    if o is None:
        return None
    return {
        "ejected": o.ejected_until is not None,
        "until": o.ejected_until,
        "times_ejected": o.times,
        "ejections_total": o.ejections,
        "consecutive_5xx": o.fives,
        "consecutive_connect_failures": o.connect_failures,
    }


def pool_view(pool: PoolRuntime) -> dict[str, object]:
    """A pool as the API and the dashboard show it, with a count of its servers by status."""
    return {
        "name": pool.name,
        "algorithm": pool.config.algorithm,
        "mode": pool.config.mode,
        "healthmonitors": list(pool.pool_monitors),
        "min_servers_up": pool.config.min_servers_up,
        "graceful_disable_timeout": pool.config.graceful_disable_timeout,
        "retries": _retries(pool),
        "outlier_detection": _outlier(pool),
        "eligible": pool.eligible_count,
        "ejected": len(pool.ejected),
        "total": len(pool.servers),
        "available": pool.available,
        "primary": pool.primary,
        "sessions": pool.sessions,
        "summary": _summary(pool),
    }


def _retries(pool: PoolRuntime) -> dict[str, object]:
    """The pool's retry settings as configured (``retries: null``: the default, one retry of
    a refused connection on another server)."""
    c = pool.config
    return {
        "retries": c.retries,
        "retry_on": None if c.retry_on is None else list(c.retry_on),
        "redispatch": c.redispatch,
        "retry_non_idempotent": c.retry_non_idempotent,
        "retry_budget": c.retry_budget.model_dump(),
    }


def _outlier(pool: PoolRuntime) -> dict[str, object] | None:
    """The pool's passive outlier detection settings (None: off)."""
    od = pool.config.outlier_detection
    return None if od is None else od.model_dump()


def _summary(pool: PoolRuntime) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in pool.servers:
        key = s.status.split(" (")[0]
        out[key] = out.get(key, 0) + 1
    return out


__all__ = ["pool_view", "server_view"]
