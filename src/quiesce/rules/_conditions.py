"""Compile a validated :class:`~quiesce.config.rules.Condition` into a predicate.

Theory of operation
-------------------
The config layer has already checked every condition (regexes compile, CIDRs parse, pools
exist). Here each condition is turned, once, into a plain closure ``RequestView -> bool``:
regexes are compiled, networks parsed into :mod:`ipaddress` objects, host names and header
names lower-cased, method names upper-cased, pool names resolved to their
:class:`~quiesce.state.registry.PoolRuntime`. Evaluating a request then does no parsing at all.

Runtime state is read live, never copied: a ``flag`` test is one lookup in
``registry.flags`` (the dict the registry mutates in place), a ``usable_servers_below`` test
reads ``PoolRuntime.eligible_count`` (HAProxy's ``nbsrv``). So a flag flipped through the API
or an eligibility change applies to the very next request, with no recompilation.

Several keys in one mapping must all hold; ``all`` / ``any`` / ``not`` compose. Cheap tests
(flags, method, path) are placed before dearer ones (regexes, networks) inside a mapping:
the result is the same, only the order of evaluation differs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence

from quiesce.config.rules import (
    Condition,
    CookieCondition,
    FlagCondition,
    HeaderCondition,
)
from quiesce.rules.decision import RequestView
from quiesce.state.registry import PoolRuntime, Registry

Predicate = Callable[[RequestView], bool]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# String values an operator types to mean "off" (``quiesce set flag maintenance_mode false``).
FALSE_STRINGS = frozenset({"", "0", "false", "no", "off"})


def flag_truthy(value: bool | str | None) -> bool:
    """Whether a flag value means "on": ``True``, or a string other than
    ``""``/``0``/``false``/``no``/``off`` (case-insensitive). An unset flag (``None``) is off."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    return value.strip().lower() not in FALSE_STRINGS


def flag_text(value: bool | str) -> str:
    """The text a flag value compares as: booleans are ``true`` / ``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def normalize_host(host: str) -> str:
    """Lower-case, port and trailing dot removed; IPv6 literals keep their brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def parse_source(source: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client address as an ip_address; IPv4-mapped IPv6 addresses become IPv4."""
    try:
        addr = ipaddress.ip_address(source.strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


# --- one compiler per condition kind ----------------------------------------------------------


def _flag(spec: FlagCondition, registry: Registry) -> Predicate:
    name, equals = spec.name, spec.equals
    if equals is None:

        def flag_set(_: RequestView) -> bool:
            return flag_truthy(registry.flags.get(name))

        return flag_set
    wanted = flag_text(equals)

    def flag_equals(_: RequestView) -> bool:
        value = registry.flags.get(name)
        return value is not None and flag_text(value) == wanted

    return flag_equals


def _path_prefix(prefix: str) -> Predicate:
    return lambda r: r.path.startswith(prefix)


def _path_regex(pattern: str) -> Predicate:
    search = re.compile(pattern).search
    return lambda r: search(r.path) is not None


def _name_matcher(names: list[str]) -> Callable[[str | None], bool]:
    exact = frozenset(normalize_host(n) for n in names if not n.startswith("*."))
    # "*.example.com" matches any subdomain of example.com (not example.com itself).
    suffixes = tuple(normalize_host(n)[1:] for n in names if n.startswith("*."))

    def matches(name: str | None) -> bool:
        if name is None:
            return False
        h = normalize_host(name)
        return h in exact or (bool(suffixes) and h.endswith(suffixes))

    return matches


def _host(names: list[str]) -> Predicate:
    matches = _name_matcher(names)
    return lambda r: matches(r.host)


def _sni(names: list[str]) -> Predicate:
    """A TCP service's ClientHello server name, matched as ``host`` matches a Host."""
    matches = _name_matcher(names)
    return lambda r: matches(r.sni)


def _header(spec: HeaderCondition) -> Predicate:
    name = spec.name.lower()
    tests: list[Callable[[str], bool]] = []
    if spec.equals is not None:
        equals = spec.equals
        tests.append(lambda v: v == equals)
    if spec.contains is not None:
        contains = spec.contains
        tests.append(lambda v: contains in v)
    if spec.regex is not None:
        search = re.compile(spec.regex).search
        tests.append(lambda v: search(v) is not None)

    def header(r: RequestView) -> bool:
        value = r.headers.get(name)
        return value is not None and all(t(value) for t in tests)

    return header


def _method(names: list[str]) -> Predicate:
    methods = frozenset(m.upper() for m in names)
    return lambda r: r.method.upper() in methods


def _source(cidrs: list[str]) -> Predicate:
    networks: list[IPNetwork] = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    v4 = tuple(n for n in networks if n.version == 4)
    v6 = tuple(n for n in networks if n.version == 6)

    def source(r: RequestView) -> bool:
        addr = parse_source(r.source)
        if addr is None:
            return False
        return any(addr in n for n in (v4 if addr.version == 4 else v6))

    return source


def _cookie(spec: CookieCondition) -> Predicate:
    name, equals = spec.name, spec.equals
    if equals is None:
        return lambda r: name in r.cookies
    return lambda r: r.cookies.get(name) == equals


def usable_servers_below(counts: dict[str, int], registry: Registry) -> Predicate:
    """True when any listed pool has fewer eligible servers than its number (HAProxy's
    ``nbsrv(POOL) lt N``; several pools are OR-ed, like HAProxy ACLs of one name)."""
    pairs: tuple[tuple[PoolRuntime, int], ...] = tuple(
        (registry.pool(p), n) for p, n in counts.items()
    )
    return lambda _: any(pool.eligible_count < n for pool, n in pairs)


def _all(preds: Sequence[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    items = tuple(preds)
    return lambda r: all(p(r) for p in items)


def _any(preds: Sequence[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    items = tuple(preds)
    return lambda r: any(p(r) for p in items)


def compile_condition(cond: Condition, registry: Registry) -> Predicate:
    """One predicate for one condition mapping (every key in it must hold)."""
    preds: list[Predicate] = []
    # Cheapest first: the order of evaluation never changes the outcome.
    if cond.flag is not None:
        preds.append(_flag(cond.flag, registry))
    if cond.method is not None:
        preds.append(_method(cond.method))
    if cond.path_prefix is not None:
        preds.append(_path_prefix(cond.path_prefix))
    if cond.host is not None:
        preds.append(_host(cond.host))
    if cond.sni is not None:
        preds.append(_sni(cond.sni))
    if cond.cookie is not None:
        preds.append(_cookie(cond.cookie))
    if cond.header is not None:
        preds.append(_header(cond.header))
    if cond.usable_servers_below is not None:
        preds.append(usable_servers_below(cond.usable_servers_below, registry))
    if cond.path_regex is not None:
        preds.append(_path_regex(cond.path_regex))
    if cond.source is not None:
        preds.append(_source(cond.source))
    if cond.all is not None:
        preds.append(_all([compile_condition(c, registry) for c in cond.all]))
    if cond.any is not None:
        preds.append(_any([compile_condition(c, registry) for c in cond.any]))
    if cond.not_ is not None:
        inner = compile_condition(cond.not_, registry)
        preds.append(lambda r: not inner(r))
    if not preds:
        # Unreachable for a validated config (Condition refuses an empty mapping); an empty
        # `all: []` / `any: []` is handled below by all()/any() semantics.
        raise ValueError("a condition needs at least one test")
    return _all(preds)
