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
import contextlib
import gc
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiesce.config.models import Config
from quiesce.core.clock import Clock, SystemClock
from quiesce.core.errors import QuiesceError
from quiesce.core.events import EventKind
from quiesce.core.states import Cause
from quiesce.state.events import make_event
from quiesce.state.registry import Registry
from quiesce.state.reload import Change, ReloadPlan, plan_reload

if TYPE_CHECKING:
    from quiesce.admin import AdminService
    from quiesce.dataplane import ConnectionTable, Service
    from quiesce.dataplane.context import ConnectionGate
    from quiesce.dataplane.limits import Budget
    from quiesce.frontends.runtime_socket import Handover, Listening
    from quiesce.health import HealthManager
    from quiesce.store import StateStore

log = logging.getLogger("quiesce")


RELOAD_SLICE = 0.015
"""Seconds of changes a reload applies between two turns of the event loop (then the pools
it touched are recomputed once and requests run)."""
RELOAD_CHUNK = 500
"""Servers per piece when the validated file comes back from the reload worker: each piece
is unpickled between two turns of the event loop."""


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
        self.stop_requested = asyncio.Event()
        # live reload (issue 14): one at a time; services a reload removed, finishing
        self._reload_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        # the process a reload validates the file in (started with a config file)
        self._reload_worker: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        from quiesce.frontends.runtime_socket.takeover import TakeoverError, request

        handover: Handover | None = None
        if self.takeover is not None:
            try:
                handover = request(self.takeover)
            except TakeoverError as exc:
                raise StartupError(f"--takeover: {exc}") from exc
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
        if handover is not None:
            # The old process serves meanwhile: take its traffic only once every monitored
            # server has its first verdict (an unknown server gets no traffic).
            self.health.start()
            await self._first_verdicts()
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
        self._started = True

    async def _first_verdicts(self) -> None:
        """Wait until no server is ``unknown`` (checks just started), at most the first
        checks' spread plus the slowest monitor's timeout and interval."""
        from quiesce.core.states import Oper
        from quiesce.health.schedule import FIRST_SPREAD

        monitors = list(self.registry.monitors.values())
        limit = FIRST_SPREAD + max(
            (m.receive_timeout + m.send_interval for m in monitors), default=0.0
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(limit, 30.0)
        unknown: list[object] = []
        while loop.time() < deadline:
            unknown = [s for s in self.registry.servers() if s.oper is Oper.UNKNOWN]
            if not unknown:
                return
            await asyncio.sleep(0.02)
        log.warning(
            "takeover: %d server(s) still unknown after %.1fs of checks: taking over anyway",
            len(unknown),
            limit,
        )

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

    # live reload (issue 14, DESIGN §6) -----------------------------------------------------

    @property
    def reloading(self) -> bool:
        """A reload is being validated or applied (a takeover is refused meanwhile)."""
        return self._reload_lock.locked()

    async def reload(self, actor: str, via: str = "api") -> ReloadPlan:
        """Re-read the config file, validate it as ``quiesce check`` does, and apply the
        difference in-process (quiesce.state.reload plans it). A bad file raises
        :class:`~quiesce.config.loader.ConfigError` with every problem and changes
        nothing; a reload during a takeover, or of a process not started from a file, is
        refused (409). Reloads are serialised. Returns what was applied, kept and warned."""
        from quiesce.config.loader import ConfigError

        if self.config_path is None:
            raise QuiesceError(
                "reload: this process was not started from a config file (quiesce run -c)",
                status_hint=409,
            )
        if self.takeover_busy or self.is_handed_over or not self._started:
            raise QuiesceError(
                "reload refused: a takeover (quiesce run --takeover) is in progress or this "
                "process is stopping; reload the new process once it is ready",
                status_hint=409,
            )
        async with self._reload_lock:
            loop = asyncio.get_running_loop()
            began = loop.time()
            try:
                new, warnings = await self._load_for_reload()
                # planning compares every server of the two files: in a thread, so the
                # event loop gets its turns (both configs are immutable)
                overrides = self.admin.overrides()
                plan = await asyncio.to_thread(plan_reload, self.config, new, overrides)
                plan.warnings[:0] = warnings
                budget = self._replan_connections(new)
                bound = await self._prepare_reload(new, plan)
            except ConfigError as exc:
                log.error(
                    "reload by %s refused: %s: %d problem(s): %s",
                    actor,
                    exc.source,
                    len(exc.problems),
                    "; ".join(exc.problems),
                )
                self.registry.emit(
                    make_event(
                        self.clock,
                        EventKind.CONFIG_RELOAD,
                        to="refused",
                        cause=Cause.CONFIG,
                        actor=actor,
                        detail={"via": via, "problems": exc.problems},
                    )
                )
                raise
            await self._apply_reload(new, plan, bound, actor, budget)
            took = loop.time() - began
            for change in plan.changes:
                log.info("reload: %s", change.message)
            for warning in plan.warnings:
                log.warning("reload: %s", warning)
            log.info(
                "reload by %s: %d change(s), %d kept, %.3fs",
                actor,
                len(plan.changes),
                len(plan.kept),
                took,
            )
            self.registry.emit(
                make_event(
                    self.clock,
                    EventKind.CONFIG_RELOAD,
                    to="applied",
                    cause=Cause.CONFIG,
                    actor=actor,
                    reason=f"{len(plan.changes)} change(s)",
                    detail={
                        "via": via,
                        "changes": [c.message for c in plan.changes],
                        "kept": [c.message for c in plan.kept],
                        "warnings": plan.warnings,
                        "seconds": round(took, 4),
                    },
                )
            )
            return plan

    async def _load_for_reload(self) -> tuple[Config, list[str]]:
        """``quiesce check``'s validation, plus what ``quiesce run`` refuses at start, in
        the reload worker process (:func:`_check_for_reload`): parsing and validating a big
        file there does not take the serving process's GIL. The validated models come back
        pickled, the servers in pieces unpickled between two turns of the event loop."""
        from quiesce.config.loader import ConfigError

        assert self.config_path is not None
        loop = asyncio.get_running_loop()
        path = str(self.config_path)
        try:
            result = await loop.run_in_executor(self._worker(), _check_for_reload, path)
        except BrokenProcessPool:  # the worker died (killed?): once more with a new one
            self._stop_worker()
            result = await loop.run_in_executor(self._worker(), _check_for_reload, path)
        if not result["ok"]:
            raise ConfigError(result["problems"], result["source"])
        config: Config = pickle.loads(result["config"])
        pools: dict[str, Any] = {}
        for name, chunks in result["servers"].items():
            servers = []
            for chunk in chunks:
                await asyncio.sleep(0)
                servers += pickle.loads(chunk)
            pools[name] = config.pools[name].model_copy(update={"servers": servers})
        # the same validated objects, put back together (model_copy does not validate)
        new = config.model_copy(update={"pools": pools})
        return new, list(result["warnings"])

    def _worker(self) -> ProcessPoolExecutor:
        """The reload worker: one process, started with ``spawn`` (a fork of a process
        with an event loop, threads and listening sockets would inherit all of them) at the
        first reload (not at start: its imports take a CPU second a takeover's first
        seconds need for traffic and checks) and kept for the next reload. It holds no
        descriptor of ours but its pipes (not our stdout: whoever reads it sees its end
        when we end) and dies with us, even by ``kill -9`` (:func:`_reload_worker_init`)."""
        if self._reload_worker is None:
            self._reload_worker = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_reload_worker_init,
                initargs=(os.getpid(),),
            )
        return self._reload_worker

    def _stop_worker(self) -> None:
        if self._reload_worker is not None:
            self._reload_worker.shutdown(wait=False, cancel_futures=True)
            self._reload_worker = None

    def _replan_connections(self, new: Config) -> Budget | None:
        """The connection budget for the new file (quiesce.dataplane.limits), with the
        running ``limits`` (they change at a restart). Raises ConfigError naming the limit
        when the new file does not fit in RLIMIT_NOFILE (a configured
        ``limits.max_connections`` with more idle upstream connections reserved, or no room
        left at all): the reload is refused, nothing changes. Otherwise the new budget is
        applied with the reload (a derived limit follows the servers)."""
        from quiesce.config.loader import ConfigError
        from quiesce.dataplane.limits import LimitError, plan

        if self.budget is None:
            return None
        try:
            return plan(new.model_copy(update={"limits": self.config.limits}), self.budget.nofile)
        except LimitError as exc:
            raise ConfigError([f"limits: {exc}"], str(self.config_path)) from None

    def _apply_budget(self, budget: Budget | None) -> None:
        from quiesce.dataplane import park

        if budget is None or budget == self.budget:
            return
        old, self.budget = self.budget, budget
        park.set_fd_ceiling(budget.data_plane_ceiling)
        if self.gate is not None and old is not None:
            self.gate.limit = budget.max_connections
            self.gate._room_changed()  # the native-accept threshold follows the limit
        if old is not None and old.max_connections != budget.max_connections:
            log.info(
                "reload: connection limit %d → %d client connections (%s)",
                old.max_connections,
                budget.max_connections,
                budget.describe(),
            )

    async def _prepare_reload(
        self, new: Config, plan: ReloadPlan
    ) -> dict[str, list[socket.socket]]:
        """Everything that can fail, before anything changes: pages read from disk, the
        admin certificate loaded, new listeners bound. Raises ConfigError."""
        from quiesce.config.loader import ConfigError
        from quiesce.dataplane.pages import Page
        from quiesce.dataplane.service import bind_listen

        problems: list[str] = []
        pages = [
            (f"services.{n}.maintenance_page", s.maintenance_page) for n, s in new.services.items()
        ]
        pages += [(f"pages.{n}", p) for n, p in new.pages.items()]
        for where, page in pages:
            try:
                Page.load(page, self.base_dir)
            except (OSError, ValueError) as exc:
                problems.append(f"{where}: {exc}")
        tls = new.admin.tls
        if tls is not None and self.config.admin.tls is not None:
            try:
                ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ssl_ctx.load_cert_chain(self._path(tls.cert), self._path(tls.key))
            except (OSError, ssl.SSLError) as exc:
                problems.append(f"admin.tls: cannot load {tls.cert} / {tls.key}: {exc}")
        if problems:
            raise ConfigError(problems, str(self.config_path))
        bound: dict[str, list[socket.socket]] = {}
        for change in plan.changes:
            if change.kind not in ("service_added", "service_rebound"):
                continue
            name = change.data["service"]
            listen = new.services[name].listen
            old = self.services.get(name)
            if old is not None and old.config.listen == listen:
                bound[name] = [s.dup() for s in old.sockets]  # the same queue: no refusal
                continue
            try:
                bound[name] = await bind_listen(listen)
            except OSError as exc:
                for socks in bound.values():
                    for sock in socks:
                        sock.close()
                raise ConfigError(
                    [f"services.{name}.listen: cannot listen on {listen}: {exc}"],
                    str(self.config_path),
                ) from None
        return bound

    def _path(self, path: str) -> str:
        p = Path(path)
        return str(p if p.is_absolute() else self.base_dir / p)

    async def _apply_reload(
        self,
        new: Config,
        plan: ReloadPlan,
        bound: dict[str, list[socket.socket]],
        actor: str,
        budget: Budget | None = None,
    ) -> None:
        """Apply a validated plan: registry changes in slices, then the services, then
        what nothing uses any more. Every write to the state store in one transaction
        (recorded whole or not at all), the health manager synced once at the end."""
        with self.store.batch(), self.admin.holding_sync(), self.registry.freezing_counts():
            await self._apply_reload_changes(new, plan, bound, actor)
        self._apply_budget(budget)

    async def _apply_reload_changes(
        self, new: Config, plan: ReloadPlan, bound: dict[str, list[socket.socket]], actor: str
    ) -> None:
        from quiesce.admin import CommandContext
        from quiesce.dataplane.service import make_context, start_service
        from quiesce.rules import compile_router

        ctx = CommandContext(actor, Cause.CONFIG, "config reload", force_guard=True)
        admin, reg = self.admin, self.registry
        # In slices of RELOAD_SLICE seconds, the event loop serving requests in between
        # (a thousand servers added to a pool of ten thousand would otherwise hold it for
        # a few hundred milliseconds). Each slice is whole: the pools it touched are
        # recomputed once at its end, before any request runs; the order of the plan is
        # kept.
        changes = plan.changes
        i, n = 0, len(changes)
        while i < n:
            until = time.perf_counter() + RELOAD_SLICE
            with admin.batch():
                while i < n:
                    self._apply_change(changes[i], new, ctx)
                    i += 1
                    if i % 16 == 0 and time.perf_counter() >= until:
                        break
            if i < n:
                await asyncio.sleep(0)
        self.config = new
        reg.config = new
        # services: every surviving one takes a context made from the new config (pages
        # re-read from disk, routers recompiled against the pools as they are now)
        loop = asyncio.get_running_loop()
        for name, svc in new.services.items():
            service = self.services.get(name)
            if name in bound:
                continue
            if service is not None:
                router = compile_router(name, svc, reg)
                fresh = make_context(
                    name, svc, reg, self.table, loop, router=router, base_dir=self.base_dir
                )
                service.reconfigure(fresh)
        for change in plan.changes:
            if change.kind in ("service_rebound", "service_removed"):
                name = change.data["service"]
                old = self.services.get(name)
                same = (
                    old is not None
                    and name in new.services
                    and new.services[name].listen == old.config.listen
                )
                self._retire(name, keep_idle=same)
        for name, socks in bound.items():
            svc = new.services[name]
            self.services[name] = await start_service(
                name,
                svc,
                reg,
                self.table,
                router=compile_router(name, svc, reg),
                base_dir=self.base_dir,
                gate=self.gate,
                socks=socks,
            )
        with admin.batch():
            for change in plan.changes:
                if change.kind == "pool_removed":
                    reg.remove_pool(change.data["pool"])
                    self._config_event(change, ctx)
                elif change.kind == "monitor_removed":
                    try:
                        admin.delete_monitor(change.target, ctx)
                    except QuiesceError as exc:
                        plan.warnings.append(f"monitor {change.target}: kept: {exc.message}")
        self._reload_admin(new)
        # the health manager's sync(): once, at the end of admin.holding_sync()

    def _apply_change(self, change: Change, new: Config, ctx: Any) -> None:
        """One change of the registry's (pools, servers, monitors, flags) or a
        ``config_change`` event for one applied later (services, users)."""
        admin, reg, kind, d = self.admin, self.registry, change.kind, change.data
        if kind in ("monitor_added", "monitor_changed"):
            admin.put_monitor(change.target, d["monitor"], ctx)
        elif kind == "pool_added":
            reg.add_pool(d["pool"], d["config"])
            self._config_event(change, ctx)
        elif kind == "pool_changed":
            reg.update_pool(d["pool"], d["config"])
            self._config_event(change, ctx)
        elif kind == "pool_monitors":
            admin.set_pool_monitors(d["pool"], d["monitors"], ctx)
        elif kind == "server_added":
            admin.add_server(d["pool"], d["config"], ctx, runtime=False)
        elif kind == "server_changed":
            admin.update_server(change.target, dict(d["changes"]), ctx, runtime=False)
        elif kind == "server_restored":
            admin.enable(change.target, ctx)
            config = d["config"]
            admin.update_server(
                change.target, config.model_dump(exclude={"name"}), ctx, runtime=False
            )
        elif kind == "server_removed":
            admin.remove_server(change.target, ctx, drain=True)
        elif kind == "flag_set":
            admin.set_flag(d["flag"], d["value"], ctx)
        elif kind == "flag_cleared":
            admin.clear_flag(d["flag"], ctx)
        elif kind not in ("pool_removed", "monitor_removed"):
            self._config_event(change, ctx)  # services, pages, users...: applied below

    def _config_event(self, change: Change, ctx: Any) -> None:
        pool = change.data.get("pool")
        self.registry.emit(
            make_event(
                self.clock,
                EventKind.CONFIG_CHANGE,
                self.registry.pools.get(pool, pool) if isinstance(pool, str) else None,
                to=change.kind,
                cause=Cause.CONFIG,
                actor=ctx.actor,
                reason=change.message,
                detail={"change": change.kind, "target": change.target},
            )
        )

    def _retire(self, name: str, *, keep_idle: bool = False) -> None:
        """A service the reload removed (or re-bound): stop accepting now, finish its
        in-flight requests within its grace period, in the background. ``keep_idle``: its
        listening socket carries on in the new service (the same ``listen``), so idle
        keep-alive connections are closed only after their next response (an upgrade's
        rule: closing one races with the request its client may be sending)."""
        service = self.services.pop(name, None)
        if service is None:
            return
        task = asyncio.create_task(
            service.shutdown(service.config.grace_period, keep_idle=keep_idle),
            name=f"quiesce retire {name}",
        )
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _reload_admin(self, new: Config) -> None:
        """Users, tokens and the login limit on the live authenticator (no listener is
        dropped: credentials remembered from before are forgotten, sessions of users gone
        or changed end); the admin certificate re-read into the live TLS context."""
        server = self.admin_server
        if server is None:
            return
        auth = getattr(server.api.state, "auth", None)
        if auth is not None:
            old = {u.name: u for u in auth.config.users}
            auth.config = new.admin
            auth._verified.clear()
            users = {u.name: u for u in new.admin.users}
            for sid, session in list(auth.sessions.items()):
                if users.get(session.user) != old.get(session.user) or session.user not in users:
                    del auth.sessions[sid]
        tls = new.admin.tls
        live = getattr(getattr(server, "_server", None), "config", None)
        context = getattr(live, "ssl", None)
        if tls is not None and isinstance(context, ssl.SSLContext):
            context.load_cert_chain(self._path(tls.cert), self._path(tls.key))

    # upgrade, the old process's side ------------------------------------------------------

    def listening(self) -> list[Listening]:
        """Every listener, for a new process taking over (runtime socket ``_takeover``)."""
        from quiesce.frontends.runtime_socket import Listening, runtime_socket_path

        out = [
            Listening("service", name, s.config.listen, s.sockets)
            for name, s in self.services.items()
        ]
        if self.admin_server is not None:
            out.append(
                Listening("admin", "admin", self.config.admin.listen, [self.admin_server.sock])
            )
        rs = self.runtime_socket
        if rs is not None:
            path = runtime_socket_path(self)
            if path is not None and rs.unix_sockets:
                out.append(Listening("runtime", "runtime", str(path), rs.unix_sockets[:1]))
            if self.config.admin.runtime_tcp and rs.tcp_sockets:
                out.append(
                    Listening(
                        "runtime_tcp",
                        "runtime_tcp",
                        self.config.admin.runtime_tcp,
                        rs.tcp_sockets[:1],
                    )
                )
        return out

    def handed_over(self, keep_path: bool) -> None:
        """A new process accepts on our listeners now: stop (run_forever waits for this).
        ``keep_path``: it listens on our runtime socket's path, which must stay."""
        self.is_handed_over = True
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
            await self._stop_handed_over(grace)
            return
        self.registry.emit(make_event(self.clock, EventKind.SHUTDOWN, cause="signal"))
        await self._close_services()
        if self.runtime_socket is not None:
            await self.runtime_socket.stop()
        await asyncio.gather(*(s.shutdown(grace) for s in self.services.values()))
        if self._retiring:
            await asyncio.wait(set(self._retiring), timeout=grace)
        await self.health.stop()
        if self.admin_server is not None:
            await self.admin_server.stop()
        await self.admin.stop()
        await self.store.aclose()  # a shared store writes what is queued first
        self._stop_worker()

    async def _stop_handed_over(self, grace: float) -> None:
        self.registry.emit(make_event(self.clock, EventKind.SHUTDOWN, cause="takeover"))
        if self.runtime_socket is not None:
            await self.runtime_socket.stop()
        stops = [s.shutdown(grace, keep_idle=True) for s in self.services.values()]
        if self.admin_server is not None:
            stops.append(self.admin_server.stop())
        await asyncio.gather(*stops)
        await self.health.stop()
        await self.admin.stop()
        await self.store.aclose()
        self._stop_worker()


