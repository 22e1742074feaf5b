"""``/api/v1/healthmonitors``: health monitors edited at runtime (Avi's monitor fields,
validated like the config file; persisted by the admin service) and the monitor types."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from quiesce.admin import CommandContext
from quiesce.config.loader import validation_problems
from quiesce.config.models import HealthMonitor
from quiesce.frontends.api.deps import (
    ApiError,
    AppLike,
    Caller,
    Read,
    Write,
    json_body,
    only_query,
)

_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}\Z")  # \Z: "$" also matches before a final "\n"


def monitor_routes(v1: APIRouter, app: AppLike, ctx: Callable[[Caller], CommandContext]) -> None:
    """The health monitor routes on ``v1``: list, show, create, replace, delete, and the
    monitor types table. A body is validated exactly like the config file's monitors."""
    registry = app.registry

    def monitor_view(name: str) -> dict[str, Any]:
        m = registry.monitors.get(name)
        if m is None:
            raise ApiError(404, "not found", f"no health monitor named {name!r}")
        return {"name": name, **m.model_dump(mode="json", exclude_none=True)}

    def validate_monitor(name: str, data: Any) -> HealthMonitor:
        if not isinstance(data, dict):
            raise ApiError(422, "invalid", "the body must be a JSON object (a monitor)")
        data = dict(data)
        given = data.pop("name", name)
        if given != name:
            raise ApiError(400, "invalid command", f"the body names {given!r}, the URL {name!r}")
        if not _NAME.match(name):
            raise ApiError(
                422, "invalid", f"healthmonitors.{name}: not a name (letters, digits, _.:-)"
            )
        try:
            return HealthMonitor.model_validate(data)
        except ValidationError as exc:
            problems = validation_problems(exc, ("healthmonitors", name))
            raise ApiError(422, "invalid", "; ".join(problems), problems=problems) from None

    @v1.get("/healthmonitors", tags=["healthmonitors"])
    async def list_monitors(p: Read) -> list[dict[str, Any]]:
        return [monitor_view(n) for n in sorted(registry.monitors)]

    @v1.get("/healthmonitors/{name}", tags=["healthmonitors"])
    async def show_monitor(name: str, p: Read) -> dict[str, Any]:
        return monitor_view(name)

    @v1.post("/healthmonitors", tags=["healthmonitors"], status_code=201)
    async def create_monitor(request: Request, c: Write) -> dict[str, Any]:
        data = await json_body(request)
        name = data.get("name") if isinstance(data, dict) else None
        if not isinstance(name, str):
            raise ApiError(422, "invalid", "name: Field required (a string)")
        monitor = validate_monitor(name, data)
        if name in registry.monitors:
            raise ApiError(409, "exists", f"health monitor {name!r} exists: PUT to replace it")
        app.admin.put_monitor(name, monitor, ctx(c))
        return monitor_view(name)

    @v1.put("/healthmonitors/{name}", tags=["healthmonitors"])
    async def put_monitor(name: str, request: Request, c: Write) -> Response:
        monitor = validate_monitor(name, await json_body(request))
        created = app.admin.put_monitor(name, monitor, ctx(c))
        return JSONResponse(monitor_view(name), status_code=201 if created else 200)

    @v1.delete("/healthmonitors/{name}", tags=["healthmonitors"], status_code=204)
    async def delete_monitor(name: str, request: Request, c: Write) -> Response:
        only_query(request)
        app.admin.delete_monitor(name, ctx(c))
        return Response(status_code=204)

    @v1.get("/healthmonitor-types", tags=["healthmonitors"])
    async def monitor_types(p: Read) -> list[dict[str, object]]:
        return monitor_type_table()


def monitor_type_table() -> list[dict[str, object]]:
    """Monitor types with node / pool compatibility (MCP 2.0's list), from the health
    subsystem that implements them."""
    from quiesce.health import MONITOR_TYPES

    return [dict(row) for row in MONITOR_TYPES]


__all__ = ["monitor_routes", "monitor_type_table"]
