"""``quiesce run``'s process: the event loop, the signals (SIGINT/SIGTERM stop, SIGHUP
reloads), the lines tests and scripts read (``quiesce: ready``), systemd's notify protocol,
and the staged stop, around one :class:`~quiesce.app.core.App`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from quiesce import logs
from quiesce.app.core import App, StartupError
from quiesce.config.models import Config
from quiesce.core.errors import QuiesceError

log = logging.getLogger("quiesce")


def install_event_loop_policy() -> None:
    """uvloop when it is there; asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# The cyclic GC's first threshold in ``quiesce run``'s process (CPython's default: 700).
# Each HTTP/2 stream, each request, makes a few objects that live across a turn of the loop;
# with 500 streams in flight a collection every 700 allocations walked them all again and
# took 5% of the CPU under h2load (BENCHMARKS.md, "HTTP/2"; docs/admin.md, "Garbage
# collection"). The cost is cyclic garbage held longer: at most this many objects (a few
# MB) before a collection frees them. Reference counting frees the rest at once.
GC_GEN0 = 50_000


def settle_gc() -> None:
    """After start-up: what it built (configuration, registry, imports) lives until exit,
    collected once and frozen out of the cyclic GC's generations, so collections stay short
    on the request path; then the first generation's threshold raised (:data:`GC_GEN0`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0, *gc.get_threshold()[1:])


def run_forever(
    config: Config,
    base_dir: Path,
    *,
    grace: float = 10.0,
    banner: Callable[[App], None] | None = None,
    before_start: Callable[[], Awaitable[None]] | None = None,
    takeover: Path | None = None,
    config_path: Path | None = None,
    startup_hint: Callable[[StartupError], str | None] | None = None,
    early_signals: list[int] | None = None,
) -> int:
    """Run until SIGINT/SIGTERM, or until a new process took the listeners over; exit code
    0 after a clean staged shutdown. ``takeover``: the runtime socket of the running quiesce
    whose listeners this one takes (``quiesce run --takeover``). SIGHUP reloads
    ``config_path`` (:meth:`App.reload`; without one it is logged and ignored).
    ``startup_hint``: a line printed after a start-up error (the demo's ``--port 0``).
    ``early_signals``: where the caller's handler put the SIGHUPs and SIGUSR1s that came
    during start-up (quiesce.main): done once ready. :data:`READY_FD_ENV` in the
    environment: the descriptor told once ready (``quiesce upgrade``)."""
    ready_fd = _take_ready_fd()
    install_event_loop_policy()
    logs.setup_process_log(config.logging.process)  # stderr, text or JSON (logging.process)

    async def main() -> int:
        if before_start is not None:
            await before_start()
        app = App(config, base_dir, takeover=takeover, config_path=config_path)
        app.registry.listeners.append(logs.log_event)  # state events in the process log
        try:
            await app.start()
        except StartupError as exc:
            print(f"quiesce: cannot start: {exc}", file=sys.stderr)
            if startup_hint is not None and (hint := startup_hint(exc)) is not None:
                print(hint, file=sys.stderr)
            return 1
        settle_gc()
        stop = app.stop_requested
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        hups: set[asyncio.Task[None]] = set()

        def sighup() -> None:
            if stop.is_set():
                log.info("SIGHUP while stopping: not reloading")
                return
            if len(hups) >= 2:
                # one reload running, one waiting for it (reloads are serialised): the
                # waiting one reads the file as it is when it starts, this one's too. A
                # burst of SIGHUPs (systemctl kill, a script's loop) queued one reload each
                return
            task = asyncio.create_task(_sighup(app))
            hups.add(task)
            task.add_done_callback(hups.discard)

        loop.add_signal_handler(signal.SIGHUP, sighup)
        # logrotate: the access log's files opened again (a reload does it too)
        loop.add_signal_handler(signal.SIGUSR1, lambda: logs.reopen(app.table.access_log))
        if early_signals:  # the handlers above get every later one
            _early(app, early_signals, sighup)
        # One machine-readable line per listener (tests and scripts read the bound ports).
        for name, service in app.services.items():
            _say(f"quiesce: service {name} listening on port {service.port}")
        if app.admin_server is not None:
            _say(f"quiesce: admin listening on port {app.admin_server.port}")
        if banner is not None:
            banner(app)
        if app.took_over_from is not None:
            _say(f"quiesce: took over from pid {app.took_over_from}")
        _say("quiesce: ready")
        _sd_notify(f"READY=1\nMAINPID={os.getpid()}")
        if ready_fd is not None:  # after MAINPID=: systemd knows the new main process
            taken = app.took_over_from
            said = f", took over from pid {taken}" if taken is not None else ""
            _tell_ready(ready_fd, f"pid {os.getpid()} ready{said}")
        await stop.wait()
        # a SIGHUP reload still running or queued is abandoned, not left to run on into
        # the stop (it applied against a closed store: "Cannot operate on a closed database")
        for task in hups:
            task.cancel()
        await asyncio.gather(*hups, return_exceptions=True)
        if app.is_handed_over:
            log.info("handed over to a new process: finishing (grace %.1fs)", grace)
        else:
            _sd_notify("STOPPING=1")
        log.info("shutting down (grace %.1fs)", grace)
        await app.stop(grace)
        logs.close(app.table.access_log)
        return 0

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main())
    return 0


async def _sighup(app: App) -> None:
    """SIGHUP: a live reload of the config file (its answer goes to the log)."""
    if app.config_path is None:
        log.warning("SIGHUP: no config file to reload; still running")
        return
    log.info("SIGHUP: reloading %s", app.config_path)
    try:
        await app.reload("SIGHUP", via="signal")
    except QuiesceError as exc:
        # a bad file is logged by reload() with every problem; the rest here
        if exc.status_hint != 422:
            log.error("SIGHUP: %s", exc.message)
    except Exception:
        log.exception("SIGHUP: reload failed")


def _early(app: App, signals: list[int], sighup: Callable[[], None]) -> None:
    """The SIGHUPs and SIGUSR1s that came during start-up, once the loop's handlers are in
    place: one reload for any number of SIGHUPs (the file as it is now), the access log
    reopened for SIGUSR1, each said in the log."""
    seen = list(signals)
    signals.clear()
    if n := seen.count(signal.SIGUSR1):
        log.info("SIGUSR1 during start-up (%d): reopening the access log now", n)
        logs.reopen(app.table.access_log)
    if n := seen.count(signal.SIGHUP):
        log.info("SIGHUP during start-up (%d): reloading the config file now that it is up", n)
        sighup()


READY_FD_ENV = "QUIESCE_READY_FD"
"""An environment variable naming a descriptor (a pipe's write end) that ``quiesce run``
writes one line to once ready, after a takeover once it has taken over, and closes
(``quiesce upgrade`` waits on it; quiesce.main names it too). Unset in the process at start,
and the descriptor not inherited by anything it starts."""


def _take_ready_fd() -> int | None:
    value = os.environ.pop(READY_FD_ENV, None)
    if not value:
        return None
    try:
        fd = int(value)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise ValueError("not a pipe")
        os.set_inheritable(fd, False)
    except (ValueError, OSError) as exc:
        log.warning("%s=%r: not a pipe of ours (%s); ignored", READY_FD_ENV, value, exc)
        return None
    return fd


def _tell_ready(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):  # whoever waited may have gone
        os.write(fd, (line + "\n").encode())
    with contextlib.suppress(OSError):
        os.close(fd)


def _say(line: str) -> None:
    """One machine-readable line in one write: ``print`` writes the text and its newline
    apart when stdout is unbuffered (PYTHONUNBUFFERED, as tests run it), and a log line
    written to the same pipe in between (the startup event, logged as a takeover finishes)
    garbled ``took over from pid 123`` into ``...pid 1232026-12-07 ...``."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _sd_notify(message: str) -> None:
    """systemd's notify protocol (Type=notify), when NOTIFY_SOCKET is set: ``READY=1`` and
    ``MAINPID`` (a takeover's new process becomes the unit's main process)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), path)


__all__ = ["READY_FD_ENV", "install_event_loop_policy", "run_forever"]
