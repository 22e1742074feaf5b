"""The client verbs create / alter / destroy server (maxctrl's grammar) against a running API
(issue 14, item 2)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.cli.test_client import app, cli, failed, ok  # noqa: F401 - the fixture

pytestmark = pytest.mark.peers


def names(app: Any, pool: str) -> list[str]:  # noqa: F811
    return [s.name for s in app.registry.pools[pool].servers]


async def test_create_alter_destroy(app: Any) -> None:  # noqa: F811
    out = ok(await cli(app, "create", "server", "app/a3", "127.0.0.1:18095", "--weight", "3"))
    assert out.strip() == "app/a3: created at 127.0.0.1:18095 (status: up)"
    a3 = app.registry.find_server("app/a3")
    assert a3.weight == 3
    out = ok(await cli(app, "alter", "server", "app/a3", "address", "127.0.0.1:18096"))
    assert 'address "127.0.0.1:18095" → "127.0.0.1:18096"' in out
    out = ok(await cli(app, "alter", "server", "a3", "weight", "5", "backup", "true"))
    assert "weight 3 → 5" in out and "backup false → true" in out
    assert a3.config.backup and a3.weight == 5
    line = failed(await cli(app, "destroy", "server", "app/a3"))
    assert "Only servers in maintenance mode can be deleted" in line
    assert "--drain drains it first" in line and "set server app/a3 maintenance" in line
    ok(await cli(app, "set", "server", "app/a3", "maintenance"))
    out = ok(await cli(app, "destroy", "server", "app/a3"))
    assert out.strip() == "app/a3: deleted"
    assert "a3" not in names(app, "app")
    events = ok(await cli(app, "events", "--kind", "server_added"))
    assert "server_added app/a3" in events and "actor=admin" in events


async def test_max_connections_created_and_altered(app: Any) -> None:  # noqa: F811
    """docs/config.md: servers added or changed at run time can have max_connections; the
    CLI sets it as the REST API does."""
    ok(await cli(app, "create", "server", "app/a4", "127.0.0.1:18097", "--max-connections", "2"))
    a4 = app.registry.find_server("app/a4")
    assert a4.config.max_connections == 2
    out = ok(await cli(app, "alter", "server", "app/a4", "max_connections", "5"))
    assert "max_connections 2 → 5" in out
    assert a4.config.max_connections == 5
    out = ok(await cli(app, "alter", "server", "app/a4", "max_connections", "none"))
    assert "max_connections 5 → null" in out and a4.config.max_connections is None
    line = failed(await cli(app, "alter", "server", "app/a4", "max_connections", "0"))
    assert "max_connections" in line
    r = await cli(app, "create", "server", "app/x", "127.0.0.1:1", "--max-connections", "lots")
    assert r.exit_code == 2 and "--max-connections" in r.output
    assert a4.config.max_connections is None and "x" not in names(app, "app")


async def test_bad_input(app: Any) -> None:  # noqa: F811
    assert "already has a server named 'a1'" in failed(
        await cli(app, "create", "server", "app/a1", "127.0.0.1:1")
    )
    assert "address" in failed(await cli(app, "create", "server", "app/x", "nowhere"))
    assert "weight" in failed(
        await cli(app, "create", "server", "app/x", "127.0.0.1:1", "--weight", "300")
    )
    assert "no pool named 'nope'" in failed(
        await cli(app, "create", "server", "nope/x", "127.0.0.1:1")
    )
    assert "weight" in failed(await cli(app, "alter", "server", "app/a1", "weight", "heavy"))
    r = await cli(app, "alter", "server", "app/a1", "colour", "red")
    assert r.exit_code == 2 and "can be altered" in r.output
    # a key twice: not the last one silently (review 90 F8)
    r = await cli(app, "alter", "server", "app/a1", "weight", "2", "weight", "3")
    assert r.exit_code == 2 and "weight given twice" in r.output, r.output
    r = await cli(app, "create", "server", "x", "127.0.0.1:1")
    assert r.exit_code == 2 and "POOL/NAME" in r.output
    assert names(app, "app") == ["a1", "a2", "shared"]
    assert app.registry.find_server("app/a1").weight == 1


async def test_destroy_drain_wait(app: Any) -> None:  # noqa: F811
    web1 = app.registry.find_server("web/web1")
    web1.connections = 2
    task = asyncio.ensure_future(
        cli(app, "destroy", "server", "web/web1", "--drain", "--timeout", "5m", "--wait")
    )
    async with asyncio.timeout(20):
        while not web1.removing:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    web1.connections = 0
    app.admin._finish_removals()  # the harness runs no timer task of its own between polls
    r = await asyncio.wait_for(task, 20)
    assert r.exit_code == 0, r.output
    assert "deleted once drained" in r.stdout
    assert "web/web1: deleted after" in r.stdout
    assert "web/web1: removing (2)" in r.stderr


async def test_priority_created_and_altered(app: Any) -> None:  # noqa: F811
    """Review 14 R8: ``PATCH`` takes ``priority`` (docs/api.md), the CLI took only address,
    weight, max_connections and backup ("'priority': a server's … can be altered")."""
    ok(await cli(app, "create", "server", "app/a5", "127.0.0.1:18098", "--priority", "3"))
    a5 = app.registry.find_server("app/a5")
    assert a5.config.priority == 3
    out = ok(await cli(app, "alter", "server", "app/a5", "priority", "7"))
    assert "priority 3 → 7" in out and a5.config.priority == 7
    line = failed(await cli(app, "alter", "server", "app/a5", "priority", "1001"))
    assert "priority" in line and a5.config.priority == 7
