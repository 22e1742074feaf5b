"""The web dashboard: static HTML, CSS and JavaScript served by the admin listener.

There is no build step and nothing is fetched from outside the machine: the files in
``static/`` are the whole UI. The pages themselves are public (like the login page of any
appliance); every piece of data comes from the REST API under ``/api/v1``, which enforces the
users, roles, session cookie and CSRF header (see docs/architecture.md). ``mount`` adds:

- ``GET /`` — the app (one page; views are chosen by the URL hash),
- ``GET /login`` — the log-in form (``POST /api/v1/login`` sets the session cookie),
- ``GET /basic-login`` — HTTP Basic instead: a 401 challenge until the browser sends valid
  credentials, then a redirect to ``/`` (the browser keeps sending them),
- ``/ui/…`` — the static assets.

HTML answers carry a strict Content-Security-Policy (scripts and styles from this origin only,
no framing), so a dashboard page cannot be turned into a clickjacking or injection vector, and
:class:`BrowserOriginGuard` refuses writes a browser makes for another origin (the cached
HTTP Basic credentials case, which the CSRF header does not cover).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)

_HTML_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


class _Assets(StaticFiles):
    """Static files, revalidated on each load so an upgrade is picked up at once."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _page(name: str) -> Response:
    return FileResponse(STATIC_DIR / name, media_type="text/html", headers=_HTML_HEADERS)


async def _basic_login(request: Request) -> Response:
    """HTTP Basic for the dashboard: challenge until the browser sends valid credentials, then
    go to the app. The browser then sends them with every request under ``/`` by itself."""
    auth = getattr(request.app.state, "auth", None)
    header = request.headers.get("authorization", "")
    if auth is not None and header[:6].lower() == "basic ":
        from quiesce.frontends.auth import AuthError

        try:
            await auth.authenticate(
                authorization=header,
                session_cookie=None,
                csrf_header=None,
                method="GET",
                source=request.client.host if request.client else "unknown",
            )
        except AuthError as exc:
            if exc.status == 429:
                retry = str(exc.retry_after)
                return Response(exc.detail, status_code=429, headers={"Retry-After": retry})
        else:
            return RedirectResponse("/", status_code=303)
    return Response(
        "HTTP Basic authentication required: use /login for the log-in form.\n",
        status_code=401,
        media_type="text/plain",
        headers={"WWW-Authenticate": 'Basic realm="quiesce"', "Cache-Control": "no-store"},
    )


async def _index() -> Response:
    return _page("index.html")


async def _login() -> Response:
    return _page("login.html")


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BrowserOriginGuard:
    """Refuse state-changing requests that a browser made on behalf of another page.

    The session cookie is covered by the CSRF header, but a browser also replays HTTP Basic
    credentials it has cached (after a Basic prompt on any admin URL) on a cross-site form
    post, which carries no CSRF header to check. Browsers say where a request comes from:
    ``Sec-Fetch-Site`` (``same-site`` included: another port on the same host is another
    origin) and ``Origin``. Non-browser clients (the CLI, curl, scripts) send neither and are
    not affected.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] not in _SAFE_METHODS:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            why = _cross_origin(scope, headers)
            if why is not None:
                response = JSONResponse(
                    {"error": "forbidden", "detail": f"cross-origin request refused: {why}"},
                    status_code=403,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _cross_origin(scope: Any, headers: dict[str, str]) -> str | None:
    site = headers.get("sec-fetch-site", "").lower()
    if site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {site}"
    origin = headers.get("origin")
    if origin is None:
        return None
    host = headers.get("host", "")
    scheme = scope.get("scheme", "http")
    if origin.rstrip("/").lower() != f"{scheme}://{host}".lower():
        return f"Origin {origin} is not {scheme}://{host}"
    return None


def mount(api: FastAPI, app: object = None) -> None:
    """Serve the dashboard from ``api``: ``/`` (the app), ``/login`` and ``/ui/…``.

    ``app`` (the :class:`quiesce.app.App`) is accepted for symmetry with the other front ends;
    the dashboard needs nothing from it because it talks to the REST API like any client.
    """
    api.add_api_route("/", _index, methods=["GET", "HEAD"], include_in_schema=False)
    api.add_api_route("/login", _login, methods=["GET", "HEAD"], include_in_schema=False)
    api.add_api_route("/basic-login", _basic_login, methods=["GET"], include_in_schema=False)
    api.mount("/ui", _Assets(directory=STATIC_DIR), name="dashboard")
    api.add_middleware(BrowserOriginGuard)


__all__ = ["STATIC_DIR", "BrowserOriginGuard", "mount"]
