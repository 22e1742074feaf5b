"""Rules, monitor URI and pages are validated at load: every problem reported with its path."""

from __future__ import annotations

import pytest

from quiesce.config import ConfigError, load_text

BASE = """
pools:
  web: {servers: [{name: a, address: 127.0.0.1:8001}]}
pages:
  upgrade: {body: back soon}
services:
  www:
    listen: 127.0.0.1:8080
    pool: web
"""


def problems(service_lines: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(BASE + service_lines)
    return info.value.problems


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            "    rules: [{if: {path_regex: '(['}, then: {pool: web}}]\n",
            "services.www.rules[0].if.path_regex: bad regular expression '(['",
        ),
        (
            "    rules: [{if: {all: [{header: {name: X, regex: '*a'}}]}, then: {pool: web}}]\n",
            "services.www.rules[0].if.all[0].header.regex: bad regular expression '*a'",
        ),
        (
            "    rules: [{if: {any: [{source: [10.0.0.0/33]}]}, then: {pool: web}}]\n",
            "services.www.rules[0].if.any[0].source: '10.0.0.0/33' is not an address or CIDR",
        ),
        (
            "    rules: [{if: {not: {source: [nonsense]}}, then: {pool: web}}]\n",
            "services.www.rules[0].if.not.source: 'nonsense' is not an address or CIDR",
        ),
        (
            "    rules: [{if: {path_prefix: /}, then: {pool: nope}}]\n",
            "services.www.rules[0].then.pool: no pool named 'nope'",
        ),
        (
            "    rules: [{if: {path_prefix: /}, then: {maintenance_page: nope}}]\n",
            "services.www.rules[0].then.maintenance_page: no page named 'nope'",
        ),
        (
            "    rules: [{if: {not: {usable_servers_below: {nope: 1}}}, then: maintenance_page}]\n",
            "services.www.rules[0].if.not.usable_servers_below.nope: no pool named 'nope'",
        ),
        (
            "    monitor_uri: {path: /alive, fail_if: {usable_servers_below: {nope: 1}}}\n",
            "services.www.monitor_uri.fail_if.usable_servers_below.nope: no pool named 'nope'",
        ),
        ("    monitor_uri: {path: alive}\n", "services.www.monitor_uri.path: "),
        ("    rules: [{if: {}, then: {pool: web}}]\n", "services.www.rules[0].if: a condition"),
        (
            "    rules: [{if: {path_prefix: /}, then: {pool: web, redirect: {location: /}}}]\n",
            "services.www.rules[0].then: an action is exactly one of",
        ),
        (
            "    rules: [{if: {path_prefx: /}, then: {pool: web}}]\n",
            "services.www.rules[0].if.path_prefx: unknown key",
        ),
        # Gaps closed in config/models.py for issue 7:
        (
            "    rules: [{if: {usable_servers_below: {web: 0}}, then: maintenance_page}]\n",
            "services.www.rules[0].if.usable_servers_below.web: Input should be greater than",
        ),
        (
            "    monitor_uri: {path: /a, fail_if: {usable_servers_below: {web: -1}}}\n",
            "services.www.monitor_uri.fail_if.usable_servers_below.web: Input should be greater",
        ),
        (
            "    rules: [{if: {method: 'GE T'}, then: {pool: web}}]\n",
            "services.www.rules[0].if.method[0]: 'GE T' is not an HTTP token",
        ),
        (
            "    rules: [{if: {method: []}, then: {pool: web}}]\n",
            "services.www.rules[0].if.method: Value should have at least 1 item",
        ),
        (
            "    rules: [{if: {host: [ok.example, 'bad host']}, then: {pool: web}}]\n",
            "services.www.rules[0].if.host[1]: 'bad host' is not a host name",
        ),
        (
            "    rules: [{if: {source: []}, then: {pool: web}}]\n",
            "services.www.rules[0].if.source: Value should have at least 1 item",
        ),
        (
            "    rules: [{if: {header: {name: ''}}, then: {pool: web}}]\n",
            "services.www.rules[0].if.header.name: '' is not an HTTP token",
        ),
        (
            "    rules: [{if: {flag: 'a b'}, then: {pool: web}}]\n",
            "services.www.rules[0].if.flag.name: String should match pattern",
        ),
        (
            '    rules: [{if: {path_prefix: /}, then: {redirect: {location: "/a\\r\\nX: y"}}}]\n',
            "services.www.rules[0].then.redirect.location: must not contain control characters",
        ),
        (
            '    rules: [{if: {path_prefix: /}, then: {respond: {headers: {X: "a\\nb"}}}}]\n',
            "services.www.rules[0].then.respond.headers.X: must not contain control characters",
        ),
        (
            "    rules: [{if: {path_prefix: /}, then: {respond: {headers: {Content-Length: '9'}}}}]"
            "\n",
            "services.www.rules[0].then.respond.headers: header 'Content-Length' is set by quiesce",
        ),
    ],
)
def test_rejected_at_load_with_its_path(lines: str, expected: str) -> None:
    found = problems(lines)
    assert any(p.startswith(expected) for p in found), found
    assert len(found) == 1, found  # one clear line per problem, no union noise


def test_every_problem_is_listed_at_once() -> None:
    found = problems(
        """    rules:
      - {if: {path_regex: '('}, then: {pool: web}}
      - {if: {source: [1.2.3.4/40]}, then: {pool: ghost}}
      - {if: {path_prefix: /}, then: {maintenance_page: ghost}}
"""
    )
    assert [p.split(":")[0] for p in found] == [
        "services.www.rules[0].if.path_regex",
        "services.www.rules[1].if.source",
        "services.www.rules[1].then.pool",
        "services.www.rules[2].then.maintenance_page",
    ]


def test_a_valid_rule_set_loads_with_shorthands() -> None:
    config = load_text(
        BASE
        + """    monitor_uri:
      path: /site_alive
      fail_if: {usable_servers_below: {web: 1}, flag: m}
    on_response_status: {codes: [506], then: maintenance_page, mark_server: maintenance}
    rules:
      - {if: {flag: m, host: WWW.example.com, method: get}, then: maintenance_page}
      - {if: {flag: {name: release, equals: blue}}, then: {maintenance_page: upgrade}}
"""
    )
    rule = config.services["www"].rules[0]
    assert rule.if_.flag is not None and rule.if_.flag.name == "m"
    assert rule.if_.host == ["WWW.example.com"] and rule.if_.method == ["get"]
    assert config.services["www"].rules[1].then.maintenance_page == "upgrade"
