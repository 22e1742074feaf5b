"""The services of a live reload (:meth:`quiesce.app.reload.Reloader._apply_reload_changes`),
once its registry changes are applied and the running config switched: every surviving
service reconfigured from the new config, the removed and re-bound ones retired, the added,
re-bound and restarted ones started on the listening sockets bound before anything changed.

Whatever can be checked is checked before the switch (the file validated, pages read, new
listeners bound: a busy port refuses the whole reload, nothing changed, as HAProxy keeps its
old process). What still fails here (descriptors run out, a certificate replaced on disk
meanwhile) fails one service, not the reload's rest: the other services are started or
reconfigured, the pools and monitors removed, and the reload answers non-zero naming the
service (:class:`ServicesFailed`). A service that did not start is in the running config
but not in ``App.services``: the next reload, of the same file too, plans it
``service_started`` (:func:`quiesce.state.reload.plan_reload`, ``running``), binds it before
anything changes and starts it, as Envoy's listener manager retries a listener at its next
update. A service that could not be reconfigured serves with its previous settings; every
reload reconfigures every surviving service, so the next one tries again.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from quiesce.core.errors import QuiesceError

if TYPE_CHECKING:
    from quiesce.config.models import Config
    from quiesce.state.reload import ReloadPlan

# what the plan binds a listener for before anything changes (quiesce.app.reload)
BINDS = frozenset({"service_added", "service_rebound", "service_started"})


class ServicesFailed(QuiesceError):
    """A reload applied, but for services that could not start or be reconfigured after
    the config switched (``failed``: service name → what happened)."""

    status_hint = 500

    def __init__(self, failed: dict[str, str], applied: int) -> None:
        self.failed = dict(failed)
        what = "; ".join(f"service {n}: {why}" for n, why in sorted(failed.items()))
        super().__init__(
            f"reload applied {applied} change(s) but {len(failed)} service(s) failed after "
            f"the config switched: {what}. A service not started is not serving; the next "
            "reload (of the same file too) starts it again once the cause is fixed "
            "(docs/admin.md, Live reload)",
            status_hint=500,
        )


async def switch_services(
    reloader: Any, new: Config, plan: ReloadPlan, bound: dict[str, list[socket.socket]]
) -> dict[str, str]:
    """Reconfigure, retire and start the services for ``new`` (``bound``: the listening
    sockets of those to start, each closed if its service does not start). Returns the
    services that failed, each with what happened; the others are done."""
    from quiesce.dataplane.service import make_context, start_service
    from quiesce.rules import compile_router

    app, reg = reloader.app, reloader.app.registry
    failed: dict[str, str] = {}
    # every surviving one takes a context made from the new config (pages re-read from
    # disk, routers recompiled against the pools as they are now)
    loop = asyncio.get_running_loop()
    for name, svc in new.services.items():
        service = app.services.get(name)
        if name in bound or service is None:
            continue
        try:
            router = compile_router(name, svc, reg)
            fresh = make_context(
                name, svc, reg, app.table, loop, router=router, base_dir=app.base_dir
            )
        except Exception as exc:
            failed[name] = f"serves with its previous settings: {_error(exc)}"
            continue
        service.reconfigure(fresh)
    for change in plan.changes:
        if change.kind in ("service_rebound", "service_removed"):
            # http: idle keep-alive connections closed at a safe point (their next request
            # answered with Connection: close), as a takeover's: closed at once, their
            # clients' next request failed (review 14 R8: RemoteDisconnected). A database
            # relay's sessions still close at their transaction boundary.
            name = change.data["service"]
            old = app.services.get(name)
            same = (
                old is not None
                and name in new.services
                and new.services[name].listen == old.config.listen
            )
            http = old is not None and old.config.protocol == "http"
            reloader._retire(name, keep_idle=same or http)
    for name, socks in bound.items():
        svc = new.services[name]
        try:
            app.services[name] = await start_service(
                name,
                svc,
                reg,
                app.table,
                router=compile_router(name, svc, reg),
                base_dir=app.base_dir,
                gate=app.gate,
                socks=socks,
            )
        except Exception as exc:
            for sock in socks:
                sock.close()
            failed[name] = f"not started on {svc.listen}: {_error(exc)}"
    return failed


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


__all__ = ["BINDS", "ServicesFailed", "switch_services"]
