"""The one internal command API: every front end (REST API, CLI, runtime socket, dashboard)
calls :class:`AdminService` and nothing else to change state (docs/architecture.md).

Theory of operation
-------------------
A command is resolved (``pool/server`` or a unique server name; an unknown one is a
:class:`NotFound` and an ``admin_refused`` event), turned into a core
:class:`~quiesce.core.admin.AdminCommand` and applied by the registry, which checks the
``min_servers_up`` guard, emits the events and hands close requests to the data plane. The
service adds what needs I/O:

- **persistence**: it listens to the registry, appends every event to the store (which gives
  it its id) and, from the same events, saves what changed: the server's admin record, a flag,
  a monitor definition, a pool's monitor list. Persisting from events rather than from the
  command methods means a change that reaches the registry any other way is saved too.
- **the timer**: one asyncio task sleeps until ``registry.next_due()`` (re-armed after every
  command, and at most :data:`MAX_SLEEP` so a wall-clock step is noticed) and calls
  ``registry.tick()``, which fires drain deadlines and expiries exactly once each.
- **the event bus** (:mod:`quiesce.admin.bus`): a bounded fan-out to live subscribers.
- **restart** (:meth:`AdminService.start`): persisted state is put back before anything is
  served; expiries and deadlines that passed while the process was down fire at once.

The service is assembled from parts, one module each (:mod:`quiesce.admin.base` lists them):
this module holds the life cycle, the timer, and the event log and bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

from quiesce.admin.base import STORE_ACTOR, CommandResult, log
from quiesce.admin.bus import Subscription
from quiesce.admin.context import CommandContext
from quiesce.admin.persist import Persistence, restore_reason
from quiesce.admin.remote import RemoteChanges
from quiesce.admin.servers import ServerCommands
from quiesce.core.admin import Transition
from quiesce.core.errors import InvalidCommand
from quiesce.core.events import Event, EventKind, EventQuery
from quiesce.core.states import Admin, Cause
from quiesce.state.events import make_event
from quiesce.store.base import SharedStore
from quiesce.store.durable import DurableStore

MAX_SLEEP = 1.0
"""The timer never sleeps longer than this, so a wall-clock step delays a deadline by at most
this much."""
PRUNE_INTERVAL = 3600.0
WAIT_POLL = 0.05
"""``wait_drained`` polls the server's connection count this often (seconds)."""
REMOVAL_SLICE = 0.001
"""Seconds of deletions of drained servers (at 0 connections) per turn of the admin timer;
the rest go on REMOVAL_PAUSE later (AdminService._finish_removals)."""
REMOVAL_PAUSE = 0.001


