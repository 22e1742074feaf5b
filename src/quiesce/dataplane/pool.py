"""The upstream keep-alive pool: idle connections to each server, and which one a request
may take.

One LIFO list per server (at most the pool's ``max_idle_per_server``), kept by the
connection table so that closing a server closes its idle connections too. A request that
may be sent twice takes the most recently idle connection; one that must not be sent twice
(``resendable`` is false) only a connection idle for less than ``SAFE_REUSE_IDLE``, else a
new one: if the server closed the connection as we reuse it (the keep-alive race) such a
request could not be resent, so the race is avoided instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from quiesce.dataplane.h2client.channel import Channel  # an h2 pool's upstream transport

if TYPE_CHECKING:
    from quiesce.state.registry import ServerRuntime


class Pooled(Protocol):
    """What the pool needs of an upstream connection (the L7 proxy's ``h1.upstream.Upstream``;
    named here as a protocol so that the pool, and the connection table built on it, import
    nothing of the HTTP/1.1 layer)."""

    closed: bool
    idle_since: float

    def close(self) -> None: ...


# The pool hands back what was put in: the HTTP/1.1 layer's Upstream. Typed Any at this seam
# (a type parameter would make the connection table name the HTTP/1.1 layer again).
Upstream = Any

# A request that must not be sent twice goes on an idle upstream connection only if it has been
# idle for less than this (servers close idle connections after a few seconds: 2 s gunicorn,
# 5 s Apache and Node, 75 s nginx), else on a new one: the race cannot be resent, so it is
# avoided instead.
SAFE_REUSE_IDLE = 1.0


class UpstreamPool:
    """Idle keep-alive upstream connections, per server (LIFO). The connection table is one
    (a base class: ``table.take_upstream`` stays one method call on the per-request path)."""

    def __init__(self) -> None:
        self.upstream_idle: dict[ServerRuntime, list[Upstream]] = {}
        # servers whose pool a reload switched between http/1.1 and h2: True for h2 (see
        # switch_protocol); empty until a reload does
        self.upstream_h2: dict[ServerRuntime, bool] = {}

    def take_upstream(self, server: ServerRuntime) -> Upstream | None:
        pool = self.upstream_idle.get(server)
        if pool:
            return pool.pop()
        return None

    def put_upstream(self, server: ServerRuntime, up: Upstream, limit: int) -> bool:
        switched = self.upstream_h2
        if (
            switched
            and server in switched
            and (type(up.transport) is Channel) is not switched[server]
        ):
            return False  # the other protocol's, after a reload (the caller closes it)
        pool = self.upstream_idle.get(server)
        if pool is None:
            pool = self.upstream_idle[server] = []
        if len(pool) >= limit:
            return False
        pool.append(up)
        return True

    def drop_upstream(self, server: ServerRuntime, up: Upstream) -> None:
        pool = self.upstream_idle.get(server)
        if pool is not None:
            try:
                pool.remove(up)
            except ValueError:
                pass

    def take_for(
        self, server: ServerRuntime, may_resend: bool, now: float, limit: int, taken: Upstream
    ) -> Upstream:
        """An idle connection a request may go on (``taken`` from the pool already, or the
        next one), or None: open a new one. ``may_resend``: the request may be sent twice
        (``h1.exchange``: idempotent, or resendable). Closed ones are skipped; one idle too
        long for a request that must not be sent twice is put back (older ones, the pool
        being LIFO, have been idle longer still: they are kept for requests that may be
        resent)."""
        while True:
            up = taken if taken is not None else self.take_upstream(server)
            taken = None
            if up is None:
                return None
            if up.closed:
                continue
            if may_resend or now - up.idle_since < SAFE_REUSE_IDLE:
                return up
            if not self.put_upstream(server, up, limit):
                up.close()
            return None

    def close_idle_upstreams(self, servers: Iterable[ServerRuntime] | None = None) -> int:
        """Close idle upstream connections (of ``servers``, an iterable, or all); returns
        how many. Service shutdown calls it so nothing is left open behind it."""
        wanted = None if servers is None else set(servers)
        n = 0
        for server in list(self.upstream_idle):
            if wanted is not None and server not in wanted:
                continue
            for up in self.upstream_idle.pop(server, []):
                up.close()
                n += 1
        return n

    def switch_protocol(self, servers: Iterable[ServerRuntime], h2: bool) -> int:
        """A reload switched the pool of ``servers`` to h2 (``h2``) or to http/1.1: their idle
        upstream connections, of the other protocol, are closed now (an h2 connection once
        its last channel is: GOAWAY NO_ERROR), and one in flight finishes its response and
        is closed instead of pooled (:meth:`put_upstream`), so every request after the
        reload goes out on the new protocol. Returns how many idle ones were closed."""
        servers = list(servers)
        for server in servers:
            self.upstream_h2[server] = h2
        return self.close_idle_upstreams(servers)

    def close_server_upstreams(self, server: ServerRuntime) -> None:
        for up in self.upstream_idle.pop(server, []):
            up.close()

    def idle_upstream_count(self, server: ServerRuntime) -> int:
        return len(self.upstream_idle.get(server, ()))
