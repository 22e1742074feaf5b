"""The runtime socket's one error: an answer that is an error message."""

from __future__ import annotations


class CommandError(Exception):
    """An answer that is an error message (the text is HAProxy's where HAProxy has one)."""


__all__ = ["CommandError"]
