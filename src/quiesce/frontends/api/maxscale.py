"""The MaxScale REST API under ``/v1``: what MariaDB MaxScale's ``maxctrl`` reads and writes,
answered from quiesce's registry (docs/api.md, "MaxScale aliases").

Resources are JSON:API documents as MaxScale's (``{"links", "data": {"id", "type",
"attributes", "relationships", "links"}}``); server ``state`` strings use MaxScale's words and
order (``Maintenance`` or ``Draining``/``Drained`` first, then ``Running`` or ``Down``, joined
by ", "), so scripts that grep ``maxctrl list servers`` keep working. Reads need the read role,
writes the admin role, exactly as ``/api/v1``; every write goes through
:class:`quiesce.admin.AdminService` with the caller's actor and cause, so it is audited like
any other command.

Server ids: MaxScale's are flat names. A quiesce server is POOL/SERVER; its MaxScale id is
``SERVER`` when that name is unique across pools, else ``POOL/SERVER``. A request may name a
server either way (``/v1/servers/web1``, ``/v1/servers/web/web1`` or ``web%2Fweb1``).
"""

from __future__ import annotations

import email.utils
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError

from quiesce import __version__
from quiesce.admin import CommandContext
from quiesce.core.states import Admin, Oper
from quiesce.frontends.api.deps import (
    ApiError,
    AppLike,
    Caller,
    Read,
    Write,
    after_reload,
    json_body,
    only_query,
)
from quiesce.frontends.views import server_view
from quiesce.state.runtime import ServerRuntime

JsonObject = dict[str, Any]

_RUNNING = frozenset({Oper.UP, Oper.UNMONITORED, Oper.MAINTENANCE})


def maxscale_state(server: ServerRuntime) -> tuple[str, str | None]:
    """``(state, state_details)`` in MaxScale's vocabulary (its ``Target::status_to_string``):
    ``Maintenance`` (either axis) or else ``Draining`` / ``Drained`` (admin drain, with or
    without live connections), then ``Running`` (oper up, unmonitored, or a monitor's
    maintenance answer: the server answers) or ``Down`` (down, or no verdict yet).
    ``state_details`` says what MaxScale's words cannot (maxctrl appends it to the state)."""
    words: list[str] = []
    admin, oper = server.admin.state, server.oper
    if admin is Admin.MAINTENANCE or oper is Oper.MAINTENANCE:
        words.append("Maintenance")
    elif admin is Admin.DRAIN:
        words.append("Draining" if server.connections > 0 else "Drained")
    words.append("Running" if oper in _RUNNING else "Down")
    details: str | None = None
    if oper is Oper.MAINTENANCE and admin is not Admin.MAINTENANCE:
        details = "down for maintenance (health monitor)"
    elif oper is Oper.UNKNOWN:
        details = "no health verdict yet"
    return ", ".join(words), details


def server_parameters(server: ServerRuntime) -> JsonObject:
    """A server's ``attributes.parameters``: MaxScale's ``address`` and ``port``, the weight
    (MaxScale's weighting parameter), and quiesce's own ``backup``, ``priority``, ``pool``."""
    return {
        "address": server.host,
        "port": server.port,
        "weight": server.weight,
        "backup": server.config.backup,
        "priority": server.config.priority,
        "pool": server.pool,
    }


def _http_date(t: float) -> str:
    return email.utils.formatdate(t, usegmt=True)


def _sparse(resource: JsonObject, request: Request) -> JsonObject:
    """JSON:API sparse fieldsets as MaxScale reads them: ``?fields[servers]=state,statistics``
    keeps those keys of ``attributes`` and ``relationships`` of the ``servers`` resources."""
    wanted = request.query_params.get(f"fields[{resource['type']}]")
    if wanted is None:
        return resource
    keep = {f.strip() for f in wanted.split(",") if f.strip()}
    out = dict(resource)
    for part in ("attributes", "relationships"):
        if part in out:
            out[part] = {k: v for k, v in out[part].items() if k in keep}
    return out


def _refs(kind: str, ids: Iterable[str]) -> JsonObject:
    return {"data": [{"id": i, "type": kind} for i in ids]}


