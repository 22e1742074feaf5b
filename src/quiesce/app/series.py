"""The live series' 1 s timer (the I/O shell of :mod:`quiesce.state.series`): one
:meth:`SeriesStore.tick` just after each wall-clock second, over the registry's pools and the
running services, in slices of about 1 ms with turns of the event loop that serve requests
between two (:meth:`SeriesStore.ticking`, :class:`quiesce.app.reload_pace.Pacer`), so
100,000 servers do not hold the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from quiesce.app.reload_pace import Pacer
from quiesce.state.series import SeriesStore

log = logging.getLogger("quiesce.series")
BATCH = 50
"""Servers between two looks at the clock: the tick pauses (:class:`Pacer`, the live
reload's) once a slice has held the loop ~1 ms. Slices of 1,000 servers held it 10-20 ms at
10,000 servers with a third of them busy (bench/series_tick.py), one slice a turn: a request
in flight, which needs several turns, waited out several slices (the idle p99.9 at 10,000
servers was ~70 ms, bench/reload_bench.py)."""


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
                await self.paced(now(), Pacer())
            except Exception:  # a bad sample must not stop the series
                log.exception("live series: a tick failed")

    async def paced(self, now: float, pacer: Pacer) -> None:
        """One tick at ``now`` in slices of the pacer's (~1 ms), each followed by turns of
        the event loop that serve requests."""
        for _ in self.ticking(now):
            await pacer.tick()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
