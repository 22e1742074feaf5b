"""The Python cost of one L7 keep-alive request, without sockets.

    python bench/l7_python_cost.py [REQUESTS] [httplog|json] [outlier]

Drives a ClientConnection and its Upstream with fake transports: the request bytes wrk sends,
the response nginx answers; prints CPU µs per request (best of 5 batches, process time). It
is the part of the proxy's per-request cost that is Python, as opposed to the syscalls and
the event loop (compare with the CPU µs per request of bench/proxy_bench.py). With a format,
the access log is on, written to a temporary file: its writer thread's CPU is counted too
(process time), its batches formatted every 512 requests (no loop turn passes here). With
``outlier``, the pool has ``outlier_detection`` (its defaults).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from quiesce.config.models import Config
from quiesce.dataplane import ConnectionTable
from quiesce.dataplane.h1.client import ClientConnection
from quiesce.dataplane.h1.upstream import Upstream
from quiesce.dataplane.service import make_context
from quiesce.logs import open_access_log
from quiesce.state.registry import Registry

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18081\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 09:40:01 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\n"
    b"hello, world\n"
)


class FakeTransport:
    def write(self, data: bytes) -> None:
        pass

    def writelines(self, data: Any) -> None:
        pass

    def get_extra_info(self, key: str) -> Any:
        return ("127.0.0.1", 5555)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


async def main(n: int, log_format: str | None, outlier: bool = False) -> None:
    raw: dict[str, Any] = {
        "pools": {"p": {"servers": [{"name": "s", "address": "127.0.0.1:1"}]}},
        "services": {"w": {"listen": "127.0.0.1:0", "pool": "p"}},
    }
    if outlier:
        raw["pools"]["p"]["outlier_detection"] = {}
    tmp = tempfile.TemporaryDirectory()
    if log_format is not None:
        raw["logging"] = {"access": {"format": log_format, "path": f"{tmp.name}/access.log"}}
    cfg = Config.model_validate(raw)
    registry = Registry(cfg)
    table = ConnectionTable(registry)
    table.access_log = open_access_log(cfg.logging, Path("."), asyncio.get_running_loop())
    pool = registry.pool("p")
    try:  # live series (issue 19): a latency histogram per server, as in quiesce run
        from quiesce.state.series import SeriesStore

        SeriesStore().tick(0.0, registry.pools, {})
    except ImportError:  # an older commit, for A/B runs
        pass
    ctx = make_context("w", cfg.services["w"], registry, table, asyncio.get_running_loop())
    up = Upstream(pool.servers[0], table)
    up.connection_made(FakeTransport())  # type: ignore[arg-type]
    table.put_upstream(pool.servers[0], up, 10)
    client = ClientConnection(ctx)
    client.connection_made(FakeTransport())  # type: ignore[arg-type]
    best = float("inf")
    for _ in range(5):
        t = time.process_time()
        for _ in range(n // 5):
            client.data_received(REQUEST)
            assert client.up is not None
            client.up.data_received(RESPONSE)
        best = min(best, (time.process_time() - t) / (n // 5))
    assert pool.servers[0].requests_total == n // 5 * 5
    if table.access_log is not None:
        table.access_log.close()
    tmp.cleanup()
    what = f"access log {log_format}" if log_format else "no access log"
    what += ", outlier_detection on" if outlier else ""
    print(f"{best * 1e6:.2f} µs CPU per request (Python only, no sockets, best of 5; {what})")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    words = [a for a in sys.argv[2:] if a != "outlier"]
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 100_000,
            (words or [None])[0],
            "outlier" in sys.argv[2:],
        )
    )
