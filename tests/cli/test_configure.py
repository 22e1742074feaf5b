"""Avi's monitor sub-shell: the exact sequences of Avi's CLI change a live monitor."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from quiesce.core.events import EventQuery
from quiesce.frontends.cli.monitor_shell import MonitorEditor, Shell
from tests.api.harness import running
from tests.cli.test_client import cli, failed, ok

pytestmark = pytest.mark.loopback


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    async with running(tmp_path) as a:
        yield a


async def show(app: Any, name: str = "System-HTTP") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok(await cli(app, "--json", "show", "monitor", name)))
    return data


async def test_avi_sequences_change_the_live_monitor(app: Any) -> None:
    # Avi: filter for the string "under construction"
    seq = 'http_monitor\nmaintenance_response "under construction"\nsave\nsave\n'
    out = ok(await cli(app, "configure", "healthmonitor", "System-HTTP", input=seq))
    assert "saved" in out
    assert (await show(app))["http_monitor"]["maintenance_response"] == "under construction"
    assert app.registry.monitors["System-HTTP"].http.maintenance_response == "under construction"
    # Avi: filter for response codes 500 and 501 (list fields append)
    seq = "http_monitor\nmaintenance_code 500\nmaintenance_code 501\nsave\nsave\n"
    ok(await cli(app, "configure", "healthmonitor", "System-HTTP", input=seq))
    assert (await show(app))["http_monitor"]["maintenance_code"] == [503, 500, 501]
    # Avi: remove the response string filter
    seq = "http_monitor\nno maintenance_response\nsave\nsave\n"
    ok(await cli(app, "configure", "healthmonitor", "System-HTTP", input=seq))
    shown = await show(app)
    assert "maintenance_response" not in shown["http_monitor"]
    assert shown["http_monitor"]["maintenance_code"] == [503, 500, 501]
    kinds = [e.to for e in app.admin.events(EventQuery(kind="monitor_change"))]
    assert kinds == ["updated", "updated", "updated"]
    assert {e.cause for e in app.admin.events(EventQuery(kind="monitor_change"))} == {"cli"}


async def test_whole_session_from_stdin_and_top_level_fields(app: Any) -> None:
    seq = (
        "configure healthmonitor System-HTTP\n"
        "send_interval 5\n"
        "receive_timeout 2s\n"
        "http_monitor\n"
        "no maintenance_code 503\n"
        "maintenance_code 502\n"
        "save\n"
        "save\n"
    )
    ok(await cli(app, "configure", input=seq))
    m = app.registry.monitors["System-HTTP"]
    assert (m.send_interval, m.receive_timeout) == (5.0, 2.0)
    assert m.http.maintenance_code == [502]


async def test_new_monitor(app: Any) -> None:
    seq = "type tcp\ntcp_monitor\nmaintenance_response DRAIN\nsave\nsave\n"
    ok(await cli(app, "configure", "healthmonitor", "New-TCP", input=seq))
    assert app.registry.monitors["New-TCP"].tcp.maintenance_response == "DRAIN"


@pytest.mark.parametrize(
    ("seq", "words"),
    [
        ("http_monitor\nmaintenance_code 99\nsave\nsave\n", "101-599"),
        ("receive_timeout 20s\nsave\n", "receive_timeout"),
        ("colour blue\nsave\n", "unknown field 'colour'"),
        ("http_monitor\nmaintenance_code 500\nsave\n", "end of input before the final save"),
        ('http_monitor\nmaintenance_response "unclosed\nsave\nsave\n', "cannot parse"),
    ],
)
async def test_bad_input_changes_nothing(app: Any, seq: str, words: str) -> None:
    before = app.registry.monitors["System-HTTP"]
    r = await cli(app, "configure", "healthmonitor", "System-HTTP", input=seq)
    assert r.exit_code != 0
    assert words in r.stderr, r.stderr
    assert app.registry.monitors["System-HTTP"] is before
    assert "not saved" in failed(r) or "nothing saved" in failed(r)


async def test_every_error_is_reported_at_once(app: Any) -> None:
    before = app.registry.monitors["System-HTTP"]
    seq = "colour blue\nhttp_monitor\nmaintenance_code 503\nsmell bad\nsave\nsave\n"
    r = await cli(app, "configure", "healthmonitor", "System-HTTP", input=seq)
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("quiesce: line 1: ") and "'colour'" in lines[0]
    assert (
        lines[1].startswith("quiesce: line 3: ") and "maintenance_code already has 503" in lines[1]
    )
    assert lines[2].startswith("quiesce: line 4: ") and "'smell'" in lines[2]
    assert lines[3] == "quiesce: 3 errors (nothing saved)"
    assert app.registry.monitors["System-HTTP"] is before


async def test_server_validation_problems_all_shown(app: Any) -> None:
    seq = "send_interval soon\nhttp_monitor\nmaintenance_code 99\nsave\nsave\n"
    r = await cli(app, "configure", "healthmonitor", "System-HTTP", input=seq)
    assert r.exit_code == 1
    assert "send_interval" in r.stderr and "101-599" in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "quiesce: 2 errors (nothing saved)"


@pytest.mark.parametrize(
    ("kind", "seq", "expect"),
    [
        ("icmp", "type icmp\nsave\n", {}),
        ("tcp_half_open", "type tcp_half_open\nmonitor_port 22\nsave\n", {"monitor_port": 22}),
        (
            "tcp",
            "type tcp\ntcp_monitor\ntcp_request PING\ntcp_response PONG\nsave\nsave\n",
            {"tcp_monitor": {"tcp_request": "PING", "tcp_response": "PONG"}},
        ),
        (
            "udp",
            "type udp\nudp_monitor\nudp_request ping\nudp_response pong\nsave\nsave\n",
            {"udp_monitor": {"udp_request": "ping", "udp_response": "pong"}},
        ),
        (
            "http",
            'type http\nhttp_monitor\nhttp_request "GET /up HTTP/1.0"\nhttp_response_code 2xx\n'
            "maintenance_code 503\nsave\nsave\n",
            {"http_monitor": {"http_request": "GET /up HTTP/1.0", "maintenance_code": [503]}},
        ),
        (
            "https",
            "type https\nhttps_monitor\nsni example.com\nverify false\nmaintenance_code 503\n"
            "save\nsave\n",
            {"https_monitor": {"sni": "example.com", "verify": False, "maintenance_code": [503]}},
        ),
        (
            "postgresql",
            "type postgresql\npostgresql_monitor\nuser app\nrole primary\nsave\nsave\n",
            {"postgresql_monitor": {"user": "app", "role": "primary"}},
        ),
        (
            "mysql",
            "type mysql\nmysql_monitor\nuser app\nrole replica\nsave\nsave\n",
            {"mysql_monitor": {"user": "app", "role": "replica"}},
        ),
        (
            "grpc",
            "type grpc\ngrpc_monitor\nservice api.Orders\nmaintenance_status NOT_SERVING\n"
            "maintenance_service quiesce.maintenance\ntls\nsni orders.internal\nsave\nsave\n"
            "save\n",
            {
                "grpc_monitor": {
                    "service": "api.Orders",
                    "maintenance_status": ["NOT_SERVING"],
                    "maintenance_service": "quiesce.maintenance",
                    "tls": {"sni": "orders.internal", "verify": True, "use_pool_tls": False},
                }
            },
        ),
    ],
)
async def test_configure_every_monitor_type(
    app: Any, kind: str, seq: str, expect: dict[str, Any]
) -> None:
    name = f"New-{kind}"
    ok(await cli(app, "configure", "healthmonitor", name, input=seq))
    shown = await show(app, name)
    assert shown["type"] == kind
    for key, value in expect.items():
        if isinstance(value, dict):
            for k, v in value.items():
                assert shown[key][k] == v, (key, k, shown[key])
        else:
            assert shown[key] == value
    assert app.registry.monitors[name].type == kind


async def test_changing_the_type_drops_the_old_sub_object(app: Any) -> None:
    seq = "type tcp\ntcp_monitor\ntcp_request PING\nsave\nsave\n"
    out = ok(await cli(app, "configure", "healthmonitor", "System-HTTP", input=seq))
    assert "http_monitor removed" in out
    assert app.registry.monitors["System-HTTP"].type == "tcp"
    seq = "type postgresql\npostgresql_monitor\nuser app\nsave\nsave\n"
    out = ok(await cli(app, "configure", "healthmonitor", "System-HTTP", input=seq))
    assert "tcp_monitor removed" in out
    out = ok(await cli(app, "configure", "healthmonitor", "System-HTTP", input="type udp\nsave\n"))
    assert "postgresql_monitor removed" in out
    assert app.registry.monitors["System-HTTP"].type == "udp"
    seq = "type grpc\ngrpc_monitor\nservice api.Orders\nsave\nsave\n"
    ok(await cli(app, "configure", "healthmonitor", "System-HTTP", input=seq))
    assert app.registry.monitors["System-HTTP"].grpc.service == "api.Orders"
    out = ok(await cli(app, "configure", "healthmonitor", "System-HTTP", input="type tcp\nsave\n"))
    assert "grpc_monitor removed" in out
    assert app.registry.monitors["System-HTTP"].type == "tcp"


def test_editor_grammar() -> None:
    ed = MonitorEditor("M", {"type": "http", "http_monitor": {"maintenance_code": [500]}})
    assert ed.prompt == ": healthmonitor> "
    assert not ed.feed("http_monitor").error
    assert ed.prompt == ": healthmonitor:http_monitor> "
    ed.feed("http_response_code 2xx")
    ed.feed("http_response_code 3xx")
    ed.feed("maintenance_code 501 502")
    assert ed.data["http_monitor"]["maintenance_code"] == [500, 501, 502]
    assert ed.feed("no maintenance_code 999").error
    ed.feed("no maintenance_code 500")
    assert ed.data["http_monitor"]["maintenance_code"] == [501, 502]
    assert "http_monitor" in ed.feed("send_interval 5").error  # a top-level field, not here
    assert ed.feed("http_request").error == "http_request: a value is needed"
    assert not ed.feed("save").save  # leaves the sub-object
    assert ed.path == []
    assert ed.feed("http_monitor x").error
    assert json.loads(ed.feed("show").text)["type"] == "http"
    assert ed.feed("save").save
    assert ed.feed("exit").done


def test_editor_help_duplicates_and_completion() -> None:
    ed = MonitorEditor("M", {"type": "http", "http_monitor": {"maintenance_code": [500]}})
    for word in ("?", "help"):
        text = ed.feed(word).text
        assert "send_interval" in text and "http_monitor" in text and "sub-object" in text
    assert "list" in ed.feed("? http_response_code").text or ed.feed("help send_interval").text
    ed.feed("http_monitor")
    assert "maintenance_code" in ed.feed("?").text
    assert "list" in ed.feed("help maintenance_code").text
    assert ed.feed("maintenance_code 500").error == "maintenance_code already has 500: 500"
    assert ed.feed("maintenance_code 501 501").error.startswith("maintenance_code already has")
    assert ed.data["http_monitor"]["maintenance_code"] == [500]
    shell = Shell(load=lambda n: None, save=lambda n, d: d, out=print, err=print, interactive=True)
    shell.editor = ed
    assert shell.completions("mainten", "mainten") == [
        "maintenance_code",
        "maintenance_response",
    ]
    assert shell.completions("no http_re", "http_re") == [
        "http_request",
        "http_response",
        "http_response_code",
    ]
    assert "save" in shell.completions("", "")
    assert shell.completions("maintenance_code 5", "5") == []
