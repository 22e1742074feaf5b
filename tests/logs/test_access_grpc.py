"""A gRPC call's access-log entry carries a 19th member, its grpc-status (issue 16, item
5): json lines have ``grpc_status`` (last key) on those entries only, the template has the
field (``-`` without one), httplog is unchanged; a batch with one goes through the Python
formatter (quiesce._logfast reads 18 members) and gives the same bytes for the others."""

from __future__ import annotations

import json

import pytest

from quiesce.config.loader import ConfigError, parse_config
from quiesce.logs import access
from quiesce.logs.access import Formatter
from tests.logs.test_access_format import OFFSET, l7


@pytest.mark.parametrize("fast", [True, False])
def test_json_and_httplog_with_a_grpc_entry(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    if not fast:
        monkeypatch.setattr(access, "FAST", None)
    plain, call = l7(), (*l7(path=b"/pkg.Svc/Do", method=b"POST"), 5)
    lines = Formatter("json", "p").format_bytes([plain, call], OFFSET).decode().splitlines()
    one, two = (json.loads(line) for line in lines)
    assert "grpc_status" not in one
    assert two["grpc_status"] == 5 and list(two)[-1] == "grpc_status"
    assert {k: v for k, v in two.items() if k != "grpc_status"} == {
        **one,
        "path": "/pkg.Svc/Do",
        "method": "POST",
        "request_id": "p-2",
    }
    # the same bytes for the plain entry, whichever path formatted its batch
    alone = Formatter("json", "p").format_bytes([plain], OFFSET).decode().splitlines()
    assert alone[0] == lines[0]
    h = Formatter("httplog", "p").format_bytes([plain, call], OFFSET).decode().splitlines()
    assert h[1] == h[0].replace("p-1", "p-2").replace("GET /x?y=1", "POST /pkg.Svc/Do")


def test_template_names_grpc_status() -> None:
    f = Formatter("{status} {grpc_status}", "p")
    assert f.format([l7(), (*l7(), 0)], OFFSET) == ["200 -", "200 0"]
    cfg = parse_config({"logging": {"access": {"format": "{grpc_status}"}}})
    assert cfg.logging.access is not None
    with pytest.raises(ConfigError) as info:
        parse_config({"logging": {"access": {"format": "{grpc}"}}})
    assert "unknown field {grpc}" in str(info.value)
