"""Live reload applied in-process (issue 14): the file validated in the reload worker
process, the connection budget re-planned (a file that does not fit is refused, naming the
limit; one that fits moves a derived limit), and a takeover refused while a reload runs."""

from __future__ import annotations

import asyncio
import gc
import itertools
import pickle
import socket
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from quiesce.app import App
from quiesce.app.reload import check_for_reload
from quiesce.config.loader import ConfigError, load_config
from quiesce.config.models import Config
from quiesce.dataplane.limits import raise_nofile, reserve_for
from quiesce.frontends.runtime_socket import takeover


def config_text(servers: int, *, max_idle: int = 1, max_connections: int | None = None) -> str:
    lines = "\n".join(
        f"      - {{name: s{i}, address: 127.0.0.1:{9000 + i}}}" for i in range(servers)
    )
    limits = "" if max_connections is None else f"limits: {{max_connections: {max_connections}}}\n"
    return f"""
admin:
  listen: 127.0.0.1:0
state:
  sqlite: null
{limits}pools:
  web:
    max_idle_per_server: {max_idle}
    servers:
{lines}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""


async def started(tmp_path: Path, text: str) -> App:
    path = tmp_path / "quiesce.yaml"
    path.write_text(text)
    app = App(load_config(path), tmp_path, config_path=path)
    await app.start()
    return app


@pytest.mark.peers  # the reload worker is a Python process
async def test_a_reload_is_validated_in_the_worker_and_applied(tmp_path: Path) -> None:
    app = await started(tmp_path, config_text(3))
    try:
        (tmp_path / "quiesce.yaml").write_text(config_text(1200))
        plan = await app.reload("test")
        assert len(plan.changes) == 1197
        pool = app.registry.pools["web"]
        assert len(pool.servers) == len(pool.candidates) == 1200  # every piece came back
        assert app.config.pools["web"].servers[-1].name == "s1199"
        assert app.config == load_config(tmp_path / "quiesce.yaml")  # as quiesce check reads it
        events = app.admin.events()
        assert events[-1].kind.value == "config_reload" and events[-1].to == "applied"
        # the next reload: the worker sends back only what changed since (s7 re-weighted,
        # s1200 added); the other servers are the running config's own objects
        before = app.config.pools["web"].servers
        text = config_text(1201).replace(
            "{name: s7, address: 127.0.0.1:9007}", "{name: s7, address: 127.0.0.1:9007, weight: 9}"
        )
        (tmp_path / "quiesce.yaml").write_text(text)
        plan = await app.reload("test")
        assert sorted(c.target for c in plan.changes) == ["web/s1200", "web/s7"]
        assert gc.isenabled()  # off during the reload only
        after = app.config.pools["web"].servers
        assert app.config == load_config(tmp_path / "quiesce.yaml")
        assert after[0] is before[0] and after[1199] is before[1199]
        assert after[7] is not before[7] and after[7].weight == 9
        assert app.registry.pools["web"].server("s7").weight == 9
        # a bad file: every problem, nothing changes
        (tmp_path / "quiesce.yaml").write_text(
            config_text(2).replace("127.0.0.1:9001", "127.0.0.1:70000")
        )
        with pytest.raises(ConfigError) as bad:
            await app.reload("test")
        assert any("port 70000" in p for p in bad.value.problems)
        assert gc.isenabled()  # a refused reload too
        assert len(app.registry.pools["web"].servers) == 1201
    finally:
        await app.stop(1.0)


def test_the_worker_sends_only_the_servers_changed_since_the_running_file(
    tmp_path: Path,
) -> None:
    """check_for_reload as the worker runs it: the first answer has every server; given the
    generation it answered before, only the new or changed ones and the order of names; a
    generation it does not have (another worker's, forgotten) gets every server again."""
    path = tmp_path / "quiesce.yaml"
    path.write_text(config_text(600))
    first = check_for_reload(str(path), None)
    assert first["ok"] and first["base"] is None
    order, chunks = first["servers"]["web"]
    assert order is None and sum(len(pickle.loads(c)) for c in chunks) == 600
    path.write_text(config_text(601).replace("127.0.0.1:9003}", "127.0.0.1:9999}"))
    second = check_for_reload(str(path), first["generation"])
    assert second["base"] == first["generation"]
    order, chunks = second["servers"]["web"]
    assert len(order) == 601 and order[3] == "s3"
    assert [s.name for c in chunks for s in pickle.loads(c)] == ["s3", "s600"]
    again = check_for_reload(str(path), 12345)
    assert again["base"] is None and again["servers"]["web"][0] is None
    assert check_for_reload(str(path), first["generation"])["base"] is None  # forgotten


@pytest.mark.peers
async def test_a_reload_that_does_not_fit_the_connection_limit_is_refused(
    tmp_path: Path,
) -> None:
    """limits.max_connections set so that the first file fits in RLIMIT_NOFILE and the
    second, with more idle upstream connections reserved, does not: refused, naming it."""
    nofile = raise_nofile()
    first = load_config_text(tmp_path, config_text(2, max_idle=64))
    room = (nofile - reserve_for(first, nofile).total) // 2
    text = config_text(2, max_idle=64, max_connections=room)
    app = await started(tmp_path, text)
    try:
        assert app.budget is not None and app.budget.max_connections == room
        (tmp_path / "quiesce.yaml").write_text(config_text(4, max_idle=64, max_connections=room))
        with pytest.raises(ConfigError) as refused:
            await app.reload("test")
        (problem,) = refused.value.problems
        assert problem.startswith("limits: limits.max_connections: ")
        assert "RLIMIT_NOFILE" in problem and "idle upstream connections 256" in problem
        assert len(app.registry.pools["web"].servers) == 2  # nothing changed
        assert app.budget.max_connections == room
    finally:
        await app.stop(1.0)


@pytest.mark.peers
async def test_a_derived_connection_limit_follows_the_servers(tmp_path: Path) -> None:
    app = await started(tmp_path, config_text(2, max_idle=64))
    try:
        assert app.budget is not None and app.gate is not None
        before = app.budget.max_connections
        (tmp_path / "quiesce.yaml").write_text(config_text(102, max_idle=64))
        await app.reload("test")
        assert app.budget.reserve.idle_upstreams == 102 * 64
        assert app.budget.max_connections == before - (100 * 64) // 2
        assert app.gate.limit == app.budget.max_connections
    finally:
        await app.stop(1.0)


def load_config_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "first.yaml"
    path.write_text(text)
    return load_config(path)


@pytest.mark.loopback  # a Unix socket pair
async def test_a_takeover_is_refused_while_a_reload_runs(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    handed: list[bool] = []
    app = SimpleNamespace(
        takeover_busy=False,
        reloading=True,
        listening=lambda: pytest.fail("no listener may be handed over"),
        handed_over=lambda keep_path: handed.append(keep_path),
    )
    reader, writer = await asyncio.open_connection(sock=ours)
    try:
        await takeover.serve(app, None, writer, reader)
        theirs.setblocking(False)
        answer = await asyncio.get_running_loop().sock_recv(theirs, 4096)
        assert answer == (
            b"Takeover refused: a reload of the config file is in progress in this process; "
            b"try again once it is done.\n\n"
        )
        assert not handed and app.takeover_busy is False
    finally:
        writer.close()
        theirs.close()


@pytest.mark.peers
async def test_app_says_it_is_reloading_while_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``reloading`` is what the runtime socket's _takeover looks at: true from the plan to
    the end of the apply; not while the file is validated in the worker (nothing changed
    yet: a takeover goes on and the reload gives way, review 14 R11)."""
    app = await started(tmp_path, config_text(2))
    try:
        (tmp_path / "quiesce.yaml").write_text(config_text(3))
        assert not app.reloading
        planning: list[bool] = []
        replan = app.reloader._replan_connections

        def spy(new: Config) -> Any:
            planning.append(app.reloading)
            return replan(new)

        monkeypatch.setattr(app.reloader, "_replan_connections", spy)
        task = asyncio.create_task(app.reload("test"))
        await asyncio.sleep(0)
        assert app.reloader.validating and not app.reloading
        await task
        assert planning == [True]
        assert not app.reloading
    finally:
        await app.stop(1.0)


@pytest.mark.peers  # the reload worker is a Python process
async def test_a_reload_is_applied_in_slices_of_a_millisecond_each_followed_by_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 servers added, each change taking 0.25 ms of a fake clock: applied in slices of
    at most 1 ms of work (4 changes, 5 with the one that crosses the line), the event loop
    turning between two slices and never inside one (5 ms slices held every request in
    flight for 5 ms: the p99 during a reload 3-6x the idle p99)."""
    import quiesce.app.reload as reload_module
    import quiesce.app.reload_pace as pace_module

    app = await started(tmp_path, config_text(3))
    clock = [0.0]
    fake = SimpleNamespace(perf_counter=lambda: clock[0], thread_time=lambda: clock[0])
    monkeypatch.setattr(pace_module, "time", fake)
    turns = [0]
    seen: list[int] = []  # the loop's turn count at each change
    apply_change = reload_module.Reloader._apply_change

    def timed(self: reload_module.Reloader, change: Any, new: Config, ctx: Any) -> None:
        apply_change(self, change, new, ctx)
        if change.kind == "server_added":
            seen.append(turns[0])
            clock[0] += 0.00025

    async def turning() -> None:
        while True:
            turns[0] += 1
            await asyncio.sleep(0)

    monkeypatch.setattr(reload_module.Reloader, "_apply_change", timed)
    counter = asyncio.create_task(turning())
    try:
        (tmp_path / "quiesce.yaml").write_text(config_text(1003))
        plan = await app.reload("test")
        assert len(plan.changes) == len(seen) == 1000
        slices = [len(list(group)) for _, group in itertools.groupby(seen)]
        assert max(slices) <= 5 and len(slices) >= 200  # one slice each turn, at most
        assert len(app.registry.pools["web"].servers) == 1003
    finally:
        counter.cancel()
        await app.stop(1.0)


@pytest.mark.peers
async def test_a_reload_is_planned_in_a_thread_with_short_switches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan (every server of the two files compared) runs in a thread, with the
    interpreter's switch interval at RELOAD_SWITCH meanwhile (a pure Python thread holds the
    GIL for the switch interval, 5 ms by default, while the event loop waits for it); the
    interval is restored after."""
    import quiesce.app.reload as reload_module

    app = await started(tmp_path, config_text(3))
    planned: list[tuple[bool, float]] = []
    plan_reload = reload_module.plan_reload

    def spying(*args: Any) -> Any:
        planned.append(
            (threading.current_thread() is threading.main_thread(), sys.getswitchinterval())
        )
        return plan_reload(*args)

    monkeypatch.setattr(reload_module, "plan_reload", spying)
    before = sys.getswitchinterval()
    try:
        (tmp_path / "quiesce.yaml").write_text(config_text(4))
        plan = await app.reload("test")
        assert [c.kind for c in plan.changes] == ["server_added"]
        assert planned == [(False, reload_module.RELOAD_SWITCH)]
        assert sys.getswitchinterval() == before
    finally:
        await app.stop(1.0)


@pytest.mark.peers
async def test_the_switch_interval_stays_short_until_the_writes_and_log_lines_are_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's writer thread and the process log's thread hold the GIL for the switch
    interval while they commit a reload's rows and format its lines; the reload keeps the
    interval at RELOAD_SWITCH until its commit is awaited and the log's queue is empty (the
    event loop waited up to 5 ms for the GIL each time), then puts the old one back."""
    import quiesce.app.reload as reload_module

    app = await started(tmp_path, config_text(3))
    seen: list[tuple[str, float]] = []
    durable = app.admin.durable

    async def watched_durable() -> None:
        seen.append(("commit", sys.getswitchinterval()))
        await durable()

    backlog = iter([400, 40, 16, 500])  # 16 or fewer: written (others may keep coming)

    def watched_backlog() -> int:
        seen.append(("log", sys.getswitchinterval()))
        return next(backlog, 0)

    monkeypatch.setattr(app.admin, "durable", watched_durable)
    monkeypatch.setattr(reload_module.logs, "process_log_backlog", watched_backlog)
    before = sys.getswitchinterval()
    try:
        (tmp_path / "quiesce.yaml").write_text(config_text(5))
        await app.reload("test")
        short = reload_module.RELOAD_SWITCH
        assert seen == [("commit", short), ("log", short), ("log", short), ("log", short)]
        assert sys.getswitchinterval() == before
    finally:
        await app.stop(1.0)


@pytest.mark.peers
async def test_a_drained_server_a_reload_removes_and_puts_back_stays_in_drain(
    tmp_path: Path,
) -> None:
    """An operator drains s1 (10 minutes); a reload drops it from the file (drained to be
    deleted, one connection left) and the next puts it back before its deletion: it is in
    drain again with the operator's deadline and name, not enabled (a server taken out at
    3 a.m. does not come back because of two edits of the file)."""
    from quiesce.admin import CommandContext
    from quiesce.core.states import Admin, Cause

    app = await started(tmp_path, config_text(3))
    try:
        alice = CommandContext("alice", Cause.API, "disk swap")
        app.admin.drain("web/s1", alice, timeout=600)
        record = app.registry.find_server("web/s1").admin
        server = app.registry.find_server("web/s1")
        server.connections = 1
        text = config_text(3).replace("      - {name: s1, address: 127.0.0.1:9001}\n", "")
        (tmp_path / "quiesce.yaml").write_text(text)
        plan = await app.reload("test")
        assert [c.kind for c in plan.changes] == ["server_removed"]
        assert server.removing
        (tmp_path / "quiesce.yaml").write_text(config_text(3))
        plan = await app.reload("test")
        assert [c.kind for c in plan.changes] == ["server_restored"]
        assert not server.removing
        assert server.admin.state is Admin.DRAIN
        assert (server.admin.deadline, server.admin.actor) == (record.deadline, "alice")
        server.connections = 0
        assert app.admin._finish_removals() is False
        assert app.registry.find_server("web/s1") is server
    finally:
        await app.stop(1.0)


@pytest.mark.peers
async def test_the_last_slice_the_health_sync_and_the_log_lines_each_get_their_own_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What follows the last change (the end of the store batch, the health manager's sync
    over every server, the reload's log lines and its event) used to run in one callback
    of the event loop with the last slice: 3-5 ms of CPU at 10,000 servers, three slices'
    worth. Now a pause (turns of the loop) separates the last slice, the sync and what
    follows."""
    import quiesce.app.reload as reload_module

    app = await started(tmp_path, config_text(3))
    turns = [0]
    marks: dict[str, int] = {}
    apply_change = reload_module.Reloader._apply_change

    def marked(self: reload_module.Reloader, change: Any, new: Config, ctx: Any) -> None:
        apply_change(self, change, new, ctx)
        marks["last change"] = turns[0]

    synced = app.admin.on_monitors_changed

    def sync() -> None:
        marks["sync"] = turns[0]
        if synced is not None:
            synced()

    def event(*args: Any) -> None:
        marks["event"] = turns[0]

    async def turning() -> None:
        while True:
            turns[0] += 1
            await asyncio.sleep(0)

    monkeypatch.setattr(reload_module.Reloader, "_apply_change", marked)
    monkeypatch.setattr(reload_module.Reloader, "_event", lambda self, *a: event(*a))
    monkeypatch.setattr(app.admin, "on_monitors_changed", sync)
    counter = asyncio.create_task(turning())
    try:
        (tmp_path / "quiesce.yaml").write_text(config_text(5))
        await app.reload("test")
        assert marks["last change"] < marks["sync"] < marks["event"]
    finally:
        counter.cancel()
        await app.stop(1.0)
