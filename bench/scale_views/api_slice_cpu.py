"""CPU to build one slice of GET /api/v1/servers (server_view + JSON) of a 10,000-server
pool, 1,000 and 200 servers a slice, 5 runs: ``python3 bench/scale_views/api_slice_cpu.py``."""

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import json

from tests.api.harness import build_app, config_dict

from quiesce.frontends.views import server_view


async def main():
    data = config_dict()
    data["pools"]["big"] = {
        "max_idle_per_server": 0,
        "servers": [
            {"name": f"s{i}", "address": f"127.0.0.1:{20000 + i % 20000}"} for i in range(10000)
        ],
    }
    app = await build_app(Path(tempfile.mkdtemp()), data)
    servers = app.registry.pool("big").servers
    dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    for n in (1000, 200):
        per = []
        for _rep in range(5):
            t = time.process_time()
            for i in range(0, 10000, n):
                ",".join(dumps(server_view(app.registry, s)) for s in servers[i : i + n])
            per.append((time.process_time() - t) / (10000 / n) * 1000)
        print(
            f"slice {n}: CPU ms per slice median {statistics.median(per):.1f}"
            f" (min {min(per):.1f} max {max(per):.1f})"
        )


asyncio.run(main())
