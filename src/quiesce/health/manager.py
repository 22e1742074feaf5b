"""The health manager: runs every (server, monitor) check on its schedule and feeds the
registry.

Theory of operation
-------------------
One asyncio task per (server, monitor) pair sleeps until its next slot
(:mod:`quiesce.health.schedule`), takes a slot of the per-loop concurrency cap, runs the
probe for the monitor's type, and hands the :class:`~quiesce.core.checks.CheckResult` to
:meth:`Registry.record_check`, which moves the operational axis and emits the event. A sleeping
task costs one timer; a probe is one :class:`asyncio.Protocol` object, no stream machinery.

Monitor definitions are read live from ``registry.monitors`` at every check, so an edit to a
field that does not move the schedule applies at the next check; :meth:`HealthManager.sync`
restarts a pair whose definition changed (new interval, port or type: its first check runs
promptly again) and starts or stops pairs for monitors attached, detached, created or deleted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass, field

from quiesce.config.models import HealthMonitor
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import Clock, SystemClock
from quiesce.core.states import Verdict
from quiesce.health.probes import group, make_prober
from quiesce.health.probes.base import Prober, Target
from quiesce.health.schedule import Schedule, next_due
from quiesce.registry import Registry, ServerRuntime

log = logging.getLogger("quiesce.health")

Key = tuple[ServerRuntime, str]


@dataclass
class CheckStats:
    """Counters for benchmarks and metrics. ``lateness`` holds the most recent start delays
    (seconds between a check's slot and the moment its probe started)."""

    started: int = 0
    completed: int = 0
    skipped: int = 0
    lateness: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))


@dataclass(eq=False)
class _Job:
    server: ServerRuntime
    monitor: str
    definition: HealthMonitor
    task: asyncio.Task[None] | None = None


class HealthManager:
    def __init__(
        self,
        registry: Registry,
        clock: Clock | None = None,
        *,
        max_concurrency: int = 1000,
        rng: random.Random | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.registry = registry
        self.clock: Clock = clock or SystemClock()
        self.max_concurrency = max_concurrency
        self.stats = CheckStats()
        self._rng = rng or random.Random()
        self._jobs: dict[Key, _Job] = {}
        self._probers: dict[str, Prober] = {}
        self._slots: asyncio.Semaphore | None = None
        self._running = False

    # lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start checking every attached monitor (call inside a running loop)."""
        asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self.max_concurrency)
        self._running = True
        self.sync()

    async def stop(self) -> None:
        self._running = False
        tasks = [j.task for j in self._jobs.values() if j.task is not None]
        self._jobs.clear()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for prober in self._probers.values():
            prober.close()
        self._probers.clear()

    def sync(self) -> None:
        """Bring the running checks in line with the registry: which (server, monitor) pairs
        exist and which definition each monitor has."""
        if not self._running:
            return
        wanted: dict[Key, HealthMonitor] = {}
        definitions = self.registry.monitors
        for server in self.registry.servers():
            for name in server.monitors:
                definition = definitions.get(name)
                if definition is not None:
                    wanted[(server, name)] = definition
        for key, job in list(self._jobs.items()):
            if wanted.get(key) != job.definition:
                if job.task is not None:
                    job.task.cancel()
                del self._jobs[key]
        for key, definition in wanted.items():
            if key not in self._jobs:
                job = _Job(key[0], key[1], definition)
                job.task = asyncio.create_task(self._run(job), name=f"health {key[0].key} {key[1]}")
                self._jobs[key] = job

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The (``pool/server``, monitor) pairs being checked."""
        return [(s.key, m) for s, m in self._jobs]

    # checking -----------------------------------------------------------------------------

    def prober(self, kind: str) -> Prober:
        key = group(kind)
        prober = self._probers.get(key)
        if prober is None:
            prober = self._probers[key] = make_prober(kind, self.clock)
        return prober

    async def _run(self, job: _Job) -> None:
        clock = self.clock
        definition = job.definition
        interval = definition.send_interval
        server = job.server
        target = Target(server.host, definition.monitor_port or server.port)
        schedule = Schedule(clock.monotonic(), interval, self._rng.uniform(0, interval))
        due = schedule.first_due
        stats = self.stats
        slots = self._slots
        assert slots is not None
        first = True
        while True:
            delay = due - clock.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # Live definition: an edit that sync() has not seen yet still applies now.
            monitor = self.registry.monitors.get(job.monitor, definition)
            async with slots:
                stats.started += 1
                stats.lateness.append(clock.monotonic() - due)
                result = await self._check(target, monitor, job.monitor)
            stats.completed += 1
            try:
                self.registry.record_check(server, result)
            except Exception:
                log.exception("recording a check of %s by %s failed", server.key, job.monitor)
            if first:
                due, first = schedule.second_due, False
                if due < clock.monotonic():
                    due, missed = next_due(due, interval, clock.monotonic())
                    stats.skipped += missed
            else:
                due, missed = next_due(due, interval, clock.monotonic())
                stats.skipped += missed

    async def _check(self, target: Target, monitor: HealthMonitor, name: str) -> CheckResult:
        started = self.clock.monotonic()
        try:
            return await self.prober(monitor.type).check(target, monitor, name)
        except Exception as exc:  # a probe bug must not stop the checks
            log.exception("probe %s of %s:%s failed", name, target.host, target.port)
            return CheckResult(
                monitor=name,
                verdict=Verdict.FAIL,
                reason=Reason.CONNECTION_ERROR,
                at=self.clock.time(),
                latency=self.clock.monotonic() - started,
                detail=f"probe error: {type(exc).__name__}: {exc}",
            )


__all__ = ["CheckStats", "HealthManager"]
