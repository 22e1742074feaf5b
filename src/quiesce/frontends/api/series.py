"""``GET /api/v1/series``: the live series of one server, pool or service
(:mod:`quiesce.state.series`), read with the API's usual credentials."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from quiesce.frontends.api.deps import ApiError, AppLike, Read
from quiesce.state.series import COUNTERS, SECONDS, totals


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
            "fields": [*COUNTERS, "connections", "p50_ms", "p95_ms", "p99_ms"],
            "points": points,
            "totals": totals(points),
        }

    return router


__all__ = ["series_router"]
