"""The maxctrl-style client: ``quiesce [global options] VERB OBJECT ...`` over the REST API.

Grammar and flags follow MariaDB MaxScale's maxctrl (``list servers``, ``show server S``,
``set server S maintenance --force``, ``clear server S maintenance``, ``--hosts``, ``--user``,
``--password``, ``--secure``, ``--tls-*``, ``--timeout``), each global option also read from a
``QUIESCE_*`` environment variable. Tables for people, ``--json`` for scripts. Exit 0 on
success; otherwise a one-line reason on stderr and exit 1.

A server is ``POOL/SERVER`` or a server name unique across pools (resolved here, with a clear
error when it is ambiguous).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click

from quiesce.frontends.cli.transport import (
    Api,
    ClientError,
    ClientSettings,
    DurationType,
    after_verb_options,
    api_of,
    client_options,
    settings,
    settings_from,
)

F = TypeVar("F", bound=Callable[..., Any])

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


def _seg(text: str) -> str:
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
                f"{c.get('reason')}{code} {c.get('latency_ms')}ms",
            ]
        )
    return table(("Field", "Value"), rows)


def _dict_table(data: dict[str, Any]) -> str:
    rows = []
    for k, v in data.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                rows.append([f"{k}.{k2}", v2])
        else:
            rows.append([k, v])
    return table(("Field", "Value"), rows)


@click.group("list")
def list_group() -> None:
    """List servers, pools, monitors or flags."""


@list_group.command("servers")
@click.pass_context
def list_servers(ctx: click.Context) -> None:
    """List all servers with both axes and the displayed status."""
    data = api_of(ctx).get("/api/v1/servers")
    emit(settings(ctx), data, lambda: table(SERVER_COLUMNS, [server_row(s) for s in data]))


@list_group.command("pools")
@click.pass_context
def list_pools(ctx: click.Context) -> None:
    """List pools with their eligible server count."""
    data = api_of(ctx).get("/api/v1/pools")
    rows = [
        [
            p["name"],
            p["algorithm"],
            f"{p['eligible']}/{p['total']}",
            "yes" if p["available"] else "NO SERVER AVAILABLE",
            p["sessions"],
            ", ".join(p.get("healthmonitors") or []),
        ]
        for p in data
    ]
    headers = ("Pool", "Algorithm", "Eligible", "Available", "Sessions", "Health monitors")
    emit(settings(ctx), data, lambda: table(headers, rows))


@list_group.command("monitors")
@click.pass_context
def list_monitors(ctx: click.Context) -> None:
    """List health monitors."""
    data = api_of(ctx).get("/api/v1/healthmonitors")
    rows = [
        [m["name"], m["type"], m["send_interval"], m["receive_timeout"], m.get("description")]
        for m in data
    ]
    headers = ("Monitor", "Type", "Interval", "Timeout", "Description")
    emit(settings(ctx), data, lambda: table(headers, rows))


@list_group.command("flags")
@click.pass_context
def list_flags(ctx: click.Context) -> None:
    """List runtime flags."""
    data = api_of(ctx).get("/api/v1/flags")
    rows = [[k, json.dumps(v)] for k, v in data.items()]
    emit(settings(ctx), data, lambda: table(("Flag", "Value"), rows))


@click.group("show")
def show_group() -> None:
    """Show one server, pool or monitor."""


@show_group.command("server")
@click.argument("server")
@click.pass_context
def show_server(ctx: click.Context, server: str) -> None:
    """Show a server (POOL/SERVER or a unique name)."""
    api = api_of(ctx)
    data = api.get(f"/api/v1/servers/{resolve(api, server)}")
    emit(settings(ctx), data, lambda: show_server_text(data))


@show_group.command("pool")
@click.argument("pool")
@click.pass_context
def show_pool(ctx: click.Context, pool: str) -> None:
    """Show a pool and its servers."""
    data = api_of(ctx).get(f"/api/v1/pools/{_seg(pool)}")

    def text() -> str:
        head = {k: v for k, v in data.items() if k != "servers"}
        servers = table(SERVER_COLUMNS, [server_row(s) for s in data["servers"]])
        return _dict_table(head) + "\n" + servers

    emit(settings(ctx), data, text)


@show_group.command("monitor")
@click.argument("name")
@click.pass_context
def show_monitor(ctx: click.Context, name: str) -> None:
    """Show a health monitor."""
    data = api_of(ctx).get(f"/api/v1/healthmonitors/{_seg(name)}")
    emit(settings(ctx), data, lambda: _dict_table(data))


_STATES = click.Choice(["maintenance", "drain"])


def _expiry_body(for_: str | None, until: str | None) -> dict[str, Any]:
    if for_ and until:
        raise click.UsageError("give --for or --until, not both")
    if for_:
        return {"for": for_}
    if until:
        return {"until": until}
    return {}


def _report(ctx: click.Context, data: dict[str, Any]) -> None:
    s = data["server"]
    closed = f", {data['closed']} connection(s) closed" if data.get("closed") else ""
    ref = f"{s['pool']}/{s['name']}"
    msg = data["message"] if data["message"].startswith(ref) else f"{ref}: {data['message']}"
    emit(settings(ctx), data, lambda: f"{msg} (status: {s['status']}{closed})")


@click.group("set")
def set_group() -> None:
    """Set a server's state or a runtime flag."""


