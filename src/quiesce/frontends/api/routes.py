"""The REST API under ``/api/v1`` and the MaxScale aliases under ``/v1`` (docs/api.md).

Every handler is ``async def`` on purpose: FastAPI runs plain ``def`` handlers in a thread
pool, and the registry belongs to the event loop. Handlers only translate HTTP to
:class:`quiesce.admin.AdminService` calls and back; core errors carry a ``status_hint`` that
becomes the status code (404 / 400 / 409), and every error body is ``{"error", "detail"}``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import replace
from http import HTTPStatus
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from quiesce.admin import CommandContext, CommandResult
from quiesce.config.loader import ConfigError, format_loc, validation_problems
from quiesce.config.models import ServerConfig
from quiesce.core.errors import InvalidCommand, QuiesceError
from quiesce.frontends.api.bodies import (
    Body,
    ClearBody,
    DisableBody,
    DrainBody,
    EnableBody,
    FlagBody,
    LoginBody,
    MaintenanceBody,
    PoolMonitorsBody,
    WeightBody,
)
from quiesce.frontends.api.cluster import cluster_routes, install_cluster
from quiesce.frontends.api.deps import (
    ApiError,
    AppLike,
    Caller,
    Read,
    Write,
    after_reload,
    authenticator,
    json_body,
    no_body,
    only_query,
    source_of,
)
from quiesce.frontends.api.durable import Durable
from quiesce.frontends.api.events import events_router
from quiesce.frontends.api.limits import BodyLimit
from quiesce.frontends.api.maxscale import build_maxscale_routes
from quiesce.frontends.api.monitors import monitor_routes, monitor_type_table
from quiesce.frontends.auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Authenticator,
    AuthError,
)
from quiesce.frontends.views import pool_view, server_view

_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}\Z")  # \Z: "$" also matches before a final "\n"


def _error(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


_ERROR_NAMES = {404: "not found", 400: "invalid command", 409: "refused", 422: "invalid"}


def _install_error_handlers(api: FastAPI) -> None:
    async def quiesce_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, QuiesceError)
        status = exc.status_hint
        return _error(status, _ERROR_NAMES.get(status, "error"), exc.message)

    async def auth_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AuthError)
        resp = _error(exc.status, exc.error, exc.detail)
        if exc.status == 401 and not _from_browser(request):
            resp.headers["WWW-Authenticate"] = 'Basic realm="quiesce"'
        if exc.status == 429:
            resp.headers["Retry-After"] = str(exc.retry_after)
        return resp

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        resp = _error(exc.status, exc.error, exc.detail, **exc.extra)
        if "retry_after" in exc.extra:
            resp.headers["Retry-After"] = str(exc.extra["retry_after"])
            resp.headers["Connection"] = "close"  # a new connection may reach the new process
        return resp

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "malformed body", "the request body is not valid JSON")
        problems = []
        for e in errors:
            loc = [p for p in e.get("loc", ()) if p != "body"]
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            if e.get("type") == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{format_loc(loc)}: {msg}")
        return _error(422, "invalid", "; ".join(problems), problems=problems)

    async def internal_error(request: Request, exc: Exception) -> Response:
        # The last resort: a JSON error like every other, never a plain-text 500. Starlette's
        # ServerErrorMiddleware raises the exception again after this answer, and uvicorn logs
        # its traceback ("Exception in ASGI application") to the process log
        # (tests/api/test_security.py checks it).
        return _error(500, "internal error", f"{type(exc).__name__} (see the quiesce log)")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        try:
            phrase = HTTPStatus(exc.status_code).phrase.lower()
        except ValueError:
            phrase = "error"
        detail = exc.detail if isinstance(exc.detail, str) else phrase
        return _error(exc.status_code, phrase, detail)

    api.add_exception_handler(QuiesceError, quiesce_error)
    api.add_exception_handler(AuthError, auth_error)
    api.add_exception_handler(ApiError, api_error)
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(Exception, internal_error)


def _from_browser(request: Request) -> bool:
    """No Basic challenge for the dashboard's fetch() calls (the browser would pop a dialog)."""
    return SESSION_COOKIE in request.cookies or "x-requested-with" in request.headers


