"""The links of a connection table: the live :class:`~quiesce.dataplane.h2client.link.Link`
to each server of its h2 pools, the one being opened (one at a time per server: the
requests that come meanwhile wait for it), and the resend of a refused stream on the next
one."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from quiesce.dataplane.h2client.link import Channel, Link, Proto

if TYPE_CHECKING:
    from quiesce.state.registry import ServerRuntime

log = logging.getLogger("quiesce")


class Links:
    """The live link to each server, and the ones being opened (one at a time per server)."""

    def __init__(self) -> None:
        self.live: dict[ServerRuntime, Link] = {}
        self.opening: dict[ServerRuntime, asyncio.Task[Link]] = {}

    def forget(self, link: Link) -> None:
        if self.live.get(link.server) is link:
            del self.live[link.server]

    async def channel(
        self,
        server: ServerRuntime,
        kw: dict[str, Any],
        timeout: float,
        make: Callable[[], Proto],
    ) -> Proto:
        """A new Upstream (``make()``) on a channel of the server's link, the link opened
        first when there is none (TimeoutError, OSError: as a failed connect)."""
        link = await self._link(server, kw, timeout)
        proto = make()
        ch = Channel(link, proto)
        link.channels.add(ch)
        proto.connection_made(ch)
        return proto

    async def _link(self, server: ServerRuntime, kw: dict[str, Any], timeout: float) -> Link:
        link = self.live.get(server)
        if link is None or not link.usable():
            task = self.opening.get(server)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._open(server, kw, timeout))
                self.opening[server] = task
            link = await asyncio.shield(task)
            if not link.usable():
                raise ConnectionResetError("the server's HTTP/2 connection went away")
        return link

    def resend(self, ch: Channel) -> None:
        """Send ``ch``'s refused request again on its server's live link (or a new one)."""
        asyncio.get_running_loop().create_task(self._resend(ch))

    async def _resend(self, ch: Channel) -> None:
        old = ch.link
        try:
            link = await asyncio.wait_for(self._link(old.server, old.kw, old.timeout), old.timeout)
        except (OSError, TimeoutError):
            if ch.moving:
                ch.unprocessed = True  # its server stopped listening: another may take it
                ch.lost()
            return
        if ch.moving and not ch.closing:
            ch.moved(link)

    async def _open(self, server: ServerRuntime, kw: dict[str, Any], timeout: float) -> Link:
        loop = asyncio.get_running_loop()
        scheme = b"https" if kw.get("ssl") is not None else b"http"
        try:
            _, link = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Link(server, self, scheme, kw, timeout), server.host, server.port, **kw
                ),
                timeout,
            )
            if link.no_h2:  # a TLS server that did not choose h2 (Link.connection_made)
                link.transport.abort()
                log.warning(
                    "pool %s: server %s did not choose h2 by ALPN (pools.%s.protocol: h2)",
                    server.pool,
                    server.name,
                    server.pool,
                )
                raise ConnectionRefusedError("the server did not choose h2 by ALPN")
            try:  # its SETTINGS first: a stream sent before may be over its limits
                await asyncio.wait_for(asyncio.shield(link.ready), timeout)
            except (OSError, TimeoutError):
                if not link.closed:
                    link.closed = True
                    link.transport.abort()
                raise
        finally:
            self.opening.pop(server, None)
        self.live[server] = link
        return link


_HOMES: weakref.WeakKeyDictionary[Any, Links] = weakref.WeakKeyDictionary()


def links_of(table: Any) -> Links:
    """The links of a connection table (the keep-alive pool its channels go back to)."""
    home = _HOMES.get(table)
    if home is None:
        home = _HOMES[table] = Links()
    return home