def _reload_worker_init(parent: int) -> None:
    """The reload worker's first act: stdin, stdout and stderr on /dev/null (a supervisor
    or a test reading our output sees it end when we end), and a SIGKILL when its parent
    dies (Linux's PR_SET_PDEATHSIG: no worker left behind by a ``kill -9``)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        os._exit(0)


def _check_for_reload(path: str) -> dict[str, Any]:
    """In the reload worker process: validate the file exactly as ``quiesce check`` does
    (load_config), plus what ``quiesce run`` refuses at start (raw sockets it cannot
    open), and the warnings. Returns plain data: ``ok`` False with the problems, or the
    validated Config pickled without its servers and each pool's servers in pickled pieces
    of RELOAD_CHUNK (so the serving process unpickles them a piece at a time)."""
    from quiesce.config.loader import ConfigError, config_warnings, load_config
    from quiesce.health import raw_socket_problems

    try:
        config = load_config(path)
        problems = raw_socket_problems(config)
        if problems:
            raise ConfigError(problems, path)
    except ConfigError as exc:
        return {"ok": False, "problems": list(exc.problems), "source": exc.source}
    servers = {
        name: [
            pickle.dumps(pool.servers[i : i + RELOAD_CHUNK], pickle.HIGHEST_PROTOCOL)
            for i in range(0, len(pool.servers), RELOAD_CHUNK)
        ]
        for name, pool in config.pools.items()
    }
    bare = config.model_copy(
        update={"pools": {n: p.model_copy(update={"servers": []}) for n, p in config.pools.items()}}
    )
    return {
        "ok": True,
        "config": pickle.dumps(bare, pickle.HIGHEST_PROTOCOL),
        "servers": servers,
        "warnings": config_warnings(config),
    }


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
    takeover: Path | None = None,
    config_path: Path | None = None,
) -> int:
    """Run until SIGINT/SIGTERM, or until a new process took the listeners over; exit code
    0 after a clean staged shutdown. ``takeover``: the runtime socket of the running quiesce
    whose listeners this one takes (``quiesce run --takeover``). SIGHUP reloads
    ``config_path`` (:meth:`App.reload`; without one it is logged and ignored)."""
    install_event_loop_policy()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def main() -> int:
        if before_start is not None:
            await before_start()
        app = App(config, base_dir, takeover=takeover, config_path=config_path)
        try:
            await app.start()
        except StartupError as exc:
            print(f"quiesce: cannot start: {exc}", file=sys.stderr)
            return 1
        # Everything built at start-up lives until exit: keep it out of the cyclic GC's
        # generations so collections stay short on the request path.
        gc.collect()
        gc.freeze()
        stop = app.stop_requested
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        hups: set[asyncio.Task[None]] = set()

        def sighup() -> None:
            task = asyncio.create_task(_sighup(app))
            hups.add(task)
            task.add_done_callback(hups.discard)

        loop.add_signal_handler(signal.SIGHUP, sighup)
        # One machine-readable line per listener (tests and scripts read the bound ports).
        for name, service in app.services.items():
            print(f"quiesce: service {name} listening on port {service.port}", flush=True)
        if app.admin_server is not None:
            print(f"quiesce: admin listening on port {app.admin_server.port}", flush=True)
        if banner is not None:
            banner(app)
        if app.took_over_from is not None:
            print(f"quiesce: took over from pid {app.took_over_from}", flush=True)
        print("quiesce: ready", flush=True)
        _sd_notify(f"READY=1\nMAINPID={os.getpid()}")
        await stop.wait()
        if app.is_handed_over:
            log.info("handed over to a new process: finishing (grace %.1fs)", grace)
        else:
            _sd_notify("STOPPING=1")
        log.info("shutting down (grace %.1fs)", grace)
        await app.stop(grace)
        return 0

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main())
    return 0


async def _sighup(app: App) -> None:
    """SIGHUP: a live reload of the config file (its answer goes to the log)."""
    if app.config_path is None:
        log.warning("SIGHUP: no config file to reload; still running")
        return
    log.info("SIGHUP: reloading %s", app.config_path)
    try:
        await app.reload("SIGHUP", via="signal")
    except QuiesceError as exc:
        # a bad file is logged by reload() with every problem; the rest here
        if exc.status_hint != 422:
            log.error("SIGHUP: %s", exc.message)
    except Exception:
        log.exception("SIGHUP: reload failed")


def _sd_notify(message: str) -> None:
    """systemd's notify protocol (Type=notify), when NOTIFY_SOCKET is set: ``READY=1`` and
    ``MAINPID`` (a takeover's new process becomes the unit's main process)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), path)