_B = TypeVar("_B", bound=Body)


def _body(model: type[_B]) -> Any:
    """A dependency: the request body as ``model``, parsed only after the caller is known to be
    an admin (a body parameter would be read and refused 400 before authentication)."""

    async def parse(request: Request, c: Write) -> _B:
        data = await json_body(request)
        if data is None:
            data = {}
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None

    return _described(parse, model, required=False)


def _described(parse: Any, model: type[BaseModel], *, required: bool) -> Any:
    """The dependency, marked with its body model so the OpenAPI document can describe the
    body (FastAPI only describes body parameters, which would be read before authentication)."""
    setattr(parse, "body_model", model)  # noqa: B010 - an attribute on a function
    setattr(parse, "body_required", required)  # noqa: B010
    return Depends(parse)


def _describe_bodies(api: FastAPI, routers: list[APIRouter]) -> None:
    """Add the request bodies of :func:`_described` dependencies of ``routers``' routes to
    ``api.openapi()`` (the routers themselves: FastAPI keeps included routers nested)."""
    original = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for route in (r for router in routers for r in router.routes):
            if not isinstance(route, APIRoute):
                continue
            pending = list(route.dependant.dependencies)
            while pending:
                dep = pending.pop()
                pending.extend(dep.dependencies)
                model = getattr(dep.call, "body_model", None)
                if model is None:
                    continue
                body_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body_schema.pop("$defs", {}))
                components[model.__name__] = body_schema
                for method in route.methods or ():
                    operation = schema["paths"][route.path_format][method.lower()]
                    operation["requestBody"] = {
                        "required": bool(getattr(dep.call, "body_required", False)),
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
                            }
                        },
                    }
        api.openapi_schema = schema
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


