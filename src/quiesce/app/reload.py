"""Live reload (issue 14, DESIGN §6): the config file re-read, validated and its difference
applied in-process, for :meth:`quiesce.app.App.reload` (SIGHUP, ``quiesce reload``,
``POST /api/v1/reload``, the runtime socket's ``reload``).

Theory of operation
-------------------
One :class:`Reloader` per App, one reload at a time (its lock). The file is validated in a
worker process (:mod:`quiesce.app.reload_worker`, ``quiesce check``'s rules), its servers
coming back in pickled pieces unpickled between two turns of the event loop; the new config
is put together and the difference planned in a thread with a short switch interval
(:func:`quiesce.state.reload.plan_reload`, sans-IO); everything that can fail
(pages, the admin certificate, new listeners, the connection budget, the refusals of
:func:`quiesce.state.reload.refusals`) is done before anything changes, every problem reported
in one list; then the plan is applied in slices of RELOAD_SLICE seconds inside one store
transaction, the health manager synced once at the end, and the services reconfigured,
retired or started. Pools the reload adds back get what the state store holds for them,
as at a start (:meth:`quiesce.admin.AdminService.restore_pools`).

Runtime server changes wait while a reload is being applied
(:mod:`quiesce.admin.reload_gate`, review 14 R12, R13). A failure while the plan is applied
ends the reload with an ERROR line and a ``config_reload`` event ``failed`` saying what was
applied and what was not; the changes are applied so that they converge on what runs (a
server or pool to add that is there already is updated, a server to remove that is gone is
skipped), so the next reload, planned against the running config as before, applies the
rest instead of failing on what the failed one did. A service that fails to start once the
config has switched fails alone (:mod:`quiesce.app.reload_services`): the rest is applied,
the reload answers non-zero naming it, and the next reload starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import pickle
import socket
import ssl
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from quiesce import logs
from quiesce.admin.reload_gate import RuntimeGate
from quiesce.app.build import BUILD
from quiesce.app.reload_apply import StoredAdmin, apply_change, config_event, failed_detail
from quiesce.app.reload_pace import (
    RELOAD_IDLE_TURN,
    RELOAD_LOG_SLACK,
    RELOAD_PAUSE,
    RELOAD_PAUSE_MAX,
    RELOAD_SLICE,
    RELOAD_SWITCH,
    RELOAD_WRITTEN_MAX,
    Pacer,
    cyclic_gc_held,
    short_switches,
)
from quiesce.app.reload_services import BINDS, ServicesFailed, switch_services
from quiesce.app.reload_worker import (
    RELOAD_CHUNK,
    RELOAD_WORKER_TIMEOUT,
    TAKEOVER_BEGAN,
    WORKER_POLL,
    Loaded,
    check_for_reload,
    kill_worker,
    reload_worker_init,
    worker_context,
)
from quiesce.config.models import Config
from quiesce.core.errors import QuiesceError
from quiesce.core.events import EventKind
from quiesce.core.states import Cause
from quiesce.state.events import make_event
from quiesce.state.reload import (
    Change,
    ReloadPlan,
    RuntimeOverrides,
    monitor_problems,
    plan_reload,
    refusals,
    renewed,
    tls_files,
)

if TYPE_CHECKING:
    from quiesce.dataplane.limits import Budget

log = logging.getLogger("quiesce")


class Reloader:
    """The App's live reload: :meth:`reload`, and the services it retired, finishing."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = asyncio.Lock()
        self.retiring: set[asyncio.Task[None]] = set()
        # the process a reload validates the file in (started at the first reload)
        self.worker: ProcessPoolExecutor | None = None
        # the worker's generation of the file that runs now (its servers are not sent
        # back again), and of the file being reloaded
        self.base: int | None = None
        self.pending: int | None = None
        # closed from the overrides a reload plans against to the end of its apply
        self.gate = RuntimeGate()
        self._applied = 0  # changes of the plan being applied, applied so far
        # the certificate, key and CA files of the running config: (path, SHA-256)
        self.tls_seen = self._tls_digests(app.config)
        self.started = app.config  # restart-only settings run as it says (review 90 F3)
        self._applying: ReloadPlan | None = None  # the plan being applied
        self._stored: StoredAdmin | None = None  # its shared store's admin records
        # the services the last apply could not start or reconfigure (reload_services)
        self.failed: dict[str, str] = {}

    # seconds the reload worker has to answer (quiesce.app.reload_worker)
    worker_timeout: float = RELOAD_WORKER_TIMEOUT
    # a reload waits for the worker's answer: nothing changed yet, a takeover may go on
    validating = False

    @property
    def reloading(self) -> bool:
        """A reload is being planned or applied (a takeover is refused meanwhile; not while
        the file is validated in the worker: the reload then gives way, review 14 R11)."""
        return self.lock.locked() and not self.validating

    async def reload(self, actor: str, via: str = "api") -> ReloadPlan:
        """Re-read the config file, validate it as ``quiesce check`` does, and apply the
        difference in-process (quiesce.state.reload plans it). A bad file raises
        :class:`~quiesce.config.loader.ConfigError` with every problem and changes
        nothing; a reload during a takeover, or of a process not started from a file, is
        refused (409). Reloads are serialised. Returns what was applied, kept and warned."""
        from quiesce.config.loader import ConfigError

        if self.app.config_path is None:
            raise QuiesceError(
                "reload: this process was not started from a config file (quiesce run -c)",
                status_hint=409,
            )
        if self.app.takeover_busy or self.app.is_handed_over or not self.app._started:
            raise QuiesceError(
                "reload refused: a takeover (quiesce run --takeover) is in progress or this "
                "process is stopping; reload the new process once it is ready",
                status_hint=409,
            )
        async with self.lock:
            with cyclic_gc_held(), short_switches():
                try:
                    plan = await self._reload(actor, via)
                except ConfigError:
                    raise  # refused before any change: the running config is the base still
                except BaseException:
                    self.base = None  # the next reload's file comes back whole
                    raise
                finally:
                    self.gate.release()
                await self._written()
                return plan

    async def _written(self) -> None:
        """Wait (short switches still on) until the reload's writes are committed and its
        process-log lines written, at most RELOAD_WRITTEN_MAX seconds: the store's writer
        thread (a transaction of thousands of rows) and the process log's (a line formatted
        in pure Python per change) hold the GIL, and at the default switch interval the
        event loop waited up to 5 ms for it each time (the p99 of requests during a reload
        was 5-7 ms against 1.4 ms idle, with 1 ms slices). A store failure is not raised
        here: the caller's own ``durable()`` reports it. The log's queue counts as written
        at RELOAD_LOG_SLACK lines or fewer: a process logging steadily (checks flapping)
        never empties it, and the reload must not wait its whole limit for that."""
        loop = asyncio.get_running_loop()
        until = loop.time() + RELOAD_WRITTEN_MAX
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.app.admin.durable(), RELOAD_WRITTEN_MAX)
        while logs.process_log_backlog() > RELOAD_LOG_SLACK and loop.time() < until:
            await asyncio.sleep(0.002)

    async def _reload(self, actor: str, via: str) -> ReloadPlan:
        from quiesce.config.loader import ConfigError

        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            loaded, warnings = await self._load_for_reload()
            # the new config put together, the plan (it compares every server of the two
            # files) and the connection budget (it counts every server's checks): in a
            # thread, so the event loop gets its turns (the configs are immutable), with
            # short switches (a pure Python thread holds the GIL for the switch interval).
            # From the overrides to the end of the apply, runtime server changes wait
            # (settled()): the plan would not see them and the apply would undo or collide
            # with them (review 14 R12, R13)
            self.gate.hold(self.app.admin)
            overrides = self.app.admin.overrides()
            with short_switches():
                new, plan, budget, problems = await asyncio.to_thread(self._plan, loaded, overrides)
            # one pacer from here to the last log line: the steps below count in the first
            # slice, and no two slices run without a pause between them
            pacer = Pacer()
            plan.warnings[:0] = warnings
            # every problem of a valid file at once, not the first of each round
            listening = self.app.admin_server is not None
            problems += refusals(self.app.config, new, admin_listening=listening)
            problems += monitor_problems(plan, self.app.registry, overrides)  # review 90 F17
            # the log destinations opened anew (refused, naming the key, if one cannot be)
            dests = None
            try:
                dests = logs.prepare(new.logging, self.app.base_dir, str(self.app.config_path))
            except ConfigError as exc:
                problems += exc.problems
            try:
                bound = await self._prepare_reload(new, plan, problems)
            except ConfigError:
                logs.discard(dests)
                raise
            tls_now = self._tls_digests(new)  # a certificate renewed on disk: a change
            renewed(plan, self.tls_seen, tls_now)
        except ConfigError as exc:
            log.error(
                "reload by %s refused: %s: %d problem(s): %s",
                actor,
                exc.source,
                len(exc.problems),
                "; ".join(exc.problems),
            )
            self._event("refused", actor, None, {"via": via, "problems": exc.problems})
            raise
        app = self.app  # the services' new contexts take the access log as it is now
        app.table.access_log = logs.reconfigure(app.table.access_log, new.logging, dests, loop)
        self._applied, self.failed = 0, {}
        try:
            await self._apply_reload(new, plan, bound, actor, budget, pacer)
        except Exception as exc:
            detail = failed_detail(plan, self._applied, exc, via, loop.time() - began)
            log.error(
                "reload by %s failed while being applied after %d of %d change(s): %s",
                actor,
                self._applied,
                len(plan.changes),
                detail["error"],
                exc_info=exc,
            )
            self._event("failed", actor, f"{self._applied} change(s) applied", detail)
            raise QuiesceError(
                f"reload failed while being applied ({type(exc).__name__}: {exc}) after "
                f"{self._applied} of {len(plan.changes)} change(s); those stay applied (the "
                "config_reload event lists them); reload again to apply the rest",
                status_hint=500,
            ) from exc
        finally:
            self.gate.release()
            self._applying = None
        self.base = self.pending  # the worker's copy of what runs now
        self.tls_seen = tls_now
        took = loop.time() - began
        for change in plan.changes:  # its record made by the log's thread (~1 µs here)
            logs.log_line(logging.INFO, f"reload: {change.message}")
            await pacer.tick()
        for warning in plan.warnings:
            log.warning("reload: %s", warning)
        log.info(
            "reload by %s: %d change(s), %d kept, %.3fs",
            actor,
            len(plan.changes),
            len(plan.kept),
            took,
        )
        detail = {
            "via": via,
            "changes": [c.message for c in plan.changes],
            "kept": [c.message for c in plan.kept],
            "warnings": plan.warnings,
            "seconds": round(took, 4),
        }
        if self.failed:  # applied, but for services that did not start: answered non-zero
            failed = ServicesFailed(self.failed, len(plan.changes))
            log.error("reload by %s: %s", actor, failed.message)
            detail |= {"error": failed.message, "services": failed.failed}
            self._event("failed", actor, f"{len(self.failed)} service(s) failed", detail)
            raise failed
        self._event("applied", actor, f"{len(plan.changes)} change(s)", detail)
        return plan

    def _event(self, to: str, actor: str, reason: str | None, detail: dict[str, Any]) -> None:
        """The ``config_reload`` event of a reload ``applied``, ``refused`` or ``failed``."""
        self.app.registry.emit(
            make_event(
                self.app.clock,
                EventKind.CONFIG_RELOAD,
                to=to,
                cause=Cause.CONFIG,
                actor=actor,
                reason=reason,
                detail=detail,
            )
        )

    async def _load_for_reload(self) -> tuple[Loaded, list[str]]:
        """``quiesce check``'s validation, plus what ``quiesce run`` refuses at start, in
        the reload worker process (:func:`check_for_reload`): parsing and validating a big
        file there does not take the serving process's GIL. The validated models come back
        pickled, the servers in pieces unpickled between two turns of the event loop; only
        the servers new or changed since the file that runs now, when the worker validated
        that one too (the others are the running config's own objects: :meth:`_plan` puts
        the new config together)."""
        from quiesce.config.loader import ConfigError

        assert self.app.config_path is not None
        path = str(self.app.config_path)
        self.validating = True
        try:
            try:
                result = await self._in_worker(path, self.base)
            except BrokenProcessPool:  # the worker died (killed?): once more with a new one
                if self.worker is None:  # stopped by stop_worker (quiesce stops): none
                    raise ConfigError(
                        ["the reload worker was stopped (quiesce is stopping); nothing changed"],
                        path,
                    ) from None
                self.stop_worker()
                result = await self._in_worker(path, None)
        finally:
            self.validating = False
        if self.app.takeover_busy or self.app.is_handed_over:  # began meanwhile: it wins
            raise ConfigError([TAKEOVER_BEGAN], path)
        if not result["ok"]:
            raise ConfigError(result["problems"], result["source"])
        self.pending = result["generation"]
        config: Config = pickle.loads(result["config"])
        pieces: dict[str, tuple[list[str] | None, list[Any]]] = {}
        pacer = Pacer()
        for name, (order, chunks) in result["servers"].items():
            fresh: list[Any] = []
            for chunk in chunks:
                await pacer.tick()
                fresh += pickle.loads(chunk)
            pieces[name] = (order, fresh)
        return Loaded(config, pieces), list(result["warnings"])

    def _plan(
        self, loaded: Loaded, overrides: RuntimeOverrides
    ) -> tuple[Config, ReloadPlan, Budget | None, list[str]]:
        """In the planning thread: the new config (the running pools' servers where the
        worker sent only the new and changed ones), its plan against the running config,
        and its connection budget, or the problem naming the limit."""
        from quiesce.config.loader import ConfigError

        new = loaded.assemble(self.app.config)
        # a service of the running config that does not run is started again (its start
        # failed after an earlier reload switched the config: quiesce.app.reload_services)
        plan = plan_reload(
            self.app.config, new, overrides, frozenset(self.app.services), self.started
        )
        try:
            return new, plan, self._replan_connections(new), []
        except ConfigError as exc:
            return new, plan, None, list(exc.problems)

    async def _in_worker(self, path: str, base: int | None) -> dict[str, Any]:
        """:func:`check_for_reload` in the worker, within ``worker_timeout`` seconds: past
        them (a worker stopped, swapped out, stuck) it is killed and the reload refused
        naming the limit; the next reload starts a new worker (review 14 R11). A takeover
        that begins meanwhile is not held (``reloading`` is false while validating): the
        reload gives way at once, the worker killed, refused naming it."""
        from quiesce.config.loader import ConfigError

        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(  # BUILD: refused after an upgrade (F13)
            self._executor(), check_for_reload, path, base, BUILD
        )
        until = loop.time() + self.worker_timeout
        try:
            while not future.done():
                left = until - loop.time()
                if self.app.takeover_busy or self.app.is_handed_over:
                    self._kill_worker()
                    raise ConfigError([TAKEOVER_BEGAN], path)
                if left <= 0:
                    self._worker_late(path)
                await asyncio.wait({future}, timeout=min(left, WORKER_POLL))
        except BaseException:
            future.cancel()  # its answer is not awaited any more
            raise
        result: dict[str, Any] = future.result()
        return result

    def _worker_late(self, path: str) -> NoReturn:
        from quiesce.config.loader import ConfigError

        pids = self._kill_worker()
        log.error(
            "reload: the reload worker (pid %s) did not answer in %g s: killed; a new one "
            "starts at the next reload",
            ", ".join(map(str, pids)) or "?",
            self.worker_timeout,
        )
        raise ConfigError(
            [
                f"the reload worker (the process that validates the file) did not answer "
                f"in {self.worker_timeout:g} s: it was killed and a new one starts at the "
                "next reload; nothing changed (reload again; docs/admin.md, Live reload)"
            ],
            path,
        )

    def _kill_worker(self) -> list[int]:
        """SIGKILL the worker's process (stopped or stuck, it would not see a shutdown) and
        forget it; returns its pid."""
        pids = kill_worker(self.worker)
        self.stop_worker()
        return pids

    def _executor(self) -> ProcessPoolExecutor:
        """The reload worker: one process, started with ``spawn`` (a fork of a process
        with an event loop, threads and listening sockets would inherit all of them) at the
        first reload (not at start: its imports take a CPU second a takeover's first
        seconds need for traffic and checks) and kept for the next reload. It holds no
        descriptor of ours but its pipes (not our stdout: whoever reads it sees its end
        when we end) and dies with us, even by ``kill -9`` (:func:`reload_worker_init`)."""
        if self.worker is None:
            self.worker = ProcessPoolExecutor(
                max_workers=1,
                mp_context=worker_context(),  # SIGHUP/SIGUSR1 blocked in it (R3)
                initializer=reload_worker_init,
                initargs=(os.getpid(),),
            )
        return self.worker

    def stop_worker(self) -> None:
        """Forget the worker; one with a request still in it (a reload cancelled by a stop,
        a worker stuck) is killed: the executor's thread, joined at this process's exit,
        would wait for it (a takeover's old process did not exit, review 14 R11)."""
        if self.worker is not None:
            if getattr(self.worker, "_pending_work_items", None):
                kill_worker(self.worker)
            self.worker.shutdown(wait=False, cancel_futures=True)
            self.worker = None
        self.base = None  # a new worker has nothing of ours

    def _replan_connections(self, new: Config) -> Budget | None:
        """The connection budget for the new file (quiesce.dataplane.limits), with the
        running ``limits`` (they change at a restart). Raises ConfigError naming the limit
        when the new file does not fit in RLIMIT_NOFILE (a configured
        ``limits.max_connections`` with more idle upstream connections reserved, or no room
        left at all): the reload is refused, nothing changes. Otherwise the new budget is
        applied with the reload (a derived limit follows the servers)."""
        from quiesce.app.budget import live_after_reload
        from quiesce.config.loader import ConfigError
        from quiesce.dataplane.limits import LimitError, plan

        if self.app.budget is None:
            return None
        try:  # the runtime servers the reload keeps count too (review 14 R14)
            return plan(
                new.model_copy(update={"limits": self.app.config.limits}),
                self.app.budget.nofile,
                live_after_reload(new, self.app.registry),
            )
        except LimitError as exc:
            raise ConfigError([f"limits: {exc}"], str(self.app.config_path)) from None

    def _apply_budget(self, budget: Budget | None) -> None:
        from quiesce.dataplane import park

        if budget is None or budget == self.app.budget:
            return
        old, self.app.budget = self.app.budget, budget
        park.set_fd_ceiling(budget.data_plane_ceiling)
        if self.app.gate is not None and old is not None:
            self.app.gate.limit = budget.max_connections
            self.app.gate.cause = budget.cause()
            self.app.gate._room_changed()  # the native-accept threshold follows the limit
        if old is not None and old.max_connections != budget.max_connections:
            log.info(
                "reload: connection limit %d → %d client connections (%s)",
                old.max_connections,
                budget.max_connections,
                budget.describe(),
            )

    async def _prepare_reload(
        self, new: Config, plan: ReloadPlan, problems: list[str]
    ) -> dict[str, list[socket.socket]]:
        """Everything that can fail, before anything changes: pages read from disk, the
        admin certificate loaded, new listeners bound, each tried whatever failed before
        it. Raises ConfigError with ``problems`` (those found earlier) and every one of
        these, the listeners it bound closed again."""
        from quiesce.config.loader import ConfigError
        from quiesce.dataplane.pages import Page
        from quiesce.dataplane.service import bind_listen

        pages = [
            (f"services.{n}.maintenance_page", s.maintenance_page) for n, s in new.services.items()
        ]
        pages += [(f"pages.{n}", p) for n, p in new.pages.items()]
        for where, page in pages:
            try:
                Page.load(page, self.app.base_dir)
            except (OSError, ValueError) as exc:
                problems.append(f"{where}: {exc}")
        tls = new.admin.tls
        if tls is not None and self.app.config.admin.tls is not None:
            try:
                ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ssl_ctx.load_cert_chain(self._path(tls.cert), self._path(tls.key))
            except (OSError, ssl.SSLError) as exc:
                problems.append(f"admin.tls: cannot load {tls.cert} / {tls.key}: {exc}")
        bound: dict[str, list[socket.socket]] = {}
        for change in plan.changes:
            if change.kind not in BINDS:  # a service to start: bound now
                continue
            name = change.data["service"]
            listen = new.services[name].listen
            old = self.app.services.get(name)
            if old is not None and old.config.listen == listen:
                bound[name] = [s.dup() for s in old.sockets]  # the same queue: no refusal
                continue
            try:
                bound[name] = await bind_listen(listen)
            except OSError as exc:
                problems.append(f"services.{name}.listen: cannot listen on {listen}: {exc}")
        if problems:
            for socks in bound.values():
                for sock in socks:
                    sock.close()
            raise ConfigError(problems, str(self.app.config_path))
        return bound

    def _tls_digests(self, config: Config) -> dict[str, tuple[str, str]]:
        """:func:`~quiesce.state.reload.tls_files` of ``config``, each with the SHA-256 of
        its content ("" unreadable): a few small files, read as the reload reads them."""
        out: dict[str, tuple[str, str]] = {}
        for name, path in tls_files(config).items():
            try:
                digest = hashlib.sha256(Path(self._path(path)).read_bytes()).hexdigest()
            except OSError:
                digest = ""
            out[name] = (path, digest)
        return out

    def _path(self, path: str) -> str:
        p = Path(path)
        return str(p if p.is_absolute() else self.app.base_dir / p)

    async def _apply_reload(
        self,
        new: Config,
        plan: ReloadPlan,
        bound: dict[str, list[socket.socket]],
        actor: str,
        budget: Budget | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        """Apply a validated plan: registry changes in slices, then the services, then
        what nothing uses any more. Every write to the state store in one transaction
        (recorded whole or not at all), the health manager synced once at the end (its
        own slice: a pause before and after it)."""
        pacer = pacer or Pacer()
        with (
            self.app.store.batch(),
            self.app.admin.holding_sync(),
            self.app.registry.freezing_counts(),
        ):
            await self._apply_reload_changes(new, plan, bound, actor, pacer)
        self._apply_budget(budget)
        await pacer.pause()

    async def _apply_reload_changes(
        self,
        new: Config,
        plan: ReloadPlan,
        bound: dict[str, list[socket.socket]],
        actor: str,
        pacer: Pacer,
    ) -> None:
        from quiesce.admin import CommandContext

        ctx = CommandContext(actor, Cause.CONFIG, "config reload", force_guard=True)
        admin, reg = self.app.admin, self.app.registry
        # In slices of RELOAD_SLICE seconds, the event loop serving requests alone between
        # them (Pacer; a thousand servers added to a pool of ten thousand would otherwise
        # hold it for a few hundred milliseconds). Each slice is whole: the pools it touched are
        # recomputed once at its end, before any request runs; the order of the plan is
        # kept.
        changes, self._applying = plan.changes, plan  # (what _apply_change keeps)
        self._stored = StoredAdmin(self.app.store) if admin._shared_store else None
        i, n = 0, len(changes)
        while i < n:
            with admin.batch():
                while i < n:
                    self._apply_change(changes[i], new, ctx)
                    i += 1
                    self._applied = i
                    if pacer.due():
                        break
            await pacer.pause()  # the last one too: what follows is a slice of its own
        back = frozenset(c.data["pool"] for c in changes if c.kind == "pool_added")
        if back:  # a pool an earlier reload removed: its stored state back, as at a start
            with admin.batch():
                for line in admin.restore_pools(back):
                    plan.keep("restored", line.partition(":")[0], line)
        self.app.config = new
        reg.config = new
        # the services (quiesce.app.reload_services): one that fails does not stop the rest
        self.failed = await switch_services(self, new, plan, bound)
        with admin.batch():
            for change in plan.changes:
                if change.kind == "pool_removed":
                    reg.remove_pool(change.data["pool"])
                    config_event(self.app, change, ctx)
                elif change.kind == "monitor_removed":
                    try:
                        admin.delete_monitor(change.target, ctx)
                    except QuiesceError as exc:
                        plan.warnings.append(f"monitor {change.target}: kept: {exc.message}")
        self._reload_admin(new)
        # the health manager's sync(): once, at the end of admin.holding_sync()

    def _apply_change(self, change: Change, new: Config, ctx: Any) -> None:
        """One change of the registry's (pools, servers, monitors, flags) or a
        ``config_change`` event for one applied later (services, users): applied so that it
        converges on what runs (:func:`quiesce.app.reload_apply.apply_change`)."""
        kept = apply_change(self.app, change, ctx, self._stored)
        if kept is not None and self._applying is not None:
            self._applying.keep(change.kind, change.target, kept)

    def _retire(self, name: str, *, keep_idle: bool = False) -> None:
        """A service the reload removed (or re-bound): stop accepting now, finish its
        in-flight requests within its grace period, in the background. ``keep_idle``: idle
        keep-alive connections are closed only after their next response (an upgrade's
        rule: closing one races with the request its client may be sending)."""
        service = self.app.services.pop(name, None)
        if service is None:
            return
        task = asyncio.create_task(
            service.shutdown(service.config.grace_period, keep_idle=keep_idle),
            name=f"quiesce retire {name}",
        )
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)

    def _reload_admin(self, new: Config) -> None:
        """Users, tokens and the login limit on the live authenticator (no listener is
        dropped: credentials remembered from before are forgotten, sessions of users gone
        or changed end); the admin certificate re-read into the live TLS context."""
        server = self.app.admin_server
        if server is None:
            return
        auth = getattr(server.api.state, "auth", None)
        if auth is not None:  # its open event streams re-check their credentials (F16)
            auth.reconfigure(new.admin)
        tls = new.admin.tls
        live = getattr(getattr(server, "_server", None), "config", None)
        context = getattr(live, "ssl", None)
        if tls is not None and isinstance(context, ssl.SSLContext):
            context.load_cert_chain(self._path(tls.cert), self._path(tls.key))


__all__ = [
    "RELOAD_CHUNK",
    "RELOAD_IDLE_TURN",
    "RELOAD_LOG_SLACK",
    "RELOAD_PAUSE",
    "RELOAD_PAUSE_MAX",
    "RELOAD_SLICE",
    "RELOAD_SWITCH",
    "RELOAD_WRITTEN_MAX",
    "Loaded",
    "Pacer",
    "Reloader",
    "check_for_reload",
    "reload_worker_init",
]
