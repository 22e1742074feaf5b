"""``show servers state`` is sent as it is made (review F8, issue 21), as ``show stat`` is: the
two header lines first, then the lines of at most ``stats.SLICE`` servers a part, the loop
given back between parts. Before, the whole answer was built in one turn of the loop (10,000
servers: 0.55-0.8 s) and ``echo … | socat stdio …`` (socat's default 0.5 s) printed
nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from quiesce.frontends.runtime_socket import start_runtime_socket, stats
from quiesce.frontends.runtime_socket.stats import SERVERS_STATE_HEADER, Stats
from tests.api.harness import config_dict, running

pytestmark = pytest.mark.loopback

SERVERS = 4000


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    data = config_dict(runtime_socket="rt.sock")
    data["pools"]["big"] = {
        "servers": [
            {"name": f"s{i}", "address": f"127.0.0.1:{20000 + i % 1000}"} for i in range(SERVERS)
        ]
    }
    async with running(tmp_path, data) as a:
        a.runtime_socket = await start_runtime_socket(a)
        try:
            yield a
        finally:
            await a.runtime_socket.stop()


def _whole(view: Stats, a: list[str]) -> str:
    """The answer as it was built before streaming: every line, then joined."""
    lines = ["1", SERVERS_STATE_HEADER]
    for iid, kind, name, obj in view.proxies():
        if kind == "backend" and (not a or a[0] == name):
            lines += [" ".join(map(str, view._state_fields(iid, obj, s))) for s in obj.servers]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("args", ["", " big"])
async def test_show_servers_state_is_sent_as_it_is_made(
    app: Any, monkeypatch: pytest.MonkeyPatch, args: str
) -> None:
    now = app.registry.clock.time()
    monkeypatch.setattr(app.registry.clock, "time", lambda: now)  # the same lastchg twice
    built = 0
    state_fields = Stats._state_fields

    def counted(self: Stats, *a: Any) -> Any:
        nonlocal built
        built += 1
        return state_fields(self, *a)

    monkeypatch.setattr(Stats, "_state_fields", counted)
    total = SERVERS + (6 if not args else 0)  # the harness's pools have six
    reader, writer = await asyncio.open_unix_connection(str(app.runtime_socket.path))
    writer.write(f"show servers state{args}\n".encode())
    await writer.drain()
    version = await reader.readline()
    assert version == b"1\n"
    # the first line went out before the last slice was made (before: all of them first)
    assert built < total - stats.SLICE, (built, total)
    rest = await reader.read()
    writer.close()
    assert built == total
    text = (version + rest).decode()
    built = 0
    assert text == _whole(app.runtime_socket.commands.stats, args.split()) + "\n"
    assert text.count("\n") == total + 3  # version, header, servers, the empty line


def test_parts_have_at_most_a_slice_of_servers(app: Any) -> None:
    view = app.runtime_socket.commands.stats
    parts = list(view.show_servers_state_parts([]))
    assert parts[0] == "1\n" + SERVERS_STATE_HEADER + "\n"
    assert max(part.count("\n") for part in parts[1:]) == stats.SLICE
    assert len(parts) > SERVERS // stats.SLICE


async def test_an_unknown_backend_is_answered_whole(app: Any) -> None:
    reader, writer = await asyncio.open_unix_connection(str(app.runtime_socket.path))
    writer.write(b"show servers state nope\n")
    assert await reader.read() == b"Can't find backend.\n\n"
    writer.close()
