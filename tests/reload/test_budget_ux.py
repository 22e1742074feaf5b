"""A derived client-connection limit moved by runtime adds and deletions is visible and
guarded (review 90 F14: 283 POSTs answered 201 with no log line took it from 9,140 to 20
client connections, and the "limit reached" warning blamed limits.max_connections, not
set). Each add or deletion that moves it logs ``old → new`` and why; an add that leaves it
under three quarters of what the file's servers alone allow is logged at WARNING and
answered with a warning (REST ``warnings``, the CLI's stderr, the runtime socket's answer);
one that would take it under the floor (the smaller of 1,000 and half the file's) is
refused, 409, nothing changed."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from pathlib import Path

import httpx
import pytest

from quiesce.app import App
from quiesce.dataplane import limits
from tests.api.harness import ADMIN, config_dict
from tests.reload.test_runtime_budget import socket_cmd, start, url
from tests.reload.test_runtime_budget_delete import limit, maintenance

NOFILE = 20000  # the review's RLIMIT_NOFILE
IDLE = 2000  # each server of web reserves 2,000 descriptors: 1,000 client connections


@pytest.fixture(autouse=True)
def _nofile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "raise_nofile", lambda: NOFILE)


def text() -> str:
    data = config_dict(runtime_socket="rt.sock")
    data["pools"] = {
        "web": {
            "max_idle_per_server": IDLE,
            "servers": [{"name": f"w{i}", "address": f"127.0.0.1:{18500 + i}"} for i in (0, 1)],
        }
    }
    data["services"] = {"www": {"listen": "127.0.0.1:0", "pool": "web"}}
    return json.dumps(data)


async def add(client: httpx.AsyncClient, app: App, name: str) -> httpx.Response:
    return await client.post(
        f"{url(app)}/api/v1/pools/web/servers",
        json={"name": name, "address": "127.0.0.1:18510"},
        auth=ADMIN,
    )


async def create_with_the_cli(app: App, ref: str) -> tuple[int | None, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quiesce",
        "create",
        "server",
        ref,
        "127.0.0.1:18511",
        env={
            **os.environ,
            "QUIESCE_HOSTS": f"127.0.0.1:{app.admin_server.port}",
            "QUIESCE_USER": ADMIN[0],
            "QUIESCE_PASSWORD": ADMIN[1],
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


def lines(caplog: pytest.LogCaptureFixture, level: int, part: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and part in r.message]


async def maxconn(app: App) -> int:
    found = re.search(r"^Maxconn: (\d+)$", await socket_cmd(app, "show info"), re.M)
    assert found is not None
    return int(found.group(1))


@pytest.mark.peers  # the CLI is a Python process
async def test_runtime_adds_that_cut_the_derived_limit_are_logged_warned_and_floored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quiesce")
    app = await start(tmp_path, text())
    try:
        assert app.budget is not None and app.gate is not None
        own = app.budget.max_connections  # the file's 2 servers alone: 7,593 at NOFILE 20000
        step = IDLE // 2
        async with httpx.AsyncClient(timeout=30) as client:
            # r0: a small cut (under a quarter of the file's): 201, no warning, an INFO line
            r = await add(client, app, "r0")
            assert r.status_code == 201, r.text
            assert "warnings" not in r.json()
            assert await limit(client, app) == own - step
            assert lines(caplog, logging.INFO, f"server web/r0 added: connection limit {own} → ")

            # r1: under three quarters of the file's: 201 with a warning naming old → new
            r = await add(client, app, "r1")
            assert r.status_code == 201, r.text
            (warning,) = r.json()["warnings"]
            assert f"cut from {own - step} to {own - 2 * step}" in warning, warning
            assert "max_idle_per_server" in warning and "limits.max_connections" in warning
            assert lines(
                caplog, logging.WARNING, f"server web/r1 added: connection limit {own - step} → "
            )

            # the CLI's create server prints it on stderr, exit 0
            rc, out, err = await create_with_the_cli(app, "web/c1")
            assert rc == 0, (out, err)
            assert "web/c1: created" in out and "warning: client connection limit cut" in err
            # the runtime socket's add server answers it after HAProxy's line
            answer = await socket_cmd(app, "add server web/s1 127.0.0.1:18512")
            assert "New server registered.\nWarning: client connection limit cut" in answer
            n = 4  # r0, r1, c1, s1
            while own - (n + 1) * step >= 1000:
                assert (await add(client, app, f"x{n}")).status_code == 201
                n += 1
            assert await limit(client, app) == own - n * step
            assert await maxconn(app) == own - n * step

            # the next add would go under the floor of 1,000: refused, nothing changed
            before = [s.name for s in app.registry.pools["web"].servers]
            r = await add(client, app, "over")
            assert r.status_code == 409, r.text
            detail = r.json()["detail"]
            assert "server web/over not added" in detail and "under the floor of 1000" in detail
            assert f"from {own - n * step} to {own - (n + 1) * step}" in detail
            assert "RLIMIT_NOFILE 20000" in detail
            assert [s.name for s in app.registry.pools["web"].servers] == before
            assert await limit(client, app) == own - n * step
            assert "not added" in await socket_cmd(app, "add server web/over2 127.0.0.1:18513")

            # "limit reached" names what really sets the limit (derived, not the setting)
            app.gate.count = app.gate.limit
            app.gate.update()
            (reached,) = lines(caplog, logging.WARNING, "connection limit reached")
            assert "derived, limits.max_connections not set" in reached, reached
            assert f"RLIMIT_NOFILE {NOFILE}" in reached and "idle upstream" in reached
            app.gate.count = 0
            app.gate.update()

            # a deletion gives it back, logged at INFO
            await maintenance(client, app, "r0")
            r = await client.delete(f"{url(app)}/api/v1/servers/web/r0", auth=ADMIN)
            assert r.status_code == 200, r.text
            assert await limit(client, app) == own - (n - 1) * step
            assert lines(
                caplog,
                logging.INFO,
                f"servers deleted at runtime: connection limit {own - n * step} → "
                f"{own - (n - 1) * step}",
            )
    finally:
        await app.stop(1.0)


@pytest.mark.loopback
async def test_a_start_restoring_runtime_servers_under_the_warning_level_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The state store's runtime servers restored at start take the derived limit under
    three quarters of the file's: the start goes on (it fits) and says so at WARNING."""
    body = json.loads(text())
    body["state"] = {"sqlite": "state.db"}
    app = await start(tmp_path, json.dumps(body))
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            for name in ("r0", "r1", "r2"):
                assert (await add(client, app, name)).status_code == 201
        assert app.budget is not None
        low = app.budget.max_connections
    finally:
        await app.stop(1.0)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="quiesce")
    app = await start(tmp_path, json.dumps(body))
    try:
        assert app.budget is not None and app.budget.max_connections == low
        (line,) = lines(caplog, logging.WARNING, "runtime servers restored: connection limit")
        assert f"→ {low} client connections" in line, line
    finally:
        await app.stop(1.0)
