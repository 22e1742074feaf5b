"""The health manager: runs every (server, monitor) check on its schedule and feeds the
registry.

Theory of operation
-------------------
Each (server, monitor) pair is a :class:`_Job` driven by event-loop callbacks, not a task.
Slots (:mod:`quiesce.health.schedule`) are rounded up to 10 ms ticks, and the jobs due in one
tick wait in one list under one loop timer (a *bucket*), not a timer each. When the tick
comes, each job takes one of ``max_concurrency`` slots (or waits in a FIFO for one) and its
check starts: plain ``http``/``tcp`` checks of the whole tick in **one call** to the C engine
(:meth:`StreamProber.start_batch`, when ``quiesce._checkfast`` is built), every other check
through its probe's :meth:`Prober.start`. A result goes to :meth:`Registry.record_check`,
which moves the operational axis and emits the event; then the job's next slot is armed.
A waiting job costs one list entry; a check in flight one socket. Ten thousand checks a
second fit on one core this way (BENCHMARKS.md); a task per pair did not.

A tick's jobs join the *due* queue, and one callback a turn of the loop launches at most
:data:`LAUNCH_BUDGET` of them (the rest at the next turns, after the requests waiting): a
launch costs tens of µs (a connect, on loopback the handshake too), and the jobs of ticks
the loop missed during a stall, or of many monitors with one phase, would otherwise all
start in one turn (issue 21, as HAProxy spreads its checks).

Slots are in the event loop's time (``loop.time()``), so a test that injects a fake clock
into the registry still gets checks at real intervals; the injected clock stamps results
(``at``, ``latency``).

Monitor definitions are read live from ``registry.monitors`` at every check, so an edit
applies at the next check even before :meth:`HealthManager.sync` runs; ``sync`` restarts a pair
whose definition changed (new interval, port or type: its first check runs promptly again) and
starts or stops pairs for monitors attached, detached, created or deleted, and for servers
added, re-addressed or removed at runtime.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from quiesce.config.addresses import split_address
from quiesce.config.models import HealthMonitor
from quiesce.core.checks import CheckResult
from quiesce.core.clock import Clock, SystemClock
from quiesce.health.probes import fast, group, make_prober
from quiesce.health.probes.base import OnDone, Prober, Running, Target, probe_error

if TYPE_CHECKING:
    from quiesce._checkfast import Spec
from quiesce.health.pooltls import PoolTlsMonitors
from quiesce.health.probes.stream import StreamProber
from quiesce.health.schedule import FIRST_RATE, TICK, Schedule, first_offset, interleave, next_due
from quiesce.state.registry import Registry, ServerRuntime

log = logging.getLogger("quiesce.health")

LAUNCH_BUDGET = 64
"""Checks launched in one turn of the event loop at most (≈ 2-4 ms of connects)."""

Key = tuple[ServerRuntime, str]


@dataclass
class CheckStats:
    """Counters for benchmarks and metrics. ``lateness`` holds the most recent start delays
    (seconds between a check's slot and the moment its probe started); a benchmark may
    replace it with a longer deque."""

    started: int = 0
    completed: int = 0
    skipped: int = 0
    lateness: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))


class _Starting:
    """``_Job.running`` while ``Prober.start`` runs (probes never report from inside it)."""

    def cancel(self) -> None:
        pass


_STARTING = _Starting()


class _Job:
    """One (server, monitor) pair: its schedule, its bucket, the check in flight if any.

    Lean, one per pair (issue 21, memory at scale): it is its own result callback
    (``on_done``, :meth:`__call__`) and its own ``running`` while its check is in the C
    engine (:meth:`cancel`), and keeps of its :class:`Schedule` only the second slot, of its
    :class:`Target` the server's address string (made when a check needs it: a ``Target``
    and its host and port took 134 bytes a job)."""

    __slots__ = (
        "address",
        "bucket",
        "definition",
        "due",
        "engine_prober",
        "live",
        "manager",
        "monitor",
        "on_done",
        "running",
        "second",
        "server",
        "spec",
        "spec_for",
    )

    def __init__(
        self, server: ServerRuntime, monitor: str, definition: HealthMonitor, schedule: Schedule
    ) -> None:
        self.server = server
        self.monitor = monitor
        self.definition = definition
        self.address = server.config.address  # the config's string: sync() compares it
        self.due = schedule.first_due
        # the slot after the first check; None once it is done (its float freed: 24 bytes)
        self.second: float | None = schedule.second_due
        self.live = True  # False once cancelled: a late result is then dropped
        self.bucket: list[_Job] | None = None
        self.running: Running | None = None
        self.on_done: OnDone = self  # a bound method took 64 bytes a job, a partial 256
        # the prober whose C engine runs the check, when it runs there (``running`` is then
        # the job itself: :meth:`cancel`)
        self.engine_prober: StreamProber | None = None
        # The C engine's form of the check, for the definition ``spec_for`` (None: the
        # check takes its probe's own path).
        self.spec: Spec | None = None
        self.spec_for: HealthMonitor | None = None
        self.manager: HealthManager | None = None

    @property
    def target(self) -> Target:
        """Where its checks go: the server's host, the definition's ``monitor_port`` or the
        server's port."""
        host, port = split_address(self.address)
        return Target(host, self.definition.monitor_port or port)

    def __call__(self, result: CheckResult) -> None:
        """The check's result (``on_done``, the probes' and the C engine's callback)."""
        if self.manager is not None:
            self.manager._done(self, result)

    def cancel(self) -> None:
        """Cancel the check in the C engine (``running`` while it is there)."""
        if self.engine_prober is not None:
            self.engine_prober.engine().cancel(self)


