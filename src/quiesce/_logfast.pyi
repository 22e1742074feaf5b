"""Types of the optional C extension ``quiesce._logfast`` (src/quiesce/_ext/logfast.c)."""

from typing import Any

def format(
    entries: list[tuple[Any, ...]], offset: float, json: bool, prefix: str, seq: int, /
) -> tuple[bytes, int]: ...
