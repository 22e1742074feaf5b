"""``metrics: {per_server: false}`` (issue 21): the cardinality limit for pools of thousands
of servers: no series per server, in quiesce's names or HAProxy's; the pool and process
series stay."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from quiesce.config.loader import ConfigError, parse_config
from tests.api.harness import VIEWER, config_dict, running
from tests.metrics.test_metrics import get, scrape

pytestmark = pytest.mark.loopback


@pytest.mark.parametrize("per_server", [True, False])
async def test_per_server_series_can_be_left_out(tmp_path: Path, per_server: bool) -> None:
    data = config_dict()
    data["metrics"] = {"haproxy_compatible": True, "per_server": per_server}
    async with (
        running(tmp_path, data) as app,
        httpx.AsyncClient(base_url=app.admin_server.url, auth=VIEWER) as client,
    ):
        samples = await scrape(client)
    names = {name for name, _ in samples}
    per = {n for n, labels in samples if "server" in dict(labels)}
    if per_server:
        assert get(samples, "quiesce_server_eligible", pool="app", server="a1") == 1
        assert "haproxy_server_status" in names
    else:
        assert per == set()  # not one series with a server label
    assert get(samples, "quiesce_pool_servers", pool="app") == 3  # the pools' series stay
    assert get(samples, "quiesce_pool_eligible_servers", pool="app") == 3
    assert any(n.startswith("haproxy_backend_") for n in names)


def test_a_bad_per_server_is_refused_naming_it() -> None:
    data = config_dict()
    data["metrics"] = {"per_server": "some"}
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert any("metrics.per_server" in p for p in exc.value.problems), exc.value.problems
