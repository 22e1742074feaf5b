"""Servers added, changed and removed at runtime, in maxctrl's grammar: ``create server
POOL/NAME HOST:PORT``, ``alter server POOL/NAME KEY VALUE …``, ``destroy server POOL/NAME
[--drain [--timeout D] [--wait]]`` (docs/cli.md, docs/admin.md)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from quiesce.frontends.cli.output import POLL, emit, guard_hint, resolve, segment
from quiesce.frontends.cli.transport import (
    Api,
    ClientError,
    DurationType,
    api_of,
    settings,
)


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
@click.option(
    "--max-connections",
    type=int,
    metavar="N",
    help="At most N busy connections at once; more wait in the pool's queue (default: no limit).",
)
@click.option("--backup", is_flag=True, help="A backup server (used when no primary is).")
@click.option(
    "--priority",
    type=int,
    metavar="N",
    help="Priority 0-1000 among the servers of its tier (default 0, as the config file's).",
)
@click.option("--reason", default="", help="Why (recorded in events).")
@click.pass_context
def create_server(
    ctx: click.Context,
    server: str,
    address: str,
    weight: int | None,
    max_connections: int | None,
    backup: bool,
    priority: int | None,
    reason: str,
) -> None:
    """Add server NAME at HOST:PORT to POOL, validated as the config file's servers; it starts
    unknown until its pool's monitors pass (unmonitored when the pool has none)."""
    pool, name = _pool_and_name(server)
    body: dict[str, Any] = {"name": name, "address": address, "reason": reason}
    if weight is not None:
        body["weight"] = weight
    if max_connections is not None:
        body["max_connections"] = max_connections
    if backup:
        body["backup"] = True
    if priority is not None:
        body["priority"] = priority
    data = api_of(ctx).send("POST", f"/api/v1/pools/{segment(pool)}/servers", body)
    emit(
        settings(ctx),
        data,
        lambda: f"{pool}/{name}: created at {data['address']} (status: {data['status']})",
    )
    for warning in data.get("warnings") or []:  # review 90 F14: a derived limit cut far
        click.echo(f"warning: {warning}", err=True)


@click.group("alter")
def alter_group() -> None:
    """Change a server's address, weight, priority, max_connections or backup (maxctrl:
    alter server)."""


# as PATCH /api/v1/servers/{pool}/{server} (docs/api.md) but healthmonitors (a list: PATCH)
_ALTERABLE = ("address", "weight", "priority", "max_connections", "backup")
_NUMBERS = ("weight", "priority", "max_connections")


@alter_group.command("server")
@click.argument("server", metavar="POOL/NAME")
@click.argument("settings_", metavar="KEY VALUE [KEY VALUE ...]", nargs=-1, required=True)
@click.option("--reason", default="", help="Why (recorded in events).")
@click.pass_context
def alter_server(ctx: click.Context, server: str, settings_: tuple[str, ...], reason: str) -> None:
    """Change SERVER's address (HOST:PORT: the old address drains, new connections go to the
    new one), weight (0-256), priority (0-1000), max_connections (N busy connections at
    most, none: no limit) or backup (true/false), persisted over the config file."""
    if len(settings_) % 2:
        raise click.UsageError(
            "give KEY VALUE pairs: address HOST:PORT, weight N, priority N, max_connections N, "
            "backup true"
        )
    body: dict[str, Any] = {}
    for key, value in zip(settings_[::2], settings_[1::2], strict=True):
        if key not in _ALTERABLE:
            raise click.UsageError(f"{key!r}: a server's {', '.join(_ALTERABLE)} can be altered")
        if key in body:  # typed or pasted twice: which one was meant? (review 90 F8)
            raise click.UsageError(f"{key} given twice: give each key once; nothing changed")
        if key == "backup":
            if value.lower() not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
                raise click.UsageError(f"backup {value!r}: give true or false")
            body[key] = value.lower() in ("true", "yes", "on", "1")
        elif key == "max_connections" and value.lower() in ("none", "null"):
            body[key] = None
        elif key in _NUMBERS and value.removeprefix("-").isdecimal():
            body[key] = int(value)  # a number (the API refuses the text "5"), else as given
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
    try:
        data = api.request("DELETE", f"/api/v1/servers/{ref}", params=params).json()
    except ClientError as exc:
        if drain or not exc.format_message().startswith("409"):
            raise guard_hint(exc) from None
        raise ClientError(
            f"{exc.format_message()} (--drain drains it first and deletes it at 0 "
            f"connections; or `set server {ref} maintenance` first)"
        ) from None
    emit(settings(ctx), data, lambda: str(data["message"]))
    if wait and not data["removed"]:
        wait_removed(api, ref)


def wait_removed(api: Api, ref: str, poll: float = POLL) -> None:
    """Poll the pool until the server is gone, showing its connections on stderr."""
    pool, _, name = ref.partition("/")
    began = time.monotonic()
    last: str | None = None
    while True:
        servers = {s["name"]: s for s in api.get(f"/api/v1/pools/{segment(pool)}")["servers"]}
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


SERVER_COMMANDS: list[click.Command] = [create_group, alter_group, destroy_group]
