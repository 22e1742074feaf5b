"""``quiesce configure healthmonitor NAME``: Avi's monitor editing sub-shell over the REST API.
The grammar and the shell live in :mod:`quiesce.frontends.cli.monitor_shell` (no I/O), loaded
when the verb runs, so other verbs start without pydantic or the config models."""

from __future__ import annotations

import sys
import urllib.parse
from typing import Any

import click

from quiesce.frontends.cli.transport import ClientError, api_of


@click.group("configure", invoke_without_command=True)
@click.pass_context
def configure_group(ctx: click.Context) -> None:
    """Avi's configuration sub-shell (reads the whole sequence when given no object)."""
    if ctx.invoked_subcommand is None:
        _run(ctx, None)


@configure_group.command("healthmonitor")
@click.argument("name")
@click.pass_context
def configure_healthmonitor(ctx: click.Context, name: str) -> None:
    """Edit health monitor NAME: http_monitor, maintenance_code 500, no FIELD, save, save."""
    _run(ctx, name)


def _run(ctx: click.Context, name: str | None) -> None:
    from quiesce.frontends.cli.monitor_shell import Shell

    api = api_of(ctx)

    def load(n: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = api.get(
                f"/api/v1/healthmonitors/{urllib.parse.quote(n, safe='')}"
            )
        except ClientError as exc:
            if exc.format_message().startswith("404"):
                return None
            raise
        return data

    def save(n: str, data: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = api.send(
            "PUT", f"/api/v1/healthmonitors/{urllib.parse.quote(n, safe='')}", data
        )
        return result

    interactive = sys.stdin.isatty()
    shell = Shell(
        load=load,
        save=save,
        out=click.echo,
        err=lambda m: click.echo(m, err=True),
        interactive=interactive,
    )
    if name is not None:
        shell.start(name)
    if interactive:
        _complete_with(shell)
    while True:
        if interactive:
            try:
                text = input(shell.prompt())
            except EOFError:
                click.echo()
                break
        else:
            text = sys.stdin.readline()
            if not text:
                break
        if not shell.line(text):
            break
    if shell.errors:
        nothing = "" if shell.saves else " (nothing saved)"
        if len(shell.errors) == 1:
            raise ClientError(shell.errors[0] + nothing)
        for error in shell.errors:
            click.echo(f"quiesce: {error}", err=True)
        raise ClientError(f"{len(shell.errors)} errors{nothing}")
    if shell.editor is not None:
        raise ClientError("end of input before the final save: changes not saved")
    if not shell.saves and not interactive:
        raise ClientError("nothing saved")


def _complete_with(shell: Any) -> None:
    """Tab completes field names at the prompt (readline, loaded only here: other verbs, and
    this one from a pipe, start without it)."""
    try:
        import readline
    except ImportError:  # a Python built without it: no completion, the shell still works
        return

    def complete(text: str, state: int) -> str | None:
        matches = shell.completions(readline.get_line_buffer(), text)
        return matches[state] + " " if state < len(matches) else None

    readline.set_completer(complete)
    readline.set_completer_delims(" \t")
    readline.parse_and_bind("tab: complete")


__all__ = ["configure_group"]
