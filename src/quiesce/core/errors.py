"""quiesce's errors: one tree, each error with a hint the API maps to an HTTP status (h11's
``error_status_hint``). Raise the most specific one; catch ``QuiesceError`` where any will do.

QuiesceError                          status_hint
├── NotFound                          404  unknown pool, server, monitor or flag
├── InvalidCommand                    400  a command that makes no sense in the current state
│                                          (deadline in the past, --force on drain, ...)
├── GuardRefused                      409  min_servers_up would be broken
├── ConfigError      (config.loader)  422  a config that cannot be used; ``problems`` lists
│                                          one ``path: message`` each (file, reload, API body)
├── StoreError       (store.base)     503  the state store cannot be opened or used
├── StartupError     (app)            500  quiesce cannot start (busy port, capability, ...)
├── LimitError       (dataplane.limits)    500  the connection limit does not fit the fd limit
│                                          (the app reports it as a StartupError)
├── AuthError        (frontends.auth)     401 / 403 / 429, set per error
├── ApiError         (frontends.api.deps)     any status, set per error (bad body, ...)
├── CommandError     (frontends.runtime_socket) 400  a runtime-socket line refused; the text
│                                          is HAProxy's where HAProxy has one
└── WireError        (dataplane.h1.headers)  400 / 408 / 413 / 431 / 501, set per error: a
                                           request the proxy refuses to read further

An error raised below a front end reaches the operator through that front end's mapping: the
API answers ``status_hint`` with ``{"error", "detail"}``, the runtime socket prints the message,
the CLI prints it and exits 1. Outside the tree on purpose: the CLI client's own ``ClientError``
(frontends.cli.transport) is click's ``ClickException``, raised in the client process, never
in the server (click declares its ``message`` final, so it cannot also be a QuiesceError).
This module imports nothing else of quiesce.
"""

from __future__ import annotations


class QuiesceError(Exception):
    """The root. ``status_hint`` is a class default; an error may carry its own."""

    status_hint = 400

    def __init__(self, message: str, *, status_hint: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_hint is not None:
            self.status_hint = status_hint


class NotFound(QuiesceError):
    status_hint = 404


class InvalidCommand(QuiesceError):
    status_hint = 400


class GuardRefused(QuiesceError):
    status_hint = 409


__all__ = ["GuardRefused", "InvalidCommand", "NotFound", "QuiesceError"]
