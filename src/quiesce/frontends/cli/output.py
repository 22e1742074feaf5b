"""What the client verbs print, and how they name things: tables for people and one JSON
object for scripts (``emit``), event lines, server rows, control characters escaped, a name
made one URL path segment, ``POOL/SERVER`` resolved against the API. Shared by the verbs of
``client`` and ``servers``."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import click

from quiesce.frontends.cli.transport import (
    Api,
    ClientError,
    ClientSettings,
)
from quiesce.frontends.cli.units import duration, latency, size

POLL = 0.1  # --wait polls the server this often (seconds)


# --- output ----------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """maxctrl's box-drawing table."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))

    def line(left: str, mid: str, right: str) -> str:
        return left + mid.join("─" * (w + 2) for w in widths) + right

    def row_text(values: Sequence[str]) -> str:
        return "│" + "│".join(f" {v:<{w}} " for v, w in zip(values, widths, strict=True)) + "│"

    out = [line("┌", "┬", "┐"), row_text(list(headers)), line("├", "┼", "┤")]
    out += [row_text(r) for r in cells]
    out.append(line("└", "┴", "┘"))
    return "\n".join(out)


def _cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list | dict):
        return json.dumps(v) if v else ""
    return printable(str(v))


def segment(text: str) -> str:
    """One path segment, escaped: a name typed on the command line is never read as a path,
    a query or another resource by the server (``a?b``, ``x/../y``, spaces, non-ASCII)."""
    return urllib.parse.quote(text, safe="")


