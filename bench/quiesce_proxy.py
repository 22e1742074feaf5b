"""Run quiesce's data plane alone (no admin API, no monitors) for the proxy benchmark.

    python bench/quiesce_proxy.py CONFIG.json

Prints one JSON line ``{"ports": {service: port}}`` when every service listens, then serves
until SIGTERM/SIGINT. One process, one event loop (uvloop), the start-up objects frozen
out of the cyclic GC as ``quiesce run`` does.
"""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import sys
from pathlib import Path

from quiesce.config.models import Config
from quiesce.dataplane import ConnectionTable, start_service
from quiesce.logs import open_access_log
from quiesce.state.registry import Registry


async def main(path: str) -> None:
    with open(path) as f:
        config = Config.model_validate(json.load(f))
    registry = Registry(config)
    table = ConnectionTable(registry)
    registry.close_handlers.append(table.close)
    # logging.access, as quiesce run opens it (proxy_bench.py --access-log)
    table.access_log = open_access_log(
        config.logging, Path(path).parent, asyncio.get_running_loop()
    )
    services = {
        name: await start_service(name, svc, registry, table)
        for name, svc in config.services.items()
    }
    # as `quiesce run` does (run_forever): start-up objects leave the GC's generations, and
    # the tree's GC thresholds (an older tree without settle_gc: freeze only)
    try:
        from quiesce.app.run import settle_gc
    except ImportError:
        gc.collect()
        gc.freeze()
    else:
        settle_gc()
    print(json.dumps({"ports": {n: s.port for n, s in services.items()}}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in services.values():
        await s.shutdown(1.0)
    if table.access_log is not None:
        table.access_log.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(main(sys.argv[1]))
