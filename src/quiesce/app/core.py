"""The composition root: builds every part from a Config, starts it, stops it in stages.

Start order follows the data flow of DESIGN §3: the store and registry first, persisted admin
state restored before any listener accepts (a server left in maintenance must not get a single
request after a restart), then the data plane, the monitors, and last the control plane.

Stop order is uvicorn's staged shutdown, per listener: stop accepting, close idle keep-alive
connections, wait for in-flight requests up to the grace period, then cancel what is left.

Upgrade (``quiesce run --takeover``, docs/upgrade.md): the new process receives the old one's
listening sockets over its runtime socket before it starts anything
(quiesce.frontends.runtime_socket.takeover), starts on them, then tells the old one to
finish; the old one stops with :meth:`App.stop` in its ``handed_over`` form.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiesce import logs
from quiesce.app import upgrade
from quiesce.app.reload import Reloader
from quiesce.app.series import SeriesTimer
from quiesce.config.models import Config
from quiesce.core.clock import Clock, SystemClock
from quiesce.core.errors import QuiesceError
from quiesce.core.events import EventKind
from quiesce.state.events import make_event
from quiesce.state.registry import Registry
from quiesce.state.reload import ReloadPlan

if TYPE_CHECKING:
    from quiesce.admin import AdminService
    from quiesce.dataplane import ConnectionTable, Service
    from quiesce.dataplane.context import ConnectionGate
    from quiesce.dataplane.limits import Budget
    from quiesce.frontends.runtime_socket import Handover, Listening
    from quiesce.health import HealthManager
    from quiesce.store import StateStore

log = logging.getLogger("quiesce")

SHARED_STORE_SECONDS = 600.0
"""How long after a takeover the other process's event writes to the SQLite file are expected
(the old one finishes within its --grace, the finish timeout 120 s at most)."""


class StartupError(QuiesceError):
    """quiesce cannot start: the message says why (a missing capability, a busy port...)."""

    status_hint = 500


class App:
    def __init__(
        self,
        config: Config,
        base_dir: Path | str = ".",
        clock: Clock | None = None,
        *,
        takeover: Path | None = None,
        config_path: Path | None = None,
    ):
        self.config = config
        # the file a reload re-reads (quiesce run -c FILE); None: reload is refused
        self.config_path = config_path
        self.base_dir = Path(base_dir)
        self.clock: Clock = clock or SystemClock()
        self.registry = Registry(config, self.clock)
        self.services: dict[str, Service] = {}
        self.admin_server: Any = None
        self.runtime_socket: Any = None
        # the global connection limit, made at start (quiesce.dataplane.limits)
        self.budget: Budget | None = None
        self.gate: ConnectionGate | None = None
        self._started = False
        # upgrade: the old process's runtime socket to take the listeners from (new side);
        # set once a new process took ours over (old side)
        self.takeover = takeover
        self.took_over_from: int | None = None
        self.takeover_busy = False
        self.is_handed_over = False
        # new side: the old process's pid until it confirmed finish (admin writes refused)
        self.taking_over: int | None = None
        self.stop_requested = asyncio.Event()
        # live reload (issue 14): quiesce.app.reload
        self.reloader = Reloader(self)
        # live series (issue 19): 1 s rows per server, pool and service for 15 minutes
        self.series = SeriesTimer(lambda: self.registry.pools, lambda: self.services)

    async def start(self) -> None:
        from quiesce.frontends.runtime_socket.takeover import TakeoverError, request

        handover: Handover | None = None
        if self.takeover is not None:
            try:
                handover = request(self.takeover)
            except TakeoverError as exc:
                raise StartupError(f"--takeover: {exc}") from exc
            self.taking_over = handover.pid
        # a takeover's events (its first checks' verdicts...) are held until it has taken
        # over: an abandoned one records none, in the store or the log (upgrade.HeldLog)
        held = upgrade.HeldLog(self.registry) if handover is not None else None
        try:
            await self._start(handover)
        except BaseException:
            if handover is not None:
                handover.abandon()  # the old process carries on, its sockets untouched
            raise
        if handover is not None:
            keep = self.runtime_socket is not None and self.runtime_socket.keep_path
            try:
                handover.finish(keep_path=keep)
            except TakeoverError as exc:
                await self.stop(1.0)
                raise StartupError(f"--takeover: {exc}") from exc
            if self.runtime_socket is not None:
                self.runtime_socket.keep_path = False  # ours now
            self.took_over_from = handover.pid
            self._sharing_store(f"pid {handover.pid} (the process this one took over from)")
            if held is not None:
                held.release()
            self.admin.announce_startup()  # the held events, then the startup event
            self.taking_over = None  # admin writes are recorded from here: taken

    async def _start(self, handover: Handover | None) -> None:
        def take(kind: str, name: str, listen: str | None) -> list[socket.socket] | None:
            if handover is None or listen is None:
                return None
            return handover.take(kind, name, listen)

        def take_one(kind: str, listen: str | None) -> socket.socket | None:
            socks = take(kind, kind, listen)
            return socks[0] if socks else None

        from quiesce.admin import AdminService
        from quiesce.dataplane import ConnectionTable, start_service
        from quiesce.health import HealthManager, startup_problems
        from quiesce.rules import compile_router
        from quiesce.store import StoreError, open_store

        problems = startup_problems(self.config)
        if problems:
            raise StartupError("\n".join(problems))
        try:  # the access log's destinations: one that cannot be opened refuses the start
            access_log = logs.open_access_log(
                self.config.logging, self.base_dir, asyncio.get_running_loop()
            )
        except logs.LogError as exc:
            raise StartupError(exc.message) from exc
        self._plan_connections()
        try:
            self.store: StateStore = open_store(self.config.state, self.base_dir)
            await self.store.open()  # a shared store (etcd) connects and reads here
        except StoreError as exc:
            raise StartupError(str(exc)) from exc
        self.table: ConnectionTable = ConnectionTable(self.registry)
        self.table.access_log = access_log
        self.registry.close_handlers.append(self.table.close)
        self.health: HealthManager = HealthManager(
            self.registry, self.clock, base_dir=self.base_dir
        )
        self.admin: AdminService = AdminService(
            self.registry, self.store, self.clock, on_monitors_changed=self.health.sync
        )
        # restores persisted state and logs the startup event (a takeover's once it took over)
        await self.admin.start(announce=handover is None)
        await self._budget_with_runtime_servers()
        if handover is not None:
            # The old process serves meanwhile: its servers' state first, then a first
            # verdict for any server still unknown (an unknown server gets no traffic).
            upgrade.seed(self, handover)
            self.health.start()
            await upgrade.first_verdicts(self.registry)
        try:
            for name, svc in self.config.services.items():
                router = compile_router(name, svc, self.registry)
                self.services[name] = await start_service(
                    name,
                    svc,
                    self.registry,
                    self.table,
                    router=router,
                    base_dir=self.base_dir,
                    gate=self.gate,
                    socks=take("service", name, svc.listen),
                )
        except OSError as exc:
            await self._close_services()
            raise StartupError(f"service {name!r} ({svc.listen}): {exc}") from exc
        if handover is None:
            self.health.start()
        from quiesce.frontends.api import start_admin_server

        try:
            self.admin_server = await start_admin_server(
                self, sock=take_one("admin", self.config.admin.listen)
            )
        except OSError as exc:
            await self._close_services()
            await self.health.stop()
            raise StartupError(
                f"admin: cannot listen on {self.config.admin.listen}: {exc}"
            ) from exc
        if (cluster := getattr(self.store, "cluster", None)) is not None:  # etcd: nodes/<name>
            ports = {name: svc.port for name, svc in self.services.items()}
            cluster.announce({"admin": self.admin_server.port, **ports})
        if self.config.admin.runtime_socket or self.config.admin.runtime_tcp:
            from quiesce.frontends.runtime_socket import runtime_socket_path, start_runtime_socket

            path = runtime_socket_path(self)
            try:
                self.runtime_socket = await start_runtime_socket(
                    self,
                    unix_sock=take_one("runtime", str(path) if path is not None else None),
                    tcp_sock=take_one("runtime_tcp", self.config.admin.runtime_tcp),
                )
            except OSError as exc:
                await self.admin_server.stop()
                await self._close_services()
                await self.health.stop()
                raise StartupError(f"runtime socket: {exc}") from exc
        self.series.start(self.clock.time)
        self._started = True

    def _plan_connections(self) -> None:
        """The global connection limit, before anything opens a descriptor: the soft
        RLIMIT_NOFILE raised to the hard one, what the operators' side needs reserved, and
        the rest halved (quiesce.dataplane.limits). A configured limits.max_connections
        that does not fit refuses the start."""
        from quiesce.dataplane import park
        from quiesce.dataplane.context import ConnectionGate
        from quiesce.dataplane.limits import LimitError, plan, raise_nofile

        nofile = raise_nofile()
        try:
            budget = plan(self.config, nofile)
        except LimitError as exc:
            raise StartupError(str(exc)) from exc
        self.budget = budget
        self.gate = ConnectionGate(budget.max_connections)
        self.gate.cause = budget.cause()
        park.set_fd_ceiling(budget.data_plane_ceiling)
        log.info(
            "connection limit: %d client connections (%s; %s)",
            budget.max_connections,
            "limits.max_connections" if budget.configured else "derived",
            budget.describe(),
        )

    async def _budget_with_runtime_servers(self) -> None:
        """The store's runtime servers restored: the budget over every server the pools run
        (a start that does not fit is refused, as with the same servers in the file), and
        each later runtime add admitted against it (quiesce.app.budget, review 14 R14)."""
        from quiesce.app import budget
        from quiesce.dataplane.limits import LimitError

        try:
            budget.check_restored(self)
        except LimitError as exc:
            await self.admin.stop()
            await self.store.aclose()
            raise StartupError(f"with the servers added at runtime (state store): {exc}") from exc
        self.admin.admit_server = lambda pool, config: budget.admit(self, pool, config)
        budget.follow_removals(self)  # a runtime deletion gives its descriptors back

    async def _close_services(self) -> None:
        for service in self.services.values():
            await service.close()

    # live reload (issue 14, DESIGN §6): quiesce.app.reload ------------------------------------

    @property
    def reloading(self) -> bool:
        """A reload is being validated or applied (a takeover is refused meanwhile)."""
        return self.reloader.reloading

    async def reload(self, actor: str, via: str = "api") -> ReloadPlan:
        """Re-read the config file, validate it as ``quiesce check`` does, and apply the
        difference in-process (:meth:`quiesce.app.reload.Reloader.reload`). A bad file
        raises :class:`~quiesce.config.loader.ConfigError` with every problem and changes
        nothing; refused (409) during a takeover or without a config file. Serialised."""
        return await self.reloader.reload(actor, via)

    # upgrade, the old process's side ------------------------------------------------------

    def listening(self) -> list[Listening]:
        """Every listener, for a new process taking over (runtime socket ``_takeover``)."""
        return upgrade.listening(self)

    def handover_state(self) -> dict[str, Any]:
        """Every server's operational state, for a new process taking over."""
        return upgrade.handover_state(self)

    async def settle_writes(self) -> None:
        """Every admin write made so far committed, before handing over (``_takeover``)."""
        await upgrade.settle_writes(self)

    @property
    def handing_over(self) -> bool:
        """A new process took (or is taking) our listeners: admin writes are refused (it
        read the state store already and would not see them; quiesce.app.upgrade)."""
        return self.takeover_busy or self.is_handed_over

    def _sharing_store(self, who: str) -> None:
        """Both processes of a takeover write events to one SQLite file for a while: its ids
        renumbered meanwhile are expected (INFO, not WARNING: review 90 F16)."""
        sharing = getattr(getattr(self, "store", None), "sharing_with", None)
        if sharing is not None:
            sharing(who, SHARED_STORE_SECONDS)

    def handed_over(self, keep_path: bool) -> None:
        """A new process accepts on our listeners now: stop (run_forever waits for this).
        ``keep_path``: it listens on our runtime socket's path, which must stay."""
        self.is_handed_over = True
        self._sharing_store("the process that took over")
        if self.runtime_socket is not None:
            self.runtime_socket.keep_path = keep_path
        self.stop_requested.set()

    async def stop(self, grace: float = 10.0) -> None:
        """Staged shutdown: stop accepting everywhere, then let in-flight work finish.
        After a takeover (:meth:`handed_over`) every listener stops accepting at once (the
        new process accepts on the same sockets, their queues stay with it) and idle
        keep-alive connections are closed only after a response (``keep_idle``)."""
        if not self._started:
            return
        self._started = False
        if self.is_handed_over:
            await upgrade.stop_handed_over(self, grace)
            return
        self.registry.emit(make_event(self.clock, EventKind.SHUTDOWN, cause="signal"))
        await self.series.stop()
        await self._close_services()
        if self.runtime_socket is not None:
            await self.runtime_socket.stop()
        await asyncio.gather(*(s.shutdown(grace) for s in self.services.values()))
        if self.reloader.retiring:
            await asyncio.wait(set(self.reloader.retiring), timeout=grace)
        await self.health.stop()
        if self.admin_server is not None:
            await self.admin_server.stop()
        await self.admin.stop()
        await self.store.aclose()  # a shared store writes what is queued first
        self.reloader.stop_worker()
