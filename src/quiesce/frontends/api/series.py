"""``GET /api/v1/series``: the live series of one server, pool or service
(:mod:`quiesce.state.series`), read with the API's usual credentials; and
``GET /api/v1/series/servers``: a few fields of a pool's servers in one answer (the
dashboard's sparklines: one request a second for a pool, not one a server)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from quiesce.frontends.api.deps import ApiError, AppLike, Read
from quiesce.state.series import FIELDS, SECONDS, totals


def series_router(app: AppLike) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["series"])

    @router.get("/series")
    async def series(
        p: Read,
        kind: Literal["server", "pool", "service"],
        name: Annotated[str, Query(min_length=1, max_length=300)],
        seconds: Annotated[int, Query(ge=1, le=SECONDS)] = 60,
    ) -> dict[str, Any]:
        """One row a second, oldest first, for the last ``seconds`` whole seconds; a server
        is named ``POOL/SERVER``."""
        timer = getattr(app, "series", None)
        points = None if timer is None else timer.store.window(kind, name, seconds)
        if points is None:
            raise ApiError(404, "not found", f"no {kind} {name!r} in the live series")
        return {
            "kind": kind,
            "name": name,
            "interval": 1,
            "fields": list(FIELDS),
            "points": points,
            "totals": totals(points),
        }

    @router.get("/series/servers")
    async def pool_servers(
        p: Read,
        pool: Annotated[str, Query(min_length=1, max_length=300)],
        seconds: Annotated[int, Query(ge=1, le=SECONDS)] = 60,
        fields: Annotated[str, Query(max_length=300)] = "requests,errors,p99_ms,connections",
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        """Of each server of ``pool`` (config order, ``limit`` from ``offset``), the columns
        ``fields`` (comma-separated) of its last ``seconds`` seconds: ``{"t": [seconds],
        "servers": {name: {field: [values]}}}``."""
        wanted = [f.strip() for f in fields.split(",") if f.strip()]
        bad = [f for f in wanted if f not in FIELDS]
        if bad or not wanted:
            raise ApiError(
                422,
                "invalid query",
                f"fields: {', '.join(bad) or '(none)'} not one of {', '.join(FIELDS)}",
            )
        runtime = app.registry.pools.get(pool)
        if runtime is None:
            raise ApiError(404, "not found", f"no pool {pool!r}")
        timer = getattr(app, "series", None)
        out: dict[str, dict[str, list[Any]]] = {}
        stamps: list[int] = []
        servers = runtime.servers
        for server in servers[offset : offset + limit]:  # O(log n + page)
            points = (
                None
                if timer is None
                else timer.store.window("server", f"{pool}/{server.name}", seconds)
            )
            if points is None:  # added since the last tick
                continue
            stamps = stamps or [pt["t"] for pt in points]
            out[server.name] = {f: [pt[f] for pt in points] for f in wanted}
        return {
            "pool": pool,
            "interval": 1,
            "fields": wanted,
            "t": stamps,
            "servers": out,
            "total": len(servers),
        }

    return router


__all__ = ["series_router"]
