"""What every router of the admin API shares: who is asking (``Read`` / ``Write``), the
``ApiError`` a handler raises, and the JSON body reader. Kept apart from the routers so that
the REST router (``routes``) and the MaxScale router (``maxscale``) both import it without
importing each other.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from quiesce.admin import AdminService, CommandContext
from quiesce.admin.reload_gate import RELOADING, settled
from quiesce.config.models import Config
from quiesce.core.errors import QuiesceError
from quiesce.core.states import Cause
from quiesce.frontends.api.bodies import MAX_REASON
from quiesce.frontends.auth import (
    CLIENT_HEADER,
    CSRF_HEADER,
    SESSION_COOKIE,
    Authenticator,
    AuthError,
    Principal,
    cause_of,
)
from quiesce.frontends.runtime_socket.takeover import write_refusal
from quiesce.state.registry import Registry
from quiesce.state.reload import ReloadPlan

log = logging.getLogger("quiesce")


class AppLike(Protocol):
    """What the control plane needs of :class:`quiesce.app.App`."""

    config: Config
    registry: Registry
    admin: AdminService

    async def reload(self, actor: str, via: str = "api") -> ReloadPlan:
        """Re-read and apply the config file (quiesce.app.App.reload)."""
        ...


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated writer: the actor and cause its commands carry."""

    principal: Principal
    cause: Cause
    local: bool = False  # ?local=true: a change of this node only while etcd is unreachable

    @property
    def actor(self) -> str:
        return self.principal.user

    def context(self, reason: str = "", **kw: Any) -> CommandContext:
        """The command's context: this caller, ``reason`` and ``kw`` (CommandContext's);
        a ``reason`` over :data:`~quiesce.frontends.api.bodies.MAX_REASON` characters is a
        422 (a query's or a server body's: the JSON bodies' models check their own)."""
        if len(reason) > MAX_REASON:
            problem = f"reason: at most {MAX_REASON} characters (this one has {len(reason)})"
            raise ApiError(422, "invalid", problem, problems=[problem])
        return CommandContext(self.actor, self.cause, reason, local=self.local, **kw)


class ApiError(QuiesceError):
    """An answer the API gives as an error: ``status`` (the status hint), a short ``error``,
    the ``detail`` sentence and any ``extra`` fields of the JSON body."""

    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail, status_hint=status)
        self.status, self.error, self.detail, self.extra = status, error, detail, extra


def source_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


async def reader(request: Request) -> Principal:
    return await authenticator(request).authenticate(
        authorization=request.headers.get("authorization"),
        session_cookie=request.cookies.get(SESSION_COOKIE),
        csrf_header=request.headers.get(CSRF_HEADER),
        method=request.method,
        source=source_of(request),
    )


async def writer(request: Request, principal: Annotated[Principal, Depends(reader)]) -> Caller:
    if not principal.is_admin:
        raise AuthError(403, "forbidden", f"{principal.user!r} is read_only: admin role required")
    # the body first (kept for the route): a route that read it after this check could
    # make its change once a takeover began meanwhile, missed by the new process
    await request.body()
    if (refused := write_refusal(request.app.state.app)) is not None:
        # A takeover (either side, quiesce.app.upgrade): a change made here would be lost or
        # missed by the process that serves next. 503 with Retry-After: the CLI sends it again.
        log.warning(
            "%s %s by %s refused: %s", request.method, request.url.path, principal.user, refused
        )
        raise ApiError(503, "handing over", refused, retry_after=1)
    local = request.query_params.get("local", "false").lower()
    if local not in ("true", "false", "1", "0"):
        raise ApiError(400, "bad request", f"local: true or false, not {local!r}")
    cause = cause_of(principal, request.headers.get(CLIENT_HEADER))
    return Caller(principal, cause, local in ("true", "1"))


async def after_reload(app: Any) -> None:
    """Before a runtime change of a server: wait for a reload being applied to end (its plan
    would not see the change; quiesce.admin.reload_gate), at most RUNTIME_WAIT seconds, else
    503 ``reloading`` with Retry-After (the CLI sends it again), nothing changed. The caller
    makes its change with no ``await`` after this."""
    if not await settled(app):
        raise ApiError(503, "reloading", RELOADING, retry_after=1)


Read = Annotated[Principal, Depends(reader)]
Write = Annotated[Caller, Depends(writer)]


def only_query(request: Request, *names: str) -> None:
    """A write's options given in its query (DELETE has no body) are checked as a body's
    keys are: an unknown one is a 422 naming it, so a typo (``drian=true``) never deletes
    without the option it meant. ``local`` is every write's (:func:`writer`)."""
    unknown = sorted(set(request.query_params) - {*names, "local"})
    if unknown:
        known = ", ".join([*names, "local"])
        problems = [f"{k}: unknown query parameter (this route takes {known})" for k in unknown]
        raise ApiError(422, "invalid", "; ".join(problems), problems=problems)


def no_body(raw: bytes, route: str) -> None:
    """A route that takes no options: an empty body, ``null`` or ``{}`` only, else a 422
    (a 400 for a body that is not JSON), so an option it would ignore is never taken as
    applied."""
    data = decode_json(raw)
    if data is None or data == {}:
        return
    if isinstance(data, dict):
        problems = [f"{k}: unknown key ({route} takes no body)" for k in data]
    else:
        problems = [f"the body: {route} takes no body"]
    raise ApiError(422, "invalid", "; ".join(problems), problems=problems)


async def json_body(request: Request) -> Any:
    return decode_json(await request.body())


def decode_json(raw: bytes) -> Any:
    """The JSON of a request body (None when empty), or a 400. Deep nesting (RecursionError)
    and integers too long to convert (ValueError) are malformed bodies too, not 500s."""
    try:
        return json.loads(raw or b"null")
    except (ValueError, RecursionError) as exc:
        detail = "the request body is not valid JSON"
        if isinstance(exc, RecursionError):
            detail += " (nested too deeply)"
        elif not isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
            detail += f" ({exc})"
        raise ApiError(400, "bad request", detail) from None


__all__ = [
    "ApiError",
    "AppLike",
    "Caller",
    "Read",
    "Write",
    "after_reload",
    "authenticator",
    "decode_json",
    "json_body",
    "no_body",
    "only_query",
    "reader",
    "source_of",
    "writer",
]
