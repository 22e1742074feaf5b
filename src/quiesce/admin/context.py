"""Who asks for a change, through what, and why: the one value every
:class:`~quiesce.admin.AdminService` command takes, built once by the front end."""

from __future__ import annotations

from dataclasses import dataclass

from quiesce.core.states import Cause


@dataclass(frozen=True, slots=True)
class CommandContext:
    """``actor`` is the authenticated user or token name (``runtime-socket`` for the socket);
    ``cause`` the front end (``api``, ``cli``, ``dashboard``, ``runtime-socket``); ``reason``
    free text for the events and the admin record. ``expires`` (wall-clock seconds: back to
    enabled by itself then) and ``force_guard`` (override ``min_servers_up``) apply to the
    commands that take a server out (maintenance, drain, disable); the others ignore them.
    ``local``: change this node only when the shared store (etcd) is not reachable, instead
    of the 503 a change of shared state gets then; marked ``detail.local`` in its events."""

    actor: str
    cause: Cause
    reason: str = ""
    expires: float | None = None
    force_guard: bool = False
    local: bool = False


__all__ = ["CommandContext"]