def printable(text: str) -> str:
    """Control characters escaped: a reason or a name must not move the cursor, retitle the
    terminal or fake a line of output."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def when(t: object) -> str:
    if not isinstance(t, int | float) or not t:
        return ""
    return dt.datetime.fromtimestamp(float(t), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def emit(settings: ClientSettings, data: Any, text: Callable[[], str]) -> None:
    if settings.json:
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        click.echo(text())


def event_line(e: dict[str, Any]) -> str:
    where = "/".join(p for p in (e.get("pool"), e.get("server")) if p) or "-"
    move = ""
    if e.get("from") is not None or e.get("to") is not None:
        move = f" {e.get('from') or '-'} → {e.get('to') or '-'}"
    parts = [when(e.get("time")), e.get("kind", "?"), where + move]
    for key in ("cause", "actor"):
        if e.get(key):
            parts.append(f"{key}={e[key]}")
    if e.get("reason"):
        parts.append(f"reason={json.dumps(e['reason'], ensure_ascii=False)}")
    detail = e.get("detail") or {}
    if "weight" in detail:
        before = detail.get("previous_weight")
        parts.append(
            f"weight {before} → {detail['weight']}"
            if before is not None
            else f"weight {detail['weight']}"
        )
    for key in ("reason", "monitor", "status_code", "flag", "error", "source"):
        if key in detail and detail[key] not in (None, ""):
            parts.append(f"{key}={detail[key]}")
    if e.get("eligible") is not None:
        parts.append(f"eligible={e['eligible']}")
    return " ".join(str(p) for p in parts)


def guard_hint(exc: ClientError) -> ClientError:
    """A refusal by a pool's ``min_servers_up`` guard with the CLI's way to override it
    (the API's text names no flag: it reaches the dashboard and the event log too)."""
    message = exc.format_message()
    if message.startswith("409") and "min_servers_up" in message and "--force-" not in message:
        return ClientError(f"{message} (override with --force-guard)", exc.problems)
    return exc


# --- commands --------------------------------------------------------------------------------


def resolve(api: Api, ref: str) -> str:
    """``pool/server`` for ``ref`` (a unique server name is looked up)."""
    if "/" in ref:
        pool, _, name = ref.partition("/")
        if not pool or not name or "/" in name:
            raise ClientError(f"{ref!r} is not POOL/SERVER or a server name")
        return ref
    matches = [s for s in api.get("/api/v1/servers") if s["name"] == ref]
    if not matches:
        raise ClientError(f"no server named {ref!r}")
    if len(matches) > 1:
        pools = ", ".join(sorted(s["pool"] for s in matches))
        raise ClientError(f"server name {ref!r} is in several pools ({pools}): use POOL/SERVER")
    return f"{matches[0]['pool']}/{ref}"


SERVER_COLUMNS = ("Server", "Address", "Status", "Oper", "Admin", "Conns", "Reason", "Actor")


def server_row(s: dict[str, Any]) -> list[object]:
    return [
        f"{s['pool']}/{s['name']}",
        s["address"],
        s["status"],
        s["oper"],
        s["admin"],
        s["connections"],
        s.get("reason", ""),
        s.get("actor", ""),
    ]


def session_text(sessions: dict[str, int]) -> str:
    """A database server's sessions by state (issue 20), as show server and --wait say it."""
    text = (
        f"{sessions['idle']} idle, {sessions['transaction']} in transaction, "
        f"{sessions['query']} query running"
    )
    if sessions.get("tls"):  # a mysql client that asked for TLS: not followed
        text += f", {sessions['tls']} TLS (drained at connection level)"
    return text


def _session_rows(sessions: dict[str, int] | None) -> list[list[object]]:
    """The Sessions row of a database server; none for any other server."""
    return [["Sessions", session_text(sessions)]] if sessions else []


def _traffic_rows(s: dict[str, Any]) -> list[list[object]]:
    """A server's traffic with units: requests, client bytes, average times (``show stat``'s
    stot, bin/bout, ctime/rtime/ttime; averages over about the last 1024 requests)."""
    if "requests_total" not in s:
        return []
    times = [
        f"{name} {latency(s.get(key))}"
        for name, key in (
            ("connect", "connect_time_ms"),
            ("response", "response_time_ms"),
            ("total", "total_time_ms"),
        )
        if s.get(key) is not None
    ]
    rows: list[list[object]] = [
        ["Requests", s["requests_total"]],
        ["Bytes in / out", f"{size(s.get('bytes_in'))} / {size(s.get('bytes_out'))}"],
    ]
    if times:
        rows.append(["Average times", ", ".join(times)])
    return rows


def show_server_text(s: dict[str, Any]) -> str:
    rows: list[list[object]] = [
        ["Server", f"{s['pool']}/{s['name']}"],
        ["Address", s["address"]],
        ["Status", s["status"]],
        ["Operational", s["oper"]],
        ["Administrative", s["admin"]],
        ["Eligible", s["eligible"]],
        ["Weight", s["weight"]],
        ["Backup", s["backup"]],
        ["Connections", s["connections"]],
        ["Requests in flight", s["requests_in_flight"]],
        *_traffic_rows(s),
        *_session_rows(s.get("sessions")),
        ["Reason", s.get("reason", "")],
        ["Actor", s.get("actor", "")],
        ["Since", when(s.get("since"))],
        ["Expires", when(s.get("expires"))],
        ["Drain deadline", when(s.get("deadline"))],
        ["Monitors", ", ".join(f"{k}: {v}" for k, v in (s.get("monitors") or {}).items())],
    ]
    checks = s.get("last_checks") or []
    for c in checks[-5:]:
        code = f" {c['status_code']}" if c.get("status_code") is not None else ""
        rows.append(
            [
                "Check",
                f"{when(c.get('at'))} {c.get('monitor')} {c.get('verdict')} "
                f"{c.get('reason')}{code} {latency(c.get('latency_ms'))}",
            ]
        )
    return table(("Field", "Value"), rows)


DURATION_KEYS = frozenset(
    {"send_interval", "receive_timeout", "graceful_disable_timeout", "slow_start"}
)
"""Keys of the API's objects that hold a duration in seconds (shown ``1s``, ``500ms``, ``1m``)."""


def _value(key: str, value: object) -> object:
    if key in DURATION_KEYS and isinstance(value, int | float) and not isinstance(value, bool):
        return duration(value)
    return value


def dict_table(data: dict[str, Any]) -> str:
    rows = []
    for k, v in data.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                rows.append([f"{k}.{k2}", _value(k2, v2)])
        else:
            rows.append([k, _value(k, v)])
    return table(("Field", "Value"), rows)
