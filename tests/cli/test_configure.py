"""Avi's monitor sub-shell: the exact sequences of Avi's CLI change a live monitor."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from quiesce.core.events import EventQuery
from quiesce.frontends.cli.monitor_shell import MonitorEditor
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
