"""Memory per configured server (issue 21: at most 2 KiB per server for the whole process).
The registry's share is measured with tracemalloc, deterministic allocation sizes, no
timing: a pool of 2,000 servers under one monitor."""

from __future__ import annotations

import tracemalloc

from quiesce.config import parse_config
from quiesce.state.registry import Registry

SERVERS = 2000


def test_the_registry_keeps_a_server_in_well_under_2_kib() -> None:
    servers = [{"name": f"s{i}", "address": f"127.0.0.1:{1000 + i}"} for i in range(SERVERS)]
    raw = {
        "healthmonitors": {"m": {"type": "tcp", "send_interval": 60}},
        "pools": {"p": {"healthmonitors": ["m"], "servers": servers}},
    }
    config = parse_config(raw)  # the parsed config is not counted: the file's share
    tracemalloc.start()
    try:
        registry = Registry(config)
        per_server = tracemalloc.get_traced_memory()[0] / SERVERS
    finally:
        tracemalloc.stop()
    assert len(registry.pool("p").servers) == SERVERS
    # 2,555 bytes when each ServerRuntime had an instance dict (1,584 of them); slots: 1,179
    assert per_server < 1500, per_server
