"""Monitors of a pool with ``send_proxy`` send the header first, as HAProxy's
check-send-proxy does (v2: LOCAL, v1: UNKNOWN: the server takes the check's own addresses):
checked against HAProxy 2.6 with ``bind … accept-proxy``, which closes a connection without
one (issue 17, item 5)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from quiesce.config.models import Config, HealthMonitor
from quiesce.core.clock import SystemClock
from quiesce.core.states import Verdict
from quiesce.health.manager import HealthManager
from quiesce.health.probes import StreamProber, Target
from quiesce.state.registry import Registry
from tests.support.haproxy import HAProxy, available

pytestmark = [pytest.mark.peers, pytest.mark.skipif(not available(), reason="needs haproxy")]

HTTP_CHECK = {"type": "http", "send_interval": 5.0, "receive_timeout": 2.0}
TCP_CHECK = {
    "type": "tcp",
    "send_interval": 5.0,
    "receive_timeout": 2.0,
    "tcp_monitor": {"tcp_request": "GET / HTTP/1.0\\r\\n\\r\\n", "tcp_response": "200"},
}


@pytest.fixture
async def accepting(tmp_path: Path) -> AsyncIterator[int]:
    """HAProxy answering 200 on a listener that wants a PROXY header."""
    sections = (
        "frontend fe\n    mode http\n    bind fd@{fd} accept-proxy\n"
        "    http-request return status 200 content-type text/plain string ok\n"
    )
    async with HAProxy(tmp_path, sections) as h:
        assert h.port is not None
        yield h.port


@pytest.mark.parametrize("fields", [HTTP_CHECK, TCP_CHECK], ids=["http", "tcp"])
@pytest.mark.parametrize("send", [None, "v1", "v2"])
async def test_check_passes_with_the_header_only(
    accepting: int, fields: dict[str, Any], send: str | None
) -> None:
    monitor = HealthMonitor.model_validate({**fields, "send_proxy": send})
    prober = StreamProber(SystemClock())
    try:
        r = await prober.check(Target("127.0.0.1", accepting), monitor, "m")
    finally:
        prober.close()
    assert (r.verdict is Verdict.PASS) is (send is not None), r


def test_a_pools_monitors_take_its_send_proxy() -> None:
    config = Config.model_validate(
        {
            "healthmonitors": {"web": HTTP_CHECK},
            "pools": {
                "p": {
                    "healthmonitors": ["web"],
                    "send_proxy": "v2",
                    "servers": [{"name": "s0", "address": "127.0.0.1:9"}],
                },
                "q": {
                    "healthmonitors": ["web"],
                    "servers": [{"name": "s0", "address": "127.0.0.1:9"}],
                },
            },
            "services": {"www": {"listen": "127.0.0.1:0", "pool": "p"}},
        }
    )
    registry = Registry(config)
    manager = HealthManager(registry)
    definition = config.healthmonitors["web"]
    made = manager._monitor(registry.pool("p").server("s0"), definition)
    assert made.send_proxy == "v2"
    assert manager._monitor(registry.pool("p").server("s0"), definition) is made
    assert manager._monitor(registry.pool("q").server("s0"), definition) is definition