class AdminService(ServerCommands, Persistence, RemoteChanges):
    """The one internal command API (see the module's theory of operation)."""

    # life cycle -----------------------------------------------------------------------------

    _startup: dict[str, object] | None = None  # the restore's summary, until announced

    async def start(self, *, announce: bool = True) -> None:
        """Restore persisted state, then persist every event, fire what is overdue and arm
        the timer. Call before any listener accepts: a server left in maintenance must not
        get a request after a restart. ``announce=False``: the startup event waits for
        :meth:`announce_startup` (a takeover's new process, once it has taken over), and so
        does every event meanwhile (the first checks' verdicts...): a takeover abandoned
        records none, as if it had never started. A shared store's replay of another node's
        change is not held (it writes to this node's copy only)."""
        if self._started:
            return
        self._held = None if announce else []
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self.bus.bind(self._loop)
        summary = self._restore()
        self.registry.listeners.insert(0, self._on_event)
        # a batch of the registry's changes (a burst of check results, a reload's slice) is
        # written to the store in one transaction, from its first event to its end
        self.registry.batch_wrappers.append(self.store.batch)
        self._started = True
        if isinstance(self.store, SharedStore):  # several nodes share it (etcd)
            self.store.set_remote_handler(self._on_remote_change)
            if (cluster := getattr(self.store, "cluster", None)) is not None:
                cluster.set_handler(self._on_cluster_event)
                cluster.verdicts_of = self._verdicts  # this node's health, for the others
        self._startup = summary
        if announce:
            self.announce_startup()
        self.registry.tick()  # expiries and deadlines that passed while we were down
        self._prune()
        self._timer = asyncio.create_task(self._run_timer(), name="quiesce admin timer")

    def announce_startup(self) -> None:
        """Record the events held since :meth:`start`, then log the startup event (once),
        with what :meth:`start` restored."""
        held, self._held = self._held, None
        for event in held or ():
            self._on_event(event)
        summary, self._startup = self._startup, None
        if summary is not None:
            self.registry.emit(
                make_event(
                    self.clock,
                    EventKind.STARTUP,
                    cause=Cause.STARTUP,
                    actor=STORE_ACTOR,
                    reason=restore_reason(summary),
                    detail=summary,
                )
            )

    async def stop(self) -> None:
        """Stop the timer and end every subscription. The store is closed by its owner."""
        if not self._started:
            return
        self._started = False
        if isinstance(self.store, SharedStore):
            self.store.set_remote_handler(None)
            if (cluster := getattr(self.store, "cluster", None)) is not None:
                cluster.set_handler(None)
                cluster.verdicts_of = None
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        with contextlib.suppress(ValueError):
            self.registry.listeners.remove(self._on_event)
        with contextlib.suppress(ValueError):
            self.registry.batch_wrappers.remove(self.store.batch)
        self.bus.close()

    # durability -----------------------------------------------------------------------------

    @property
    def writes(self) -> int:
        """Writes handed to the store so far (0 when it writes inline): a front end reads it
        before and after a command to learn whether :meth:`durable` has anything to await."""
        return self.store.writes if isinstance(self.store, DurableStore) else 0

    async def durable(self) -> None:
        """Return once every change made so far is in the state store: the API and the
        runtime socket await it before answering a command (the SQLite store commits on a
        writer thread). :class:`~quiesce.store.base.StoreError` (503) if it failed."""
        if isinstance(self.store, DurableStore):
            await self.store.committed()

    # events ---------------------------------------------------------------------------------

    def events(self, query: EventQuery | None = None) -> list[Event]:
        """The event log, oldest first, as ``query`` (built and validated by the front end)
        selects: by default the newest 100 events."""
        return self.store.list_events(query or EventQuery())

    def subscribe(self, after_id: int | None = None) -> Subscription:
        """Live events from now on (or, with ``after_id``, from the store after that id first).
        Open before reading history: nothing falls between the two. Close with ``aclose()``."""
        return self.bus.subscribe(after_id)

    async def wait_drained(
        self, ref: str, timeout: float | None = None, *, interval: float = WAIT_POLL
    ) -> AsyncIterator[int]:
        """Yield the server's live connection count now and whenever it changes; end after
        yielding 0. Raises TimeoutError after ``timeout`` seconds, and InvalidCommand if the
        server is (or becomes) enabled with connections left: it would never drain.

        The count is polled every ``interval`` (50 ms): the data plane keeps it as a plain
        counter, and a poll costs nothing next to a progress bar's refresh."""
        server = self.registry.find_server(ref)
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        last: int | None = None
        while True:
            n = server.connections
            if n != last:
                last = n
                yield n
            if n == 0:
                return
            if server.admin.state is Admin.ENABLED:
                raise InvalidCommand(
                    f"{server.key} is enabled with {n} connection(s): it will not drain"
                )
            delay = interval
            if end is not None:
                left = end - loop.time()
                if left <= 0:
                    raise TimeoutError(
                        f"{server.key} still has {n} connection(s) after {timeout:g}s"
                    )
                delay = min(interval, left)
            await asyncio.sleep(delay)

    # the timer ------------------------------------------------------------------------------

    def tick(self) -> list[Transition]:
        """Fire whatever is due now (the timer calls this; tests with a FakeClock too)."""
        fired = self.registry.tick()
        self._poke()
        return fired

    async def _run_timer(self) -> None:
        while True:
            self._rearm.clear()
            now = self.clock.time()
            if now >= self._next_prune:
                self._prune()
            due = self.registry.next_due()
            if due is not None and due <= now:
                if self.registry.tick():
                    continue
                delay = WAIT_POLL  # nothing fired (clock rounding): look again shortly
            else:
                delay = MAX_SLEEP if due is None else min(due - now, MAX_SLEEP)
            if self._finish_removals(REMOVAL_SLICE):
                # connection counts are polled, like wait_drained; deletions cut short by
                # their budget go on after a pause of the loop's
                delay = min(delay, REMOVAL_PAUSE if self.removals_cut else WAIT_POLL)
            # Not asyncio.wait_for: on 3.11 it can swallow a cancel that races the wake-up.
            wake = asyncio.get_running_loop().call_later(delay, self._rearm.set)
            try:
                await self._rearm.wait()
            finally:
                wake.cancel()

    def _prune(self) -> None:
        now = self.clock.time()
        self._next_prune = now + PRUNE_INTERVAL
        try:
            n = self.store.prune(now)
        except Exception:
            log.exception("pruning the event log failed")
            return
        if n:
            log.info("event log: pruned %d event(s) past the retention", n)


__all__ = ["STORE_ACTOR", "AdminService", "CommandContext", "CommandResult"]
