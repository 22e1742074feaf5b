#!/usr/bin/env python3
"""What a full read of the etcd prefix costs (review 90 F12): a start (``EtcdStore.open``:
every key, in pages, applied to the in-memory mirror), a re-read after a lost watch
(``_sync`` on an open store: the events' keys and only the new values), and the paged read
alone at three page sizes. Needs the etcd server (/usr/bin/etcd); starts its own.

    python3 bench/etcd_full_read.py [--events 10000 100000]

The events are realistic ``admin_change`` records (~390 bytes), put 100 to a transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.store.test_etcd import Etcd  # noqa: E402

from quiesce.core.events import Event, EventKind  # noqa: E402
from quiesce.store import EtcdStore  # noqa: E402
from quiesce.store.etcd import pages  # noqa: E402

PREFIX = "/bench/"


async def fill(endpoint: str, n: int) -> None:
    writer = EtcdStore([endpoint], PREFIX, node="W")
    await writer.open()
    client = writer._get_client()
    for start in range(0, n, 100):
        ops = []
        for i in range(start, min(n, start + 100)):
            event = Event(
                time.time(),
                EventKind.ADMIN_CHANGE,
                pool="web",
                server=f"s{i % 1000}",
                from_="enabled",
                to="drain",
                cause="api",
                actor="admin",
                reason="rolling deploy of the web tier",
                detail={"node": "W", "close": "none"},
            )
            body = event.to_dict()
            del body["id"]
            value = {"node": "W", "instance": "feedfacecafe", "time": time.time(), "value": body}
            key = f"{PREFIX}events/feedfacecafe/{i:012d}".encode()
            ops.append(client.transactions.put(key, json.dumps(value).encode()))
        await client.transaction(compare=[], success=ops, failure=[])
    await writer.aclose()


async def run(endpoint: str, n: int) -> None:
    await fill(endpoint, n)
    probe = EtcdStore([endpoint], PREFIX, node="Q")
    client = probe._make_client(endpoint)
    for page_keys in (250, 1000, 4000):
        c0, t0 = time.process_time(), time.perf_counter()
        snap = await pages.read_range(client, PREFIX.encode(), b"/bench0", page_keys=page_keys)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"{n} events: read_range page_keys {page_keys}: {snap.pages} pages, "
            f"{snap.size / 1e6:.1f} MB, {wall:.2f} s wall, {cpu:.2f} s CPU"
        )
    await client.close()
    probe.close()
    store = EtcdStore([endpoint], PREFIX, node="R")
    c0, t0 = time.process_time(), time.perf_counter()
    await store.open()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{n} events: open {wall:.2f} s wall, {cpu:.2f} s CPU ({store.count_events()} events)")
    c0, t0 = time.process_time(), time.perf_counter()
    await store._sync(store._get_client())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{n} events: re-read {wall:.2f} s wall, {cpu:.2f} s CPU")
    await store.aclose()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, nargs="+", default=[10_000, 100_000])
    args = ap.parse_args()
    for n in args.events:
        with tempfile.TemporaryDirectory() as tmp:
            server = Etcd(Path(tmp) / "etcd")
            server.start()
            try:
                asyncio.run(run(server.endpoint, n))
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
