"""Errors of the core, each with a hint the API maps to an HTTP status (h11's idea).

QuiesceError                      status_hint
├── NotFound                      404  unknown pool, server, monitor or flag
├── InvalidCommand                400  a command that makes no sense in the current state
│                                      (deadline in the past, --force on drain, ...)
└── GuardRefused                  409  min_servers_up would be broken
"""

from __future__ import annotations


class QuiesceError(Exception):
    status_hint = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(QuiesceError):
    status_hint = 404


class InvalidCommand(QuiesceError):
    status_hint = 400


class GuardRefused(QuiesceError):
    status_hint = 409