def _required_body(model: type[_B]) -> Any:
    """As :func:`_body`, for a body that must be given."""

    async def parse(request: Request, c: Write) -> _B:
        data = await json_body(request)
        if data is None:
            raise RequestValidationError(
                [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
            )
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None

    return _described(parse, model, required=True)


# --- the routes ---------------------------------------------------------------------------------


def build_routes(app: AppLike) -> tuple[APIRouter, APIRouter]:
    """The ``/api/v1`` router and the MaxScale-compatible ``/v1`` router."""
    v1 = APIRouter(prefix="/api/v1")
    maxscale = build_maxscale_routes(app)
    registry = app.registry

    def now() -> float:
        return registry.clock.time()

    def ctx(c: Caller, body: Body | None = None) -> CommandContext:
        """The command's context, built once from the caller and the body."""
        if body is None:
            return c.context()
        return replace(body.command_context(c.actor, c.cause, now()), local=c.local)

    def command_answer(result: CommandResult) -> dict[str, Any]:
        return {
            "changed": result.changed,
            "message": result.message,
            "closed": result.closed,
            "server": server_view(registry, result.server),
        }

    # pools -----------------------------------------------------------------------------------

    @v1.get("/pools", tags=["pools"])
    async def list_pools(p: Read) -> list[dict[str, object]]:
        return [pool_view(pool) for pool in registry.pools.values()]

    @v1.get("/pools/{pool}", tags=["pools"])
    async def show_pool(pool: str, p: Read) -> dict[str, object]:
        rt = registry.pool(pool)
        view = pool_view(rt)
        view["servers"] = [server_view(registry, s) for s in rt.servers]
        return view

    @v1.put("/pools/{pool}/healthmonitors", tags=["pools"])
    async def set_pool_monitors(
        pool: str, c: Write, body: PoolMonitorsBody = _required_body(PoolMonitorsBody)
    ) -> dict[str, object]:
        app.admin.set_pool_monitors(pool, body.healthmonitors, ctx(c))
        return pool_view(registry.pool(pool))

    # servers ---------------------------------------------------------------------------------

    @v1.get("/servers", tags=["servers"])
    async def list_servers(
        p: Read,
        response: Response,
        pool: str | None = None,
        limit: Annotated[int | None, Query(ge=1, le=10000)] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, object]]:
        """Every server, or ``pool``'s; a page of ``limit`` from ``offset`` (config order),
        with ``X-Total-Count`` and a ``Link: <…>; rel="next"`` while more follow."""
        if pool is not None:
            servers = registry.pool(pool).servers
            total = len(servers)
            end = total if limit is None else offset + limit
            page = servers[offset:end]  # O(log n + page): a sorted list of lists
        else:
            total = sum(len(x.servers) for x in registry.pools.values())
            end = total if limit is None else offset + limit
            page = list(itertools.islice(registry.servers(), offset, end))
        response.headers["X-Total-Count"] = str(total)
        if limit is not None and end < total:
            query = {"pool": pool} if pool is not None else {}
            query |= {"offset": str(end), "limit": str(limit)}
            response.headers["Link"] = (
                f'</api/v1/servers?{urllib.parse.urlencode(query)}>; rel="next"'
            )
        if len(page) > _SLICE:  # written and sent a slice at a time, the loop given back
            headers = {k: v for k, v in response.headers.items() if k in ("x-total-count", "link")}
            body = _json_list(registry, page)
            return StreamingResponse(body, headers=headers, media_type="application/json")  # type: ignore[return-value]
        return [server_view(registry, s) for s in page]

    # a server is also at its pool's collection (where it was POSTed): the same handlers,
    # DELETE /api/v1/pools/P/servers/S was a bare 404 (review 14 R8)
    @v1.get("/pools/{pool}/servers/{server}", include_in_schema=False)
    @v1.get("/servers/{pool}/{server}", tags=["servers"])
    async def show_server(pool: str, server: str, p: Read) -> dict[str, object]:
        return server_view(registry, registry.pool(pool).server(server))

    @v1.post("/servers/{pool}/{server}/maintenance", tags=["servers"])
    async def maintenance(
        pool: str, server: str, c: Write, body: MaintenanceBody = _body(MaintenanceBody)
    ) -> dict[str, Any]:
        return command_answer(
            app.admin.maintenance(f"{pool}/{server}", ctx(c, body), force=body.force)
        )

    @v1.post("/servers/{pool}/{server}/drain", tags=["servers"])
    async def drain(
        pool: str, server: str, c: Write, body: DrainBody = _body(DrainBody)
    ) -> dict[str, Any]:
        return command_answer(
            app.admin.drain(f"{pool}/{server}", ctx(c, body), timeout=body.timeout)
        )

    @v1.post("/servers/{pool}/{server}/disable", tags=["servers"])
    async def disable(
        pool: str, server: str, c: Write, body: DisableBody = _body(DisableBody)
    ) -> dict[str, Any]:
        return command_answer(
            app.admin.disable(
                f"{pool}/{server}", ctx(c, body), graceful=body.graceful, timeout=body.timeout
            )
        )

    @v1.post("/servers/{pool}/{server}/enable", tags=["servers"])
    async def enable(
        pool: str, server: str, c: Write, body: EnableBody = _body(EnableBody)
    ) -> dict[str, Any]:
        return command_answer(app.admin.enable(f"{pool}/{server}", ctx(c, body)))

    @v1.post("/servers/{pool}/{server}/clear", tags=["servers"])
    async def clear(
        pool: str, server: str, c: Write, body: ClearBody = _required_body(ClearBody)
    ) -> dict[str, Any]:
        state = _clear_state(body.state)
        return command_answer(app.admin.clear(f"{pool}/{server}", state, ctx(c, body)))

    @v1.put("/servers/{pool}/{server}/weight", tags=["servers"])
    async def weight(
        pool: str, server: str, c: Write, body: WeightBody = _required_body(WeightBody)
    ) -> dict[str, object]:
        ref = f"{pool}/{server}"
        await after_reload(app)
        app.admin.set_weight(ref, body.weight, ctx(c, body))
        return server_view(registry, registry.find_server(ref))

    # servers added, changed and removed at runtime (issue 14) --------------------------------

    def server_body(data: Any, what: str) -> tuple[dict[str, Any], str]:
        if not isinstance(data, dict):
            raise ApiError(422, "invalid", f"the body must be a JSON object ({what})")
        data = dict(data)
        reason = data.pop("reason", "")
        if not isinstance(reason, str):
            raise ApiError(422, "invalid", "reason: Input should be a valid string")
        return data, reason

    @v1.post("/pools/{pool}/servers", tags=["servers"], status_code=201)
    async def add_server(pool: str, request: Request, c: Write) -> dict[str, object]:
        data, reason = server_body(await json_body(request), "a server")
        registry.pool(pool)  # 404 before the body's problems
        try:
            config = ServerConfig.model_validate(data)
        except ValidationError as exc:
            problems = validation_problems(exc)
            raise ApiError(422, "invalid", "; ".join(problems), problems=problems) from None
        await after_reload(app)  # a reload being applied would not see it (review 14 R12)
        server = app.admin.add_server(pool, config, c.context(reason))
        view = server_view(registry, server)
        if app.admin.add_warning:  # the add cut a derived client limit far (review 90 F14)
            view["warnings"] = [app.admin.add_warning]
        return view

    @v1.patch("/pools/{pool}/servers/{server}", include_in_schema=False)
    @v1.patch("/servers/{pool}/{server}", tags=["servers"])
    async def update_server(
        pool: str, server: str, request: Request, c: Write
    ) -> dict[str, object]:
        data, reason = server_body(await json_body(request), "the fields to change")
        if not data:
            fields = ", ".join(f for f in ServerConfig.model_fields if f != "name")
            raise ApiError(422, "invalid", f"give at least one of {fields}")
        # an unknown key is a 422 naming it, as in the POST's body and everywhere in the API
        problems = [
            f"{k}: cannot be changed (delete the server and add it again)"
            if k in ServerConfig.model_fields
            else f"{k}: unknown key"
            for k in data
            if k == "name" or k not in ServerConfig.model_fields
        ]
        if problems:
            raise ApiError(422, "invalid", "; ".join(problems), problems=problems)
        await after_reload(app)  # nor undo it (review 14 R13)
        rt, diff = app.admin.update_server(f"{pool}/{server}", data, c.context(reason))
        return {
            "changed": {k: [_json(a), _json(b)] for k, (a, b) in diff.items()},
            "server": server_view(registry, rt),
        }

    @v1.delete("/pools/{pool}/servers/{server}", include_in_schema=False)
    @v1.delete("/servers/{pool}/{server}", tags=["servers"])
    async def delete_server(
        pool: str,
        server: str,
        request: Request,
        c: Write,
        drain: bool = False,
        timeout: str | None = None,
        force_guard: bool = False,
        reason: str = "",
    ) -> Response:
        only_query(request, "drain", "timeout", "force_guard", "reason")
        seconds = None
        if timeout is not None:
            # 422 naming the parameter, as FastAPI's own query checks (drain=maybe) answer
            # (review 90 F9: these two were a 400 without `problems`)
            problem = "query.timeout: applies with drain=true"
            if drain:
                try:
                    seconds = DisableBody.model_validate(
                        {"graceful": True, "timeout": timeout}
                    ).timeout
                    problem = ""
                except ValidationError:
                    problem = f"query.timeout: {timeout!r} is not a duration (30s, 5m) or infinite"
            if problem:
                raise ApiError(422, "invalid", problem, problems=[problem])
        ctx = c.context(reason, force_guard=force_guard)
        await after_reload(app)
        result = app.admin.remove_server(f"{pool}/{server}", ctx, drain=drain, timeout=seconds)
        removed = (
            result.server.removing is False and result.server not in registry.pool(pool).servers
        )
        body: dict[str, Any] = {
            "removed": removed,
            "removing": result.server.removing,
            "message": result.message,
        }
        if not removed:
            body["server"] = server_view(registry, result.server)
        return JSONResponse(body, status_code=200 if removed else 202)

    # live reload (issue 14) ------------------------------------------------------------------

    @v1.post("/reload", tags=["config"])
    async def reload(request: Request, c: Write) -> JSONResponse:
        """Re-read the config file, validate it as ``quiesce check`` does and apply the
        difference: 200 with the changes, 422 with every problem (nothing changed), 409 during
        a takeover, 500 naming the services that failed to start or take their new settings
        after the config switched (the rest applied; the next reload retries them). (A
        JSONResponse: FastAPI's encoder took ~24 ms of the event loop for the answer of a
        reload of 1,000 servers, ``json.dumps`` 1.3 ms.) No body: one is a 422."""
        no_body(await request.body(), "POST /api/v1/reload")
        try:
            plan = await app.reload(c.actor, via=c.cause.value)
        except ConfigError as exc:
            raise ApiError(
                422,
                "invalid config",
                f"{exc.source}: {len(exc.problems)} problem(s); nothing changed",
                problems=exc.problems,
            ) from None
        return JSONResponse(
            {
                "reloaded": True,
                "changes": [ch.to_dict() for ch in plan.changes],
                "kept": [ch.to_dict() for ch in plan.kept],
                "warnings": plan.warnings,
            }
        )

    monitor_routes(v1, app, ctx)
    cluster_routes(v1, app)

    # flags -----------------------------------------------------------------------------------

    @v1.get("/flags", tags=["flags"])
    async def list_flags(p: Read) -> dict[str, bool | str]:
        return dict(registry.flags)

    @v1.put("/flags/{name}", tags=["flags"])
    async def set_flag(
        name: str, c: Write, body: FlagBody = _required_body(FlagBody)
    ) -> dict[str, object]:
        if not _NAME.match(name):
            raise ApiError(422, "invalid", f"{name!r} is not a flag name (letters, digits, _.:-)")
        app.admin.set_flag(name, body.value, ctx(c, body))
        return {"name": name, "value": registry.flags.get(name)}

    @v1.delete("/flags/{name}", tags=["flags"], status_code=204)
    async def clear_flag(name: str, request: Request, c: Write, reason: str = "") -> Response:
        only_query(request, "reason")
        app.admin.clear_flag(name, c.context(reason))
        return Response(status_code=204)

    # who, login ------------------------------------------------------------------------------

    @v1.get("/whoami", tags=["auth"])
    async def whoami(p: Read) -> dict[str, object]:
        out: dict[str, object] = {"user": p.user, "role": p.role, "via": p.via}
        if p.csrf:
            out["csrf"] = p.csrf
        return out

    @v1.post("/login", tags=["auth"])
    async def login(request: Request) -> Response:
        auth = authenticator(request)
        ctype = request.headers.get("content-type", "")
        raw = await request.body()
        data: Any
        if "application/x-www-form-urlencoded" in ctype:
            form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"))
            data = {k: v[-1] for k, v in form.items()}
        else:
            data = await json_body(request)
        try:
            creds = LoginBody.model_validate(data)
        except ValidationError as exc:
            problems = validation_problems(exc)
            raise ApiError(422, "invalid", "; ".join(problems), problems=problems) from None
        principal = await auth.check_password(creds.user, creds.password, source_of(request))
        sid, session = auth.open_session(principal)
        secure = app.config.admin.tls is not None
        resp = JSONResponse({"user": session.user, "role": session.role, "csrf": session.csrf})
        resp.set_cookie(
            SESSION_COOKIE, sid, httponly=True, samesite="strict", secure=secure, path="/"
        )
        resp.set_cookie(
            CSRF_COOKIE, session.csrf, httponly=False, samesite="strict", secure=secure, path="/"
        )
        return resp

    @v1.post("/logout", tags=["auth"], status_code=204)
    async def logout(request: Request) -> Response:
        authenticator(request).close_session(request.cookies.get(SESSION_COOKIE))
        resp = Response(status_code=204)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        resp.delete_cookie(CSRF_COOKIE, path="/")
        return resp

    @v1.get("/openapi.json", tags=["meta"], include_in_schema=False)
    async def openapi(request: Request, p: Read) -> dict[str, Any]:
        schema: dict[str, Any] = request.app.openapi()
        return schema

    return v1, maxscale