@set_group.command("server")
@click.argument("server")
@click.argument("state", type=_STATES)
@click.option("--force", is_flag=True, help="maintenance: close every connection now.")
@click.option("--reason", default="", help="Why (recorded in events).")
@click.option(
    "--for",
    "for_",
    metavar="DURATION",
    type=DurationType(),
    help="Back to enabled after this long (5m, 2h, 1d).",
)
@click.option("--until", metavar="TIME", help="Back to enabled at this time (ISO 8601).")
@click.option(
    "--timeout",
    metavar="DURATION",
    type=DurationType(),
    help="drain: close what is left after this (30s, 5m).",
)
@click.option("--wait", is_flag=True, help="Show remaining connections until there are none.")
@click.option("--force-guard", is_flag=True, help="Override the pool's min_servers_up guard.")
@click.pass_context
def set_server(
    ctx: click.Context,
    server: str,
    state: str,
    force: bool,
    reason: str,
    for_: str | None,
    until: str | None,
    timeout: str | None,
    wait: bool,
    force_guard: bool,
) -> None:
    """Put SERVER in maintenance or drain (MaxScale: set server S maintenance [--force])."""
    # Usage errors (exit 2) are found before anything is sent.
    body: dict[str, Any] = {"reason": reason, **_expiry_body(for_, until)}
    if state == "maintenance":
        if timeout:
            raise click.UsageError(
                "--timeout applies to drain (maintenance closes at once or at "
                "the next request boundary)"
            )
        body["force"] = force
    else:
        if force:
            raise click.UsageError("--force applies to maintenance")
        if timeout:
            body["timeout"] = timeout
    if force_guard:
        body["force_guard"] = True
    api = api_of(ctx)
    ref = resolve(api, server)
    data = api.send("POST", f"/api/v1/servers/{ref}/{state}", body)
    _report(ctx, data)
    if wait:
        wait_drained(api, ref, data["server"])


@set_group.command("flag")
@click.argument("name")
@click.argument("value")
@click.option("--reason", default="")
@click.pass_context
def set_flag(ctx: click.Context, name: str, value: str, reason: str) -> None:
    """Set runtime flag NAME to VALUE (true/false, or a string)."""
    parsed: bool | str = value
    if value.lower() in ("true", "on", "yes", "1"):
        parsed = True
    elif value.lower() in ("false", "off", "no", "0"):
        parsed = False
    data = api_of(ctx).send(
        "PUT", f"/api/v1/flags/{_seg(name)}", {"value": parsed, "reason": reason}
    )
    emit(settings(ctx), data, lambda: f"flag {name} = {json.dumps(data['value'])}")


@click.group("clear")
def clear_group() -> None:
    """Clear a server's state or a runtime flag."""


