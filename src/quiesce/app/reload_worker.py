"""The reload worker (issue 14, DESIGN §6): the process a live reload validates the config
file in (:func:`check_for_reload`), so that parsing and validating a big file does not take
the serving process's GIL, and what comes back from it (:class:`Loaded`).
:class:`quiesce.app.reload.Reloader` starts it at the first reload and keeps it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import resource_tracker
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any

from quiesce.app.build import skew_problem
from quiesce.config.models import Config
from quiesce.config.reparse import ParseCache

RELOAD_CHUNK = 50
"""Servers per piece when the validated file comes back from the reload worker: each piece
is unpickled between two turns of the event loop (~1 ms each; 500 took ~16 ms)."""

RELOAD_WORKER_TIMEOUT = 30.0
"""Seconds the reload worker has to answer (start, at the first reload, and validate the
file): past them it is killed, the reload refused naming the limit (nothing changed) and a
new worker started by the next reload (review 14 R11: a worker stopped or stuck held every
reload, and every ``--takeover``, for ever)."""

WORKER_POLL = 0.1
"""Seconds between two looks, while the reload worker validates, at a takeover begun."""
TAKEOVER_BEGAN = (
    "reload abandoned: a takeover (quiesce run --takeover) began while the file was "
    "validated; nothing changed here: reload the new process"
)


class Loaded:
    """A reload's file as the worker sent it back: the validated config without its pools'
    servers, and per pool the servers unpickled: all of them, or with ``order`` (the names
    of all of them) only the new or changed ones (the worker had the running file)."""

    __slots__ = ("config", "pieces")

    def __init__(
        self, config: Config, pieces: dict[str, tuple[list[str] | None, list[Any]]]
    ) -> None:
        self.config = config
        self.pieces = pieces

    def assemble(self, running: Config) -> Config:
        """The validated config, whole: each pool's servers in the file's order, the
        running config's own objects for those the worker did not send (the same, so the
        plan takes them as unchanged by identity)."""
        pools: dict[str, Any] = {}
        for name, (order, fresh) in self.pieces.items():
            servers = fresh
            if order is not None:
                ours = {s.name: s for s in running.pools[name].servers}
                ours.update((s.name, s) for s in fresh)
                servers = [ours[n] for n in order]
            pools[name] = self.config.pools[name].model_copy(update={"servers": servers})
        # the same validated objects, put back together (model_copy does not validate)
        return self.config.model_copy(update={"pools": pools})


WORKER_IGNORES = (signal.SIGHUP, signal.SIGUSR1)
"""Signals that mean something to ``quiesce run`` (reload, reopen the access log) and whose
default action would end the reload worker and multiprocessing's resource tracker:
``systemctl kill -s HUP`` sends them to every process of the unit (review 14 R3: the worker
and the tracker died, five tracebacks in the journal)."""


@contextlib.contextmanager
def _held() -> Iterator[None]:
    """:data:`WORKER_IGNORES` blocked in this thread meanwhile: a process started now
    inherits the mask, through the exec of ``spawn`` (a handler would not survive it), and
    has them blocked from its first instruction. One sent to us meanwhile is delivered when
    the block ends (or at once to another thread)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_IGNORES)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _WorkerProcess(SpawnProcess):
    def start(self) -> None:
        with _held():  # the resource tracker too, if it starts (again) here
            super().start()


class _WorkerContext(SpawnContext):
    Process = _WorkerProcess


def worker_context() -> SpawnContext:
    """``spawn``, with :data:`WORKER_IGNORES` blocked in what it starts: the reload worker,
    and multiprocessing's resource tracker, started here if not running (the executor's
    queues would start it otherwise, unblocked)."""
    with _held():
        resource_tracker.ensure_running()
    return _WorkerContext()


