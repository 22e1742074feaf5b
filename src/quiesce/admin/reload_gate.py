"""Runtime server changes and a live reload never interleave (review 14 R12, R13).

A reload plans against the running state and the runtime overrides (what the state store
holds over the file), then applies its plan in paced slices with turns of the event loop
between them. A runtime change of a server made in that window is not seen by the plan: the
apply then collides with it (an ``add server`` of a name the reload adds: R12) or undoes it
in memory while the store keeps it (a ``PATCH``: R13). So from the moment a reload takes the
overrides to the end of its apply the :class:`RuntimeGate` is closed, and a runtime change
of a server (REST add/PATCH/DELETE and weight, the CLI's create/alter/destroy, the runtime
socket's add/del server, set server, set weight, the dashboard) waits for it to open, at
most :data:`RUNTIME_WAIT` seconds (:meth:`RuntimeGate.settled`), and is then applied
against the new state, or, the reload still applying, refused with :data:`RELOADING`
(REST 503 ``reloading`` with Retry-After; the CLI sends it again), nothing changed.

The same change made on another node (``state.etcd``) reaches this one through the watch at
any moment: while the gate is closed the store holds it (``hold_remote``: queued in order, the
watch goes on) and applies it when the gate opens (``release_remote``), against the reload's
new state and as a local change would be reconciled with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

RUNTIME_WAIT = 5.0
"""Seconds a runtime change of a server waits for a reload being applied to end before it
is refused: under the CLI's default --timeout (10 s), which then sends it again."""
RELOADING = "a reload of the config file is being applied; retry"
"""Why a runtime change of a server was refused (the reload did not end in RUNTIME_WAIT)."""


class RuntimeGate:
    """Closed while a reload is being applied (:meth:`hold` .. :meth:`release`)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._admin: Any = None
        self.waiting = 0  # changes waiting now for the reload's end
        self.refused = 0  # changes that waited RUNTIME_WAIT in vain, since start

    @property
    def closed(self) -> bool:
        return not self._open.is_set()

    async def settled(self, timeout: float | None = None) -> bool:
        """Wait until no reload is being applied, at most ``timeout`` seconds; False when one
        still is. A caller that gets True and makes its change with no ``await`` between is
        applied against the reload's new state: the next reload cannot close the gate
        before, it validates its file in the worker process first."""
        loop = asyncio.get_running_loop()
        until = loop.time() + (RUNTIME_WAIT if timeout is None else timeout)
        while not self._open.is_set():
            left = until - loop.time()
            if left <= 0:
                self.refused += 1
                return False
            self.waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._open.wait(), left)
            finally:
                self.waiting -= 1
        return True

    def hold(self, admin: Any) -> None:
        """Closed; the admin service refuses runtime server changes meanwhile too
        (``reload_applying``: a route that did not wait)."""
        self._admin = admin
        admin.reload_applying = True
        self._open.clear()
        hold = getattr(getattr(admin, "store", None), "hold_remote", None)
        if hold is not None:
            hold()  # other nodes' changes of servers wait too (quiesce.store.etcd)

    def release(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            admin.reload_applying = False
            release = getattr(getattr(admin, "store", None), "release_remote", None)
            if release is not None:
                release()  # the other nodes' changes held meanwhile, applied now, in order
        self._open.set()


async def settled(app: Any, timeout: float | None = None) -> bool:
    """``app``'s reload gate settled (True at once for an App-like without one)."""
    gate = getattr(getattr(app, "reloader", None), "gate", None)
    return True if gate is None else await gate.settled(timeout)


__all__ = ["RELOADING", "RUNTIME_WAIT", "RuntimeGate", "settled"]