@clear_group.command("server")
@click.argument("server")
@click.argument("state", type=_STATES)
@click.option("--reason", default="")
@click.pass_context
def clear_server(ctx: click.Context, server: str, state: str, reason: str) -> None:
    """Take SERVER out of maintenance or drain (no-op if it is not in that state)."""
    api = api_of(ctx)
    ref = resolve(api, server)
    if state == "drain":
        view = api.get(f"/api/v1/servers/{ref}")
        if view["admin"] == "maintenance":
            if view.get("cause") != "deadline":
                by = f" by {view['actor']}" if view.get("actor") else ""
                raise ClientError(
                    f"{ref} is in maintenance (set{by}), not draining; to clear that, type: "
                    f"quiesce clear server {ref} maintenance"
                )
            # The drain's own deadline moved it to maintenance: undoing the drain means
            # clearing that (the operator asked for the server back from their drain).
            body = {"state": "maintenance", "reason": reason}
            data = api.send("POST", f"/api/v1/servers/{ref}/clear", body)
            data["message"] = (
                f"{ref}: its drain deadline had moved it to maintenance; cleared that: "
                f"{data['message']}"
            )
            _report(ctx, data)
            return
    data = api.send("POST", f"/api/v1/servers/{ref}/clear", {"state": state, "reason": reason})
    _report(ctx, data)


@clear_group.command("flag")
@click.argument("name")
@click.option("--reason", default="")
@click.pass_context
def clear_flag(ctx: click.Context, name: str, reason: str) -> None:
    """Remove runtime flag NAME."""
    api_of(ctx).request("DELETE", f"/api/v1/flags/{_seg(name)}", params={"reason": reason})
    emit(settings(ctx), {"name": name, "cleared": True}, lambda: f"flag {name} cleared")


@click.group("disable")
def disable_group() -> None:
    """Disable a server (Avi: immediate, graceful with timeout, graceful until drained)."""


@disable_group.command("server")
@click.argument("server")
@click.option("--graceful", is_flag=True, help="Let connections finish (drain first).")
@click.option(
    "--timeout",
    metavar="DURATION",
    type=DurationType(infinite=True),
    help="With --graceful: close what is left after this (infinite: never). "
    "Default: the pool's graceful_disable_timeout.",
)
@click.option("--reason", default="")
@click.option("--for", "for_", metavar="DURATION", type=DurationType())
@click.option("--until", metavar="TIME")
@click.option("--wait", is_flag=True, help="Show remaining connections until there are none.")
@click.option("--force-guard", is_flag=True)
@click.pass_context
def disable_server(
    ctx: click.Context,
    server: str,
    graceful: bool,
    timeout: str | None,
    reason: str,
    for_: str | None,
    until: str | None,
    wait: bool,
    force_guard: bool,
) -> None:
    """Disable SERVER: at once, or --graceful [--timeout D]."""
    if timeout and not graceful:
        raise click.UsageError("--timeout applies with --graceful")
    body: dict[str, Any] = {"graceful": graceful, "reason": reason, **_expiry_body(for_, until)}
    api = api_of(ctx)
    ref = resolve(api, server)
    if timeout:
        body["timeout"] = timeout
    if force_guard:
        body["force_guard"] = True
    data = api.send("POST", f"/api/v1/servers/{ref}/disable", body)
    _report(ctx, data)
    if wait:
        wait_drained(api, ref, data["server"])


@click.group("enable")
def enable_group() -> None:
    """Enable a server."""


@enable_group.command("server")
@click.argument("server")
@click.option("--reason", default="")
@click.pass_context
def enable_server(ctx: click.Context, server: str, reason: str) -> None:
    """Put SERVER back in service (admin state enabled)."""
    api = api_of(ctx)
    ref = resolve(api, server)
    _report(ctx, api.send("POST", f"/api/v1/servers/{ref}/enable", {"reason": reason}))


# --- servers added, changed and removed at runtime (issue 14) --------------------------------


def _pool_and_name(ref: str) -> tuple[str, str]:
    pool, _, name = ref.partition("/")
    if not pool or not name or "/" in name:
        raise click.UsageError(f"{ref!r}: give the server as POOL/NAME")
    return pool, name


@click.group("create")
def create_group() -> None:
    """Create a server in a pool (maxctrl: create server)."""