def build_maxscale_routes(app: AppLike) -> APIRouter:
    """The ``/v1`` router (tag ``maxscale``)."""
    router = APIRouter(prefix="/v1", tags=["maxscale"])
    registry = app.registry
    started = registry.clock.time()

    def ctx(c: Caller) -> CommandContext:
        return c.context()

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/") + "/v1/"

    def link(request: Request, *parts: str) -> str:
        return base(request) + "/".join(urllib.parse.quote(p, safe="") for p in parts)

    # ids and relationships ------------------------------------------------------------------

    def server_ids() -> dict[str, str]:
        """``POOL/SERVER`` → MaxScale id."""
        counts = Counter(s.name for s in registry.servers())
        return {s.key: s.name if counts[s.name] == 1 else s.key for s in registry.servers()}

    def service_names_for(server: ServerRuntime) -> list[str]:
        return [
            name
            for name, svc in app.config.services.items()
            if server.pool in (svc.pool, svc.fallback_pool)
        ]

    def service_servers(name: str) -> list[ServerRuntime]:
        svc = app.config.services[name]
        pools = [p for p in (svc.pool, svc.fallback_pool) if p is not None and p in registry.pools]
        return [s for p in pools for s in registry.pools[p].servers]

    def monitor_servers(name: str) -> list[ServerRuntime]:
        return [s for s in registry.servers() if name in s.monitors]

    # resources ------------------------------------------------------------------------------

    def server_resource(request: Request, server: ServerRuntime, ids: dict[str, str]) -> JsonObject:
        sid = ids[server.key]
        state, details = maxscale_state(server)
        view = server_view(registry, server)
        view.pop("last_checks", None)
        return {
            "id": sid,
            "type": "servers",
            "attributes": {
                "name": sid,
                "state": state,
                "state_details": details,
                "parameters": server_parameters(server),
                "statistics": {
                    "connections": server.connections,
                    "total_connections": server.requests_total,
                    "active_operations": server.requests_in_flight,
                },
                "triggered_at": _http_date(server.admin.since) if server.admin.since else None,
                "quiesce": view,
            },
            "relationships": {
                "services": _refs("services", service_names_for(server)),
                "monitors": _refs("monitors", server.monitors),
            },
            "links": {"self": link(request, "servers", sid)},
        }

    def monitor_resource(request: Request, name: str, ids: dict[str, str]) -> JsonObject:
        monitor = registry.monitors[name]
        pools = [p.name for p in registry.pools.values() if name in p.pool_monitors]
        return {
            "id": name,
            "type": "monitors",
            "attributes": {
                "module": monitor.type,
                "state": "Running" if pools else "Stopped",
                "parameters": monitor.model_dump(mode="json", exclude_none=True),
                "monitor_diagnostics": {"pools": pools},
            },
            "relationships": {
                "servers": _refs("servers", (ids[s.key] for s in monitor_servers(name))),
            },
            "links": {"self": link(request, "monitors", name)},
        }

    def service_resource(request: Request, name: str, ids: dict[str, str]) -> JsonObject:
        svc = app.config.services[name]
        running = getattr(app, "services", {}).get(name)
        stats = getattr(running, "stats", None)
        if callable(stats):
            stats = stats()
        live = int(getattr(stats, "connections", 0))
        total = int(getattr(stats, "connections_total", 0))
        host, _, port = svc.listen.rpartition(":")
        listener: JsonObject = {
            "id": f"{name}-listener",
            "type": "listeners",
            "attributes": {
                "state": "Running" if running is not None else "Stopped",
                "parameters": {
                    "address": host.strip("[]"),
                    "port": int(port),
                    "protocol": svc.protocol,
                },
            },
        }
        return {
            "id": name,
            "type": "services",
            "attributes": {
                "router": svc.protocol,
                "state": "Started" if running is not None else "Stopped",
                "started": _http_date(started),
                "connections": live,
                "total_connections": total,
                "statistics": {"connections": live, "total_connections": total},
                "parameters": svc.model_dump(
                    mode="json", include={"listen", "protocol", "pool", "fallback_pool"}
                ),
                "listeners": [listener],
            },
            "relationships": {
                "servers": _refs("servers", (ids[s.key] for s in service_servers(name))),
            },
            "links": {"self": link(request, "services", name)},
        }

    def document(request: Request, data: Any, *path: str) -> JsonObject:
        if isinstance(data, list):
            data = [_sparse(d, request) for d in data]
        else:
            data = _sparse(data, request)
        return {"links": {"self": link(request, *path)}, "data": data}

    def find(ref: str) -> ServerRuntime:
        return registry.find_server(urllib.parse.unquote(ref))

    # the root, MaxScale itself, sessions ------------------------------------------------------

    @router.get("")
    @router.get("/")
    async def root(request: Request, p: Read) -> JsonObject:
        """``maxctrl --hosts A,B`` first sends ``GET /v1/`` to every host (common.js,
        pingCluster): a 200 lets it go on."""
        names = ("servers", "monitors", "services", "sessions", "maxscale")
        return {
            "links": {"self": base(request), **{n: link(request, n) for n in names}},
            "meta": {"product": "quiesce", "version": __version__},
        }

    @router.get("/maxscale")
    async def maxscale(request: Request, p: Read) -> JsonObject:
        now = registry.clock.time()
        admin = app.config.admin
        host, _, port = admin.listen.rpartition(":")
        data = {
            "id": "maxscale",
            "type": "maxscale",
            "attributes": {
                "product": "quiesce",
                "version": __version__,
                "commit": "",
                "started_at": _http_date(started),
                "activated_at": _http_date(started),
                "uptime": int(now - started),
                "parameters": {
                    "admin_host": host.strip("[]"),
                    "admin_port": int(port),
                    "admin_auth": True,
                    "admin_ssl": admin.tls is not None,
                    "passive": False,
                },
            },
            "links": {"self": link(request, "maxscale")},
        }
        return document(request, data, "maxscale")

    @router.get("/sessions")
    async def sessions(request: Request, p: Read) -> JsonObject:
        """Always empty: quiesce does not expose client sessions one by one (the connection
        counts are in ``/v1/services`` and ``/metrics``)."""
        return document(request, [], "sessions")

    @router.get("/sessions/{sid}")
    async def session(sid: str, p: Read) -> JsonObject:
        raise ApiError(404, "not found", f"no session {sid!r} (quiesce lists no sessions)")

    # servers --------------------------------------------------------------------------------

    @router.get("/servers")
    async def list_servers(request: Request, p: Read) -> JsonObject:
        ids = server_ids()
        data = [server_resource(request, s, ids) for s in registry.servers()]
        return document(request, data, "servers")

    @router.get("/servers/{name:path}")
    async def show_server(name: str, request: Request, p: Read) -> JsonObject:
        server = find(name)
        ids = server_ids()
        return document(request, server_resource(request, server, ids), "servers", ids[server.key])

    @router.patch("/servers/{name:path}", status_code=204)
    async def patch_server(name: str, request: Request, c: Write) -> Response:
        """MaxScale's server update, as ``maxctrl alter server S weight 3`` sends it:
        ``{"data": {"attributes": {"parameters": {"weight": 3}}}}``. Only ``weight`` changes;
        the other parameters shown may be sent back only with their current values."""
        only_query(request, *_MAXCTRL)
        server = find(name)
        weight = _patch_weight(await json_body(request), server, server_ids()[server.key])
        if weight is not None:
            await after_reload(app)
            app.admin.set_weight(server.key, weight, ctx(c))
        return Response(status_code=204)

    def target_state(state: str | None) -> Literal["maintenance", "drain"]:
        if state not in ("maintenance", "drain"):
            raise ApiError(
                400, "invalid state", f"state must be maintenance or drain, not {state!r}"
            )
        return "maintenance" if state == "maintenance" else "drain"

    @router.put("/servers/{name:path}/set", status_code=204)
    async def set_state(
        name: str, request: Request, c: Write, state: str | None = None, force: str | None = None
    ) -> Response:
        """``maxctrl set server S maintenance [--force]`` / ``set server S drain``. An
        unknown query parameter is refused (a 422 naming it), as the native routes refuse
        one: a misspelt ``force`` never puts a server in maintenance unforced."""
        only_query(request, "state", "force", *_MAXCTRL)
        target = target_state(state)
        server = find(name)
        if target == "maintenance":
            forced = (force or "").lower() in ("yes", "true", "1")
            app.admin.maintenance(server.key, ctx(c), force=forced)
        else:
            if force is not None:
                raise ApiError(400, "invalid state", "force applies only to maintenance")
            app.admin.drain(server.key, ctx(c))
        return Response(status_code=204)

    @router.put("/servers/{name:path}/clear", status_code=204)
    async def clear_state(
        name: str, request: Request, c: Write, state: str | None = None
    ) -> Response:
        """``maxctrl clear server S maintenance|drain`` (unknown query parameters: 422)."""
        only_query(request, "state", *_MAXCTRL)
        target = target_state(state)
        server = find(name)
        app.admin.clear(server.key, target, ctx(c))
        return Response(status_code=204)

    # monitors, services ---------------------------------------------------------------------

    @router.get("/monitors")
    async def list_monitors(request: Request, p: Read) -> JsonObject:
        ids = server_ids()
        data = [monitor_resource(request, n, ids) for n in sorted(registry.monitors)]
        return document(request, data, "monitors")

    @router.get("/monitors/{name}")
    async def show_monitor(name: str, request: Request, p: Read) -> JsonObject:
        if name not in registry.monitors:
            raise ApiError(404, "not found", f"no health monitor named {name!r}")
        return document(request, monitor_resource(request, name, server_ids()), "monitors", name)

    @router.get("/services")
    async def list_services(request: Request, p: Read) -> JsonObject:
        ids = server_ids()
        data = [service_resource(request, n, ids) for n in app.config.services]
        return document(request, data, "services")

    @router.get("/services/{name}")
    async def show_service(name: str, request: Request, p: Read) -> JsonObject:
        if name not in app.config.services:
            raise ApiError(404, "not found", f"no service named {name!r}")
        return document(request, service_resource(request, name, server_ids()), "services", name)

    return router


