"""A stuck reload worker (review 14 R11): stopped with SIGSTOP, as a worker swapped out or
stuck on a pathological file, it held every reload and every ``--takeover`` for ever. Now
the reload is refused after ``worker_timeout`` seconds naming it (logged, a ``config_reload``
``refused`` event), the worker is killed, the next reload starts a new one and works; while
the file is validated a takeover is not refused, and the reload then gives way to it."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from quiesce.app import App
from quiesce.app.reload_worker import RELOAD_WORKER_TIMEOUT
from quiesce.config.loader import ConfigError, load_config
from quiesce.core.events import EventQuery
from tests.reload.test_apply import config_text

pytestmark = pytest.mark.peers  # the reload worker is a Python process


async def started(tmp_path: Path) -> App:
    path = tmp_path / "quiesce.yaml"
    path.write_text(config_text(2))
    app = App(load_config(path), tmp_path, config_path=path)
    await app.start()
    return app


def worker_pid(app: App) -> int:
    worker = app.reloader.worker
    assert worker is not None
    (pid,) = getattr(worker, "_processes")  # noqa: B009 - no public handle on it
    return int(pid)


async def until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not condition():
        assert loop.time() < end, "condition not met"
        await asyncio.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie: dead
    except FileNotFoundError:
        return True


async def test_a_stuck_worker_is_killed_and_the_reload_refused(tmp_path: Path) -> None:
    app = await started(tmp_path)
    try:
        await app.reload("test")  # starts the worker
        stuck = worker_pid(app)
        os.kill(stuck, signal.SIGSTOP)
        app.reloader.worker_timeout = 2.0
        (tmp_path / "quiesce.yaml").write_text(config_text(3))
        with pytest.raises(ConfigError) as refused:
            await app.reload("test")
        (problem,) = refused.value.problems
        assert "reload worker" in problem and "did not answer in 2 s" in problem
        assert "nothing changed" in problem
        assert len(app.registry.pools["web"].servers) == 2
        reloads = app.admin.events(EventQuery(kind="config_reload"))
        (event,) = [e for e in reloads if e.to == "refused"]
        assert event.detail["problems"] == [problem]
        await until(lambda: gone(stuck))
        assert app.reloader.worker is None and not app.reloading
        # 2 s was for the stopped worker: a new one starts (a Python process) and validates
        # in more than that on a loaded machine (refused at load 9-11)
        app.reloader.worker_timeout = RELOAD_WORKER_TIMEOUT
        plan = await app.reload("test")  # a new worker
        assert [c.target for c in plan.changes] == ["web/s2"]
        assert worker_pid(app) != stuck
    finally:
        await app.stop(1.0)


async def test_a_takeover_is_not_held_by_a_reload_waiting_for_its_worker(
    tmp_path: Path,
) -> None:
    app = await started(tmp_path)
    try:
        await app.reload("test")
        stuck = worker_pid(app)
        os.kill(stuck, signal.SIGSTOP)
        (tmp_path / "quiesce.yaml").write_text(config_text(3))
        reload = asyncio.create_task(app.reload("test"))
        await until(lambda: app.reloader.validating)
        assert not app.reloading  # the takeover handler's question: not refused
        app.takeover_busy = True  # what the takeover handler sets next
        with pytest.raises(ConfigError) as abandoned:
            await reload  # at once: the stopped worker is not waited for, but killed
        assert "reload abandoned: a takeover" in abandoned.value.problems[0]
        assert len(app.registry.pools["web"].servers) == 2  # nothing applied
        await until(lambda: gone(stuck))
        app.takeover_busy = False  # the takeover abandoned: reloads work again
        assert len((await app.reload("test")).changes) == 1
    finally:
        app.takeover_busy = False
        await app.stop(1.0)


async def test_a_stop_kills_a_worker_still_validating(tmp_path: Path) -> None:
    """A reload cancelled by a stop (the admin server's shutdown cancels its request, as a
    takeover's old process does) with its worker stuck: the stop kills the worker (left
    alone, the executor's thread joined at exit waited for it: the old process never
    exited); no new worker is started for the cancelled reload."""
    app = await started(tmp_path)
    stuck = None
    try:
        await app.reload("test")
        stuck = worker_pid(app)
        os.kill(stuck, signal.SIGSTOP)
        reload = asyncio.create_task(app.reload("test"))
        await until(lambda: app.reloader.validating)
        reload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reload
    finally:
        await app.stop(1.0)
    assert stuck is not None
    pid = stuck
    try:
        await until(lambda: gone(pid))
        assert app.reloader.worker is None
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)