@create_group.command("server")
@click.argument("server", metavar="POOL/NAME")
@click.argument("address", metavar="HOST:PORT")
@click.option("--weight", type=int, help="Weight 0-256 (default 1).")
@click.option("--backup", is_flag=True, help="A backup server (used when no primary is).")
@click.option("--reason", default="", help="Why (recorded in events).")
@click.pass_context
def create_server(
    ctx: click.Context, server: str, address: str, weight: int | None, backup: bool, reason: str
) -> None:
    """Add server NAME at HOST:PORT to POOL, validated as the config file's servers; it starts
    unknown until its pool's monitors pass (unmonitored when the pool has none)."""
    pool, name = _pool_and_name(server)
    body: dict[str, Any] = {"name": name, "address": address, "reason": reason}
    if weight is not None:
        body["weight"] = weight
    if backup:
        body["backup"] = True
    data = api_of(ctx).send("POST", f"/api/v1/pools/{_seg(pool)}/servers", body)
    emit(
        settings(ctx),
        data,
        lambda: f"{pool}/{name}: created at {data['address']} (status: {data['status']})",
    )


@click.group("alter")
def alter_group() -> None:
    """Change a server's address, weight or backup (maxctrl: alter server)."""


_ALTERABLE = ("address", "weight", "backup")


@alter_group.command("server")
@click.argument("server", metavar="POOL/NAME")
@click.argument("settings_", metavar="KEY VALUE [KEY VALUE ...]", nargs=-1, required=True)
@click.option("--reason", default="", help="Why (recorded in events).")
@click.pass_context
def alter_server(ctx: click.Context, server: str, settings_: tuple[str, ...], reason: str) -> None:
    """Change SERVER's address (HOST:PORT: the old address drains, new connections go to the
    new one), weight (0-256) or backup (true/false), persisted over the config file."""
    if len(settings_) % 2:
        raise click.UsageError("give KEY VALUE pairs: address HOST:PORT, weight N, backup true")
    body: dict[str, Any] = {}
    for key, value in zip(settings_[::2], settings_[1::2], strict=True):
        if key not in _ALTERABLE:
            raise click.UsageError(f"{key!r}: a server's {', '.join(_ALTERABLE)} can be altered")
        if key == "backup":
            if value.lower() not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
                raise click.UsageError(f"backup {value!r}: give true or false")
            body[key] = value.lower() in ("true", "yes", "on", "1")
        else:
            body[key] = value  # the API validates (and names the field of a bad value)
    api = api_of(ctx)
    ref = resolve(api, server)
    data = api.send("PATCH", f"/api/v1/servers/{ref}", {**body, "reason": reason})

    def text() -> str:
        changed = data["changed"]
        if not changed:
            return f"{ref}: nothing changed"
        parts = [f"{k} {json.dumps(a)} → {json.dumps(b)}" for k, (a, b) in changed.items()]
        return f"{ref}: " + ", ".join(parts) + f" (status: {data['server']['status']})"

    emit(settings(ctx), data, text)


@click.group("destroy")
def destroy_group() -> None:
    """Delete a server (maxctrl: destroy server)."""


@destroy_group.command("server")
@click.argument("server", metavar="POOL/NAME")
@click.option(
    "--drain", is_flag=True, help="Drain it first, delete it at 0 connections (or the deadline)."
)
@click.option(
    "--timeout",
    metavar="DURATION",
    type=DurationType(infinite=True),
    help="With --drain: close what is left after this (infinite: never). "
    "Default: the pool's graceful_disable_timeout.",
)
@click.option("--wait", is_flag=True, help="With --drain: wait until it is deleted.")
@click.option("--force-guard", is_flag=True, help="Override the pool's min_servers_up guard.")
@click.option("--reason", default="", help="Why (recorded in events).")
@click.pass_context
def destroy_server(
    ctx: click.Context,
    server: str,
    drain: bool,
    timeout: str | None,
    wait: bool,
    force_guard: bool,
    reason: str,
) -> None:
    """Delete SERVER: only when it is in maintenance or drained (HAProxy's del server), or
    with --drain: drained first, shown 'removing (N)', deleted at 0 connections."""
    if (timeout or wait) and not drain:
        raise click.UsageError("--timeout and --wait apply with --drain")
    api = api_of(ctx)
    ref = resolve(api, server)
    params: dict[str, Any] = {"reason": reason}
    if drain:
        params["drain"] = "true"
    if timeout:
        params["timeout"] = timeout
    if force_guard:
        params["force_guard"] = "true"
    data = api.request("DELETE", f"/api/v1/servers/{ref}", params=params).json()
    emit(settings(ctx), data, lambda: str(data["message"]))
    if wait and not data["removed"]:
        wait_removed(api, ref)


