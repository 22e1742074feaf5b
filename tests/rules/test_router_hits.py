"""The router's hit counts (``ServiceRouter.hits``, shown by ``GET /api/v1/services`` and
the dashboard's Services view): one per routed request, for the rule that decided, the
default, or the monitor URI's answer; ``explain`` counts nothing; a reload keeps the counts
of the rules that keep their name."""

from __future__ import annotations

from quiesce.core.states import Cause
from quiesce.rules import DEFAULT, MONITOR_200, MONITOR_503, compile_router
from tests.rules.test_router import make, req

SERVICE = """
listen: 127.0.0.1:8080
pool: web
monitor_uri: {path: /alive, fail_if: {flag: maintenance_mode}}
rules:
  - {name: api, if: {path_prefix: /api}, then: {pool: static}}
  - {if: {path_prefix: /static}, then: {pool: static}}
"""


def test_each_request_counts_once_for_what_decided_it() -> None:
    router, registry, _ = make(SERVICE)
    for path in ("/api/a", "/api/b", "/static/x", "/", "/other", "/alive"):
        router.route(req(path))
    registry.set_flag("maintenance_mode", "on", actor="t", cause=Cause.API)
    router.route(req("/alive"))
    router.explain(req("/api/c"))  # tracing, not a request
    router.explain(req("/alive"))
    assert router.hits[:2] == [2, 1]
    assert router.hits[DEFAULT] == 2
    assert (router.hits[MONITOR_200], router.hits[MONITOR_503]) == (1, 1)
    assert router.monitor_failing() is True


def test_a_reload_keeps_the_counts_of_rules_by_name() -> None:
    router, registry, config = make(SERVICE)
    for path in ("/api/a", "/static/x", "/", "/alive"):
        router.route(req(path))
    fresh = compile_router("www", config.services["www"], registry)
    assert fresh is not None
    fresh.carry_counts(router)
    assert fresh.hits == router.hits
    fresh.route(req("/api/z"))
    assert fresh.hits[0] == 2 and router.hits[0] == 1
    renamed, _, _ = make(SERVICE.replace("name: api", "name: api2"))
    renamed.carry_counts(router)  # a rule renamed starts from 0
    assert renamed.hits[:2] == [0, 1] and renamed.hits[DEFAULT] == 1
