"""The ``quiesce`` command: server verbs (run, demo, check, passwd) and the maxctrl-style client."""

from __future__ import annotations

from typing import Any

import click

from quiesce.frontends.cli.transport import client_options, settings_from


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="quiesce")
@client_options
@click.pass_context
def main(ctx: click.Context, /, **options: Any) -> None:
    """quiesce: a load balancer that takes servers out without losing a request."""
    ctx.obj = settings_from(options)


__all__ = ["main"]


def _register_commands() -> None:
    from quiesce.frontends.cli import client, configure, server

    server.register(main)
    client.register(main, [configure.configure_group])


_register_commands()
