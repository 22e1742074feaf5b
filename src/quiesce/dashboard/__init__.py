"""The web dashboard: static HTML, CSS and JavaScript served by the admin listener.

There is no build step and nothing is fetched from outside the machine: the files in
``static/`` are the whole UI. The pages themselves are public (like the login page of any
appliance); every piece of data comes from the REST API under ``/api/v1``, which enforces the
users, roles, session cookie and CSRF header (see docs/architecture.md). ``mount`` adds:

- ``GET /`` — the app (one page; views are chosen by the URL hash),
- ``GET /login`` — the log-in form (``POST /api/v1/login`` sets the session cookie),
- ``/ui/…`` — the static assets.

HTML answers carry a strict Content-Security-Policy (scripts and styles from this origin only,
no framing), so a dashboard page cannot be turned into a clickjacking or injection vector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
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


async def _index() -> Response:
    return _page("index.html")


async def _login() -> Response:
    return _page("login.html")


def mount(api: FastAPI, app: object = None) -> None:
    """Serve the dashboard from ``api``: ``/`` (the app), ``/login`` and ``/ui/…``.

    ``app`` (the :class:`quiesce.app.App`) is accepted for symmetry with the other front ends;
    the dashboard needs nothing from it because it talks to the REST API like any client.
    """
    api.add_api_route("/", _index, methods=["GET", "HEAD"], include_in_schema=False)
    api.add_api_route("/login", _login, methods=["GET", "HEAD"], include_in_schema=False)
    api.mount("/ui", _Assets(directory=STATIC_DIR), name="dashboard")


__all__ = ["STATIC_DIR", "mount"]