def reload_worker_init(parent: int) -> None:
    """The reload worker's first act: stdin, stdout and stderr on /dev/null (a supervisor
    or a test reading our output sees it end when we end), :data:`WORKER_IGNORES` ignored
    (they were blocked until now: :func:`worker_context`), and a SIGKILL when its parent
    dies (Linux's PR_SET_PDEATHSIG: no worker left behind by a ``kill -9``). (It is not
    given a lower CPU priority: nice +10 made a reload on a loaded machine take 2-3 times
    longer, BENCHMARKS.md.)"""
    for sig in WORKER_IGNORES:
        signal.signal(sig, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        os._exit(0)


_VALIDATED: dict[int, Config] = {}
"""In the reload worker: the configs it validated last, by generation (the one running in
the serving process, and the newest)."""
_GENERATIONS = itertools.count(1)
_PARSED = ParseCache()
"""In the reload worker: the last file's server lines, parsed and validated: a reload parses
and validates only the lines that changed (quiesce.config.reparse; a reload adding 1,000
servers to 10,000 took ~0.5 s of this process's CPU, now ~0.04 s)."""


def check_for_reload(
    path: str, base: int | None = None, build: tuple[str, str] | None = None
) -> dict[str, Any]:
    """In the reload worker process: validate the file exactly as ``quiesce check`` does
    (load_config; parsing and validating only the server lines changed since the last file,
    quiesce.config.reparse), plus what ``quiesce run`` refuses at start (raw sockets it cannot
    open), and the warnings. Returns plain data: ``ok`` False with the problems, or the
    validated Config pickled without its servers and, per pool, the servers in pickled
    pieces of RELOAD_CHUNK (so the serving process unpickles them a piece at a time).
    ``base``: the generation of the file the serving process runs (None: it has none of
    ours); if this worker still has it, only the servers new or changed since are sent,
    with the pool's order of names (``base`` is echoed; None: every server sent).
    ``build``: the serving process's quiesce.app.build.BUILD; refused if ours or the disk's
    differs (an upgrade since it started: quiesce.app.build.skew_problem)."""
    from quiesce.config.loader import ConfigError, config_warnings
    from quiesce.config.reparse import load_config
    from quiesce.health import startup_problems

    skew = None if build is None else skew_problem(build)
    if skew is not None:
        return {"ok": False, "problems": [skew], "source": path}

    try:
        config = load_config(path, _PARSED)
        problems = startup_problems(config)
        if problems:
            raise ConfigError(problems, path)
    except ConfigError as exc:
        return {"ok": False, "problems": list(exc.problems), "source": exc.source}
    previous = _VALIDATED.get(base) if base is not None else None
    generation = os.getpid() << 32 | next(_GENERATIONS)  # unique to this worker too
    _VALIDATED.clear()
    if previous is not None and base is not None:
        _VALIDATED[base] = previous
    _VALIDATED[generation] = config
    servers: dict[str, tuple[list[str] | None, list[bytes]]] = {}
    for name, pool in config.pools.items():
        old = previous.pools.get(name) if previous is not None else None
        fresh, order = pool.servers, None
        if old is not None:
            theirs = {s.name: s for s in old.servers}
            # the servers of unchanged lines are the same objects (_PARSED): no == each
            fresh = [s for s in pool.servers if (o := theirs.get(s.name)) is not s and o != s]
            order = [s.name for s in pool.servers]
        chunks = [
            pickle.dumps(fresh[i : i + RELOAD_CHUNK], pickle.HIGHEST_PROTOCOL)
            for i in range(0, len(fresh), RELOAD_CHUNK)
        ]
        servers[name] = (order, chunks)
    bare = config.model_copy(
        update={"pools": {n: p.model_copy(update={"servers": []}) for n, p in config.pools.items()}}
    )
    return {
        "ok": True,
        "config": pickle.dumps(bare, pickle.HIGHEST_PROTOCOL),
        "servers": servers,
        "warnings": config_warnings(config, Path(path).resolve().parent),
        "generation": generation,
        "base": base if previous is not None else None,
    }


def kill_worker(worker: ProcessPoolExecutor | None) -> list[int]:
    """SIGKILL the processes of a reload worker; their pids."""
    pids = []
    # ProcessPoolExecutor has no public handle on its processes
    for process in list((getattr(worker, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.kill()
            pids.append(process.pid)
    return pids


__all__ = [
    "RELOAD_CHUNK",
    "RELOAD_WORKER_TIMEOUT",
    "TAKEOVER_BEGAN",
    "WORKER_IGNORES",
    "WORKER_POLL",
    "Loaded",
    "check_for_reload",
    "kill_worker",
    "reload_worker_init",
    "worker_context",
]