def wait_removed(api: Api, ref: str, poll: float = POLL) -> None:
    """Poll the pool until the server is gone, showing its connections on stderr."""
    pool, _, name = ref.partition("/")
    began = time.monotonic()
    last: str | None = None
    while True:
        servers = {s["name"]: s for s in api.get(f"/api/v1/pools/{_seg(pool)}")["servers"]}
        s = servers.get(name)
        if s is None:
            click.echo(f"{ref}: deleted after {time.monotonic() - began:.1f}s")
            return
        if not s["status"].startswith("removing"):
            raise ClientError(f"{ref} is no longer being removed (status: {s['status']})")
        if s["status"] != last:
            last = s["status"]
            click.echo(f"{ref}: {last}", err=True)
        time.sleep(poll)


@click.command("events")
@click.option("--follow", "-f", is_flag=True, help="Stream new events until interrupted.")
@click.option("--json", "json_output", is_flag=True, help="One JSON object per line.")
@click.option("--pool")
@click.option("--server", help="Server name (with --pool, or POOL/SERVER).")
@click.option("--kind", help="Event kind (admin_change, oper_change, ...).")
@click.option("--since", help="A time (ISO 8601) or how long ago (10m).")
@click.option("--until")
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_context
def events_cmd(
    ctx: click.Context,
    follow: bool,
    json_output: bool,
    pool: str | None,
    server: str | None,
    kind: str | None,
    since: str | None,
    until: str | None,
    limit: int,
) -> None:
    """Show the event log, optionally following it live."""
    api = api_of(ctx)
    as_json = json_output or settings(ctx).json
    if server and "/" in server:
        pool, _, server = server.partition("/")
    params = {"pool": pool, "server": server, "kind": kind, "since": since, "until": until}
    past = api.get("/api/v1/events", **params, limit=limit)
    for e in past:
        click.echo(json.dumps(e) if as_json else event_line(e))
    if not follow:
        return
    after = max((e["id"] for e in past if e.get("id") is not None), default=None)
    live = {k: v for k, v in params.items() if v is not None and k not in ("since", "until")}
    if after is not None:
        live["after_id"] = after
    try:
        for line in api.stream_lines("/api/v1/events/stream", live):
            if line.startswith("data: "):
                e = json.loads(line[6:])
                click.echo(json.dumps(e) if as_json else event_line(e))
    except KeyboardInterrupt:
        return


# --- --wait ----------------------------------------------------------------------------------


def _bar(left: int, start: int, width: int = 30) -> str:
    done = 0 if start <= 0 else round(width * (start - left) / start)
    return "█" * done + "░" * (width - done)


def wait_drained(api: Api, ref: str, view: dict[str, Any], poll: float = POLL) -> None:
    """Poll the server until it has no connection left; show a progress bar on stderr.
    At a drain deadline the balancer closes what is left: report that."""
    start = last = int(view["connections"])
    tty = sys.stderr.isatty()
    began = time.monotonic()

    def show(n: int, final: bool = False) -> None:
        text = f"{ref}: [{_bar(n, start)}] {n}/{start} connection(s) left"
        if tty:
            click.echo(f"\r{text}\x1b[K", err=True, nl=final)
        else:
            click.echo(text, err=True)

    show(last)
    while True:
        s = api.get(f"/api/v1/servers/{ref}")
        n = int(s["connections"])
        if n != last:
            if n > start:
                start = n
            show(n)
        if n == 0:
            if tty:
                show(0, final=True)
            click.echo(_end_line(api, ref, s, last, time.monotonic() - began))
            return
        if s["admin"] == "enabled":
            raise ClientError(f"{ref} was enabled again with {n} connection(s) left")
        last = n
        time.sleep(poll)


