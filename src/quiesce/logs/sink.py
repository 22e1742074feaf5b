"""The access log's I/O: where lines go (stdout, a file, syslog), and a writer that never
blocks the event loop.

Theory of operation
-------------------
The data plane calls :meth:`AccessLog.add` with an entry (a tuple) at the end of each
exchange: an append to a list, and, for the first entry of a batch, one ``call_later``. Every
:data:`CHUNK` entries are formatted at once (quiesce.logs.access), while they are still in the
CPU's caches. :data:`FLUSH_EVERY` later (or at :data:`BATCH` lines) :meth:`AccessLog.flush`
hands the bytes to a writer thread through a ``queue.SimpleQueue``. Only that thread calls
``write``/``sendto``: a slow disk, a full pipe on stdout or a stalled syslog socket holds the
thread, never the loop, and both calls release the GIL while they wait. Formatting stays on
the loop's thread, so the thread never holds the GIL for long. A batch per turn of the loop
(the first version) woke the thread, and handed it the GIL, about once per request when each
turn ends few requests (a new connection per request): BENCHMARKS.md, "Access log". What
waits for the thread is bounded (:data:`MAX_PENDING` bytes): above it lines are dropped and
counted (``dropped``), and the process log says so once per episode.

Destinations are opened when the log is made (:func:`open_destinations`): a file that cannot
be opened or a syslog address that cannot be resolved raises :class:`LogError` naming the
key, so ``quiesce run`` refuses to start and a reload is refused, changing nothing. A file is
opened again on :meth:`AccessLog.reopen` (SIGUSR1, logrotate's ``postrotate``) and a reload
opens every destination anew.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import random
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from quiesce.config.logs import parse_syslog
from quiesce.core.errors import QuiesceError
from quiesce.logs.access import Entry, Formatter, iso_utc, syslog_frame

if TYPE_CHECKING:
    from quiesce.config.logs import AccessLogConfig

log = logging.getLogger("quiesce")

FLUSH_EVERY = 0.05  # seconds an entry waits at most before its batch is written
BATCH = 512  # lines handed to the writer thread at once when that many wait
CHUNK = 32  # entries formatted at once (few: formatted while still in the CPU's cache)
MAX_PENDING = 64 * 1024 * 1024  # bytes waiting for the writer thread before lines are dropped


class LogError(QuiesceError):
    """A log destination that cannot be opened; the message names the key."""

    status_hint = 422


class Destination:
    """One place lines go. ``write`` runs in the writer thread only."""

    def write(self, data: bytes) -> None:
        """``data``: whole lines, each ending with a newline."""
        raise NotImplementedError

    def reopen(self) -> None:
        """Open the file again (logrotate moved it); nothing for other kinds."""

    def close(self) -> None:
        """Release the descriptor."""


class FileDestination(Destination):
    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.fd = self._open()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise LogError(f"{self.key}: cannot open {self.path}: {exc.strerror}") from None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def reopen(self) -> None:
        try:
            fd = self._open()
        except LogError as exc:
            log.error("access log: %s (still writing to the file open before)", exc.message)
            return
        old, self.fd = self.fd, fd
        os.close(old)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class StdoutDestination(Destination):
    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(sys.stdout.fileno(), view)
            view = view[n:]


class SyslogDestination(Destination):
    """RFC 5424 messages, one datagram each, over UDP or a datagram unix socket."""

    def __init__(self, address: str, key: str) -> None:
        kind, host, port = parse_syslog(address)
        self.hostname = socket.gethostname() or "-"
        self.pid = os.getpid()
        sock: socket.socket | None = None
        try:
            if kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.connect(host)
            else:
                info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(info[0], socket.SOCK_DGRAM)
                sock.connect(info[4])
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise LogError(f"{key}: cannot reach {address}: {exc.strerror or exc}") from None
        self.sock = sock

    def write(self, data: bytes) -> None:
        now = iso_utc(time.time())
        for line in data.decode().split("\n")[:-1]:
            try:
                self.sock.send(syslog_frame(line, now, self.hostname, self.pid))
            except OSError:
                pass  # UDP: nobody listening right now (ECONNREFUSED) is a lost datagram

    def close(self) -> None:
        self.sock.close()


def open_destinations(cfg: AccessLogConfig, base_dir: Path) -> list[Destination]:
    """The destinations of ``cfg``, opened now; raises LogError naming the key."""
    out: list[Destination] = []
    path = cfg.path
    if path is None and cfg.syslog is None:
        path = "stdout"
    try:
        if path == "stdout":
            out.append(StdoutDestination())
        elif path is not None:
            p = Path(path)
            out.append(
                FileDestination(p if p.is_absolute() else base_dir / p, "logging.access.path")
            )
        if cfg.syslog is not None:
            out.append(SyslogDestination(cfg.syslog, "logging.access.syslog"))
    except LogError:
        for d in out:
            d.close()
        raise
    return out


class _Writer(threading.Thread):
    """The one thread that writes: lines, reopen and swap requests, in order."""

    def __init__(self, dests: list[Destination]) -> None:
        super().__init__(name="quiesce-access-log", daemon=True)
        self.dests = dests
        self.written = 0  # bytes written (only this thread adds; AccessLog counts what it queued)
        self.q: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()

    def run(self) -> None:
        q = self.q
        while True:
            what, arg = q.get()
            if what == "lines":
                data: bytes = arg  # type: ignore[assignment]
                for d in self.dests:
                    try:
                        d.write(data)
                    except OSError as exc:
                        log.error("access log: write failed: %s", exc)
                self.written += len(data)
            elif what == "reopen":
                for d in self.dests:
                    d.reopen()
            elif what == "swap":
                old, self.dests = self.dests, arg  # type: ignore[assignment]
                for d in old:
                    d.close()
            elif what == "stop":
                for d in self.dests:
                    d.close()
                done: threading.Event = arg  # type: ignore[assignment]
                done.set()
                return


class AccessLog:
    """The process's access log: what the data plane adds to, what SIGUSR1 reopens."""

    __slots__ = (
        "_full",
        "buf",
        "chunks",
        "dropped",
        "formatter",
        "loop",
        "nlines",
        "queued",
        "sample",
        "timer",
        "writer",
    )

    def __init__(
        self, cfg: AccessLogConfig, dests: list[Destination], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.loop = loop
        self.buf: list[Entry] = []
        self.chunks: list[bytes] = []  # formatted lines, waiting to be handed to the writer
        self.nlines = 0  # how many
        self.sample = cfg.sample
        self.formatter = Formatter(cfg.format, secrets.token_hex(4))
        self.queued = 0  # bytes handed to the writer (it counts what it wrote)
        self.dropped = 0  # lines dropped because the writer fell MAX_PENDING behind
        self._full = False
        self.timer: asyncio.TimerHandle | None = None
        self.writer = _Writer(dests)
        self.writer.start()

    def add(self, entry: Entry) -> None:
        """Record one exchange (called by the data plane at its end)."""
        if self.sample < 1.0 and random.random() >= self.sample:
            return
        buf = self.buf
        if self.timer is None:
            self.timer = self.loop.call_later(FLUSH_EVERY, self.flush)
        buf.append(entry)
        if len(buf) >= CHUNK:
            self._format()
            if self.nlines >= BATCH:
                self.flush()

    def _format(self) -> None:
        """The entries recorded so far, formatted (``offset``: wall time minus the loop's
        clock, which the entries' times are on)."""
        buf = self.buf
        self.buf = []
        self.chunks.append(self.formatter.format_bytes(buf, time.time() - self.loop.time()))
        self.nlines += len(buf)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.buf:
            self._format()
        if not self.nlines:
            return
        data = b"".join(self.chunks)
        lines = self.nlines
        self.chunks = []
        self.nlines = 0
        pending = self.queued - self.writer.written
        if pending + len(data) > MAX_PENDING:
            self.dropped += lines
            if not self._full:
                self._full = True
                log.warning(
                    "access log: the destination is %d MiB behind: dropping lines until it "
                    "catches up",
                    MAX_PENDING >> 20,
                )
            return
        if self._full and pending < MAX_PENDING // 2:
            self._full = False
            log.warning("access log: caught up; %d line(s) dropped in all", self.dropped)
        self.queued += len(data)
        self.writer.q.put(("lines", data))

    def reopen(self) -> None:
        """Open the files again (SIGUSR1): lines before this go to the old file."""
        self.flush()
        self.writer.q.put(("reopen", None))

    def reconfigure(self, cfg: AccessLogConfig, dests: list[Destination]) -> None:
        """A reload: the new format and sampling from now on, the new destinations (opened
        already, by open_destinations) after every line recorded before."""
        self.flush()
        self.sample = cfg.sample
        if cfg.format != self.formatter.fmt:
            self.formatter.fmt = cfg.format
        self.writer.q.put(("swap", dests))

    def close(self, timeout: float = 2.0) -> None:
        """Write what is recorded, then stop the writer (at most ``timeout`` seconds)."""
        self.flush()
        done = threading.Event()
        self.writer.q.put(("stop", done))
        done.wait(timeout)
