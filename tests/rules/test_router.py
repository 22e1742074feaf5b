"""The rule evaluator with no sockets: every condition kind, composition, order, flags,
eligibility read live from the registry, and the monitor URI."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import pytest

from quiesce.config import load_text
from quiesce.config.models import Config
from quiesce.core.admin import AdminCommand
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.states import Admin, Cause, Oper, Verdict
from quiesce.rules import (
    MONITOR_FAIL,
    MONITOR_OK,
    Redirect,
    RequestView,
    Respond,
    Router,
    ServePage,
    ServiceRouter,
    ToPool,
    compile_router,
    flag_truthy,
)
from quiesce.state.registry import Registry

BASE = """
healthmonitors:
  hm: {type: http, send_interval: 1s, receive_timeout: 500ms, successful_checks: 2}
pools:
  web:
    healthmonitors: [hm]
    servers:
      - {name: a, address: 127.0.0.1:8001}
      - {name: b, address: 127.0.0.1:8002}
  static:
    servers:
      - {name: s1, address: 127.0.0.1:8003}
  sorry:
    servers:
      - {name: z, address: 127.0.0.1:8004}
pages:
  upgrade: {status: 503, body: "back soon", retry_after: 600}
"""


def make(service_yaml: str) -> tuple[ServiceRouter, Registry, Config]:
    text = BASE + "services:\n  www:\n" + textwrap.indent(textwrap.dedent(service_yaml), "    ")
    config = load_text(text)
    registry = Registry(config)
    router = compile_router("www", config.services["www"], registry)
    assert router is not None
    return router, registry, config


def req(
    path: str = "/",
    *,
    method: str = "GET",
    host: str | None = "www.example.com",
    headers: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
    source: str = "203.0.113.9",
) -> RequestView:
    return RequestView(method, path, host, dict(headers or {}), dict(cookies or {}), source)


def one_rule(condition: str) -> ServiceRouter:
    """A service whose single rule sends matching requests to pool `static`."""
    router, _, _ = make(
        f"""
        listen: 127.0.0.1:8080
        pool: web
        rules:
          - if: {condition}
            then: {{pool: static}}
        """
    )
    return router


HIT, MISS = ToPool("static"), ToPool("web")


def pass_check(registry: Registry, ref: str) -> None:
    server = registry.find_server(ref)
    registry.record_check(
        server, CheckResult("hm", Verdict.PASS, Reason.OK, registry.clock.time(), 0.001, 200)
    )


# --- compile_router ---------------------------------------------------------------------------


def test_no_rules_and_no_monitor_uri_means_no_router() -> None:
    config = load_text(BASE + "services:\n  www: {listen: 127.0.0.1:8080, pool: web}\n")
    assert compile_router("www", config.services["www"], Registry(config)) is None


def test_no_match_goes_to_the_service_pool() -> None:
    router: Router = one_rule("{path_prefix: /static/}")  # mypy: satisfies the protocol
    assert router.route(req("/index.html")) == MISS
    assert router.route(req("/static/app.css")) == HIT


# --- every condition kind ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "request_", "expected"),
    [
        ("{path_prefix: /api}", req("/api/v1"), HIT),
        ("{path_prefix: /api}", req("/ap"), MISS),
        ("{path_regex: '\\.(css|js)$'}", req("/x/app.js"), HIT),
        ("{path_regex: '\\.(css|js)$'}", req("/x/app.json"), MISS),
        ("{path_regex: '^/admin'}", req("/admin/users"), HIT),
        ("{path_regex: '^/admin'}", req("/x/admin"), MISS),
        ("{path_regex: 'admin'}", req("/x/admin"), HIT),  # search, not match
        ("{host: WWW.Example.com}", req(host="www.example.COM:8443"), HIT),
        ("{host: www.example.com}", req(host="www.example.com."), HIT),
        ("{host: www.example.com}", req(host="api.example.com"), MISS),
        ("{host: www.example.com}", req(host=None), MISS),
        ("{host: [a.example, b.example]}", req(host="B.example"), HIT),
        ("{host: [a.example, b.example]}", req(host="c.example"), MISS),
        ("{host: '*.example.org'}", req(host="shop.example.org"), HIT),
        ("{host: '*.example.org'}", req(host="example.org"), MISS),
        ("{host: '[::1]'}", req(host="[::1]:8080"), HIT),
        ("{header: {name: X-Debug}}", req(headers={"x-debug": ""}), HIT),
        ("{header: {name: X-Debug}}", req(headers={"x-other": "1"}), MISS),
        ("{header: {name: X-Env, equals: staging}}", req(headers={"x-env": "staging"}), HIT),
        ("{header: {name: X-Env, equals: staging}}", req(headers={"x-env": "Staging"}), MISS),
        (
            "{header: {name: User-Agent, contains: bot}}",
            req(headers={"user-agent": "a bot/1"}),
            HIT,
        ),
        ("{header: {name: User-Agent, contains: bot}}", req(headers={"user-agent": "curl"}), MISS),
        ("{header: {name: X-V, regex: '^v[0-9]+$'}}", req(headers={"x-v": "v12"}), HIT),
        ("{header: {name: X-V, regex: '^v[0-9]+$'}}", req(headers={"x-v": "v1x"}), MISS),
        ("{header: {name: X-V, regex: '^v'}}", req(), MISS),
        (
            "{header: {name: X-V, contains: '2', regex: '^v'}}",
            req(headers={"x-v": "v1"}),
            MISS,  # every test given in one header condition must hold
        ),
        ("{method: POST}", req(method="POST"), HIT),
        ("{method: post}", req(method="POST"), HIT),
        ("{method: POST}", req(method="GET"), MISS),
        ("{method: [PUT, DELETE]}", req(method="DELETE"), HIT),
        ("{method: [PUT, DELETE]}", req(method="PATCH"), MISS),
        ("{source: [10.0.0.0/8, 192.0.2.7]}", req(source="10.1.2.3"), HIT),
        ("{source: [10.0.0.0/8, 192.0.2.7]}", req(source="192.0.2.7"), HIT),
        ("{source: [10.0.0.0/8, 192.0.2.7]}", req(source="192.0.2.8"), MISS),
        ("{source: [10.0.0.0/8]}", req(source="::ffff:10.9.9.9"), HIT),
        ("{source: ['2001:db8::/32']}", req(source="2001:db8::1"), HIT),
        ("{source: ['2001:db8::/32']}", req(source="10.0.0.1"), MISS),
        ("{source: [10.0.0.0/8]}", req(source="not-an-ip"), MISS),
        ("{cookie: {name: qbypass}}", req(cookies={"qbypass": "x"}), HIT),
        ("{cookie: {name: qbypass}}", req(cookies={"other": "x"}), MISS),
        ("{cookie: {name: qbypass, equals: s3cret}}", req(cookies={"qbypass": "s3cret"}), HIT),
        ("{cookie: {name: qbypass, equals: s3cret}}", req(cookies={"qbypass": "guess"}), MISS),
    ],
)
def test_condition_kinds(condition: str, request_: RequestView, expected: ToPool) -> None:
    assert one_rule(condition).route(request_) == expected


# --- flags ------------------------------------------------------------------------------------


def test_flag_set_and_truthy() -> None:
    router, registry, _ = make(
        """
        listen: 127.0.0.1:8080
        pool: web
        rules:
          - if: {flag: maintenance_mode}
            then: maintenance_page
        """
    )
    assert router.route(req()) == MISS  # unset
    for value in (True, "true", "on", "1", "yes", "anything"):
        registry.set_flag("maintenance_mode", value, actor="t", cause=Cause.API)
        assert router.route(req()) == ServePage(None), value
    for value in (False, "false", "FALSE", "0", "off", "no", ""):
        registry.set_flag("maintenance_mode", value, actor="t", cause=Cause.API)
        assert router.route(req()) == MISS, value
    registry.set_flag("maintenance_mode", True, actor="t", cause=Cause.API)
    registry.clear_flag("maintenance_mode", actor="t", cause=Cause.API)
    assert router.route(req()) == MISS


def test_flag_from_config_applies_at_start() -> None:
    config = load_text(
        BASE
        + """
