"""The ``quiesce`` command: server verbs (run, demo, check, passwd) and the maxctrl-style client."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="quiesce")
def main() -> None:
    """quiesce: a load balancer that takes servers out without losing a request."""


__all__ = ["main"]


def _register_commands() -> None:
    from quiesce.cli import server

    server.register(main)


_register_commands()
