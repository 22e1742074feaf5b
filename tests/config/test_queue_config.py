"""servers[].max_connections, pools.X.queue_timeout and pools.X.hold_when_empty in the config
(issue 17, item 2): bad values are refused with their path, good ones reach the models."""

from __future__ import annotations

import pytest

from quiesce.config.loader import ConfigError, load_text

POOL = """
pools:
  web:
    {pool}
    servers:
      - {{name: a, address: 127.0.0.1:8081, {server}}}
services:
  www: {{listen: 127.0.0.1:8080, pool: web}}
"""


def problems(pool: str = "", server: str = "") -> str:
    with pytest.raises(ConfigError) as info:
        load_text(POOL.format(pool=pool or "algorithm: round_robin", server=server or "weight: 1"))
    return str(info.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "0 is below 1 (a whole number ≥ 1, or null)"),
        ("-3", "-3 is below 1"),
        ("lots", "'lots' is not a number of connections"),
        ("1.5", "1.5 is not a number of connections"),
    ],
)
def test_a_bad_max_connections_is_refused_with_its_path(value: str, message: str) -> None:
    assert f"pools.web.servers[0].max_connections: {message}" in problems(
        server=f"max_connections: {value}"
    )


def test_bad_queue_durations_are_refused_with_their_paths() -> None:
    text = problems(pool="queue_timeout: soon\n    hold_when_empty: 0")
    assert "pools.web.queue_timeout: 'soon' is not a duration" in text
    assert "pools.web.hold_when_empty: must be above 0" in text
    text = problems(pool="queue_timeout: -1s\n    hold_when_empty: forever")
    assert "pools.web.queue_timeout: '-1s' is not a duration" in text
    assert "pools.web.hold_when_empty: 'forever' is not a duration" in text


def test_good_values_reach_the_models() -> None:
    config = load_text(
        POOL.format(
            pool="queue_timeout: 250ms\n    hold_when_empty: 8s", server="max_connections: 3"
        )
    )
    pool = config.pools["web"]
    assert (pool.queue_timeout, pool.hold_when_empty) == (0.25, 8.0)
    assert pool.servers[0].max_connections == 3
    default = load_text(POOL.format(pool="algorithm: round_robin", server="weight: 1"))
    web = default.pools["web"]
    assert (web.queue_timeout, web.hold_when_empty, web.servers[0].max_connections) == (
        5.0,
        None,
        None,
    )
