"""``show stat`` is sent as it is made (issue 21): the header line first, then the lines of
at most ``stats.SLICE`` servers a part, the loop given back between parts, as HAProxy
streams it. Before, the whole answer was built in one turn of the loop before its first
byte (10,000 servers: ~1 s with the data plane stopped, and ``socat``'s default 0.5 s
timeout printed nothing)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from quiesce.frontends.runtime_socket import start_runtime_socket, stats
from quiesce.frontends.runtime_socket.stats import Stats
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


async def test_show_stat_is_sent_as_it_is_made(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    built = 0
    server_row = Stats._server_row

    def counted(self: Stats, *args: Any) -> Any:
        nonlocal built
        built += 1
        return server_row(self, *args)

    monkeypatch.setattr(Stats, "_server_row", counted)
    total = SERVERS + 6  # the harness's pools have six
    # a reader that buffers little: the answer waits in the socket once it is full
    reader, writer = await asyncio.open_unix_connection(str(app.runtime_socket.path), limit=4096)
    writer.write(b"show stat\n")
    await writer.drain()
    header = await reader.readline()
    assert header.startswith(b"# pxname,svname,qcur,")
    # with the client not reading, the socket stops the answer part-way: wait until no more
    # server lines are made over many turns of the loop
    seen, still = built, 0
    while still < 500:
        await asyncio.sleep(0)
        seen, still = built, (still + 1 if built == seen else 0)
    assert 0 < built < total  # the first line went out before the whole answer was made
    rest = await reader.read()
    writer.close()
    assert built == total
    text = (header + rest).decode()
    assert text.endswith(",\n\n")  # the answer, then the empty line that ends it
    rows = list(csv.DictReader(io.StringIO(text[2:].rstrip("\n"))))
    servers = [r for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")]
    assert len(servers) == total
    assert [r["svname"] for r in rows if r["pxname"] == "big"] == [
        *(f"s{i}" for i in range(SERVERS)),
        "BACKEND",
    ]


def test_parts_have_at_most_a_slice_of_servers(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    now = app.registry.clock.time()
    monkeypatch.setattr(app.registry.clock, "time", lambda: now)  # lastchg the same twice
    view = app.runtime_socket.commands.stats
    parts = list(view.show_stat_parts([]))
    assert parts[0].startswith("# pxname,") and parts[0].count("\n") == 1  # the header alone
    assert max(part.count("\n") for part in parts) == stats.SLICE
    assert len(parts) > SERVERS // stats.SLICE
    for options in ([], ["typed"], ["json"], ["big", "4", "-1", "json"], ["up", "no-maint"]):
        assert "".join(view.show_stat_parts(options)) == view.show_stat(options)
    assert len(json.loads(view.show_stat(["json"]))) > SERVERS


async def test_a_bad_filter_is_answered_whole(app: Any) -> None:
    reader, writer = await asyncio.open_unix_connection(str(app.runtime_socket.path))
    writer.write(b"show stat nope 4 -1\n")
    assert await reader.read() == b"No such proxy.\n\n"
    writer.close()
