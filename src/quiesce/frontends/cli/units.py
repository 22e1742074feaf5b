"""Numbers as the CLI shows them to people: durations and latencies with their unit (``1s``,
``250ms``, ``1.2ms``), sizes in bytes with a binary prefix (``1.5 KiB``). JSON output keeps the
raw numbers; only the tables and lines for people go through here."""

from __future__ import annotations

from quiesce.config.durations import format_duration

_SIZES = ("KiB", "MiB", "GiB", "TiB")


def duration(seconds: object) -> str:
    """A config duration (seconds) as the config file would say it: ``1s``, ``500ms``,
    ``2m``; anything that is not a number is shown as it is (``""`` for None)."""
    if seconds is None:
        return ""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return str(seconds)
    if seconds < 0:
        return "infinite"
    return format_duration(float(seconds))


def latency(ms: float | None) -> str:
    """A latency in milliseconds, three significant figures at most: ``31µs``, ``1.2ms``,
    ``240ms``, ``1.50s`` (``0ms`` for 0, as ``show stat``'s whole milliseconds; ``-`` for
    none)."""
    if ms is None:
        return "-"
    if ms == 0:
        return "0ms"
    if ms < 1:
        return f"{ms * 1000:.0f}µs"
    if ms < 10:
        return f"{ms:.1f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.2f}s"


def size(n: float | None) -> str:
    """A byte count: ``512 B``, ``1.5 KiB``, ``20 MiB`` (binary prefixes, as ``ls -h``)."""
    if n is None:
        return ""
    if n < 1024:
        return f"{n:.0f} B"
    value = float(n)
    for unit in _SIZES:
        value /= 1024
        if value < 1024 or unit == _SIZES[-1]:
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def rate(n: float | None) -> str:
    """A per-second count: whole numbers as they are, fractions to one place."""
    if n is None:
        return "-"
    return f"{n:.0f}" if n == int(n) or n >= 10 else f"{n:.1f}"


__all__ = ["duration", "latency", "rate", "size"]