def _clear_state(state: str) -> Literal["maintenance", "drain"]:
    if state == "maintenance":
        return "maintenance"
    if state == "drain":
        return "drain"
    raise InvalidCommand(f"clear takes state maintenance or drain, not {state!r}")


# server views a part of a big GET /api/v1/servers has (issue 21): 200 cost ~3 ms of CPU in
# one turn of the loop, 1,000 ~16 ms, which a neighbour's p99 saw (review F15)
_SLICE = 200


async def _json_list(registry: Any, servers: list[Any]) -> AsyncIterator[bytes]:
    """The views of ``servers`` as one JSON list, as FastAPI's JSONResponse writes it,
    :data:`_SLICE` at a time with the loop given back between two (10,000 servers took
    ~0.25 s of CPU in one turn, the data plane stopped; then 1,000 a turn, ~16 ms each)."""
    dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    for i in range(0, len(servers), _SLICE):
        part = ",".join(dumps(server_view(registry, s)) for s in servers[i : i + _SLICE])
        yield (("[" if i == 0 else ",") + part).encode()
        await asyncio.sleep(0)
    yield b"]"


def _json(value: object) -> object:
    return list(value) if isinstance(value, list | tuple) else value


def create_api(app: AppLike) -> FastAPI:
    """The admin listener's ASGI application: REST API, MaxScale aliases, /metrics, dashboard."""
    api = FastAPI(
        title="quiesce admin API",
        version="1",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    api.state.app = app
    api.state.auth = Authenticator(app.config.admin, app.admin)
    api.state.stopping = asyncio.Event()
    _install_error_handlers(api)
    v1, maxscale = build_routes(app)
    api.include_router(v1)
    api.include_router(events_router(app))
    api.include_router(maxscale)
    _describe_bodies(api, [v1, maxscale])

    from prometheus_client import CONTENT_TYPE_LATEST

    from quiesce.frontends.metrics import build_collector_registry, parse_scopes, stream

    metrics_registry = build_collector_registry(app)
    install_cluster(api, app, metrics_registry)  # metrics; etcd confirms writes (409 / 503)

    @api.get("/metrics", tags=["meta"])
    async def metrics(p: Read, scope: Annotated[list[str] | None, Query()] = None) -> Response:
        """Written and sent in slices of servers, the loop given back between them
        (quiesce.frontends.metrics.stream); ``scope`` as HAProxy's exporter (docs/api.md)."""
        try:
            scopes = parse_scopes(scope)
        except ValueError as exc:
            raise InvalidCommand(str(exc)) from None
        body = stream(metrics_registry, scopes)
        return StreamingResponse(body, media_type=CONTENT_TYPE_LATEST)

    try:
        from quiesce.frontends import dashboard

        mount = getattr(dashboard, "mount", None)
    except ImportError:
        mount = None
    if mount is not None:
        mount(api, app)
    api.add_middleware(Durable, admin=app.admin)  # answers once the change is on disk
    api.add_middleware(BodyLimit)  # last added: the outermost of the middleware
    return api


__all__ = ["AppLike", "Caller", "create_api", "monitor_type_table"]
