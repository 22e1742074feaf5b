"""Durations as operators write them: ``500ms``, ``1s``, ``2m``, ``1h``, ``1d`` or plain seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION = 10 * 365 * 86400.0
"""Ten years: anything longer is a typo, and times that far out overflow date formatting."""

_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: object) -> float:
    """Return seconds. Raises ValueError with a message fit for an operator."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (use 500ms, 1s, 2m, 1h or seconds)")
    if isinstance(value, int | float):
        if math.isnan(value):
            raise ValueError(f"duration {value} is not a number")
        if value < 0:
            raise ValueError(f"duration {value} is negative")
        return _bounded(float(value), value)
    if isinstance(value, str):
        m = _RE.match(value)
        if m:
            return _bounded(float(m.group(1)) * _UNITS[m.group(2) or "s"], value)
    raise ValueError(f"{value!r} is not a duration (use 500ms, 1s, 2m, 1h or seconds)")


def _bounded(seconds: float, original: object) -> float:
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError(f"duration {original!r} is longer than 10 years")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
