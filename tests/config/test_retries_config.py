"""pools.X.retries, retry_on, redispatch, retry_non_idempotent and retry_budget (issue 17,
part 3; quiesce.config.retries): bad values refused with their path, good ones reach the
pool's policy (quiesce.core.retry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from quiesce.config.loader import load_text
from quiesce.core.retry import DEFAULT, RetryPolicy
from tests.config.test_queue_config import POOL, problems
from tests.support.process import quiesce_check


def policy(pool: str) -> RetryPolicy:
    return load_text(POOL.format(pool=pool, server="weight: 1")).pools["web"].retry


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ("retries: -1", "pools.web.retries: Input should be greater than or equal to 0"),
        ("retries: 11", "pools.web.retries: Input should be less than or equal to 10"),
        (
            "retries: 2\n    retry_on: [connect_failure, bogus]",
            "pools.web.retry_on[1]: 'bogus' is not a retry condition (connect_failure, "
            "connect_timeout, empty_response, response_timeout, or a status 400-599)",
        ),
        ("retries: 2\n    retry_on: [600]", "pools.web.retry_on[0]: 600 is not a status"),
        ("retries: 2\n    retry_on: [true]", "pools.web.retry_on[0]: True is not a retry"),
        ("retries: 2\n    retry_on: 503", "pools.web.retry_on: Input should be a valid list"),
        ("retries: true", "pools.web.retries: Input should be a valid integer"),
        ("retries: '2'", "pools.web.retries: Input should be a valid integer"),
        ("retries: 2\n    retry_on: []", "pools.web.retry_on: an empty list retries nothing"),
        (
            "retries: 2\n    retry_on: [503, connect_failure, '503']",
            "pools.web.retry_on: 503 given more than once",
        ),
        ("retry_on: [503]", "pools.web.retry_on: set retries too"),
        ("redispatch: false", "pools.web.redispatch: set retries too"),
        ("retry_non_idempotent: true", "pools.web.retry_non_idempotent: set retries too"),
        (
            "retries: 1\n    retry_budget: {percent: 150}",
            "pools.web.retry_budget.percent: Input should be less than or equal to 100",
        ),
        ("retries: 1\n    retry_budget: {min: 2}", "pools.web.retry_budget.min: unknown key"),
        (
            "retries: 1\n    retry_budget: {min_retries: true}",
            "pools.web.retry_budget.min_retries: Input should be a valid integer",
        ),
        (
            "retries: 1\n    retry_budget: {percent: true}",
            "pools.web.retry_budget.percent: Input should be a valid number",
        ),
        ("retries: 1\n    retry_again: true", "pools.web.retry_again: unknown key"),
    ],
)
def test_bad_retry_settings_are_refused_with_their_path(pool: str, message: str) -> None:
    assert message in problems(pool)


def test_without_retries_the_pool_keeps_one_retry_of_a_refusal_on_another_server() -> None:
    assert policy("algorithm: round_robin") == DEFAULT
    # the budget applies to the default retry too
    assert policy("retry_budget: {percent: 5, min_retries: 1}") == RetryPolicy(
        same_server=False, budget_percent=5.0, budget_min=1
    )
    assert policy("retries: 0").retries == 0  # none at all


def test_good_settings_make_the_policy() -> None:
    p = policy(
        "retries: 3\n    retry_on: [empty_response, response_timeout, 502, '503']\n"
        "    redispatch: false\n    retry_non_idempotent: true"
    )
    assert p == RetryPolicy(
        retries=3,
        on=frozenset({"empty_response", "response_timeout"}),
        statuses=frozenset({502, 503}),
        redispatch=False,
        non_idempotent=True,
    )
    # retries alone: HAProxy's conn-failure (a refusal or a connect timeout)
    assert policy("retries: 2").on == frozenset({"connect_failure", "connect_timeout"})


@pytest.mark.peers
def test_quiesce_check_names_each_bad_retry_key_and_the_alpn_at_its_path(tmp_path: Path) -> None:
    done = quiesce_check(
        tmp_path / "quiesce.yaml",
        """
pools:
  t: {retries: true, servers: [{name: a, address: 127.0.0.1:8081}]}
  e: {retries: 2, retry_on: [], servers: [{name: a, address: 127.0.0.1:8081}]}
  d: {retries: 2, retry_on: [503, 503], servers: [{name: a, address: 127.0.0.1:8081}]}
  r: {retry_on: [503], servers: [{name: a, address: 127.0.0.1:8081}]}
services:
  www:
    listen: 127.0.0.1:8080
    pool: t
    tls: {certificates: [{cert: a.pem, key: a.key}], alpn: [h2, h2]}
""",
    )
    assert done.returncode == 1, done.stdout
    lines = done.stderr.splitlines()
    for start in (
        "pools.t.retries: Input should be a valid integer",
        "pools.e.retry_on: an empty list retries nothing, not even a refused connect",
        "pools.d.retry_on: 503 given more than once",
        "pools.r.retry_on: set retries too",
        "services.www.tls.alpn: an http service offers h2 and/or http/1.1, each once",
    ):
        assert any(line.strip().startswith(start) for line in lines), (start, done.stderr)
