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
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click

from quiesce.frontends.cli.output import (
    POLL,
    SERVER_COLUMNS,
    dict_table,
    emit,
    event_line,
    guard_hint,
    printable,
    resolve,
    segment,
    server_row,
    session_text,
    show_server_text,
    table,
)
from quiesce.frontends.cli.servers import SERVER_COMMANDS
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
from quiesce.frontends.cli.units import duration

F = TypeVar("F", bound=Callable[..., Any])


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
        [
            m["name"],
            m["type"],
            duration(m["send_interval"]),
            duration(m["receive_timeout"]),
            m.get("description"),
        ]
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


@list_group.command("nodes")
@click.pass_context
def list_nodes(ctx: click.Context) -> None:
    """List the nodes registered in the shared store (etcd), as this node knows them."""
    data = api_of(ctx).get("/api/v1/cluster")["nodes"]
    emit(settings(ctx), data, lambda: table(_NODE_COLUMNS, [_node_row(n) for n in data]))


_NODE_COLUMNS = ("Node", "Version", "Listeners", "Heartbeat age")


def _node_row(n: dict[str, Any]) -> list[object]:
    listeners = ", ".join(f"{k} {v}" for k, v in sorted((n.get("listeners") or {}).items()))
    age = n.get("heartbeat_age")
    name = f"{n['name']} (this node)" if n.get("self") else n["name"]
    return [name, n.get("version"), listeners, "" if age is None else f"{age:.1f}s"]


@click.group("show")
def show_group() -> None:
    """Show one server, pool or monitor, or the cluster."""


@show_group.command("cluster")
@click.pass_context
def show_cluster(ctx: click.Context) -> None:
    """Show this node's link to the shared store (up, stale, down) and the nodes it knows."""
    data = api_of(ctx).get("/api/v1/cluster")

    def text() -> str:
        head = {k: v for k, v in data.items() if k not in ("nodes", "health", "disagreements")}
        nodes = table(_NODE_COLUMNS, [_node_row(n) for n in data["nodes"]])
        differ = [
            f"health differs: {d['server']}: "
            + ", ".join(f"{v} on {node}" for node, v in d["verdicts"].items())
            for d in data.get("disagreements", [])
        ]
        return "\n".join([dict_table(head), nodes, *differ])

    emit(settings(ctx), data, text)


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
    data = api_of(ctx).get(f"/api/v1/pools/{segment(pool)}")

    def text() -> str:
        head = {k: v for k, v in data.items() if k != "servers"}
        servers = table(SERVER_COLUMNS, [server_row(s) for s in data["servers"]])
        return dict_table(head) + "\n" + servers

    emit(settings(ctx), data, text)


@show_group.command("monitor")
@click.argument("name")
@click.pass_context
def show_monitor(ctx: click.Context, name: str) -> None:
    """Show a health monitor."""
    data = api_of(ctx).get(f"/api/v1/healthmonitors/{segment(name)}")
    emit(settings(ctx), data, lambda: dict_table(data))


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
    try:
        data = api.send("POST", f"/api/v1/servers/{ref}/{state}", body)
    except ClientError as exc:
        raise guard_hint(exc) from None
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
        "PUT", f"/api/v1/flags/{segment(name)}", {"value": parsed, "reason": reason}
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
    api_of(ctx).request("DELETE", f"/api/v1/flags/{segment(name)}", params={"reason": reason})
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
    try:
        data = api.send("POST", f"/api/v1/servers/{ref}/disable", body)
    except ClientError as exc:
        raise guard_hint(exc) from None
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
    """Put SERVER back in service (admin state enabled; ends a passive ejection too)."""
    api = api_of(ctx)
    ref = resolve(api, server)
    _report(ctx, api.send("POST", f"/api/v1/servers/{ref}/enable", {"reason": reason}))


# --- servers added, changed and removed at runtime (issue 14) --------------------------------


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

    sessions = view.get("sessions")

    def show(n: int, final: bool = False) -> None:
        text = f"{ref}: [{_bar(n, start)}] {n}/{start} connection(s) left"
        if sessions:  # a database server: its sessions by state (docs/database.md)
            text += f" ({session_text(sessions)})"
        if tty:
            click.echo(f"\r{text}\x1b[K", err=True, nl=final)
        else:
            click.echo(text, err=True)

    show(last)
    while True:
        s = api.get(f"/api/v1/servers/{ref}")
        n = int(s["connections"])
        if s.get("sessions") != sessions:
            sessions = s.get("sessions")
            last = -1  # shown again below
        if n != last:
            if n > start:
                start = n
            show(n)
        if n == 0:
            if tty:
                show(0, final=True)
            click.echo(_end_line(api, ref, s, last, time.monotonic() - began, view))
            return
        if s["admin"] == "enabled":
            raise ClientError(f"{ref} was enabled again with {n} connection(s) left")
        last = n
        time.sleep(poll)


def _end_line(
    api: Api, ref: str, s: dict[str, Any], last: int, elapsed: float, asked: dict[str, Any]
) -> str:
    """What became of the server: drained, or cut at the drain deadline (how many
    connections that closed) and now in maintenance, or put in maintenance by someone.
    ``asked``: the server as the command left it (``maintenance --wait``: still that same
    maintenance, not someone else's "meanwhile")."""
    if s["admin"] == "maintenance" and (asked.get("admin"), asked.get("since")) == (
        "maintenance",
        s.get("since"),
    ):
        return (
            f"{ref}: in maintenance: no connection left after {elapsed:.1f}s "
            f"(status: {s['status']})"
        )
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


RELOAD_WAIT = 90.0
"""Seconds ``quiesce reload`` waits for its answer at least (a larger --timeout wins)."""


@click.command("reload")
@click.pass_context
def reload_cmd(ctx: click.Context) -> None:
    """Re-read the running quiesce's config file and apply the difference live: exit 0 with
    the changes, or 1 with every problem of the file (then nothing changed), or 1 naming the
    services that failed to start after the config switched (the rest applied; the next
    reload, of the same file too, starts them again).

    Sent to the admin API (POST /api/v1/reload) at --hosts (QUIESCE_HOSTS), with the
    credentials of the other client verbs (--user/--password or --token, QUIESCE_USER,
    QUIESCE_PASSWORD, QUIESCE_TOKEN). `kill -HUP <pid>` of the quiesce process, or the
    runtime socket's `reload` command, do the same."""
    api = api_of(ctx)
    # The answer comes after the reload worker validated the file (at most 30 s, then the
    # reload is refused naming it: quiesce.app.reload_worker.RELOAD_WORKER_TIMEOUT) and the
    # plan was applied: waited for RELOAD_WAIT s at least (review 14 R11: the default 10 s
    # said "cannot reach … timed out" of a quiesce that answers)
    timeout = max(api.settings.timeout, RELOAD_WAIT)
    api.settings = dataclasses.replace(api.settings, timeout=timeout)
    try:
        data = api.send("POST", "/api/v1/reload")
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
    *SERVER_COMMANDS,
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
