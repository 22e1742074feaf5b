"""A new connection to the chosen server for a client connection's request (the rare case:
most requests take an idle keep-alive one), within the pool's ``connect_timeout``, TLS when
the pool has ``tls``, a PROXY header first when it has ``send_proxy``; for a pool with
``protocol: h2``, a channel on the server's HTTP/2 connection (quiesce.dataplane.h2client),
the connection opened first when there is none."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from quiesce.core.retry import CONNECT_TIMEOUT
from quiesce.dataplane.h1.retry import again
from quiesce.dataplane.h1.upstream import Upstream
from quiesce.dataplane.h2client.links import NoStreams, links_of
from quiesce.dataplane.proxyproto import for_upstream
from quiesce.logs import access as ts  # the termination states
from quiesce.state.traffic import connected

if TYPE_CHECKING:
    from quiesce.state.registry import ServerRuntime


async def open_upstream(conn: Any, server: ServerRuntime) -> None:
    """Open one for ``conn`` (an h1.client.ClientConnection, which imports this module) and
    attach it; on a timeout a retry or 504, on a refusal a retry or 502 (pools.X.retries).

    A connection that carried a PROXY header is that client's: ``pools.X.send_proxy`` makes
    the pool's ``max_idle_per_server`` 0 (quiesce.config.proxy), so it is never pooled and
    never reused by another client (nor by this one's next request)."""
    pool = conn.pool
    assert pool is not None
    loop = conn.loop
    began = loop.time()
    tls = conn.ctx.tls
    kw = {} if tls is None else tls.upstream(pool.name, server.host)  # pools.X.tls
    table = conn.ctx.table
    try:
        if pool.config.protocol == "h2":  # a channel on the server's HTTP/2 connection
            up = await asyncio.wait_for(
                links_of(table).channel(
                    server, kw, pool.config.connect_timeout, lambda: Upstream(server, table)
                ),
                pool.config.connect_timeout,
            )
        else:
            _, up = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Upstream(server, table), server.host, server.port, **kw
                ),
                pool.config.connect_timeout,
            )
    except TimeoutError:
        conn.connecting = None
        conn.ctx.table.connect_failed(server, "timeout")  # outlier_detection
        if not again(conn, CONNECT_TIMEOUT):  # pools.X.retry_on: connect_timeout
            server.conn_errors += 1  # econ: failed for good (a retried one is wretr)
            conn.term = ts.SERVER_TIMEOUT + ts.CONNECT
            conn._fail(504)
        return
    except OSError as exc:
        conn.connecting = None
        conn.ctx.table.connect_failed(server, "refused")  # outlier_detection
        # an h2 server that takes no stream (SETTINGS_MAX_CONCURRENT_STREAMS 0): 503
        conn._connect_refused(server, 503 if isinstance(exc, NoStreams) else 502)
        return
    conn.connecting = None
    conn.ctime = loop.time() - began
    connected(server.own_traffic or server.new_traffic(), conn.ctime)
    if conn.closed or conn.server is not server:
        up.close()
        return
    if pool.config.send_proxy:
        up.transport.write(for_upstream(pool.config.send_proxy, conn.transport, conn.proxied))
    conn._attach(up, reused=False)
