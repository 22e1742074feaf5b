"""Parking idle keep-alive client connections: a socket and a small record, no transport.

Theory of operation
-------------------
An L7 client connection that waits for its next keep-alive request costs the event loop's
transport (uvloop: about 1.2 KiB) and its :class:`~quiesce.dataplane.h1.client.ClientConnection`
(about 1.3 KiB) for as long as the client keeps it open — minutes, for browsers and SDK
connection pools. Once such a connection has been idle for ``ServiceContext.park_after``
seconds (0.5 s) with nothing in progress, :func:`park` takes its socket away from the loop:

1. ``os.dup`` the socket's descriptor; the duplicate holds the TCP connection open, so
   closing the transport afterwards sends nothing to the client (no FIN, no RST: the socket
   is closed only when its last descriptor is; no ``SO_LINGER`` is set);
2. register the duplicate in the process's one :class:`ParkingLot` — a ``select.epoll`` set
   whose own descriptor the loop watches (``loop.add_reader``), level-triggered;
3. put a :class:`Parked` record (service, descriptor, idle-since, the server it is idle-to:
   about 250 bytes with its table entries) where the connection was — in ``ctx.conns``,
   in the connection table's idle set of its server — and let the transport go (its
   protocol is swapped for a no-op first, so the ``ClientConnection`` sees no
   ``connection_lost``: the connection is not over, only parked).

A parked connection still counts everywhere a connection counts (``stats.connections``,
``Service.connections``, the idle-to-server sets), and ``stats.parked`` counts them too.

When the parked socket becomes readable — the client's next request — the lot takes it
out of its set and hands it back to the loop (``loop.connect_accepted_socket``) with a
fresh :class:`Revived` connection, which takes over the record's place (idle-since,
idle-to-server, no new ``connections_total``). Nothing was read from the socket while it
was parked, so the request is served exactly as if it had never been parked: every byte
is still in the kernel's receive buffer, in order. A hang-up or error with nothing to read
(the client closed its idle connection) closes the descriptor in the lot, as the
connection would have closed on EOF.

Everything that closes an idle connection closes a parked one the same way, through the
record: the client idle timeout (the service sweep calls :meth:`Parked.check`), the table's
``CloseMode.ALL`` (``close_at_boundary(force=True)``: only the records in that server's
idle set), ``CloseMode.AT_BOUNDARY`` (the record is detached from the server, as an idle
connection is), and service shutdown (``close_at_boundary()``: closed now, unless the
client's next request is already waiting unread — then it is revived and served with
``Connection: close``). A close that arrives while a record is being revived is remembered
and applied to the revived connection as soon as it exists.

The delay, 0.5 s. Reviving costs about 50 µs of CPU (a new transport and protocol object,
a task, a handful of system calls: measured on loopback, 85 against 33 µs for the same
request on a live connection), so a client must not be parked between two requests that
are close together. A keep-alive client under load (``wrk``, a busy connection pool,
pipelining) sends its next request within microseconds to milliseconds of the last
response: 0.5 s is hundreds of times that (``wrk -c50`` for 10 s: no connection parked),
and a revival after at least 0.5 s idle costs a connection at most 0.01% of a core. A
shorter delay is what
keeps memory down when many connections arrive at once and go idle (a reconnect storm, the
benchmark's 9,500 connections in about 2 s): every connection not parked yet costs its full
2.7 KiB at the peak, and memory freed after the peak does not all go back to the system
(see below). Measured with ``bench/proxy_bench.py --only e``: 0.25 s → 0.7–0.8, 0.5 s →
0.9, 1 s → 1.0–1.1 KiB per connection (HAProxy 1.2–1.3), varying with the machine's load.
The sweep runs at most once a second, so a connection is parked between ``park_after`` and
``park_after`` + one sweep interval after its last response. ``park_after = math.inf``
turns parking off.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import socket
import sys
import termios
from collections.abc import Callable
from typing import TYPE_CHECKING

from quiesce.dataplane.h1.client import ClientConnection

if TYPE_CHECKING:
    from quiesce.dataplane.context import ServiceContext
    from quiesce.state.registry import ServerRuntime

_EVENTS = select.EPOLLIN | select.EPOLLRDHUP
_GONE_EVENTS = select.EPOLLHUP | select.EPOLLRDHUP | select.EPOLLERR

# Record states: parked in the lot, being given back to the loop, finished (closed or
# handed over). Close requests that arrive while reviving are or-ed in.
PARKED = 0
REVIVING = 1
DONE = 2
_WANT_CLOSE = 4  # close_at_boundary()
_WANT_FORCE = 8  # close_at_boundary(force=True)
_WANT_CUT = 16  # cut()


def _unread(fd: int) -> bool:
    """Bytes from the client wait in the socket (FIONREAD)."""
    try:
        n = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return False
    return int.from_bytes(n, sys.byteorder) > 0


class Parked:
    """A parked client connection: what is left of it while the client says nothing."""

    layer = 7
    __slots__ = ("ctx", "fd", "idle_since", "idle_to", "state")

    def __init__(
        self, ctx: ServiceContext, fd: int, idle_since: float, idle_to: ServerRuntime | None
    ) -> None:
        self.ctx = ctx
        self.fd = fd
        self.idle_since = idle_since
        self.idle_to = idle_to
        self.state = PARKED

    # ServiceConnection / Closable ----------------------------------------------------------

    def check(self, now: float) -> None:
        if self.state == PARKED and now - self.idle_since >= self.ctx.idle_timeout:
            self.close()

    def close_at_boundary(self, force: bool = False) -> None:
        state = self.state
        if state == PARKED:
            if not force and _unread(self.fd):
                # The next request is here, unread: serve it (with Connection: close).
                lot = _LOTS.get(self.ctx.loop)
                if lot is not None:
                    self.state = REVIVING | _WANT_CLOSE
                    lot.revive(self)
                    return
            self.close()
        elif state & REVIVING:
            self.state = state | (_WANT_FORCE if force else _WANT_CLOSE)

    def cut(self, why: str = "") -> None:
        state = self.state
        if state == PARKED:
            self.close()
        elif state & REVIVING:
            self.state = state | _WANT_CUT

    def close(self) -> None:
        """Close the parked socket (a FIN to the client, as an idle connection's close)."""
        if self.state != PARKED:
            return
        lot = _LOTS.get(self.ctx.loop)
        if lot is not None:
            lot.take(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.forget()

    def forget(self) -> None:
        """The connection is over: out of the service's and the table's books."""
        self.state = DONE
        ctx = self.ctx
        ctx.conns.discard(self)
        ctx.stats.connections -= 1
        ctx.stats.parked -= 1
        ctx.lost()
        if self.idle_to is not None:
            ctx.table.forget_idle(self.idle_to, self)
            self.idle_to = None
        if ctx.closing and not ctx.conns and ctx.drained is not None:
            ctx.drained.set()

    def handover(self, conn: ClientConnection) -> None:
        """``conn`` (a :class:`Revived` connection, just made) takes this record's place."""
        want = self.state
        self.state = DONE
        ctx = self.ctx
        ctx.conns.discard(self)
        ctx.conns.add(conn)
        ctx.stats.parked -= 1
        conn.idle_since = self.idle_since
        conn.begin_at = -1.0  # idle between requests, as before it was parked
        conn.got_any = True
        server = self.idle_to
        self.idle_to = None
        if server is not None and ctx.table.swap_idle(server, self, conn):
            conn.idle_to = server
        if want & _WANT_CUT:
            conn.cut()
        elif want & _WANT_FORCE:
            conn.close_at_boundary(True)
        elif want & _WANT_CLOSE or ctx.closing:
            conn.close_at_boundary()


class Revived(ClientConnection):
    """A parked connection given back to the loop; becomes an ordinary ClientConnection
    once made (the record hands its place over)."""

    __slots__ = ("record",)

    def __init__(self, record: Parked) -> None:
        super().__init__(record.ctx)
        self.record: Parked | None = record

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # ClientConnection.connection_made for a connection that is not new: the record's
        # place in the books is taken over (no count, no header timeout, not refused while
        # the service is closing: its request is served with Connection: close).
        self.take_transport(transport)
        record = self.record
        self.record = None
        if record is not None:
            record.handover(self)
        self.ctx.watch()


class ParkingLot:
    """The one epoll set of parked sockets of an event loop (one per process in practice).

    Made when the first connection parks and closed when the last one leaves, so a loop
    that never parks anything pays nothing."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.epoll = select.epoll()
        self.parked: dict[int, Parked] = {}
        self.tasks: set[asyncio.Task[None]] = set()  # revivals under way (strong refs)
        loop.add_reader(self.epoll.fileno(), self._ready)

    def add(self, record: Parked) -> None:
        self.epoll.register(record.fd, _EVENTS)
        self.parked[record.fd] = record

    def take(self, fd: int) -> None:
        """Out of the set (before the descriptor is closed)."""
        if self.parked.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(fd)
        self._maybe_close()

    def revive(self, record: Parked) -> None:
        """Give a parked socket back to the loop with a fresh connection (:class:`Revived`);
        ``record.state`` is REVIVING (with any close request) already."""
        fd = record.fd
        if self.parked.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(fd)
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.close(fd)
            record.forget()
            self._maybe_close()
            return
        task = self.loop.create_task(_attach(record, sock))
        self.tasks.add(task)
        task.add_done_callback(self._attached)

    def _attached(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._maybe_close()

    def _maybe_close(self) -> None:
        if not self.parked and not self.tasks:
            self.close()

    def close(self) -> None:
        if _LOTS.get(self.loop) is self:
            del _LOTS[self.loop]
        with contextlib.suppress(RuntimeError, ValueError, OSError):  # loop closed already
            self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()

    def _ready(self) -> None:
        parked = self.parked
        try:
            events = self.epoll.poll(0, 1024)
        except (OSError, ValueError):
            return
        for fd, ev in events:
            record = parked.get(fd)
            if record is None:
                continue
            try:
                if ev & _GONE_EVENTS and not _unread(fd):
                    record.close()  # the client hung up (or reset) an idle connection
                else:
                    record.state = REVIVING
                    self.revive(record)
            except Exception:  # never leave a ready descriptor in the set (a busy loop)
                if record.state == PARKED:
                    record.close()


_LOTS: dict[asyncio.AbstractEventLoop, ParkingLot] = {}


def park(conn: ClientConnection) -> bool:
    """Park ``conn`` if it is idle between requests with nothing at all in progress;
    returns whether it was parked. Called by the service sweep (``ClientConnection.check``,
    through ``ServiceContext.park``)."""
    if not conn.parkable():
        return False
    ctx = conn.ctx
    transport = conn.transport
    if ctx.closing or transport is None or transport.is_closing():
        return False
    if transport.get_write_buffer_size():
        return False
    if transport.get_extra_info("sslcontext") is not None:
        return False  # TLS state lives in the transport, not in the socket
    if conn.proxied is not None:
        return False  # accept_proxy: the client's address came in a header, not the socket
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        fd = os.dup(sock.fileno())
    except (OSError, ValueError):
        return False  # out of descriptors: it stays a connection, no harm done
    if fd >= _fd_ceiling():
        # Until the transport's close runs (next loop iteration) a parked connection holds
        # two descriptors: a sweep parking thousands must not take the last ones that
        # accept() and upstream connections need. The rest are parked by the next sweep.
        os.close(fd)
        return False
    loop = conn.loop
    lot = _LOTS.get(loop)
    if lot is None:
        lot = _LOTS[loop] = ParkingLot(loop)
    record = Parked(ctx, fd, conn.idle_since, None)
    try:
        lot.add(record)
    except OSError:
        os.close(fd)
        lot._maybe_close()
        return False
    # The record takes the connection's place in every book, then the transport goes.
    ctx.conns.discard(conn)
    ctx.conns.add(record)
    ctx.stats.parked += 1
    _note_parked(loop)
    server = conn.idle_to
    if server is not None:
        conn.idle_to = None
        if ctx.table.swap_idle(server, conn, record):
            record.idle_to = server
    conn.closed = True
    conn.parser = None
    transport.set_protocol(_GONE)
    transport.close()
    return True


# Giving memory back. A parked connection frees about 2.5 KiB (its transport, its protocol
# object, their buffers), but freed memory stays in the process (RSS) until the allocator
# returns it: glibc keeps freed heap pages until ``malloc_trim``, so after a batch of
# connections was parked (one sweep parks them all) the heap is trimmed once, a little
# later (after the transports' own close callbacks ran). It costs well under 1 ms on a
# heap of tens of MiB. Python's own small-object allocator returns an arena (1 MiB) only
# when all of it is free, which is why a short parking delay matters too (see above).
TRIM_AFTER = 256  # connections parked since the last trim
_parked_since_trim = 0
_malloc_trim: Callable[[int], int] | bool | None = False  # False: not looked up yet


def _note_parked(loop: asyncio.AbstractEventLoop) -> None:
    global _parked_since_trim
    _parked_since_trim += 1
    if _parked_since_trim == TRIM_AFTER:
        loop.call_later(0.1, _trim)


def _trim() -> None:
    global _parked_since_trim, _malloc_trim
    _parked_since_trim = 0
    if _malloc_trim is False:
        _malloc_trim = None
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc
            pass
    if callable(_malloc_trim):
        _malloc_trim(0)


_FD_CEILING = 0


def set_fd_ceiling(ceiling: int) -> None:
    """Descriptor numbers from ``ceiling`` up are the operators' (the App sets it to
    ``Budget.data_plane_ceiling``: RLIMIT_NOFILE minus what quiesce.dataplane.limits
    reserves for the admin API, the runtime socket, the store, the checks and the margin)."""
    global _FD_CEILING
    _FD_CEILING = max(1, ceiling)


def _fd_ceiling() -> int:
    """Descriptor numbers from the ceiling up are left to the rest of the proxy (``dup``
    returns the lowest free number: at least that many are open). Without a ceiling set
    by the App (:func:`set_fd_ceiling`), 90% of the soft RLIMIT_NOFILE."""
    global _FD_CEILING
    if not _FD_CEILING:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        _FD_CEILING = (soft * 9) // 10 if 0 < soft < 1 << 30 else 1 << 30
    return _FD_CEILING


async def _attach(record: Parked, sock: socket.socket) -> None:
    loop = record.ctx.loop
    try:
        await loop.connect_accepted_socket(lambda: Revived(record), sock)
    except BaseException as exc:
        if record.state & REVIVING:  # never made: the connection ends here
            sock.close()
            record.forget()
        if not isinstance(exc, Exception):
            raise  # cancelled (the loop is going away)


class _Gone(asyncio.Protocol):
    """The protocol of a transport whose socket was parked: nothing is left to tell."""


_GONE = _Gone()
