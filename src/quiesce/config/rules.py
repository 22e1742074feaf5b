"""Rules: the conditions, actions and rules of a service, its ``monitor_uri`` and
``on_response_status`` (split out of :mod:`quiesce.config.models`, which re-exports them)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, model_validator

from quiesce.config.base import Model, Name


def _cidrs(values: list[str]) -> list[str]:
    for v in values:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"{v!r} is not an address or CIDR network") from None
    return values


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"bad regular expression {value!r}: {exc}") from None
    return value


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOST = re.compile(
    r"^((\*\.)?[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*\.?|\[[0-9A-Fa-f:.]+\])(:[0-9]+)?$"
)


def _token(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"{value!r} is not an HTTP token (a method, header or cookie name)")
    return value


def _host_name(value: str) -> str:
    if not _HOST.match(value):
        raise ValueError(f"{value!r} is not a host name (name, *.domain, IP or [IPv6])")
    return value


def _no_ctl(value: str) -> str:
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters (CR, LF, ...)")
    return value


def _one_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _flag_shorthand(value: Any) -> Any:
    # `flag: NAME` is shorthand for `flag: {name: NAME}`.
    return {"name": value} if isinstance(value, str) else value


def _response_headers(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if name.lower() in ("content-length", "transfer-encoding", "connection"):
            raise ValueError(f"header {name!r} is set by quiesce itself")
    return value


Token = Annotated[str, AfterValidator(_token)]
HeaderValue = Annotated[str, AfterValidator(_no_ctl)]
OneOrMore = Field(min_length=1)


class FlagCondition(Model):
    name: Name
    equals: str | bool | None = None


class HeaderCondition(Model):
    name: Token
    equals: str | None = None
    contains: str | None = None
    regex: Annotated[str, AfterValidator(_regex)] | None = None


class CookieCondition(Model):
    name: Token
    equals: str | None = None


class Condition(Model):
    """One condition; several keys in one mapping must all hold. ``flag: NAME``, ``host: H``
    and ``method: M`` are shorthands for ``{name: NAME}``, ``[H]`` and ``[M]``."""

    flag: Annotated[FlagCondition, BeforeValidator(_flag_shorthand)] | None = None
    path_prefix: str | None = None
    path_regex: Annotated[str, AfterValidator(_regex)] | None = None
    host: (
        Annotated[
            list[Annotated[str, AfterValidator(_host_name)]],
            BeforeValidator(_one_or_list),
            OneOrMore,
        ]
        | None
    ) = None
    header: HeaderCondition | None = None
    # the TLS server name of a TCP service's ClientHello (SNI routing without termination)
    sni: (
        Annotated[
            list[Annotated[str, AfterValidator(_host_name)]],
            BeforeValidator(_one_or_list),
            OneOrMore,
        ]
        | None
    ) = None
    method: Annotated[list[Token], BeforeValidator(_one_or_list), OneOrMore] | None = None
    source: Annotated[list[str], AfterValidator(_cidrs), OneOrMore] | None = None
    cookie: CookieCondition | None = None
    usable_servers_below: dict[str, Annotated[int, Field(ge=1)]] | None = None
    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Condition | None = Field(default=None, alias="not")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _not_empty(self) -> Condition:
        if not self.model_fields_set:
            raise ValueError("a condition needs at least one test")
        return self


class RespondAction(Model):
    status: Annotated[int, Field(ge=100, le=599)] = 200
    body: str = ""
    headers: Annotated[dict[Token, HeaderValue], AfterValidator(_response_headers)] = {}


class RedirectAction(Model):
    location: Annotated[HeaderValue, Field(min_length=1)]
    status: Literal[301, 302, 303, 307, 308] = 302


class Action(Model):
    pool: Name | None = None
    maintenance_page: Name | Literal[True] | None = None
    respond: RespondAction | None = None
    redirect: RedirectAction | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        if len(self.model_fields_set) != 1:
            raise ValueError(
                "an action is exactly one of pool, maintenance_page, respond, redirect"
            )
        return self


def _action(value: Any) -> Any:
    # `then: maintenance_page` is shorthand for `then: {maintenance_page: true}`.
    if value == "maintenance_page":
        return {"maintenance_page": True}
    return value


class Rule(Model):
    if_: Condition = Field(alias="if")
    then: Annotated[Action, BeforeValidator(_action)]
    name: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MonitorUriFailIf(Model):
    usable_servers_below: dict[str, Annotated[int, Field(ge=1)]] = {}
    flag: Name | None = None


class MonitorUri(Model):
    path: Annotated[str, Field(pattern=r"^/")]
    fail_if: MonitorUriFailIf = MonitorUriFailIf()


class OnResponseStatus(Model):
    codes: Annotated[list[Annotated[int, Field(ge=100, le=599)]], Field(min_length=1)]
    then: Literal["maintenance_page"] = "maintenance_page"
    mark_server: Literal["maintenance"] | None = None


_HTTP_ONLY = ("path_prefix", "path_regex", "host", "header", "method", "cookie")
_TCP_ONLY = ("sni",)


def _uses(cond: Condition, keys: tuple[str, ...]) -> str | None:
    """The first of ``keys`` a condition (or one nested in it) tests, or None."""
    for key in keys:
        if getattr(cond, key) is not None:
            return key
    for sub in [*(cond.all or ()), *(cond.any or ()), *([cond.not_] if cond.not_ else [])]:
        found = _uses(sub, keys)
        if found:
            return found
    return None