flags: {maintenance_mode: true}
services:
  www:
    listen: 127.0.0.1:8080
    pool: web
    rules: [{if: {flag: maintenance_mode}, then: maintenance_page}]
"""
    )
    router = compile_router("www", config.services["www"], Registry(config))
    assert router is not None
    assert router.route(req()) == ServePage(None)


def test_flag_equals_a_value() -> None:
    router, registry, _ = make(
        """
        listen: 127.0.0.1:8080
        pool: web
        rules:
          - if: {flag: {name: release, equals: blue}}
            then: {pool: static}
          - if: {flag: {name: release, equals: green}}
            then: {pool: sorry}
          - if: {flag: {name: canary, equals: true}}
            then: {respond: {status: 204}}
        """
    )
    assert router.route(req()) == MISS
    registry.set_flag("release", "blue", actor="t", cause=Cause.API)
    assert router.route(req()) == ToPool("static")
    registry.set_flag("release", "green", actor="t", cause=Cause.API)
    assert router.route(req()) == ToPool("sorry")
    registry.set_flag("release", "Blue", actor="t", cause=Cause.API)
    assert router.route(req()) == MISS  # values compare exactly
    registry.set_flag("canary", True, actor="t", cause=Cause.API)
    assert router.route(req()) == Respond(204)
    registry.set_flag("canary", "true", actor="t", cause=Cause.API)
    assert router.route(req()) == Respond(204)  # a boolean compares as "true" / "false"
    registry.set_flag("canary", False, actor="t", cause=Cause.API)
    assert router.route(req()) == MISS


def test_flag_truthy_table() -> None:
    assert flag_truthy(True) and flag_truthy("maintenance") and flag_truthy(" On ")
    assert not flag_truthy(None) and not flag_truthy(False) and not flag_truthy(" Off ")


# --- composition and order --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (req("/api/x", method="POST", source="10.0.0.1"), HIT),
        (req("/api/x", method="GET", source="10.0.0.1"), MISS),  # keys in a mapping: all hold
        (req("/api/x", method="POST", source="8.8.8.8"), MISS),
        (req("/web", method="POST", source="10.0.0.1"), MISS),
    ],
)
def test_several_keys_in_one_mapping_all_hold(request_: RequestView, expected: ToPool) -> None:
    router = one_rule("{path_prefix: /api, method: POST, source: [10.0.0.0/8]}")
    assert router.route(request_) == expected


def test_all_any_not() -> None:
    router = one_rule(
        "{all: [{path_prefix: /shop}, {any: [{method: POST}, {header: {name: X-Buy}}]},"
        " {not: {host: internal.example}}]}"
    )
    assert router.route(req("/shop/cart", method="POST")) == HIT
    assert router.route(req("/shop/cart", headers={"x-buy": "1"})) == HIT
    assert router.route(req("/shop/cart")) == MISS  # any: neither
    assert router.route(req("/shop/cart", method="POST", host="internal.example")) == MISS
    assert router.route(req("/blog", method="POST")) == MISS


def test_not_alone_and_empty_groups() -> None:
    router = one_rule("{not: {path_prefix: /public}}")
    assert router.route(req("/private")) == HIT
    assert router.route(req("/public/x")) == MISS
    assert one_rule("{all: []}").route(req()) == HIT  # vacuous truth, like Python's all()
    assert one_rule("{any: []}").route(req()) == MISS


def test_first_match_wins_in_order() -> None:
    router, _, _ = make(
        """
        listen: 127.0.0.1:8080
        pool: web
        rules:
          - name: api-writes
            if: {path_prefix: /api, method: [POST, PUT]}
            then: {pool: sorry}
          - if: {path_prefix: /api}
            then: {pool: static}
          - if: {path_prefix: /}
            then: {redirect: {location: "https://www.example.com/", status: 301}}
        """
    )
    assert router.route(req("/api/x", method="PUT")) == ToPool("sorry")
    assert router.route(req("/api/x")) == ToPool("static")
    assert router.route(req("/home")) == Redirect("https://www.example.com/", 301)
    assert router.explain(req("/api/x", method="POST"))[0] == "api-writes"
    assert router.explain(req("/api/x"))[0] == "rules[1]"


def test_every_action() -> None:
    router, _, _ = make(
        """
        listen: 127.0.0.1:8080
        pool: web
        rules:
          - {if: {path_prefix: /p}, then: {pool: static}}
          - {if: {path_prefix: /own}, then: {maintenance_page: true}}
          - {if: {path_prefix: /short}, then: maintenance_page}
          - {if: {path_prefix: /named}, then: {maintenance_page: upgrade}}
          - if: {path_prefix: /r}
            then: {respond: {status: 418, body: "teapot", headers: {X-A: b}}}
          - {if: {path_prefix: /g}, then: {redirect: {location: /new}}}
        """
    )
    assert router.route(req("/p")) == ToPool("static")
    assert router.route(req("/own")) == ServePage(None)
    assert router.route(req("/short")) == ServePage(None)
    assert router.route(req("/named")) == ServePage("upgrade")
    assert router.route(req("/r")) == Respond(418, b"teapot", (("X-A", "b"),))
    assert router.route(req("/g")) == Redirect("/new", 302)
    assert router.route(req("/other")) == ToPool("web")


# --- usable_servers_below: HAProxy's nbsrv, read live ---------------------------------------


def test_usable_servers_below_follows_the_registry() -> None:
    router, registry, _ = make(
        """
        listen: 127.0.0.1:8080
        pool: web
        rules:
          - if: {usable_servers_below: {web: 1}}
            then: {pool: sorry}
          - if: {usable_servers_below: {web: 2, static: 1}}
            then: {pool: static}
        """
    )
    web = registry.pools["web"]
    assert web.eligible_count == 0  # monitored servers start unknown: not eligible
    assert router.route(req()) == ToPool("sorry")
    pass_check(registry, "web/a")
    assert web.eligible_count == 1
    assert router.route(req()) == ToPool("static")  # web has 1 < 2
    pass_check(registry, "web/b")
    assert router.route(req()) == ToPool("web")
    # static's only server goes into admin maintenance: the second rule holds again (any pool)
    registry.admin_command(
        registry.find_server("static/s1"),
        AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.CLI),
    )
    assert router.route(req()) == ToPool("static")
    registry.admin_command(
        registry.find_server("static/s1"), AdminCommand(Admin.ENABLED, actor="t", cause=Cause.CLI)
    )
    assert router.route(req()) == ToPool("web")
    registry.admin_command(
        registry.find_server("web/a"),
        AdminCommand(Admin.DRAIN, actor="t", cause=Cause.CLI),
    )
    assert router.route(req()) == ToPool("static")  # drain: not eligible for new connections


# --- the operator bypass recipe of docs/rules.md ----------------------------------------------

BYPASS = """
listen: 127.0.0.1:8080
pool: web
rules:
  - name: operators-bypass
    if:
      all:
        - flag: maintenance_mode
        - any:
            - source: [10.20.0.0/16, 192.0.2.10]
            - cookie: {name: qbypass, equals: let-me-in}
            - header: {name: X-Quiesce-Bypass, equals: let-me-in}
    then: {pool: web}
  - name: maintenance
    if: {flag: maintenance_mode}
    then: maintenance_page
