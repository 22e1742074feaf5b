"""A pool's retry settings (issue 17, part 3; the decisions are quiesce.core.retry):
``pools.X.retries``, ``retry_on``, ``redispatch``, ``retry_non_idempotent`` and
``retry_budget``. PoolConfig takes them from :class:`PoolRetries`, as it takes ``send_proxy``
from quiesce.config.proxy; ``PoolConfig.retry`` is the policy they make, built once."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictFloat,
    StrictInt,
    model_validator,
)

from quiesce.config.base import KeyProblem
from quiesce.core.retry import BEFORE_SEND, CAUSES, DEFAULT, RetryPolicy

_WORDS = ", ".join(CAUSES)


def _condition(value: Any) -> str | int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a retry condition ({_WORDS}, or a status 400-599)")
    if isinstance(value, int):
        if 400 <= value <= 599:
            return value
        raise ValueError(f"{value} is not a status to retry on (400-599)")
    if isinstance(value, str) and value in CAUSES:
        return value
    if isinstance(value, str) and value.isdigit():
        return _condition(int(value))
    raise ValueError(f"{value!r} is not a retry condition ({_WORDS}, or a status 400-599)")


Condition = Annotated[str | int, BeforeValidator(_condition)]


def _once_each(conditions: list[str | int]) -> list[str | int]:
    if not conditions:
        raise ValueError(
            "an empty list retries nothing, not even a refused connect (leave retry_on out "
            "for connect_failure, connect_timeout; retries: 0 for no retry)"
        )
    twice = sorted({str(c) for c in conditions if conditions.count(c) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} given more than once")
    return conditions


Conditions = Annotated[list[Condition], AfterValidator(_once_each)]


class RetryBudget(BaseModel):
    """At most ``percent`` % of the pool's requests in flight may be retrying at once, or
    ``min_retries`` when that is more (Envoy's retry_budget, same defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    percent: Annotated[StrictFloat, Field(ge=0, le=100)] = 20.0
    min_retries: Annotated[StrictInt, Field(ge=0)] = 3


class PoolRetries(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # how many times a request may be sent again (null: the default, one retry of a refused
    # connection on another server; 0: never)
    retries: Annotated[StrictInt, Field(ge=0, le=10)] | None = None
    # what is retried (default with retries: connect_failure, connect_timeout)
    retry_on: Conditions | None = None
    # a retry goes to another eligible server (false: to the same one)
    redispatch: bool = True
    # retry a request that reached the server even if it may not be sent twice (POST...)
    retry_non_idempotent: bool = False
    retry_budget: RetryBudget = RetryBudget()
    _retry: RetryPolicy = PrivateAttr(default=DEFAULT)

    @model_validator(mode="after")
    def _policy(self) -> PoolRetries:
        budget = self.retry_budget
        if self.retries is None:
            alone = {"retry_on", "redispatch", "retry_non_idempotent"} & self.model_fields_set
            if alone:
                raise KeyProblem(
                    (sorted(alone)[0],),
                    "set retries too (without it the pool keeps the default, one retry of a "
                    "refused connection on another server)",
                )
            self._retry = RetryPolicy(
                retries=DEFAULT.retries,
                on=DEFAULT.on,
                same_server=False,
                budget_percent=budget.percent,
                budget_min=budget.min_retries,
            )
            return self
        on = BEFORE_SEND if self.retry_on is None else self.retry_on
        self._retry = RetryPolicy(
            retries=self.retries,
            on=frozenset(c for c in on if isinstance(c, str)),
            statuses=frozenset(c for c in on if isinstance(c, int)),
            redispatch=self.redispatch,
            non_idempotent=self.retry_non_idempotent,
            budget_percent=budget.percent,
            budget_min=budget.min_retries,
        )
        return self

    @property
    def retry(self) -> RetryPolicy:
        """The pool's retry policy (quiesce.core.retry)."""
        return self._retry


__all__ = ["PoolRetries", "RetryBudget"]
