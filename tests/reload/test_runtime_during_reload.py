"""Runtime server changes and a live reload never interleave (review 14 R12, R13).

A reload is held deterministically in the middle of its apply (after its first slice of
changes: the pacer's pause is held) or just before it (``_prepare_reload`` held, the plan
made); runtime changes sent meanwhile through the REST API (httpx, as the dashboard and an
autoscaler send them), the runtime socket and the CLI (a ``quiesce`` process) wait for the
reload's end and are applied against its new state, or, past the bound, are refused with
nothing changed (the CLI sends them again). A reload that fails while it applies reports
what it applied, and the next reload works.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import quiesce.app.reload as reload_module
from quiesce.admin import reload_gate
from quiesce.app import App
from quiesce.config.loader import load_config
from quiesce.core.errors import QuiesceError
from quiesce.core.events import EventQuery

pytestmark = pytest.mark.peers  # the reload worker is a Python process; the CLI one too

AUTH = ("admin", "pw")


@functools.cache
def _hash() -> str:
    from quiesce.security import hash_password

    return hash_password("pw")


def config_text(weights: dict[str, int], extra: int = 0, prefix: str = "y") -> str:
    lines = [
        f"      - {{name: {name}, address: 127.0.0.1:{9000 + i}, weight: {w}}}"
        for i, (name, w) in enumerate(weights.items())
    ]
    lines += [
        f"      - {{name: {prefix}{i}, address: 127.0.0.2:{10000 + i}}}" for i in range(extra)
    ]
    body = "\n".join(lines)
    return f"""
admin:
  listen: 127.0.0.1:0
  runtime_socket: ./quiesce.sock
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state:
  sqlite: ./state.db
pools:
  web:
    max_idle_per_server: 1
    servers:
{body}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""


BASE = {"s0": 1, "s1": 1, "s2": 1, "s3": 1}


async def started(tmp_path: Path, text: str) -> App:
    path = tmp_path / "quiesce.yaml"
    path.write_text(text)
    app = App(load_config(path), tmp_path, config_path=path)
    await app.start()
    return app


def client(app: App) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.admin_server.port}", auth=AUTH, timeout=30
    )


async def socat(tmp_path: Path, line: str) -> str:
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "quiesce.sock"))
    writer.write(line.encode() + b"\n")
    await writer.drain()
    out = await reader.read()
    writer.close()
    return out.decode()


class MidApply:
    """Holds a reload at a pause between two slices of its changes (two or more applied, more
    to come, the running config not yet swapped) until :attr:`go` is set."""

    def __init__(self, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached, self.go = asyncio.Event(), asyncio.Event()
        hold, base = self, reload_module.Pacer

        class Held(base):  # type: ignore[misc,valid-type]
            async def pause(self) -> None:
                reloader = app.reloader
                if reloader.gate.closed and reloader._applied > 1 and not hold.go.is_set():
                    hold.reached.set()
                    await hold.go.wait()
                await base.pause(self)

        monkeypatch.setattr(reload_module, "Pacer", Held)


class BeforeApply:
    """Holds a reload once it has planned (the runtime overrides taken), before it applies."""

    def __init__(self, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached, self.go = asyncio.Event(), asyncio.Event()
        prepare = app.reloader._prepare_reload

        async def held(*args: Any) -> Any:
            self.reached.set()
            await self.go.wait()
            return await prepare(*args)

        monkeypatch.setattr(app.reloader, "_prepare_reload", held)


async def until(condition: Any, what: str) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), 20)
    except TimeoutError:
        pytest.fail(f"never: {what}")


