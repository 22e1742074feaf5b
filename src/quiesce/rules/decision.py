"""What the L7 data plane asks of a service's router, and what the router answers.

The data plane builds a :class:`RequestView` only when the service has rules or a monitor URI
(a service without them goes straight to its pool); the router answers with a
:class:`Decision`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RequestView:
    method: str
    path: str  # without the query string
    host: str | None
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    cookies: Mapping[str, str]
    source: str  # client IP address
    sni: str | None = None  # a TCP service's TLS server name (the ClientHello's SNI)


@dataclass(frozen=True, slots=True)
class ToPool:
    pool: str


@dataclass(frozen=True, slots=True)
class ServePage:
    page: str | None = None  # a named page (config ``pages``), None = the service's own


@dataclass(frozen=True, slots=True)
class Respond:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = field(default=())
    log: bool = True  # False for the monitor URI: never logged as a proxied request


@dataclass(frozen=True, slots=True)
class Redirect:
    location: str
    status: int = 302


Decision = ToPool | ServePage | Respond | Redirect


class Router(Protocol):
    def route(self, request: RequestView) -> Decision: ...