"""


def test_operator_bypass() -> None:
    router, registry, _ = make(BYPASS)
    public = req(source="198.51.100.1")
    operators = [
        req(source="10.20.3.4"),
        req(source="192.0.2.10"),
        req(source="198.51.100.1", cookies={"qbypass": "let-me-in"}),
        req(source="198.51.100.1", headers={"x-quiesce-bypass": "let-me-in"}),
    ]
    for r in [public, *operators]:
        assert router.route(r) == ToPool("web")
    registry.set_flag("maintenance_mode", True, actor="ops", cause=Cause.CLI, reason="deploy")
    assert router.route(public) == ServePage(None)
    assert router.route(req(source="198.51.100.1", cookies={"qbypass": "guess"})) == ServePage()
    for r in operators:
        assert router.route(r) == ToPool("web")
        assert router.explain(r) == ("operators-bypass", ToPool("web"))
    registry.clear_flag("maintenance_mode", actor="ops", cause=Cause.CLI)
    assert router.route(public) == ToPool("web")


# --- monitor URI ------------------------------------------------------------------------------


def test_monitor_uri_200_then_503_and_back() -> None:
    router, registry, _ = make(
        """
        listen: 127.0.0.1:8080
        pool: web
        monitor_uri:
          path: /site_alive
          fail_if: {usable_servers_below: {web: 1, static: 1}, flag: maintenance_mode}
        rules:
          - {if: {path_prefix: /}, then: {pool: sorry}}
        """
    )
    assert router.route(req("/site_alive")) == MONITOR_FAIL  # web: nothing eligible yet
    pass_check(registry, "web/a")
    ok = router.route(req("/site_alive", method="HEAD"))
    assert ok == MONITOR_OK
    assert isinstance(ok, Respond) and ok.status == 200 and ok.log is False and ok.body
    fail = MONITOR_FAIL
    assert fail.status == 503 and fail.log is False
    assert router.route(req("/site_alive/x")) == ToPool("sorry")  # exact path only
    assert router.explain(req("/site_alive"))[0] == "monitor_uri"

    a = registry.find_server("web/a")
    registry.admin_command(a, AdminCommand(Admin.MAINTENANCE, actor="t", cause=Cause.API))
    assert router.route(req("/site_alive")) == MONITOR_FAIL
    registry.admin_command(a, AdminCommand(Admin.ENABLED, actor="t", cause=Cause.API))
    assert router.route(req("/site_alive")) == MONITOR_OK
    registry.set_flag("maintenance_mode", "on", actor="t", cause=Cause.API)
    assert router.route(req("/site_alive")) == MONITOR_FAIL
    registry.set_flag("maintenance_mode", "off", actor="t", cause=Cause.API)
    assert router.route(req("/site_alive")) == MONITOR_OK
    # A maintenance answer from the monitor (oper axis) counts too.
    registry.record_check(
        a, CheckResult("hm", Verdict.MAINTENANCE, Reason.MAINTENANCE_RESPONSE_CODE_MATCH, 0, 0)
    )
    assert a.oper is Oper.MAINTENANCE
    assert router.route(req("/site_alive")) == MONITOR_FAIL


def test_monitor_uri_is_checked_before_rules_and_alone_makes_a_router() -> None:
    router, _, _ = make(
        """
        listen: 127.0.0.1:8080
        pool: static
        monitor_uri: {path: /health}
        """
    )
    # No fail_if: always 200 while quiesce is up; everything else goes to the pool.
    assert router.route(req("/health")) == MONITOR_OK
    assert router.route(req("/")) == ToPool("static")
    router, registry, _ = make(
        """
        listen: 127.0.0.1:8080
        pool: web
        monitor_uri: {path: /health, fail_if: {flag: maintenance_mode}}
        rules:
          - {if: {path_prefix: /}, then: maintenance_page}
        """
    )
    assert router.route(req("/health")) == MONITOR_OK
    registry.set_flag("maintenance_mode", True, actor="t", cause=Cause.API)
    assert router.route(req("/health")) == MONITOR_FAIL