class _Jobs:
    """The jobs by (server, monitor): a server's first job by the server alone, the others
    (a server's second monitor) by the pair (issue 21: a key tuple took 56 bytes a job)."""

    __slots__ = ("_first", "_more")

    def __init__(self) -> None:
        self._first: dict[ServerRuntime, _Job] = {}
        self._more: dict[Key, _Job] = {}

    def get(self, key: Key) -> _Job | None:
        job = self._first.get(key[0])
        if job is not None and job.monitor == key[1]:
            return job
        return self._more.get(key) if self._more else None

    def __contains__(self, key: Key) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: Key, job: _Job) -> None:
        assert job.server is key[0] and job.monitor == key[1] and key not in self
        if key[0] in self._first:
            self._more[key] = job
        else:
            self._first[key[0]] = job

    def __delitem__(self, key: Key) -> None:
        job = self._first.get(key[0])
        if job is not None and job.monitor == key[1]:
            del self._first[key[0]]
        else:
            del self._more[key]

    def values(self) -> list[_Job]:
        return [*self._first.values(), *self._more.values()]

    def items(self) -> list[tuple[Key, _Job]]:
        return [((j.server, j.monitor), j) for j in self.values()]

    def __iter__(self) -> Iterator[Key]:
        return iter([(j.server, j.monitor) for j in self.values()])

    def __len__(self) -> int:
        return len(self._first) + len(self._more)

    def clear(self) -> None:
        self._first.clear()
        self._more.clear()


