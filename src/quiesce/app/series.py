"""The live series' 1 s timer (the I/O shell of :mod:`quiesce.state.series`): one
:meth:`SeriesStore.tick` just after each wall-clock second, over the registry's pools and the
running services, in slices of :data:`BATCH` servers with a turn of the event loop between
two (:meth:`SeriesStore.ticking`), so 100,000 servers do not hold the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from quiesce.state.series import SeriesStore

log = logging.getLogger("quiesce.series")
BATCH = 1000  # servers a turn of the loop (≈ 1-2 ms when they all moved, bench/series_tick.py)


class SeriesTimer:
    def __init__(
        self, pools: Callable[[], dict[str, Any]], services: Callable[[], dict[str, Any]]
    ) -> None:
        self.store = SeriesStore()
        self._pools, self._services = pools, services
        self._task: asyncio.Task[None] | None = None

    def start(self, now: Callable[[], float]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(now))

    def tick(self, now: float) -> None:
        for _ in self.ticking(now):
            pass

    def ticking(self, now: float) -> Iterator[int]:
        services = {name: svc.stats for name, svc in self._services().items()}
        return self.store.ticking(now, self._pools(), services, batch=BATCH)

    async def _run(self, now: Callable[[], float]) -> None:
        while True:
            t = now()
            await asyncio.sleep(1.0 - t % 1.0 + 0.001)
            try:
                for _ in self.ticking(now()):  # a slice of servers a turn of the loop
                    await asyncio.sleep(0)
            except Exception:  # a bad sample must not stop the series
                log.exception("live series: a tick failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
