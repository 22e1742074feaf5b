"""The runtime socket's one error: an answer that is an error message."""

from __future__ import annotations

from quiesce.core.errors import QuiesceError


class CommandError(QuiesceError):
    """An answer that is an error message (the text is HAProxy's where HAProxy has one)."""

    status_hint = 400


__all__ = ["CommandError"]
