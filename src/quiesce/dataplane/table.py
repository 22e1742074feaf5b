"""The per-server connection table: who is connected to which server, and how to close them.

Theory of operation
-------------------
Every client connection that is "to" a server is in exactly one of the table's sets for it:

* **busy** — an L4 relay to the server, or an L7 client connection with a request being
  served by it (a WebSocket tunnel stays busy until it ends). ``server.connections`` is the
  size of this set: it is what status shows as ``draining (N)`` and what
  ``least_connections`` balances on.
* **idle** — an L7 keep-alive client connection whose last request went to the server and
  which is waiting for its next request. The next request is balanced afresh, so an idle
  connection does not hold the server (it is not counted in ``server.connections``). ``ALL``
  closes it; ``AT_BOUNDARY`` only forgets that it was the server's.

The table also keeps each server's idle upstream connections (the keep-alive pool the L7
proxy reuses, quiesce.dataplane.pool), so closing a server drops them too.

``close(server, mode)`` is registered in ``registry.close_handlers``:

* ``ALL`` — every busy connection is cut at once (both sides aborted), idle ones closed, idle
  upstream connections closed.
* ``AT_BOUNDARY`` — the connections *to the server* end at their request boundary: idle
  upstream connections are closed now, busy L7 connections right after their in-flight
  response (which gets ``Connection: close`` when its head is not yet sent); plain L4 relays
  are left alone, ``postgresql`` ones close outside a transaction (quiesce.dataplane.pgrelay).
  Idle L7 *client* connections are not closed, only detached from the server:
  their next request goes to an eligible server anyway, and closing an idle keep-alive
  connection can never be made safe in HTTP/1.1 — a client may be sending its next request
  at that moment, and it would see a reset (there is no GOAWAY). So non-forced maintenance
  loses no request, even from a client that does not retry.

Only connections bound to that server are touched: the sets are per server.

An idle L7 connection that was parked (quiesce.dataplane.park) is in the idle set as its
``Parked`` record (``swap_idle``), which closes or detaches the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from quiesce.balancing.persistence import StickyTable
from quiesce.core.states import Admin, Cause, CloseMode, Oper
from quiesce.dataplane.pool import UpstreamPool
from quiesce.dataplane.waiting import Queues
from quiesce.logs.access import DEADLINE, DOWN, KILLED
from quiesce.state.runtime import NO_COUNTS

if TYPE_CHECKING:
    from quiesce.logs import AccessLog
    from quiesce.state.registry import Registry, ServerRuntime


class Closable(Protocol):
    """What the table needs of a tracked client connection (L7 or L4)."""

    layer: int  # 4 or 7

    def cut(self, why: str = "") -> None:
        """Abort the connection now (client and upstream side); ``why`` is the first letter
        of the access log's termination state (quiesce.logs.access). An L7 request whose
        response has not started is answered ``503`` instead when ``why`` is given."""

    def close_at_boundary(self, force: bool = False) -> bool | None:
        """Close after the in-flight response (L7); idle: close now, unless its next
        request is already waiting unread (then after that one), or ``force``. False: the
        connection has no boundary and is left alone (a plain L4 relay)."""


class ConnectionTable(UpstreamPool):
    """Live client connections and in-flight requests for every server; the L7 proxy's
    idle upstream connections (its base class, quiesce.dataplane.pool)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.busy: dict[ServerRuntime, set[Closable]] = {}
        self.idle: dict[ServerRuntime, set[Closable]] = {}
        UpstreamPool.__init__(self)  # upstream_idle: the keep-alive pool, per server
        self.closed_by_mode: dict[str, int] = {"all": 0, "at_boundary": 0}
        # source_ip persistence, per pool name (shared by every service using the pool).
        self.sticky: dict[str, StickyTable] = {}
        # the process's access log (quiesce.logs; None: off), set by the composition root
        # before the services start: make_context gives it to each service that logs
        self.access_log: AccessLog | None = None
        # the pools' queues (max_connections, hold_when_empty): woken by a freed slot below
        # and by the registry's events
        self.queues = Queues(registry)

    def sticky_table(self, pool: str) -> StickyTable:
        t = self.sticky.get(pool)
        if t is None:
            t = self.sticky[pool] = StickyTable()
        return t

    # L7 request lifecycle -------------------------------------------------------------------

    def request_started(self, server: ServerRuntime, conn: Closable, idle: object) -> None:
        """``conn`` starts a request on ``server``; ``idle`` is the server it was idle-to
        (or None)."""
        if idle is not None:
            s = self.idle.get(idle)  # type: ignore[call-overload]
            if s is not None:
                s.discard(conn)
        busy = self.busy.get(server)
        if busy is None:
            busy = self.busy[server] = set()
        busy.add(conn)
        server.connections = len(busy)
        server.requests_in_flight += 1
        server.requests_total += 1

    def request_finished(
        self, server: ServerRuntime, conn: Closable, status: int, keep: bool
    ) -> None:
        """The response to ``conn``'s request is complete; ``keep``: the client connection
        stays open and becomes idle-to-``server``."""
        busy = self.busy.get(server)
        if busy is not None:
            busy.discard(conn)
            server.connections = len(busy)
        server.requests_in_flight -= 1
        if server.config.max_connections is not None:
            self.queues.slot_freed(server)
        if status:
            key = _CLASS_OF.get(status, "other")
            responses = server.responses
            if responses is NO_COUNTS:  # its first answer: counts of its own (issue 21)
                responses = server.responses = {}
            responses[key] = responses.get(key, 0) + 1
        # outlier_detection: the detector is called only for a 5xx or to end a run (what
        # OutlierTrack.response reads), not for every answer of a healthy server
        if (
            (o := server.outlier) is not None
            and (status >= 500 or o.fives or o.connect_failures)
            and o.response(status)
        ):
            self.registry.outlier_tripped(server, {"status_code": status})
        if keep:
            idle = self.idle.get(server)
            if idle is None:
                idle = self.idle[server] = set()
            idle.add(conn)

    def connect_failed(self, server: ServerRuntime, why: str) -> None:
        """A connect to ``server`` failed (``why``: refused, timeout): for the pool's
        ``outlier_detection`` (quiesce.core.outlier), the one place both layers report it."""
        if (o := server.outlier) is not None and o.connect_failed():
            self.registry.outlier_tripped(server, {"connect": why})

    def forget_idle(self, server: ServerRuntime, conn: Closable) -> None:
        s = self.idle.get(server)
        if s is not None:
            s.discard(conn)

    def swap_idle(self, server: ServerRuntime, old: Closable, new: Closable) -> bool:
        """``new`` stands for ``old`` in ``server``'s idle set (a connection parked or given
        back, see quiesce.dataplane.park); False when ``old`` was not there (detached)."""
        s = self.idle.get(server)
        if s is None or old not in s:
            return False
        s.discard(old)
        s.add(new)
        return True

    def hold(self, server: ServerRuntime, conn: Closable) -> None:
        """An upgraded L7 connection (WebSocket): its request is answered (101) but the
        tunnel stays busy on ``server`` until it closes (then :meth:`closed`)."""
        busy = self.busy.get(server)
        if busy is None:
            busy = self.busy[server] = set()
        busy.add(conn)
        server.connections = len(busy)

    # L4 -------------------------------------------------------------------------------------

    def opened(self, server: ServerRuntime, conn: Closable) -> None:
        busy = self.busy.get(server)
        if busy is None:
            busy = self.busy[server] = set()
        busy.add(conn)
        server.connections = len(busy)
        server.requests_total += 1

    def closed(self, server: ServerRuntime, conn: Closable) -> None:
        busy = self.busy.get(server)
        if busy is not None and conn in busy:
            busy.discard(conn)
            server.connections = len(busy)
            if server.config.max_connections is not None:
                self.queues.slot_freed(server)

    def idle_count(self, server: ServerRuntime) -> int:
        """L7 keep-alive client connections idle-to-``server``."""
        return len(self.idle.get(server, ()))

    # closing --------------------------------------------------------------------------------

    def close(self, server: ServerRuntime, mode: CloseMode) -> None:
        """Carry out ``mode`` on ``server``'s connections (a registry close handler)."""
        if mode is CloseMode.NONE:
            return
        self.close_server_upstreams(server)
        idle = self.idle.pop(server, ())
        if mode is CloseMode.ALL:
            for conn in list(idle):
                conn.close_at_boundary(True)
        busy = list(self.busy.get(server, ()))
        if mode is CloseMode.ALL:
            why = cut_cause(server)
            for conn in busy:
                conn.cut(why)
            self.closed_by_mode["all"] += len(busy)
        elif mode is CloseMode.AT_BOUNDARY:
            n = 0
            for conn in busy:
                # L7: after the in-flight response; L4: a plain relay is left alone (False),
                # a postgresql one closes out of a transaction (quiesce.dataplane.pgrelay)
                if conn.close_at_boundary() is not False:
                    n += 1
            self.closed_by_mode["at_boundary"] += n


def cut_cause(server: ServerRuntime) -> str:
    """Why every connection of ``server`` is being cut, as the access log's termination
    letter: its drain deadline was reached, it went down (``on_server_down: close``), or an
    operator forced it (``maintenance --force``, ``shutdown sessions``)."""
    admin = server.admin
    if admin.state is Admin.MAINTENANCE and admin.cause is Cause.DEADLINE:
        return DEADLINE
    if server.oper is Oper.DOWN and admin.state is not Admin.MAINTENANCE:
        return DOWN
    return KILLED


# status -> its class key, in one lookup ("other" for anything else)
_CLASS_OF = {status: f"{status // 100}xx" for status in range(100, 600)}
