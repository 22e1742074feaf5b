"""What a client connection does when httptools stops after an Upgrade request's head.

httptools switches right after such a head (it never reads a body) and says where the head
ended. A request whose only protocol is ``h2c`` (curl ``--http2`` on cleartext) was set
aside by :func:`hold` as its head made plain (``headers.plain_h2c_head``): it is read again
with what followed it, an ordinary HTTP/1.1 request, as nginx and HAProxy serve it. Any
other upgrade waits for the server's answer: the bytes behind it are held (``upgrade_buf``,
reading paused) until a ``101`` makes a tunnel (quiesce.dataplane.h1.tunnel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from quiesce.dataplane.h1 import tunnel
from quiesce.dataplane.h1.exchange import C_TUNNEL
from quiesce.dataplane.h1.headers import plain_h2c_head
from quiesce.dataplane.h1.types import P_UPGRADE

if TYPE_CHECKING:
    import httptools

    from quiesce.dataplane.h1.exchange import Request


class Upgrading(tunnel.Tunnelled, Protocol):
    """A client connection, as this module sees it."""

    closed: bool
    rx: int  # client bytes read (the access log's)
    parser: httptools.HttpRequestParser | None
    h2c_head: bytes  # set by hold() until stopped() reads it again; unset otherwise

    def pause(self, reason: int) -> None: ...
    def data_received(self, data: bytes) -> None: ...


# Connections being read again (by id), and what to read next: an h2c request met while
# one is read again is read by the same loop, not one call deeper (600 of them pipelined in
# one read went past Python's recursion limit).
_AGAIN: dict[int, bytes | None] = {}


def _read_again(conn: Upgrading, data: bytes) -> None:
    key = id(conn)
    if key in _AGAIN:  # within the loop below, for this connection: it reads this next
        _AGAIN[key] = data
        return
    _AGAIN[key] = data
    try:
        while (next_data := _AGAIN[key]) is not None:
            _AGAIN[key] = None
            conn.data_received(next_data)
    finally:
        del _AGAIN[key]


def hold(conn: Upgrading, req: Request, headers: list[tuple[bytes, bytes]]) -> bool:
    """An upgrade request's head, just parsed: True when it only offers h2c (then the
    connection forgets it: httptools stops right after it and :func:`stopped` reads it
    again as plain HTTP/1.1)."""
    head = plain_h2c_head(req, headers)
    if head is None:
        return False
    conn.h2c_head = head
    return True


def stopped(conn: Upgrading, rest: bytes) -> None:
    """httptools stopped after an upgrade request's head; ``rest``: the bytes of this read
    behind it."""
    head: bytes | None = getattr(conn, "h2c_head", None)
    if head is not None:
        del conn.h2c_head
        if not conn.closed:
            conn.parser = None  # a new one: this one took the head as an upgrade
            conn.rx -= len(head)  # made here, not read again
            _read_again(conn, head + rest)
        return
    if not conn.closed:
        conn.upgrade_buf = [rest] if rest else []
        conn.pause(P_UPGRADE)
        if conn.state is C_TUNNEL:  # the 101 came back already
            tunnel.release(conn)
