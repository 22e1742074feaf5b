"""The composition root: builds every part from a Config, starts it, stops it in stages.

Start order follows the data flow of DESIGN §3: the store and registry first, persisted admin
state restored before any listener accepts (a server left in maintenance must not get a single
request after a restart), then the data plane, the monitors, and last the control plane.

Stop order is uvicorn's staged shutdown, per listener: stop accepting, close idle keep-alive
connections, wait for in-flight requests up to the grace period, then cancel what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiesce.config.models import Config
from quiesce.core.clock import Clock, SystemClock
from quiesce.core.errors import QuiesceError
from quiesce.core.events import EventKind
from quiesce.state.events import make_event
from quiesce.state.registry import Registry

if TYPE_CHECKING:
    from quiesce.admin import AdminService
    from quiesce.dataplane import ConnectionTable, Service
    from quiesce.dataplane.context import ConnectionGate
    from quiesce.dataplane.limits import Budget
    from quiesce.health import HealthManager
    from quiesce.store import StateStore

log = logging.getLogger("quiesce")


class StartupError(QuiesceError):
    """quiesce cannot start: the message says why (a missing capability, a busy port...)."""

    status_hint = 500


class App:
    def __init__(self, config: Config, base_dir: Path | str = ".", clock: Clock | None = None):
        self.config = config
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

    async def start(self) -> None:
        from quiesce.admin import AdminService
        from quiesce.dataplane import ConnectionTable, start_service
        from quiesce.health import HealthManager, raw_socket_problems
        from quiesce.rules import compile_router
        from quiesce.store import StoreError, open_store

        problems = raw_socket_problems(self.config)
        if problems:
            raise StartupError("\n".join(problems))
        self._plan_connections()
        try:
            self.store: StateStore = open_store(self.config.state, self.base_dir)
            await self.store.open()  # a shared store (etcd) connects and reads here
        except StoreError as exc:
            raise StartupError(str(exc)) from exc
        self.table: ConnectionTable = ConnectionTable(self.registry)
        self.registry.close_handlers.append(self.table.close)
        self.health: HealthManager = HealthManager(self.registry, self.clock)
        self.admin: AdminService = AdminService(
            self.registry, self.store, self.clock, on_monitors_changed=self.health.sync
        )
        await self.admin.start()  # restores persisted state and logs the startup event
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
                )
        except OSError as exc:
            await self._close_services()
            raise StartupError(f"service {name!r} ({svc.listen}): {exc}") from exc
        self.health.start()
        from quiesce.frontends.api import start_admin_server

        try:
            self.admin_server = await start_admin_server(self)
        except OSError as exc:
            await self._close_services()
            await self.health.stop()
            raise StartupError(
                f"admin: cannot listen on {self.config.admin.listen}: {exc}"
            ) from exc
        if self.config.admin.runtime_socket or self.config.admin.runtime_tcp:
            from quiesce.frontends.runtime_socket import start_runtime_socket

            self.runtime_socket = await start_runtime_socket(self)
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
        park.set_fd_ceiling(budget.data_plane_ceiling)
        log.info(
            "connection limit: %d client connections (%s; %s)",
            budget.max_connections,
            "limits.max_connections" if budget.configured else "derived",
            budget.describe(),
        )

    async def _close_services(self) -> None:
        for service in self.services.values():
            await service.close()

    async def stop(self, grace: float = 10.0) -> None:
        """Staged shutdown: stop accepting everywhere, then let in-flight work finish."""
        if not self._started:
            return
        self._started = False
        self.registry.emit(make_event(self.clock, EventKind.SHUTDOWN, cause="signal"))
        await self._close_services()
        if self.runtime_socket is not None:
            await self.runtime_socket.stop()
        await asyncio.gather(*(s.shutdown(grace) for s in self.services.values()))
        await self.health.stop()
        if self.admin_server is not None:
            await self.admin_server.stop()
        await self.admin.stop()
        await self.store.aclose()  # a shared store writes what is queued first


def install_event_loop_policy() -> None:
    """uvloop when it is there; asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_forever(
    config: Config,
    base_dir: Path,
    *,
    grace: float = 10.0,
    banner: Callable[[App], None] | None = None,
    before_start: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Run until SIGINT/SIGTERM; exit code 0 after a clean staged shutdown."""
    install_event_loop_policy()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def main() -> int:
        if before_start is not None:
            await before_start()
        app = App(config, base_dir)
        try:
            await app.start()
        except StartupError as exc:
            print(f"quiesce: cannot start: {exc}", file=sys.stderr)
            return 1
        # Everything built at start-up lives until exit: keep it out of the cyclic GC's
        # generations so collections stay short on the request path.
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # One machine-readable line per listener (tests and scripts read the bound ports).
        for name, service in app.services.items():
            print(f"quiesce: service {name} listening on port {service.port}", flush=True)
        if app.admin_server is not None:
            print(f"quiesce: admin listening on port {app.admin_server.port}", flush=True)
        if banner is not None:
            banner(app)
        print("quiesce: ready", flush=True)
        await stop.wait()
        log.info("shutting down (grace %.1fs)", grace)
        await app.stop(grace)
        return 0

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main())
    return 0
