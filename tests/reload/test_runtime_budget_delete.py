"""A server deleted at runtime gives its descriptors back to the connection budget (issue 14
leftover of review 14 R14): a runtime add re-planned the budget (a derived client limit goes
down), a deletion left it down until the next add or reload. Every route of a deletion is
driven as an operator drives it — REST ``DELETE``, the CLI's ``destroy server`` (a quiesce
process), the runtime socket's ``del server``, a drained removal deleted once its last
connection ended — and the limit is read where an operator reads it, ``GET /metrics``
(``quiesce_connections_max``)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import httpx
import pytest

from quiesce.app import App
from quiesce.core.states import Admin
from tests.api.harness import ADMIN
from tests.reload.test_runtime_budget import IDLE, post, socket_cmd, start, text, url


async def limit(client: httpx.AsyncClient, app: App) -> int:
    r = await client.get(f"{url(app)}/metrics", auth=ADMIN)
    assert r.status_code == 200, r.text
    found = re.search(r"^quiesce_connections_max (\S+)$", r.text, re.M)
    assert found is not None, r.text[:2000]
    return int(float(found.group(1)))


async def maintenance(client: httpx.AsyncClient, app: App, name: str) -> None:
    r = await client.post(f"{url(app)}/api/v1/servers/web/{name}/maintenance", json={}, auth=ADMIN)
    assert r.status_code == 200, r.text


async def destroy_with_the_cli(app: App, ref: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quiesce",
        "destroy",
        "server",
        ref,
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
    assert proc.returncode == 0, (out, err)
    return out.decode()


@pytest.mark.peers  # the CLI is a Python process
async def test_every_runtime_deletion_gives_its_descriptors_back(tmp_path: Path) -> None:
    app = await start(tmp_path, text())
    try:
        step = IDLE // 2  # each server of web reserves IDLE descriptors: half a client each
        async with httpx.AsyncClient(timeout=30) as client:
            base = await limit(client, app)
            for i in range(4):
                assert (await post(client, app, f"r{i}", 18430 + i)).status_code == 201
            assert await limit(client, app) == base - 4 * step  # (the adds re-planned)

            # REST DELETE of a server in maintenance
            await maintenance(client, app, "r0")
            r = await client.delete(f"{url(app)}/api/v1/servers/web/r0", auth=ADMIN)
            assert r.status_code == 200, r.text
            assert await limit(client, app) == base - 3 * step

            # the CLI's destroy server
            await maintenance(client, app, "r1")
            await destroy_with_the_cli(app, "web/r1")
            assert not app.registry.pools["web"].has("r1")
            assert await limit(client, app) == base - 2 * step

            # the runtime socket's del server
            await socket_cmd(app, "set server web/r2 state maint")
            assert app.registry.find_server("web/r2").admin.state is Admin.MAINTENANCE
            answer = await socket_cmd(app, "del server web/r2")
            assert "Server deleted." in answer, answer
            assert await limit(client, app) == base - step

            # drained, then deleted when its last connection ends (the admin timer)
            server = app.registry.find_server("web/r3")
            server.connections = 1
            r = await client.delete(f"{url(app)}/api/v1/servers/web/r3?drain=true", auth=ADMIN)
            assert r.status_code in (200, 202), r.text
            assert server.removing and await limit(client, app) == base - step
            server.connections = 0
            for _ in range(500):  # the admin timer deletes it (REMOVAL_PAUSE): no fixed sleep
                if not app.registry.pools["web"].has("r3"):
                    break
                await asyncio.sleep(0.01)
            assert not app.registry.pools["web"].has("r3")
            assert await limit(client, app) == base
            assert app.gate is not None and app.gate.limit == base
    finally:
        await app.stop(1.0)


@pytest.mark.loopback
async def test_a_start_does_not_count_the_servers_of_the_file_deleted_at_runtime(
    tmp_path: Path,
) -> None:
    """w1 of the file deleted at runtime (the state store keeps the deletion): the next
    start with the same file runs without it and plans the budget without it too."""
    app = await start(tmp_path, text())
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            base = await limit(client, app)
            await maintenance(client, app, "w1")
            r = await client.delete(f"{url(app)}/api/v1/servers/web/w1", auth=ADMIN)
            assert r.status_code == 200, r.text
            assert await limit(client, app) == base + IDLE // 2
    finally:
        await app.stop(1.0)
    again = await start(tmp_path, text())
    try:
        assert not again.registry.pools["web"].has("w1")
        async with httpx.AsyncClient(timeout=30) as client:
            assert await limit(client, again) == base + IDLE // 2
    finally:
        await again.stop(1.0)
