"""Maintenance pages: loaded once into memory, served as ready-made bytes, never proxied.

A page is rendered to complete HTTP responses at start-up (one with ``Connection:
keep-alive`` semantics and one with ``Connection: close``, each with and without a body for
HEAD), so serving it costs one ``transport.write``. The built-in default is self-contained
HTML (inline style, no local asset: a maintenance page must not make the browser ask the
pool that is down for a stylesheet).
"""

from __future__ import annotations

import html
from http import HTTPStatus
from pathlib import Path

from quiesce.config.models import MaintenancePage

DEFAULT_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Down for maintenance</title>
<style>
body{{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;background:#f6f7f9;
color:#1d2330;display:flex;min-height:100vh;align-items:center;justify-content:center}}
main{{max-width:34rem;padding:2.5rem;background:#fff;border-radius:12px;
box-shadow:0 1px 3px rgba(0,0,0,.12)}}
h1{{font-size:1.5rem;margin:0 0 .75rem}}p{{margin:.5rem 0;color:#4a5263}}
</style>
</head>
<body>
<main>
<h1>This site is under maintenance</h1>
<p>We are doing some planned work and will be back shortly.</p>
<p>{retry}</p>
</main>
</body>
</html>
"""


def _retry_text(seconds: int | None) -> str:
    if seconds is None:
        return "Please try again in a few minutes."
    if seconds < 120:
        return f"Please try again in {seconds} seconds."
    return f"Please try again in about {round(seconds / 60)} minutes."


def default_body(retry_after: int | None) -> bytes:
    return DEFAULT_TEMPLATE.format(retry=html.escape(_retry_text(retry_after))).encode()


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


class Page:
    """A response built once; ``response(head_only, close, http10)`` returns its bytes."""

    __slots__ = ("_cache", "body", "content_type", "retry_after", "status")

    def __init__(
        self, status: int, body: bytes, content_type: str, retry_after: int | None
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.retry_after = retry_after
        self._cache: dict[tuple[bool, bool, bool], bytes] = {}

    @classmethod
    def load(cls, config: MaintenancePage, base_dir: Path) -> Page:
        if config.file is not None:
            path = Path(config.file)
            if not path.is_absolute():
                path = base_dir / path
            body = path.read_bytes()
        elif config.body is not None:
            body = config.body.encode()
        else:
            body = default_body(config.retry_after)
        return cls(config.status, body, config.content_type, config.retry_after)

    def response(self, head_only: bool, close: bool, http10: bool = False) -> bytes:
        key = (head_only, close, http10)
        out = self._cache.get(key)
        if out is None:
            out = self._cache[key] = self._render(head_only, close, http10)
        return out

    def _render(self, head_only: bool, close: bool, http10: bool) -> bytes:
        lines = [
            b"HTTP/1.1 %d %s" % (self.status, reason_phrase(self.status)),
            b"Content-Type: " + self.content_type.encode("latin-1"),
            b"Content-Length: %d" % len(self.body),
            b"Cache-Control: no-store",
        ]
        if self.retry_after is not None:
            lines.append(b"Retry-After: %d" % self.retry_after)
        if close:
            lines.append(b"Connection: close")
        elif http10:
            lines.append(b"Connection: keep-alive")
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        return head if head_only else head + self.body


def simple_response(
    status: int,
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
    *,
    head_only: bool = False,
    close: bool = False,
    http10: bool = False,
) -> bytes:
    """A small complete response (errors, rule answers, redirects)."""
    lines = [b"HTTP/1.1 %d %s" % (status, reason_phrase(status))]
    has_type = False
    for name, value in headers:
        if name.lower() == "content-length":
            continue
        has_type = has_type or name.lower() == "content-type"
        lines.append(name.encode("latin-1") + b": " + value.encode("latin-1"))
    if body and not has_type:
        lines.append(b"Content-Type: text/plain; charset=utf-8")
    no_body = status in (204, 304) or status < 200
    if not no_body:
        lines.append(b"Content-Length: %d" % len(body))
    if close:
        lines.append(b"Connection: close")
    elif http10:
        lines.append(b"Connection: keep-alive")
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return head if head_only or no_body else head + body


def error_response(status: int, *, close: bool = True, head_only: bool = False) -> bytes:
    body = b"%d %s\n" % (status, reason_phrase(status))
    return simple_response(status, body, head_only=head_only, close=close)
