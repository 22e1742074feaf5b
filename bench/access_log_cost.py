"""The access log's cost per request, alone: from the request path's hook to the bytes in
the file.

    python3 bench/access_log_cost.py [REQUESTS] [off|httplog|json|TEMPLATE ...]

Calls quiesce.dataplane.h1.access.log_exchange for a keep-alive exchange (the values the C
head path has at hand) ``REQUESTS`` times with a real AccessLog writing to a temporary file,
a loop turn (``asyncio.sleep(0)``) every 16 requests as wrk's 50 connections give, then
closes the log (every line written). Prints the CPU µs per request (process time: the
writer thread's CPU is counted), the best of 5 batches, for each format given (default:
httplog and json), and checks the file has one line per request; ``off`` runs the same loop
without the call (what to subtract).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from quiesce.config.logs import AccessLogConfig, LoggingConfig
from quiesce.dataplane.h1.access import log_exchange
from quiesce.logs import open_access_log


def request() -> SimpleNamespace:
    return SimpleNamespace(method=b"GET", url=b"/index.html?q=1", waiting=None, retries=0)


async def one(fmt: str, n: int) -> float:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "access.log"
        off = fmt == "off"
        cfg = LoggingConfig(
            access=AccessLogConfig(format="httplog" if off else fmt, path=str(path))
        )
        log = open_access_log(cfg, Path(tmp), loop)
        assert log is not None
        conn = SimpleNamespace(
            loop=loop,
            peer="127.0.0.1",
            port=51234,
            ctime=-1.0,
            req_at=loop.time(),
            term="",
            ctx=SimpleNamespace(name="web7"),
        )
        server = SimpleNamespace(pool="pool", name="s1")
        req = request()
        best = float("inf")
        for _ in range(5):
            t = time.process_time()
            for i in range(n // 5):
                conn.req_at = loop.time()
                if not off:
                    log_exchange(conn, log, req, server, 200, 78, 173, 0.00021)  # type: ignore[arg-type]
                if not i & 15:
                    await asyncio.sleep(0)
            log.flush()
            best = min(best, (time.process_time() - t) / (n // 5))
        log.close()
        lines = path.read_bytes().count(b"\n")
        assert lines == (0 if off else n // 5 * 5), (lines, n)
    return best


async def main(n: int, formats: list[str]) -> None:
    for fmt in formats:
        best = await one(fmt, n)
        print(f"{fmt}: {best * 1e6:.2f} µs CPU per request (best of 5, writer thread included)")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    args = sys.argv[1:]
    count = int(args.pop(0)) if args and args[0].isdigit() else 200_000
    asyncio.run(main(count, args or ["httplog", "json"]))
