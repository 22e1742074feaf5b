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
) -> int:
    """Run until SIGINT/SIGTERM, or until a new process took the listeners over; exit code
    0 after a clean staged shutdown. ``takeover``: the runtime socket of the running quiesce
    whose listeners this one takes (``quiesce run --takeover``). SIGHUP reloads
    ``config_path`` (:meth:`App.reload`; without one it is logged and ignored).
    ``startup_hint``: a line printed after a start-up error (the demo's ``--port 0``)."""
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
            task = asyncio.create_task(_sighup(app))
            hups.add(task)
            task.add_done_callback(hups.discard)

        loop.add_signal_handler(signal.SIGHUP, sighup)
        # logrotate: the access log's files opened again (a reload does it too)
        loop.add_signal_handler(signal.SIGUSR1, lambda: logs.reopen(app.table.access_log))
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
        await stop.wait()
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


__all__ = ["install_event_loop_policy", "run_forever"]
