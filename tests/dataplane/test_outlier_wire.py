"""Passive outlier detection's connect-failure rule on the wire (issue 17, item 4), L7 and L4:
a server whose port refuses is ejected after ``consecutive_connect_failures`` refusals (each
client was retried on the other server and got its answer), then gets no new connection;
curl is the client. The 5xx rule and the return are tested end to end in
tests/e2e/test_outlier.py, the decisions with a fake clock in tests/core/test_outlier.py."""

from __future__ import annotations

import pytest

from quiesce.core.events import Event, EventKind
from tests.dataplane.backend import Backend
from tests.dataplane.conftest import curl, dead_port, make_config, start_proxy

pytestmark = pytest.mark.peers

OUTLIER = {
    "outlier_detection": {
        "consecutive_5xx": 0,
        "consecutive_connect_failures": 2,
        "base_ejection_time": "1m",
        "max_ejection_percent": 50,
    }
}


@pytest.mark.parametrize("protocol", ["http", "tcp"])
async def test_a_refusing_server_is_ejected(backend: Backend, protocol: str) -> None:
    raw = make_config(
        [f"127.0.0.1:{dead_port()}", backend.address], protocol=protocol, pool=OUTLIER
    )
    async with start_proxy(raw) as p:
        events: list[Event] = []
        p.registry.listeners.append(events.append)
        dead, alive = p.registry.pool("web").servers
        for _ in range(8):
            r = await curl(f"http://127.0.0.1:{p.port}/")
            assert r.stdout == b"hello from a\n", r
        assert dead.status == "ejected (passive)" and not dead.eligible
        assert alive.status == "up"
        (ejected,) = [e for e in events if e.kind is EventKind.SERVER_EJECTED]
        assert ejected.server == dead.name and ejected.cause == "passive"
        assert ejected.detail["rule"] == "consecutive_connect_failures"
        assert ejected.detail["connect"] == "refused" and ejected.detail["count"] == 2
        # after its second refusal, nothing more was sent its way: the pool has alive alone
        assert list(p.registry.pool("web").candidates) == [alive]
        assert dead.outlier is not None and dead.outlier.connect_failures == 0