_MAXCTRL = ("sync",)
"""What maxctrl adds to any write (``--skip-sync``: ``sync=false``; quiesce has no MaxScale
configuration to sync, so it means nothing here)."""


def _invalid(loc: tuple[str, ...], msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg}])


def _patch_weight(body: Any, server: ServerRuntime, sid: str) -> int | None:
    """The new weight of a PATCH body (None: nothing to change), or a 422 naming the part of
    the body that cannot be applied. Checked whole before anything changes."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise _invalid(("data",), "a JSON:API document {data: {attributes: {parameters}}}")
    data: JsonObject = body["data"]
    if data.get("id") not in (None, sid, server.key):
        raise _invalid(("data", "id"), f"{data.get('id')!r} is not this server ({sid!r})")
    if data.get("type") not in (None, "servers"):
        raise _invalid(("data", "type"), "must be servers")
    if data.get("relationships"):
        raise _invalid(("data", "relationships"), "cannot be changed through the MaxScale API")
    attributes = data.get("attributes", {})
    if not isinstance(attributes, dict):
        raise _invalid(("data", "attributes"), "must be an object")
    params = attributes.get("parameters", {})
    if not isinstance(params, dict):
        raise _invalid(("data", "attributes", "parameters"), "must be an object")
    current = server_parameters(server)
    weight: int | None = None
    for key, value in params.items():
        loc = ("data", "attributes", "parameters", str(key))
        if key == "weight":
            if isinstance(value, bool) or not isinstance(value, int):
                raise _invalid(loc, "must be an integer")
            weight = value
        elif key in current:
            if value != current[key] or isinstance(value, bool) != isinstance(current[key], bool):
                raise _invalid(loc, f"cannot be changed here (it is {current[key]!r})")
        else:
            raise _invalid(loc, "unknown parameter (only weight can be changed)")
    return weight


__all__ = ["build_maxscale_routes", "maxscale_state"]
