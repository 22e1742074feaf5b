"""The runtime socket's one error: an answer that is an error message."""

from __future__ import annotations

from quiesce.core.errors import QuiesceError


class CommandError(QuiesceError):
    """An answer that is an error message (the text is HAProxy's where HAProxy has one)."""

    status_hint = 400
    ended = True
    """HAProxy ends the answer with an empty line (False: a message HAProxy 2.6 prints
    without its newline, so the answer is the message and one newline only)."""


class UnendedError(CommandError):
    """One of HAProxy 2.6's messages that lack their newline (the bad weight strings)."""

    ended = False


__all__ = ["CommandError", "UnendedError"]
