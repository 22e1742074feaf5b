"""pools.X.protocol (issue 16, item 5; quiesce.config.upstream): http/1.1 by default, h2 to
speak HTTP/2 to the servers; bad values refused naming the key, and h2 refused where it
cannot work (send_proxy on the same pool, a tcp, postgresql or mysql service's pool)."""

from __future__ import annotations

import pytest

from quiesce.config.loader import ConfigError, load_text
from tests.config.test_queue_config import POOL, problems


def test_default_and_h2() -> None:
    assert load_text(POOL.format(pool="algorithm: round_robin", server="weight: 1")).pools[
        "web"
    ].protocol == ("http/1.1")
    cfg = load_text(POOL.format(pool="protocol: h2", server="weight: 1"))
    assert cfg.pools["web"].protocol == "h2"


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ("protocol: h3", "pools.web.protocol: Input should be 'http/1.1' or 'h2'"),
        ("protocol: grpc", "pools.web.protocol: Input should be 'http/1.1' or 'h2'"),
        (
            "protocol: h2\n    send_proxy: v2",
            "pools.web.protocol: h2 carries many clients' requests on one connection, "
            "send_proxy one client's address per connection",
        ),
    ],
)
def test_bad_protocol_refused_with_its_path(pool: str, message: str) -> None:
    assert message in problems(pool)


@pytest.mark.parametrize("service", ["tcp", "postgresql", "mysql"])
def test_h2_pool_refused_for_a_service_that_is_not_http(service: str) -> None:
    text = POOL.format(pool="protocol: h2", server="weight: 1").replace(
        "pool: web}", f"pool: web, protocol: {service}}}"
    )
    with pytest.raises(ConfigError) as info:
        load_text(text)
    assert (
        f"services.www.pool: pool 'web' has protocol: h2 (pools.web.protocol), which a "
        f"{service} service cannot use" in str(info.value)
    )
