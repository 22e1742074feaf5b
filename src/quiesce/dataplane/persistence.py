"""Persistence decisions: which server a client's request (L7) or connection (L4) sticks to.

The data structures are quiesce.balancing.persistence's (the source-IP ``StickyTable``, one
per pool in the connection table; the cookie token, ``pool.sticky_token``); this module
decides with them:

* ``cookie`` (L7): a request whose cookie names a server goes there while it may take
  persistent sessions (``pool.pick`` with that server as ``sticky``); a response to a request
  that did not name the chosen server gets a ``Set-Cookie`` naming it.
* ``source_ip`` (L7 and L4): the client address's entry in the pool's sticky table, renewed
  (``timeout``) on every pick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quiesce.balancing.persistence import StickyTable
    from quiesce.config.models import Persistence
    from quiesce.state.registry import PoolRuntime, ServerRuntime


def cookie_value(header: bytes, name: bytes) -> bytes | None:
    for part in header.split(b";"):
        k, sep, v = part.strip().partition(b"=")
        if sep and k == name:
            return v.strip()
    return None


def pick_by_cookie(
    pool: PoolRuntime,
    persistence: Persistence,
    cookie: bytes | None,
    peer: str,
    now: float,
    exclude: tuple[ServerRuntime, ...],
) -> tuple[ServerRuntime | None, bytes | None]:
    """The server for a request with ``cookie`` (its Cookie header), and the ``Set-Cookie``
    line its response must carry (None: the request named that server already)."""
    sticky: str | None = None
    token = None
    if cookie is not None:
        token = cookie_value(cookie, persistence.cookie_name.encode())
    if token is not None:
        sticky = pool.from_sticky_token(token.decode("latin-1"))
    server = pool.pick(peer, now, exclude, sticky)
    if server is not None and server.name != sticky:
        return server, (
            b"Set-Cookie: "
            + persistence.cookie_name.encode()
            + b"="
            + pool.sticky_token(server).encode()
            + b"; Path=/; HttpOnly"
        )
    return server, None


def pick_by_source(
    pool: PoolRuntime,
    persistence: Persistence,
    table: StickyTable,
    peer: str,
    now: float,
    mono: float,
    exclude: tuple[ServerRuntime, ...],
) -> ServerRuntime | None:
    """The server for client address ``peer`` (``table``: the pool's sticky table, ``mono``
    the loop's time its expiries are in)."""
    server = pool.pick(peer, now, exclude, table.get(peer, mono))
    if server is not None:
        table.put(peer, server.name, mono, persistence.timeout)
    return server
