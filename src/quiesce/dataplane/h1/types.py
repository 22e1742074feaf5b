"""What the HTTP/1.1 modules need of each other, as protocols: the upstream side and the
tunnel see a client connection only through :class:`ClientSide`, and an upstream connection
sees the connection table only through :class:`UpstreamHome`, so no module
of this package imports another one that imports it back.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from quiesce.dataplane.h1.exchange import ConnState, Request, ResponseState
    from quiesce.state.registry import ServerRuntime

# Reasons to pause reading from the client (ClientSide.paused is a set of them).
P_PIPELINE = 1  # a request is queued behind the one being served
P_UPSTREAM = 2  # the upstream connection's write buffer is full
P_PENDING = 4  # too much request body waits for an upstream connection
P_UPGRADE = 8  # bytes behind an Upgrade request wait for the server's 101


class Books(Protocol):
    """The connection table, as the tunnel sees it."""

    def request_finished(
        self, server: ServerRuntime, conn: Any, status: int, keep: bool
    ) -> None: ...
    def hold(self, server: ServerRuntime, conn: Any) -> None: ...


class Counters(Protocol):
    def count_response(self, status: int) -> None: ...


class Service(Protocol):
    """What the modules below the client connection see of its ServiceContext (the context
    module imports the connection table, which imports the pool: they must not import it
    back)."""

    @property
    def table(self) -> Books: ...
    @property
    def stats(self) -> Counters: ...
    @property
    def status_codes(self) -> frozenset[int]: ...
    @property
    def closing(self) -> bool: ...


class UpstreamSide(Protocol):
    """An upstream connection, as a client connection's tunnel sees it."""

    transport: asyncio.Transport
    tunnel: bool

    def close(self) -> None: ...


class ClientSide(Protocol):
    """A client connection, as its upstream connection and the tunnel see it (``up``: the
    :class:`~quiesce.dataplane.h1.upstream.Upstream` calling)."""

    @property
    def ctx(self) -> Service: ...

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    current: Request | None
    set_cookie: bytes | None
    out: list[bytes]
    half_closed: int
    resp: ResponseState
    boundary_close: bool
    state: ConnState
    queue: deque[Request] | None
    tx: int  # client bytes written since the last request ended (bout)

    def flush(self) -> None: ...
    def pause(self, reason: int) -> None: ...
    def resume(self, reason: int) -> None: ...
    def response_head(self, up: Any) -> None: ...
    def response_body(self, body: bytes) -> None: ...
    def fast_response(
        self, up: Any, status: int, keep_alive: bool, close: bool, out: bytes
    ) -> None: ...
    def upstream_complete(self, up: Any) -> None: ...
    def upstream_upgraded(self, up: Any, rest: bytes) -> None: ...
    def upstream_failed(self, up: Any, status: int) -> None: ...
    def upstream_lost(self, up: Any) -> None: ...


class UpstreamHome(Protocol):
    """Where an upstream connection goes back when its response is complete (the connection
    table's keep-alive pool, ``up`` an Upstream)."""

    def put_upstream(self, server: ServerRuntime, up: Any, limit: int) -> bool: ...
    def drop_upstream(self, server: ServerRuntime, up: Any) -> None: ...