def _end_line(api: Api, ref: str, s: dict[str, Any], last: int, elapsed: float) -> str:
    """What became of the server: drained, or cut at the drain deadline (how many
    connections that closed) and now in maintenance, or put in maintenance by someone."""
    if s["admin"] != "maintenance":
        return f"{ref}: drained: no connection left after {elapsed:.1f}s (status: {s['status']})"
    if s.get("cause") == "deadline":
        pool, _, name = ref.partition("/")
        events = api.get("/api/v1/events", pool=pool, server=name, kind="admin_change", limit=1)
        closed = last
        if events and events[-1].get("cause") == "deadline":
            closed = int((events[-1].get("detail") or {}).get("closed", last))
        return (
            f"{ref}: drain deadline reached after {elapsed:.1f}s: {closed} connection(s) "
            f"closed; now in maintenance (status: {s['status']})"
        )
    by = f" by {s['actor']}" if s.get("actor") else ""
    return (
        f"{ref}: no connection left after {elapsed:.1f}s; put in maintenance{by} meanwhile "
        f"(status: {s['status']})"
    )


@click.command("reload")
@click.pass_context
def reload_cmd(ctx: click.Context) -> None:
    """Re-read the running quiesce's config file and apply the difference live (the same
    as SIGHUP): exit 0 with the changes, or 1 with every problem of the file (then nothing
    changed)."""
    try:
        data = api_of(ctx).send("POST", "/api/v1/reload")
    except ClientError as exc:
        if not exc.problems:
            raise
        click.echo(
            f"quiesce: reload refused: {len(exc.problems)} problem(s); nothing changed", err=True
        )
        for problem in exc.problems:
            click.echo(f"  {printable(problem)}", err=True)
        ctx.exit(1)

    def text() -> str:
        lines = [f"reloaded: {len(data['changes'])} change(s)"]
        lines += [f"  {printable(c['message'])}" for c in data["changes"]]
        if data["kept"]:
            lines.append(f"kept (runtime changes win): {len(data['kept'])}")
            lines += [f"  {printable(c['message'])}" for c in data["kept"]]
        lines += [f"warning: {printable(w)}" for w in data["warnings"]]
        return "\n".join(lines)

    emit(settings(ctx), data, text)


COMMANDS: list[click.Command] = [
    list_group,
    show_group,
    set_group,
    clear_group,
    disable_group,
    enable_group,
    create_group,
    alter_group,
    destroy_group,
    events_cmd,
    reload_cmd,
]


def _json_after_verb(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``quiesce list servers --json`` means the same as ``quiesce --json list servers``."""
    if value:
        root = ctx.find_root()
        root.obj = dataclasses.replace(settings(ctx), json=True)


def _leaves(cmd: click.Command) -> list[click.Command]:
    if isinstance(cmd, click.Group):
        return [leaf for sub in cmd.commands.values() for leaf in _leaves(sub)]
    return [cmd]


def register(main: click.Group, extra: Sequence[click.Command] = ()) -> None:
    """Adds the verbs (and ``extra`` groups) to ``main``, each leaf taking the global options
    too, after the verb (``--json``, ``--hosts``, ``--user``, ...), except where the verb has an
    option of that name itself (``set server … drain --timeout`` is the drain's timeout: the
    request timeout then goes before the verb, or as ``-t``)."""
    for cmd in [*COMMANDS, *extra]:
        main.add_command(cmd)
        for leaf in _leaves(cmd):
            taken = {o for p in leaf.params if isinstance(p, click.Option) for o in p.opts}
            taken |= {
                o for p in leaf.params if isinstance(p, click.Option) for o in p.secondary_opts
            }
            leaf.params.extend(after_verb_options(taken))
            if "--json" not in taken:
                leaf.params.append(
                    click.Option(
                        ["--json"],
                        is_flag=True,
                        expose_value=False,
                        is_eager=True,
                        callback=_json_after_verb,
                        help="JSON output (as the global --json).",
                    )
                )


def fail(message: str) -> NoReturn:
    raise ClientError(message)


__all__ = [
    "Api",
    "ClientError",
    "ClientSettings",
    "client_options",
    "register",
    "settings_from",
    "table",
]
