"""``pools.X.outlier_detection``: passive outlier detection (Envoy's names; the detector is
quiesce.core.outlier, docs/config.md has the keys). Absent: off, and nothing is counted on the
request path."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, StrictInt, model_validator

from quiesce.config.base import KeyProblem, Model
from quiesce.config.durations import parse_duration
from quiesce.core.outlier import Policy


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be above 0")
    return seconds


PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]
Threshold = Annotated[StrictInt, Field(ge=0, le=1_000_000)]


class OutlierDetection(Model):
    # a run of this many 5xx answers (a server's, or the proxy's own 502/504 for it) ejects
    # the server; 0: this rule is off
    consecutive_5xx: Threshold = 5
    # a run of this many failed connects (refused, reset, timed out) ejects it; 0: off
    consecutive_connect_failures: Threshold = 5
    # each interval in service takes one off the server's ejection count (the back-off decays)
    interval: PositiveDuration = 10.0
    # the first ejection's length; the n-th lasts n times this, up to max_ejection_time
    # (which may not be below it)
    base_ejection_time: PositiveDuration = 30.0
    max_ejection_time: PositiveDuration = 300.0
    # never more than this share of the pool's servers ejected at once
    max_ejection_percent: Annotated[StrictInt, Field(ge=0, le=100)] = 50

    @model_validator(mode="after")
    def _something_on(self) -> OutlierDetection:
        if self.consecutive_5xx == 0 and self.consecutive_connect_failures == 0:
            raise ValueError(
                "consecutive_5xx and consecutive_connect_failures are both 0: nothing would "
                "eject a server (leave outlier_detection out to turn it off)"
            )
        if self.max_ejection_time < self.base_ejection_time:
            # the detector would eject for base_ejection_time anyway (Envoy's max(max, base))
            raise KeyProblem(
                ("max_ejection_time",),
                f"{self.max_ejection_time:g}s is below base_ejection_time "
                f"({self.base_ejection_time:g}s): an ejection lasts at least base_ejection_time",
            )
        return self

    def policy(self) -> Policy:
        return Policy(
            consecutive_5xx=self.consecutive_5xx,
            consecutive_connect_failures=self.consecutive_connect_failures,
            interval=self.interval,
            base_ejection_time=self.base_ejection_time,
            max_ejection_time=self.max_ejection_time,
            max_ejection_percent=self.max_ejection_percent,
        )


__all__ = ["OutlierDetection"]