class HealthManager:
    def __init__(
        self,
        registry: Registry,
        clock: Clock | None = None,
        *,
        max_concurrency: int = 1000,
        rng: random.Random | None = None,
        base_dir: Path | None = None,
        first_rate: float = FIRST_RATE,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if not first_rate > 0:
            raise ValueError("first_rate must be positive")
        # first checks a second of the pairs sync() starts together (schedule.first_offset)
        self.first_rate = first_rate
        self.registry = registry
        self.clock: Clock = clock or SystemClock()
        self.max_concurrency = max_concurrency
        self.stats = CheckStats()
        self._rng = rng or random.Random()
        self._jobs = _Jobs()
        self._probers: dict[str, Prober] = {}
        self._in_flight = 0
        self._waiting: deque[_Job] = deque()
        self._buckets: dict[int, list[_Job]] = {}
        self._due: deque[_Job] = deque()  # their tick came: launched LAUNCH_BUDGET a turn
        self._launching: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # https monitors with use_pool_tls: the pool's TLS, files relative to base_dir
        self._pool_tls = PoolTlsMonitors(base_dir or Path("."))
        # tcp and http monitors of a pool with send_proxy: a copy that sends the header
        self._proxied: dict[tuple[int, str], tuple[HealthMonitor, HealthMonitor]] = {}

    # lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start checking every attached monitor (call inside a running loop)."""
        self._loop = asyncio.get_running_loop()
        self.sync()

    async def stop(self) -> None:
        """Stop every check (in-flight ones are abandoned, their sockets closed)."""
        for job in self._jobs.values():
            self._cancel(job)
        self._jobs.clear()
        self._waiting.clear()
        self._buckets.clear()
        self._due.clear()
        if self._launching is not None:
            self._launching.cancel()
            self._launching = None
        self._loop = None
        await asyncio.sleep(0)  # let cancelled probe tasks unwind
        for prober in self._probers.values():
            prober.close()
        self._probers.clear()

    def sync(self) -> None:
        """Bring the running checks in line with the registry: which (server, monitor) pairs
        exist and which definition each monitor has."""
        if self._loop is None:
            return
        wanted: dict[Key, HealthMonitor] = {}
        definitions = self.registry.monitors
        for server in self.registry.servers():
            for name in server.monitors:
                definition = definitions.get(name)
                if definition is not None:
                    wanted[(server, name)] = self._monitor(server, definition)
        for key, job in self._jobs.items():
            # a changed definition, or a server re-addressed at runtime: start the pair afresh
            if wanted.get(key) != job.definition or job.address != key[0].config.address:
                self._cancel(job)
                del self._jobs[key]
        now = self._loop.time()
        new = [key for key in wanted if key not in self._jobs]
        # first checks spread at first_rate a second, every pool's first pair first
        order = interleave([server.pool for server, _ in new])
        for index, i in enumerate(order):
            key = new[i]
            definition = wanted[key]
            interval = definition.send_interval
            first = first_offset(index, len(order), interval, self.first_rate)
            schedule = Schedule(now, interval, self._rng.uniform(0, interval), first)
            job = self._jobs[key] = _Job(key[0], key[1], definition, schedule)
            job.manager = self
            self._arm(job)

    def _monitor(self, server: ServerRuntime, definition: HealthMonitor) -> HealthMonitor:
        """The monitor a check of ``server`` runs (quiesce.health.pooltls; with its pool's
        ``send_proxy`` for a tcp or http monitor, the same object each time)."""
        pool = self.registry.pools.get(server.pool)
        send = None if pool is None else pool.config.send_proxy
        if send and definition.type in ("tcp", "http") and definition.send_proxy != send:
            key = (id(definition), send)
            hit = self._proxied.get(key)
            if hit is None or hit[0] is not definition:
                if len(self._proxied) > 10_000:  # definitions replaced by reloads
                    self._proxied.clear()
                made = definition.model_copy(update={"send_proxy": send})
                hit = self._proxied[key] = (definition, made)
            return hit[1]
        if definition.https_monitor is None and definition.grpc_monitor is None:
            return definition
        return self._pool_tls.monitor(definition, None if pool is None else pool.config.tls)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The (``pool/server``, monitor) pairs being checked."""
        return [(s.key, m) for s, m in self._jobs]

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # checking -----------------------------------------------------------------------------

    def prober(self, kind: str) -> Prober:
        key = group(kind)
        prober = self._probers.get(key)
        if prober is None:
            prober = self._probers[key] = make_prober(kind, self.clock)
        return prober

    def _arm(self, job: _Job) -> None:
        """Put ``job`` in the bucket of the tick at or after its slot (wake_time's grid)."""
        tick = math.ceil(job.due / TICK)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = []
            assert self._loop is not None
            self._loop.call_at(tick * TICK, self._fire, tick)
        bucket.append(job)
        job.bucket = bucket

    def _fire(self, tick: int) -> None:
        bucket = self._buckets.pop(tick, None)
        if not bucket:
            return
        for job in bucket:
            job.bucket = None
        self._due.extend(bucket)
        if self._launching is None:
            self._launch_due()

    def _launch_due(self) -> None:
        """Launch the due jobs, :data:`LAUNCH_BUDGET` at most, and come back at the next
        turn of the loop for the rest."""
        self._launching = None
        due = self._due
        batch: list[tuple[_Job, Spec]] = []
        for _ in range(min(len(due), LAUNCH_BUDGET)):
            job = due.popleft()
            if self._in_flight >= self.max_concurrency:
                self._waiting.append(job)
            else:
                self._launch(job, batch)
        if batch:
            self._start_batch(batch)
        if due:
            assert self._loop is not None
            self._launching = self._loop.call_soon(self._launch_due)

    def _launch(self, job: _Job, batch: list[tuple[_Job, Spec]]) -> None:
        """Start ``job``'s check, or add it to ``batch`` for the C engine."""
        loop = self._loop
        assert loop is not None
        self._in_flight += 1
        stats = self.stats
        stats.started += 1
        stats.lateness.append(loop.time() - job.due)
        # Live definition: an edit that sync() has not seen yet still applies now.
        monitor = self._monitor(job.server, self.registry.monitors.get(job.monitor, job.definition))
        job.running = _STARTING
        try:
            if monitor is not job.spec_for:
                job.spec_for = monitor
                prober = self.prober(monitor.type)
                job.spec = None
                if isinstance(prober, StreamProber) and fast.available():
                    job.spec = prober.fast_spec(job.target, monitor)
                    job.engine_prober = prober
            if job.spec is not None:
                job.running = job
                batch.append((job, job.spec))
                return
            job.running = self.prober(monitor.type).start(
                job.target, monitor, job.monitor, job.on_done
            )
        except Exception as exc:  # a probe bug must not stop the checks
            log.exception("starting %s on %s failed", job.monitor, job.server.key)
            result = probe_error(job.monitor, self.clock, self.clock.monotonic(), exc)
            job.running = loop.call_soon(self._done, job, result)

    def _start_batch(self, batch: list[tuple[_Job, Spec]]) -> None:
        prober = self.prober("http")
        assert isinstance(prober, StreamProber)
        try:
            # the results the engine hands over together are one batch of the registry
            prober.engine().around = self._results_batch
            prober.start_batch(batch)  # type: ignore[arg-type]
        except Exception as exc:  # a bug must not leave these jobs running forever
            log.exception("starting a batch of %d checks failed", len(batch))
            assert self._loop is not None
            for job, _ in batch:
                prober.engine().cancel(job)
                result = probe_error(job.monitor, self.clock, self.clock.monotonic(), exc)
                job.running = self._loop.call_soon(self._done, job, result)

    def _results_batch(self) -> AbstractContextManager[object]:
        """Check results delivered together (a blip: hundreds in one loop iteration) are
        one batch of the registry: an event per changed server, one pool event each."""
        return self.registry.deferring(freeze=False)

    def _done(self, job: _Job, result: CheckResult) -> None:
        if job.running is None:
            return  # cancelled meanwhile (a probe never reports after cancel; belt and braces)
        job.running = None
        self._in_flight -= 1
        self.stats.completed += 1
        if job.live:
            try:
                self.registry.record_check(job.server, result)
            except Exception:
                log.exception("recording a check of %s by %s failed", job.server.key, job.monitor)
            assert self._loop is not None
            now = self._loop.time()
            interval = job.definition.send_interval
            if job.second is not None:  # its first check
                job.due, missed = job.second, 0
                job.second = None
                if job.due < now:
                    job.due, missed = next_due(job.due, interval, now)
            else:
                job.due, missed = next_due(job.due, interval, now)
            self.stats.skipped += missed
            self._arm(job)
        waiting = self._waiting
        if waiting and self._in_flight < self.max_concurrency:
            batch: list[tuple[_Job, Spec]] = []
            while waiting and self._in_flight < self.max_concurrency:
                self._launch(waiting.popleft(), batch)
            if batch:
                self._start_batch(batch)

    def _cancel(self, job: _Job) -> None:
        job.live = False
        if job.bucket is not None:
            job.bucket.remove(job)
            job.bucket = None
        if job.running is not None:
            job.running.cancel()
            job.running = None
            self._in_flight -= 1
        for queue in (self._waiting, self._due):
            try:
                queue.remove(job)
            except ValueError:
                pass


__all__ = ["CheckStats", "HealthManager"]
