"""Seamless upgrade (``quiesce run --takeover``, docs/upgrade.md): both sides of a takeover
as the App runs them. The wire protocol (SCM_RIGHTS, the JSON lines) is
:mod:`quiesce.frontends.runtime_socket.takeover`'s; the server state handed over is
:mod:`quiesce.state.handover`'s.

The new process: :func:`seed` puts the old process's server state into its registry once the
store is restored, :func:`first_verdicts` waits for the servers still ``unknown`` (new ones,
or a monitor changed), then it starts on the sockets received.

The old process: :func:`listening` lists what it hands over, :func:`handover_state` what its
servers are; once a new process said ``finish`` it stops with :func:`stop_handed_over`.
From the moment ``_takeover`` came in until it exits it refuses admin writes
(``App.handing_over``): the new process reads the state store once it has the descriptors,
and would not see them; :func:`settle_writes` first commits the ones made before.

Admin writes and a takeover (docs/upgrade.md): an admin change is answered only once it is
in the state store, by a process whose store the serving one has read. So the old process
commits what it answered before handing over and refuses from ``_takeover`` on, and the new
one refuses (``App.taking_over``) until the old one confirmed ``finish`` and its held events
are recorded: a change taken there before would be held (quiesce.admin.persist) and lost
with an abandoned takeover or a ``kill -9``. Both answer 503 ``handing over`` with
Retry-After; the CLI sends it again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from quiesce import logs
from quiesce.core.events import Event, EventKind
from quiesce.core.states import Oper
from quiesce.state import handover as server_state
from quiesce.state.events import make_event

if TYPE_CHECKING:
    from quiesce.frontends.runtime_socket import Handover, Listening
    from quiesce.state.registry import Registry

log = logging.getLogger("quiesce")


# the new process ---------------------------------------------------------------------------


def seed(app: Any, handover: Handover) -> None:
    """The old process's server state into our registry (before any listener accepts)."""
    if handover.state is None:
        return
    n = server_state.seed(app.registry, handover.state)
    log.info("takeover: the state of %d server(s) taken from pid %d", n, handover.pid)


class HeldLog:
    """The process log's event lines (``logs.log_event``, when the registry has it) held
    from the start of a takeover until it has taken over (:meth:`release`): an abandoned one
    logs no event of a process that never served (the admin service holds the store's
    records likewise: ``AdminService.start(announce=False)``)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.events: list[Event] = []
        self.hold = self.events.append
        listeners = registry.listeners
        self.active = logs.log_event in listeners
        if self.active:
            listeners[listeners.index(logs.log_event)] = self.hold

    def release(self) -> None:
        """The process log's listener back in its place, and the lines held written."""
        if not self.active:
            return
        self.active = False
        listeners = self.registry.listeners
        listeners[next(i for i, f in enumerate(listeners) if f is self.hold)] = logs.log_event
        for event in self.events:
            logs.log_event(event)
        self.events.clear()


async def first_verdicts(registry: Registry) -> None:
    """Wait until no server is ``unknown`` (checks just started: servers the old process
    did not have, or whose monitor changed), at most the slowest monitor's interval (the
    first checks' spread, at most one) and timeout. An unknown server gets no traffic."""
    monitors = list(registry.monitors.values())
    # a first check is due within one interval at most (quiesce.health.schedule.first_offset)
    limit = max((m.receive_timeout + m.send_interval for m in monitors), default=0.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(limit, 30.0)
    unknown: list[object] = []
    while loop.time() < deadline:
        unknown = [s for s in registry.servers() if s.oper is Oper.UNKNOWN]
        if not unknown:
            return
        await asyncio.sleep(0.02)
    log.warning(
        "takeover: %d server(s) still unknown after %.1fs of checks: taking over anyway",
        len(unknown),
        limit,
    )


# the old process ---------------------------------------------------------------------------


def listening(app: Any) -> list[Listening]:
    """Every listener, for a new process taking over (runtime socket ``_takeover``)."""
    from quiesce.frontends.runtime_socket import Listening, runtime_socket_path

    out = [
        Listening("service", name, s.config.listen, s.sockets) for name, s in app.services.items()
    ]
    if app.admin_server is not None:
        out.append(Listening("admin", "admin", app.config.admin.listen, [app.admin_server.sock]))
    rs = app.runtime_socket
    if rs is not None:
        path = runtime_socket_path(app)
        if path is not None and rs.unix_sockets:
            out.append(Listening("runtime", "runtime", str(path), rs.unix_sockets[:1]))
        if app.config.admin.runtime_tcp and rs.tcp_sockets:
            out.append(
                Listening(
                    "runtime_tcp", "runtime_tcp", app.config.admin.runtime_tcp, rs.tcp_sockets[:1]
                )
            )
    return out


async def settle_writes(app: Any) -> None:
    """Once ``_takeover`` came in (admin writes refused from then on), before anything is
    sent: wait until every write made so far is committed to the state store. The new
    process reads the store as soon as it has the descriptors; a write applied here and
    still on the writer thread (or held by a batch of check results, up to a second) would
    be answered 200 here, after the commit, and be missing from the new process."""
    from quiesce.store.base import StoreError

    wait = asyncio.ensure_future(app.admin.durable())
    # one turn of the loop: durable() returns within its first step when nothing is pending
    await asyncio.sleep(0)
    if not wait.done():
        log.info("takeover: committing the admin writes made so far before handing over")
    try:
        await wait
    except StoreError as exc:  # its API answer said so (503): not acknowledged, not lost
        log.warning("takeover: an admin write could not be committed: %s", exc.message)


def handover_state(app: Any) -> dict[str, Any]:
    """Every server's operational state, for the new process (quiesce.state.handover)."""
    return server_state.snapshot(app.registry)


async def stop_handed_over(app: Any, grace: float) -> None:
    """A new process accepts on our listeners: every listener stops accepting at once (the
    new process accepts on the same sockets, their queues stay with it), in-flight requests
    finish, idle keep-alive connections are closed only after a response (``keep_idle``)."""
    app.registry.emit(make_event(app.clock, EventKind.SHUTDOWN, cause="takeover"))
    if app.runtime_socket is not None:
        await app.runtime_socket.stop()
    stops = [s.shutdown(grace, keep_idle=True) for s in app.services.values()]
    if app.admin_server is not None:
        stops.append(app.admin_server.stop())
    await asyncio.gather(*stops)
    await app.health.stop()
    await app.admin.stop()
    await app.store.aclose()
    app.reloader.stop_worker()


__all__ = [
    "HeldLog",
    "first_verdicts",
    "handover_state",
    "listening",
    "seed",
    "settle_writes",
    "stop_handed_over",
]
