"""``quiesce top``'s rows, cells, sparkline and action lines from API JSON (no terminal, no
socket), and the CLI's units (issue 19, items 3 and 5)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from click.testing import CliRunner

from quiesce.frontends.cli import top_view
from quiesce.frontends.cli.top import INSTALL_HINT
from quiesce.frontends.cli.top_view import BLOCKS, done_line, refused_line, rows, spark
from quiesce.frontends.cli.units import duration, latency, rate, size
from quiesce.main import main


def test_spark_scales_to_the_window_maximum_and_pads_left() -> None:
    assert spark([0, 1, 2, 4, 8], width=5) == " ▂▃▅█"
    assert spark([3, 3], width=4) == "  ██"
    assert spark([], width=3) == "   "
    assert spark([None, 0, 0], width=3) == "   "  # nothing at all: blank, not ▁
    line = spark([1000, 1], width=2)
    assert line == "█▁"  # a little traffic still shows beside a lot
    assert spark(range(100), width=30) == spark(range(70, 100), width=30)  # the last 30 only
    assert len(spark(range(100))) == top_view.WINDOW
    assert set(spark(range(1, 40))) <= set(BLOCKS)


def point(t: int, requests: int, errors: int = 0, p99: float | None = 1.0) -> dict[str, Any]:
    return {"t": t, "requests": requests, "errors": errors, "p99_ms": p99, "connections": 1}


POOLS = [
    {"name": "web", "eligible": 1, "total": 2, "available": True, "sessions": 7},
    {"name": "db", "eligible": 0, "total": 1, "available": False, "sessions": 0},
]
SERVERS = [
    {"pool": "web", "name": "a", "status": "up", "connections": 5},
    {"pool": "web", "name": "b", "status": "draining (2)", "connections": 2},
    {"pool": "db", "name": "p", "status": "disabled", "connections": 0},
]


def test_rows_pool_then_its_servers_with_the_list_servers_words() -> None:
    series = {
        "pool:web": [point(t, 10, errors=1) for t in range(40)],
        "server:web/a": [point(1, 2), point(2, 6, errors=2, p99=None)],
    }
    out = rows(POOLS, SERVERS, series)
    assert [r.key for r in out] == ["pool:web", "web/a", "web/b", "pool:db", "db/p"]
    assert [r.kind for r in out] == ["pool", "server", "server", "pool", "server"]
    web, a, b, db, p = (r.cells for r in out)
    assert web[:5] == ("web", "1/2 eligible", "7", "10", "30")  # errors over the last 30 s
    assert web[5] == "1.0ms" and web[6] == "█" * 30
    # a server: req/s of the last second; p99 of the newest second that had one
    assert a == ("  a", "up", "5", "6", "2", "1.0ms", " " * 28 + "▃█")
    assert b[1:] == ("draining (2)", "2", "-", "-", "-", " " * 30)  # no series yet
    assert db[1] == "no server available (0/1)"
    assert p[1] == "disabled"
    assert len(top_view.COLUMNS) == len(web)


def test_p99_older_than_the_lookback_is_not_shown() -> None:
    points = [point(1, 1, p99=3.0)] + [point(t, 0, p99=None) for t in range(2, 8)]
    assert top_view.traffic_cells(points)[2] == "-"
    assert top_view.traffic_cells(points[:5])[2] == "3.0ms"


def test_a_server_of_a_pool_not_listed_yet_still_shows() -> None:
    out = rows([], [{"pool": "new", "name": "x", "status": "unknown", "connections": 0}], {})
    assert [(r.key, r.cells[0], r.cells[1]) for r in out] == [
        ("pool:new", "new", ""),
        ("new/x", "  x", "unknown"),
    ]


def test_done_and_refused_lines() -> None:
    data = {
        "message": "enabled → drain; no deadline",
        "closed": 0,
        "server": {"status": "draining (3)"},
    }
    assert done_line("web/a", data) == (
        "web/a: enabled → drain; no deadline (status: draining (3))"
    )
    forced = {"message": "web/a: maintenance", "closed": 4, "server": {"status": "disabled"}}
    assert done_line("web/a", forced) == (
        "web/a: maintenance (status: disabled, 4 connection(s) closed)"
    )
    guard = (
        "409: pool 'web': setting 'a' to drain would leave 0 eligible server(s), below "
        "min_servers_up 1 (override with --force-guard, API force_guard)"
    )
    line = refused_line("drain", "web/a", guard)
    assert line == (
        "drain web/a: refused: pool 'web': setting 'a' to drain would leave 0 eligible "
        "server(s), below min_servers_up 1; nothing changed"
    )
    assert "--" not in line
    assert refused_line("enable", "web/a", "403: read-only").startswith(
        "enable web/a: not allowed (a read-only user): read-only"
    )
    assert refused_line("drain", "web/a", "cannot reach 127.0.0.1:1: refused") == (
        "drain web/a: failed: cannot reach 127.0.0.1:1: refused; nothing changed"
    )


@pytest.mark.parametrize(
    ("status", "style"),
    [
        ("up", "green"),
        ("down", "bold red"),
        ("draining (3)", "yellow"),
        ("drained", "yellow"),
        ("disabled", "magenta"),
        ("down for maintenance", "magenta"),
        ("unknown", "dim"),
        ("ejected (passive)", "bold red"),
        ("2/3 eligible", "green"),
        ("no server available (0/3)", "bold red"),
    ],
)
def test_status_style(status: str, style: str) -> None:
    assert top_view.status_style(status) == style


def test_units() -> None:
    assert [duration(v) for v in (1.0, 0.5, 10, 120, 5400, 86400, -1)] == [
        "1s",
        "500ms",
        "10s",
        "2m",
        "90m",
        "1d",
        "infinite",
    ]
    assert duration(None) == "" and duration("3s") == "3s"
    assert [latency(v) for v in (None, 0, 0.031, 1.189, 12.4, 240.0, 1500.0)] == [
        "-",
        "0ms",
        "31µs",
        "1.2ms",
        "12ms",
        "240ms",
        "1.50s",
    ]
    assert [size(v) for v in (None, 0, 512, 1536, 10 * 1024, 3 * 1024**3, 2 * 1024**5)] == [
        "",
        "0 B",
        "512 B",
        "1.5 KiB",
        "10 KiB",
        "3.0 GiB",
        "2048 TiB",
    ]
    assert [rate(v) for v in (None, 0, 4, 0.5, 12.4)] == ["-", "0", "4", "0.5", "12"]


def test_top_without_textual_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The extra is optional: without it, one line naming the install command, exit 1, and
    nothing sent (no host answers on this port; the check comes first)."""
    monkeypatch.setitem(sys.modules, "textual", None)
    monkeypatch.delitem(sys.modules, "quiesce.frontends.cli.top_app", raising=False)
    r = CliRunner().invoke(main, ["--hosts", "127.0.0.1:1", "top"])
    assert r.exit_code == 1
    assert r.stderr.strip() == f"quiesce: {INSTALL_HINT}"
    assert "pip install 'quiesce[top]'" in INSTALL_HINT


def test_top_interval_too_short_is_a_usage_error() -> None:
    r = CliRunner().invoke(main, ["top", "--interval", "10ms"])
    assert r.exit_code == 2 and "--interval" in r.stderr and "at least 100ms" in r.stderr


def test_server_points_from_the_columns_of_series_servers() -> None:
    page = {
        "pool": "web",
        "t": [10, 11, 12],
        "servers": {
            "a": {"requests": [1, 2, 3], "errors": [0, 0, 1], "p99_ms": [None, 2.0, 1.0]},
            "b": {"requests": [0, 0, 0], "errors": [0, 0, 0], "p99_ms": [None, None, None]},
        },
        "total": 2,
    }
    points = top_view.server_points("web", page)
    assert set(points) == {"server:web/a", "server:web/b"}
    assert points["server:web/a"][-1] == {"requests": 3, "errors": 1, "p99_ms": 1.0}
    cells = rows([], [{"pool": "web", "name": "a", "status": "up", "connections": 1}], points)
    assert cells[1].cells[3:] == ("3", "1", "1.0ms", " " * 27 + "▃▆█")
    assert top_view.server_points("web", {"servers": {}}) == {}
