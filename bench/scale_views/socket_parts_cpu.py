"""CPU of each part of `show servers state` and `show stat` at 10,000 servers (longest
part, whole answer), 3 runs: ``python3 bench/scale_views/socket_parts_cpu.py``."""

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.api.harness import build_app, config_dict

from quiesce.frontends.runtime_socket.stats import Stats


async def main():
    data = config_dict()
    data["pools"]["big"] = {
        "max_idle_per_server": 0,
        "servers": [
            {"name": f"s{i}", "address": f"127.0.0.1:{20000 + i % 20000}"} for i in range(10000)
        ],
    }
    app = await build_app(Path(tempfile.mkdtemp()), data)
    app.config = app.config if hasattr(app, "config") else None
    st = Stats(app, time.time())
    for name, fn in (
        ("show servers state", st.show_servers_state_parts),
        ("show stat", st.show_stat_parts),
    ):
        worst = []
        for _rep in range(3):
            it = fn([])
            longest = 0
            t0 = time.process_time()
            while True:
                t = time.process_time()
                try:
                    next(it)
                except StopIteration:
                    break
                longest = max(longest, time.process_time() - t)
            worst.append((round(longest * 1000, 1), round((time.process_time() - t0) * 1000)))
        print(name, "longest part CPU ms, whole CPU ms:", worst)


asyncio.run(main())
