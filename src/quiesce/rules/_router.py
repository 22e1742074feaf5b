"""A service's router: the monitor URI, then its rules in order, first match wins.

Theory of operation
-------------------
:func:`compile_router` runs once per service at start-up. Every rule becomes a
``(predicate, decision)`` pair whose decision object is built in advance (decisions are frozen
dataclasses), so :meth:`ServiceRouter.route` allocates nothing of its own: it checks the monitor
URI, walks the pairs, and returns the first decision whose predicate holds, else
``ToPool(service.pool)``.

It counts what decided (:attr:`ServiceRouter.hits`, read by ``GET /api/v1/services`` and the
dashboard's Services view): one integer increment per routed request, in a list made once,
indexed by rule, then the default, the monitor URI's 200s and its 503s. A reload keeps the
counts of the rules that keep their name (:meth:`ServiceRouter.carry_counts`).

The monitor URI (HAProxy's ``monitor-uri`` + ``monitor fail if``) is answered before any rule,
so no rule can hide it: 200 while the site is serving, 503 as soon as any ``fail_if``
condition holds. Its answers carry ``log=False``: the data plane never logs them as proxied
requests.

Everything here is sans-IO: no sockets, no clock; runtime state (flags, eligibility) is read
from the registry at the moment of the request.
"""

from __future__ import annotations

from collections.abc import Callable

from quiesce.config.models import ServiceConfig
from quiesce.config.rules import Action, MonitorUri
from quiesce.rules._conditions import (
    Predicate,
    compile_condition,
    flag_truthy,
    usable_servers_below,
)
from quiesce.rules.decision import (
    Decision,
    Redirect,
    RequestView,
    Respond,
    ServePage,
    ToPool,
)
from quiesce.state.registry import Registry

_MONITOR_HEADERS = (
    ("content-type", "text/plain; charset=utf-8"),
    ("cache-control", "no-store"),
)
MONITOR_OK = Respond(200, b"OK: service ready\n", _MONITOR_HEADERS, log=False)
MONITOR_FAIL = Respond(503, b"FAIL: service unavailable\n", _MONITOR_HEADERS, log=False)


def compile_action(action: Action) -> Decision:
    if action.pool is not None:
        return ToPool(action.pool)
    if action.maintenance_page is not None:
        return ServePage(None if action.maintenance_page is True else action.maintenance_page)
    if action.respond is not None:
        r = action.respond
        return Respond(r.status, r.body.encode(), tuple(r.headers.items()))
    if action.redirect is not None:
        return Redirect(action.redirect.location, action.redirect.status)
    raise ValueError("an action is exactly one of pool, maintenance_page, respond, redirect")


def compile_monitor_fail(monitor: MonitorUri, registry: Registry) -> Callable[[], bool]:
    """True when any ``fail_if`` condition holds (the site must answer 503)."""
    tests: list[Predicate] = []
    if monitor.fail_if.usable_servers_below:
        tests.append(usable_servers_below(monitor.fail_if.usable_servers_below, registry))
    flag = monitor.fail_if.flag
    if flag is not None:
        tests.append(lambda _: flag_truthy(registry.flags.get(flag)))
    probe = RequestView("GET", monitor.path, None, {}, {}, "")
    return lambda: any(t(probe) for t in tests)


DEFAULT, MONITOR_200, MONITOR_503 = -3, -2, -1  # the last three of ServiceRouter.hits


class ServiceRouter:
    """The compiled router of one HTTP service (implements :class:`Router`). ``hits``: how
    many requests each rule decided (in order), then the default, the monitor URI's 200s and
    503s (:data:`DEFAULT`, :data:`MONITOR_200`, :data:`MONITOR_503`)."""

    __slots__ = (
        "_monitor_fail",
        "_monitor_path",
        "_rules",
        "default",
        "hits",
        "monitor_path",
        "names",
        "service",
    )

    def __init__(self, service_name: str, service: ServiceConfig, registry: Registry) -> None:
        self.service = service_name
        self.default = ToPool(service.pool)
        self._rules: tuple[tuple[Predicate, Decision, int], ...] = tuple(
            (compile_condition(rule.if_, registry), compile_action(rule.then), i)
            for i, rule in enumerate(service.rules)
        )
        self.hits = [0] * (len(self._rules) + 3)
        # Rule names for tracing: the configured name, else "rules[i]".
        self.names: tuple[str, ...] = tuple(
            rule.name or f"rules[{i}]" for i, rule in enumerate(service.rules)
        )
        monitor = service.monitor_uri
        self._monitor_path = self.monitor_path = monitor.path if monitor is not None else None
        self._monitor_fail = compile_monitor_fail(monitor, registry) if monitor else None

    def route(self, request: RequestView) -> Decision:
        if request.path == self._monitor_path and self._monitor_fail is not None:
            if self._monitor_fail():
                self.hits[-1] += 1  # MONITOR_503 (a literal: no global lookup)
                return MONITOR_FAIL
            self.hits[-2] += 1  # MONITOR_200
            return MONITOR_OK
        for matches, decision, i in self._rules:
            if matches(request):
                self.hits[i] += 1
                return decision
        self.hits[-3] += 1  # DEFAULT
        return self.default

    def monitor_failing(self) -> bool | None:
        """What the monitor URI answers now: True a 503, False a 200, None: no monitor URI."""
        return None if self._monitor_fail is None else self._monitor_fail()

    def carry_counts(self, old: object) -> None:
        """A reload: take over ``old``'s counts (another :class:`ServiceRouter` of the same
        service) for each rule of the same name, and the default's and the monitor URI's."""
        hits = getattr(old, "hits", None)
        names = getattr(old, "names", None)
        if hits is None or names is None:
            return
        before = dict(zip(names, hits, strict=False))
        for i, name in enumerate(self.names):
            self.hits[i] += before.get(name, 0)
        for k in (DEFAULT, MONITOR_200, MONITOR_503):
            self.hits[k] += hits[k]

    def explain(self, request: RequestView) -> tuple[str, Decision]:
        """Which rule decided, for logs and debugging: ``monitor_uri``, a rule's name (or
        ``rules[i]``), or ``default``; and the decision :meth:`route` would return."""
        if request.path == self._monitor_path and self._monitor_fail is not None:
            return "monitor_uri", MONITOR_FAIL if self._monitor_fail() else MONITOR_OK
        for name, (matches, decision, _) in zip(self.names, self._rules, strict=True):
            if matches(request):
                return name, decision
        return "default", self.default


def compile_router(
    service_name: str, service: ServiceConfig, registry: Registry
) -> ServiceRouter | None:
    """The router of an HTTP service, or None when it has no rules and no monitor URI (the
    data plane then sends every request to ``service.pool`` without building a RequestView).

    The config must be validated (``quiesce.config.load_config``): pools named in rules must
    exist in ``registry``.
    """
    if not service.rules and service.monitor_uri is None:
        return None
    return ServiceRouter(service_name, service, registry)


__all__ = [
    "DEFAULT",
    "MONITOR_200",
    "MONITOR_503",
    "MONITOR_FAIL",
    "MONITOR_OK",
    "ServiceRouter",
    "compile_action",
    "compile_router",
]
