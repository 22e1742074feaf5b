"""The maxctrl-style client verbs of the ``quiesce`` command (``list servers``, ``set server S
maintenance``, ``configure healthmonitor``, ...): they only speak HTTP to a running quiesce. The
command itself, with the server verbs, is :mod:`quiesce.main`."""

from __future__ import annotations

import click

from quiesce.frontends.cli.transport import DurationType, client_options, settings_from


def register_client_verbs(main: click.Group) -> None:
    """Adds the client verbs and the monitor sub-shell to ``main``."""
    from quiesce.frontends.cli import client, configure, top

    client.register(main, [configure.configure_group, top.top_cmd])


__all__ = ["DurationType", "client_options", "register_client_verbs", "settings_from"]
