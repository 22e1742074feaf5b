"""Servers added at runtime count in the connection budget like the file's (review 14 R14):
a REST or runtime-socket ``add server`` that the descriptors cannot hold is refused naming
the limit, one that fits moves a derived limit, a start with the state store's runtime
servers plans them all, and a reload counts the runtime servers it keeps."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from quiesce.app import App
from quiesce.app.core import StartupError
from quiesce.config.loader import ConfigError, load_config
from quiesce.core.events import EventQuery
from quiesce.dataplane.limits import raise_nofile, reserve_for
from tests.api.harness import ADMIN, config_dict

IDLE = 64  # web's max_idle_per_server: each server of web reserves 64 descriptors


def text(servers: int = 2, max_connections: int | None = None) -> str:
    data = config_dict(runtime_socket="rt.sock")
    data["state"] = {"sqlite": "state.db"}
    data["pools"] = {
        "web": {
            "max_idle_per_server": IDLE,
            "servers": [
                {"name": f"w{i}", "address": f"127.0.0.1:{18300 + i}"} for i in range(servers)
            ],
        }
    }
    data["services"] = {"www": {"listen": "127.0.0.1:0", "pool": "web"}}
    if max_connections is not None:
        data["limits"] = {"max_connections": max_connections}
    return json.dumps(data)  # YAML reads JSON


def room(tmp_path: Path) -> int:
    """The most client connections the file of 2 servers leaves room for: configured so,
    the file fits exactly; ``room - IDLE // 2`` leaves room for one more server of web."""
    path = tmp_path / "probe.yaml"
    path.write_text(text())
    nofile = raise_nofile()
    return (nofile - reserve_for(load_config(path), nofile).total) // 2


async def start(tmp_path: Path, body: str) -> App:
    path = tmp_path / "quiesce.yaml"
    path.write_text(body)
    app = App(load_config(path), tmp_path, config_path=path)
    await app.start()
    return app


def url(app: App) -> str:
    return f"http://127.0.0.1:{app.admin_server.port}"


async def socket_cmd(app: App, line: str) -> str:
    assert app.runtime_socket is not None
    reader, writer = await asyncio.open_unix_connection(str(app.runtime_socket.path))
    writer.write(line.encode() + b"\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer.decode()


def post(client: httpx.AsyncClient, app: App, name: str, port: int) -> Any:
    return client.post(
        f"{url(app)}/api/v1/pools/web/servers",
        json={"name": name, "address": f"127.0.0.1:{port}"},
        auth=ADMIN,
    )


@pytest.mark.loopback
async def test_a_runtime_add_the_descriptors_cannot_hold_is_refused(tmp_path: Path) -> None:
    """limits.max_connections leaves room for one more server of web: the first REST add
    fits, the second (REST or socket) is refused with a 409 naming the limit, nothing
    added; a deleted runtime server gives its room back."""
    app = await start(tmp_path, text(max_connections=room(tmp_path) - IDLE // 2))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await post(client, app, "r1", 18401)
            assert r.status_code == 201, r.text
            assert app.budget is not None and app.budget.reserve.idle_upstreams == 3 * IDLE
            r = await post(client, app, "r2", 18402)
            assert r.status_code == 409, r.text
            detail = r.json()["detail"]
            assert "server web/r2 not added" in detail and "RLIMIT_NOFILE" in detail
            assert "limits.max_connections" in detail and "idle upstream connections 256" in detail
            answer = await socket_cmd(app, "add server web/r3 127.0.0.1:18403")
            assert "server web/r3 not added" in answer and "RLIMIT_NOFILE" in answer
            assert [s.name for s in app.registry.pools["web"].servers] == ["w0", "w1", "r1"]
            assert app.budget.reserve.idle_upstreams == 3 * IDLE  # as before the refusals
            refused = app.admin.events(EventQuery(kind="admin_refused"))
            assert [e.server for e in refused] == ["r2", "r3"]
            # r1 deleted: its room is back for the next add
            r = await client.post(
                f"{url(app)}/api/v1/servers/web/r1/maintenance", json={}, auth=ADMIN
            )
            assert r.status_code == 200, r.text
            r = await client.delete(f"{url(app)}/api/v1/servers/web/r1", auth=ADMIN)
            assert r.status_code == 200, r.text
            assert "New server registered." in await socket_cmd(
                app, "add server web/r4 127.0.0.1:18404"
            )
    finally:
        await app.stop(1.0)


@pytest.mark.loopback
async def test_a_derived_limit_follows_the_runtime_servers(tmp_path: Path) -> None:
    app = await start(tmp_path, text())
    try:
        assert app.budget is not None and app.gate is not None
        before = app.budget.max_connections
        async with httpx.AsyncClient(timeout=10) as client:
            for i in range(3):
                assert (await post(client, app, f"r{i}", 18410 + i)).status_code == 201
        assert "New server registered." in await socket_cmd(
            app, "add server web/s1 127.0.0.1:18420"
        )
        assert app.budget.reserve.idle_upstreams == 6 * IDLE
        assert app.budget.max_connections == before - 4 * IDLE // 2
        assert app.gate.limit == app.budget.max_connections
    finally:
        await app.stop(1.0)


@pytest.mark.loopback
async def test_a_start_counts_the_runtime_servers_of_the_store(tmp_path: Path) -> None:
    """One runtime server added (and stored) where the file left room for it; the same
    file and store with no room left: the start is refused naming the limit, as the same
    server in the file would be. The file alone still starts."""
    fits = room(tmp_path)
    app = await start(tmp_path, text(max_connections=fits - IDLE // 2))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await post(client, app, "r1", 18401)).status_code == 201
    finally:
        await app.stop(1.0)
    again = App(load_config_text(tmp_path, text(max_connections=fits)), tmp_path)
    with pytest.raises(StartupError) as refused:
        await again.start()
    message = str(refused.value)
    assert "servers added at runtime" in message and "idle upstream connections 192" in message
    assert "RLIMIT_NOFILE" in message
    (tmp_path / "state.db").unlink()
    alone = App(load_config_text(tmp_path, text(max_connections=fits)), tmp_path)
    await alone.start()
    await alone.stop(1.0)


@pytest.mark.peers  # the reload worker is a Python process
async def test_a_reload_counts_the_runtime_servers_it_keeps(tmp_path: Path) -> None:
    """Room for one more server: taken by a runtime add, a reload adding a server to the
    file is refused (it fitted when the runtime server was not counted)."""
    app = await start(tmp_path, text(max_connections=room(tmp_path) - IDLE // 2))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await post(client, app, "r1", 18401)).status_code == 201
        (tmp_path / "quiesce.yaml").write_text(text(3, max_connections=room(tmp_path) - 32))
        with pytest.raises(ConfigError) as refused:
            await app.reload("test")
        (problem,) = refused.value.problems
        assert problem.startswith("limits: ") and "idle upstream connections 256" in problem
        assert [s.name for s in app.registry.pools["web"].servers] == ["w0", "w1", "r1"]
    finally:
        await app.stop(1.0)


def load_config_text(tmp_path: Path, body: str) -> Any:
    path = tmp_path / "quiesce.yaml"
    path.write_text(body)
    return load_config(path)
