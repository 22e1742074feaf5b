"""Request bodies of the REST API and the time formats operators type.

Durations are ``500ms``, ``5m``, ``1h`` or seconds (:mod:`quiesce.config.durations`);
``until`` is ISO 8601 (a time without a zone is UTC) or epoch seconds. Unknown keys are
refused, as in the config file.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, model_validator

from quiesce.admin.context import CommandContext
from quiesce.config.base import Name
from quiesce.config.durations import parse_duration
from quiesce.config.models import OptionalTimeout
from quiesce.core.states import Cause


def parse_time(value: object) -> float:
    """Epoch seconds from epoch seconds or ISO 8601, between 1970 and 9999. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time (use ISO 8601 or epoch seconds)")
    if isinstance(value, int | float):
        return _in_range(float(value), value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return _in_range(float(text), value)
        except ValueError as exc:
            if "out of range" in str(exc):
                raise
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a time (use ISO 8601 or epoch seconds)") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    raise ValueError(f"{value!r} is not a time (use ISO 8601 or epoch seconds)")


_MAX_EPOCH = dt.datetime(9999, 12, 31, tzinfo=dt.UTC).timestamp()


def _in_range(seconds: float, original: object) -> float:
    if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_EPOCH:
        raise ValueError(f"time {original!r} is out of range (1970 to 9999)")
    return seconds


def parse_since(value: str, now: float) -> float:
    """An event filter bound: a time, or a duration meaning that long ago (``10m``)."""
    try:
        return parse_time(value)
    except ValueError:
        pass
    try:
        return now - parse_duration(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a time or a duration (ISO 8601, epoch seconds, or 10m for "
            "ten minutes ago)"
        ) from None


Duration = Annotated[float, BeforeValidator(parse_duration)]
MAX_REASON = 1024
"""Characters a ``reason`` may have: it goes into the event, the admin record (etcd's too),
the process log line; only the 1 MiB body limit bounded it (review 90 F11)."""
Reason = Annotated[str, Field(max_length=MAX_REASON)]
Time = Annotated[float, BeforeValidator(parse_time)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def command_context(self, actor: str, cause: Cause, now: float) -> CommandContext:
        """The admin command's context: the caller, and what of ``reason``, ``for``/``until``
        and ``force_guard`` this body has."""
        return CommandContext(actor, cause, reason=getattr(self, "reason", ""))


class _Expiring(Body):
    reason: Reason = ""
    for_: Duration | None = Field(default=None, alias="for")
    until: Time | None = None
    force_guard: bool = False

    @model_validator(mode="after")
    def _one_expiry(self) -> _Expiring:
        if self.for_ is not None and self.until is not None:
            raise ValueError("give either for or until, not both")
        return self

    def expires(self, now: float) -> float | None:
        if self.for_ is not None:
            return now + self.for_
        return self.until

    def command_context(self, actor: str, cause: Cause, now: float) -> CommandContext:
        return CommandContext(actor, cause, self.reason, self.expires(now), self.force_guard)


class MaintenanceBody(_Expiring):
    force: bool = False


class DrainBody(_Expiring):
    timeout: Duration | None = None  # none: no deadline


class DisableBody(_Expiring):
    graceful: bool = False
    timeout: OptionalTimeout | None = None  # none: the pool's; -1: none; 0: immediate


class EnableBody(Body):
    reason: Reason = ""


class ClearBody(Body):
    state: str
    reason: Reason = ""


class WeightBody(Body):
    weight: StrictInt  # not true (pydantic's lax int takes it as 1), not "3"


class FlagBody(Body):
    value: bool | str
    reason: Reason = ""


class PoolMonitorsBody(Body):
    healthmonitors: list[str]


class LoginBody(Body):
    user: str
    password: str


__all__ = [
    "ClearBody",
    "DisableBody",
    "DrainBody",
    "EnableBody",
    "FlagBody",
    "LoginBody",
    "MaintenanceBody",
    "Name",
    "PoolMonitorsBody",
    "WeightBody",
    "parse_since",
    "parse_time",
]
