"""``GET /api/v1/services``: each service as the dashboard's Services view shows it: its
listener (address, bound port, TLS on or off), pool, rules with how many requests each one
decided, the monitor URI and what it answers now, and its counters (maintenance-page
responses, requests, connections), read with the API's usual credentials.

The rules' counts are the router's own (:attr:`quiesce.rules.ServiceRouter.hits`: one
integer increment per routed request); a service without rules nor monitor URI has no
router, and every request goes to its pool (``default``: its requests)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from quiesce.frontends.api.deps import AppLike, Read
from quiesce.rules import DEFAULT, MONITOR_200, MONITOR_503


def _rule(i: int, rule: Any, hits: list[int] | None) -> dict[str, Any]:
    return {
        "index": i,
        "name": rule.name or f"rules[{i}]",
        "if": rule.if_.model_dump(mode="json", exclude_none=True, by_alias=True),
        "then": rule.then.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
        "hits": hits[i] if hits is not None and i < len(hits) - 3 else 0,
    }


def service_view(name: str, config: Any, running: Any) -> dict[str, Any]:
    """One service: its config's parts and, while it runs, its counts."""
    stats = getattr(running, "stats", None)
    router = getattr(running, "router", None)
    hits: list[int] | None = getattr(router, "hits", None)
    monitor: dict[str, Any] | None = None
    if config.monitor_uri is not None:
        failing = router.monitor_failing() if router is not None else None
        monitor = {
            "path": config.monitor_uri.path,
            "state": "unknown" if failing is None else ("fail" if failing else "ok"),
            "answers_200": hits[MONITOR_200] if hits else 0,
            "answers_503": hits[MONITOR_503] if hits else 0,
        }
    requests = int(getattr(stats, "requests", 0))
    return {
        "name": name,
        "protocol": config.protocol,
        "listen": config.listen,
        "port": getattr(running, "port", None),
        "running": running is not None,
        "tls": config.tls is not None,
        "pool": config.pool,
        "fallback_pool": config.fallback_pool,
        "rules": [_rule(i, r, hits) for i, r in enumerate(config.rules)],
        "default_hits": hits[DEFAULT] if hits else (requests if running is not None else 0),
        "monitor_uri": monitor,
        "maintenance_pages": int(getattr(stats, "maintenance_pages", 0)),
        "requests": requests,
        "connections": int(getattr(stats, "connections", 0)),
        "connections_total": int(getattr(stats, "connections_total", 0)),
    }


def services_router(app: AppLike) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["services"])

    @router.get("/services")
    async def services(p: Read) -> list[dict[str, Any]]:
        """Every configured service, in config order."""
        running = getattr(app, "services", {})
        return [service_view(n, c, running.get(n)) for n, c in app.config.services.items()]

    return router


__all__ = ["service_view", "services_router"]
