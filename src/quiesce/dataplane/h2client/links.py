"""The links of a connection table: the live :class:`~quiesce.dataplane.h2client.link.Link`
to each server of its h2 pools, the one being opened (one at a time per server: the
requests that come meanwhile wait for it), the resend of a refused stream on the next
one, and a server that takes no stream.

A server that announces SETTINGS_MAX_CONCURRENT_STREAMS 0 can take no new stream on that
connection (RFC 9113 §5.1.2): libnghttp2 would hold a request there until the pool's
``response_timeout`` (then 504). So such a link takes no new stream (``starved``): the
streams in flight on it finish, the ones libnghttp2 still holds unsent are cancelled (they
never left) and go on a new link as refused ones do, and the link closes with its last
channel. A new link whose first SETTINGS say 0 is closed and one more is opened; when that
one says 0 too the request fails at once as a refused connect (:class:`NoStreams`: retried
on another server as the pool's retries allow, else ``503``, ``SC`` in the access log, and
counted by ``outlier_detection`` as a connect failure), with one warning until the server
takes streams again. A lower nonzero limit needs nothing: libnghttp2 queues the new
streams until enough in flight end."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from quiesce.dataplane.h2client.channel import CANCEL, Channel, Proto
from quiesce.dataplane.h2client.link import Link

if TYPE_CHECKING:
    from quiesce.state.registry import ServerRuntime

log = logging.getLogger("quiesce")


class NoStreams(ConnectionRefusedError):
    """The server said SETTINGS_MAX_CONCURRENT_STREAMS 0 on two new connections in a row."""


class Links:
    """The live link to each server, and the ones being opened (one at a time per server)."""

    def __init__(self) -> None:
        self.live: dict[ServerRuntime, Link] = {}
        self.opening: dict[ServerRuntime, asyncio.Task[Link]] = {}
        self.no_streams: set[ServerRuntime] = set()  # warned: its new links take no stream

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
        assert isinstance(old, Link)
        try:
            link = await asyncio.wait_for(self._link(old.server, old.kw, old.timeout), old.timeout)
        except (OSError, TimeoutError):
            if ch.moving:
                ch.unprocessed = True  # its server stopped listening: another may take it
                ch.lost()
            return
        if ch.moving and not ch.closing:
            ch.moved(link)

    def starved(self, link: Link) -> None:
        """``link``'s server said SETTINGS_MAX_CONCURRENT_STREAMS 0: no new stream on it (see
        the module docstring)."""
        link.starved = link.going = True
        self.forget(link)
        unsent = link.unsent()
        if link.ready.done() and link.channels:
            log.info(
                "pool %s: server %s: SETTINGS_MAX_CONCURRENT_STREAMS 0: no new stream on its "
                "connection (%d in flight finish there, %d not sent go on a new one)",
                link.server.pool,
                link.server.name,
                len(link.streams) - len(unsent),
                len(unsent),
            )
        for sid in unsent:
            ch = link.streams.pop(sid)
            link.reset(sid, CANCEL)  # (its HEADERS, held by libnghttp2, never leave)
            ch.refused()
        for ch in list(link.channels):
            if ch.idle():
                ch.retire()  # never taken again
        if not link.channels:
            link.close()

    async def _open(self, server: ServerRuntime, kw: dict[str, Any], timeout: float) -> Link:
        try:
            link = await self._connect(server, kw, timeout)
            if link.starved:  # SETTINGS_MAX_CONCURRENT_STREAMS 0: one more try
                link = await self._connect(server, kw, timeout)
                if link.starved:
                    if server not in self.no_streams:
                        self.no_streams.add(server)
                        log.warning(
                            "pool %s: server %s announced SETTINGS_MAX_CONCURRENT_STREAMS 0 "
                            "on two new connections: it takes no request (each fails as a "
                            "refused connect, 503 SC unless retried on another server) "
                            "until it announces more",
                            server.pool,
                            server.name,
                        )
                    raise NoStreams("the server takes no stream (MAX_CONCURRENT_STREAMS 0)")
        finally:
            self.opening.pop(server, None)
        if server in self.no_streams:
            self.no_streams.discard(server)
            log.info("pool %s: server %s takes streams again", server.pool, server.name)
        self.live[server] = link
        return link

    async def _connect(self, server: ServerRuntime, kw: dict[str, Any], timeout: float) -> Link:
        loop = asyncio.get_running_loop()
        scheme = b"https" if kw.get("ssl") is not None else b"http"
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
        return link


_HOMES: weakref.WeakKeyDictionary[Any, Links] = weakref.WeakKeyDictionary()


def links_of(table: Any) -> Links:
    """The links of a connection table (the keep-alive pool its channels go back to)."""
    home = _HOMES.get(table)
    if home is None:
        home = _HOMES[table] = Links()
    return home