async def test_runtime_changes_sent_during_a_reload_are_applied_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R12: a runtime add of a name the reload adds; R13: a PATCH of a weight the reload
    changes. Sent while a reload adding 2,000 servers is held in the middle of its apply:
    nothing of them lands before the reload's end, the reload is applied whole, then each
    change is applied against its new state (the add of y7 is a plain 409, the PATCH's
    answer says 2 -> 9, and that is what runs and what the store has); later reloads work."""
    app = await started(tmp_path, config_text(BASE))
    hold = MidApply(app, monkeypatch)
    try:
        (tmp_path / "quiesce.yaml").write_text(config_text({**BASE, "s1": 2}, extra=2000))
        reload = asyncio.create_task(app.reload("test"))
        await asyncio.wait_for(hold.reached.wait(), 30)
        pool = app.registry.pools["web"]
        assert 4 < len(pool.servers) < 2004  # in the middle of the apply
        async with client(app) as http:
            servers = "/api/v1/pools/web/servers"
            sent = [
                http.post(servers, json={"name": "y7", "address": "127.0.0.3:1"}),
                http.post(servers, json={"name": "r1", "address": "127.0.0.3:2"}),
                http.patch("/api/v1/servers/web/s1", json={"weight": 9}),
                http.put("/api/v1/servers/web/s2/weight", json={"weight": 5}),
            ]
            tasks = [asyncio.ensure_future(s) for s in sent]
            tasks.append(asyncio.ensure_future(socat(tmp_path, "add server web/r2 127.0.0.3:3")))
            tasks.append(asyncio.ensure_future(socat(tmp_path, "set weight web/s3 7")))
            await until(lambda: app.reloader.gate.waiting == 6, "6 changes waiting")
            assert not pool.has("r1") and not pool.has("r2")
            assert pool.server("s3").weight == 1 and pool.server("s2").weight == 1
            hold.go.set()
            plan = await reload
            add_y7, add_r1, patch, put, sock_add, sock_weight = await asyncio.gather(*tasks)
        assert len(plan.changes) == 2001 and not plan.kept  # applied whole, nothing failed
        reloads = app.admin.events(EventQuery(kind="config_reload"))
        assert [e.to for e in reloads] == ["applied"]
        # each change applied after the reload, against its new state
        assert add_y7.status_code == 409, add_y7.text
        assert "already has a server named 'y7'" in add_y7.json()["detail"]
        assert pool.server("y7").address == "127.0.0.2:10007"  # the file's
        assert add_r1.status_code == 201 and pool.has("r1")
        assert patch.status_code == 200 and patch.json()["changed"] == {"weight": [2, 9]}
        assert put.status_code == 200 and pool.server("s2").weight == 5
        assert sock_add.startswith("New server registered.") and pool.has("r2")
        assert pool.server("s3").weight == 7, sock_weight
        assert pool.server("s1").weight == 9
        await app.admin.durable()
        assert app.store.load_servers()["web/s1"]["weight"] == 9  # what runs is what is stored
        # later reloads work, and keep what was changed at runtime
        assert (await app.reload("test")).changes == []
        assert pool.server("s1").weight == 9 and len(pool.servers) == 2006
        (tmp_path / "quiesce.yaml").write_text(config_text({**BASE, "s1": 3}, extra=1999))
        plan = await app.reload("test")
        assert [c.target for c in plan.changes] == ["web/y1999"]
        assert [c.message for c in plan.kept] == ["web/s1: kept (added or changed at runtime)"]
        assert pool.server("s1").weight == 9
        assert not app.reloader.gate.closed and app.admin.reload_applying is False
    finally:
        hold.go.set()
        await app.stop(1.0)


async def test_past_the_bound_a_change_is_refused_and_the_cli_sends_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload still being applied after RUNTIME_WAIT: REST 503 ``reloading`` with
    Retry-After, the socket's refusal, nothing changed; ``quiesce create server`` sends its
    503 again and succeeds once the reload has ended."""
    monkeypatch.setattr(reload_gate, "RUNTIME_WAIT", 0.2)
    app = await started(tmp_path, config_text(BASE))
    hold = BeforeApply(app, monkeypatch)
    try:
        (tmp_path / "quiesce.yaml").write_text(config_text(BASE, extra=3))
        reload = asyncio.create_task(app.reload("test"))
        await asyncio.wait_for(hold.reached.wait(), 30)
        pool = app.registry.pools["web"]
        async with client(app) as http:
            r = await http.post(
                "/api/v1/pools/web/servers", json={"name": "r1", "address": "127.0.0.3:2"}
            )
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"] == "reloading"
            assert r.json()["detail"] == "a reload of the config file is being applied; retry"
            r = await http.patch("/api/v1/servers/web/s1", json={"weight": 9})
            assert r.status_code == 503
            r = await http.delete("/api/v1/servers/web/s1")
            assert r.status_code == 503
        answer = await socat(tmp_path, "add server web/r2 127.0.0.3:3")
        assert answer.startswith("A reload of the config file is being applied; retry")
        answer = await socat(tmp_path, "set server web/s1 addr 127.0.0.9")
        assert answer.startswith("A reload of the config file is being applied; retry")
        assert not pool.has("r1") and not pool.has("r2")
        assert pool.server("s1").weight == 1 and pool.server("s1").address == "127.0.0.1:9001"
        assert not app.store.load_servers()  # nothing stored either
        refused = app.reloader.gate.refused
        cli = asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "quiesce",
            "create",
            "server",
            "web/r3",
            "127.0.0.3:4",
            env={
                **os.environ,
                "QUIESCE_HOSTS": f"127.0.0.1:{app.admin_server.port}",
                "QUIESCE_USER": "admin",
                "QUIESCE_PASSWORD": "pw",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        proc = await cli
        await until(lambda: app.reloader.gate.refused >= refused + 2, "the CLI refused twice")
        assert not pool.has("r3")
        hold.go.set()
        plan = await reload
        assert len(plan.changes) == 3
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, (out, err)
        assert pool.has("r3")
    finally:
        hold.go.set()
        await app.stop(1.0)


async def test_a_reload_that_fails_while_applied_says_so_and_the_next_one_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """R12's second half: whatever makes the apply fail half-way, the reload is logged, has
    a ``config_reload`` event ``failed`` listing what was applied and what was not, and the
    next reload applies the rest (it re-plans the changes applied already: they converge)
    instead of failing on them ever after."""
    app = await started(tmp_path, config_text(BASE))
    try:
        add_server = app.admin.add_server

        def failing(pool: str, config: Any, ctx: Any, **kw: Any) -> Any:
            if config.name == "y5":
                raise RuntimeError("the store's disk is full")
            return add_server(pool, config, ctx, **kw)

        monkeypatch.setattr(app.admin, "add_server", failing)
        (tmp_path / "quiesce.yaml").write_text(config_text({**BASE, "s1": 2}, extra=10))
        with caplog.at_level(logging.ERROR, logger="quiesce"), pytest.raises(QuiesceError) as exc:
            await app.reload("test")
        assert exc.value.status_hint == 500
        assert "failed while being applied" in exc.value.message
        assert "after 6 of 11 change(s)" in exc.value.message
        assert any("failed while being applied" in r.getMessage() for r in caplog.records)
        (event,) = app.admin.events(EventQuery(kind="config_reload"))
        assert event.to == "failed"
        assert event.detail["applied"][0] == "web/s1: weight 1 → 2"
        assert [m.split(":")[0] for m in event.detail["applied"][1:]] == [
            f"web/y{i}" for i in range(5)
        ]
        assert event.detail["not_applied"][0].startswith("web/y5:")
        assert "disk is full" in event.detail["error"]
        pool = app.registry.pools["web"]
        assert pool.has("y4") and not pool.has("y5")
        assert not app.reloader.gate.closed and app.admin.reload_applying is False
        # runtime changes are taken again at once
        async with client(app) as http:
            r = await http.post(
                "/api/v1/pools/web/servers", json={"name": "r1", "address": "127.0.0.3:2"}
            )
            assert r.status_code == 201, r.text
        monkeypatch.setattr(app.admin, "add_server", add_server)
        plan = await app.reload("test")  # re-plans s1 and y0..y4 too: they converge
        assert len(plan.changes) == 11
        names = sorted(s.name for s in pool.servers)
        assert names == sorted([*BASE, "r1", *(f"y{i}" for i in range(10))])
        assert pool.server("s1").weight == 2
        assert app.admin.events(EventQuery(kind="config_reload"))[-1].to == "applied"
        assert (await app.reload("test")).changes == []
    finally:
        await app.stop(1.0)


async def test_a_server_put_back_in_the_file_and_deleted_while_the_reload_plans_is_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload drops s1 (drained to be deleted, one connection left); the next puts it back,
    and its last connection ends while that reload plans: the admin timer deletes it before
    the apply (the gate holds runtime changes, not the timer's deletions). The restore finds
    no server: it adds it again, the reload is applied whole (it failed: no server s1)."""
    app = await started(tmp_path, config_text(BASE))
    try:
        server = app.registry.find_server("web/s1")
        server.connections = 1
        without = config_text(BASE).replace(
            "      - {name: s1, address: 127.0.0.1:9001, weight: 1}\n", ""
        )
        assert "s1" not in without
        (tmp_path / "quiesce.yaml").write_text(without)
        plan = await app.reload("test")
        assert [c.kind for c in plan.changes] == ["server_removed"] and server.removing
        hold = BeforeApply(app, monkeypatch)
        (tmp_path / "quiesce.yaml").write_text(config_text(BASE))
        reload = asyncio.create_task(app.reload("test"))
        await asyncio.wait_for(hold.reached.wait(), 30)
        server.connections = 0
        app.admin._finish_removals()  # the admin timer's turn
        assert not app.registry.pools["web"].has("s1")
        hold.go.set()
        plan = await reload
        assert [c.kind for c in plan.changes] == ["server_restored"]
        again = app.registry.find_server("web/s1")
        assert again.address == "127.0.0.1:9001" and not again.removing
        assert app.admin.events(EventQuery(kind="config_reload"))[-1].to == "applied"
        assert (await app.reload("test")).changes == []
    finally:
        await app.stop(1.0)
