"""The runtime socket, driven by a real socat, and compared with a real HAProxy's answers."""

from __future__ import annotations

import asyncio
import csv
import fnmatch
import io
import re
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from quiesce.admin import CommandContext
from quiesce.config.loader import ConfigError, parse_config
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.events import EventQuery
from quiesce.core.states import Cause, CloseMode, Verdict
from quiesce.frontends.runtime_socket import start_runtime_socket
from tests.api.harness import config_dict, running

pytestmark = [
    pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat"),
    pytest.mark.peers,
]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    data = config_dict(runtime_socket="rt.sock", runtime_tcp="127.0.0.1:0")
    data["services"] = {"www": {"listen": "127.0.0.1:0", "pool": "web"}}
    async with running(tmp_path, data) as a:
        a.runtime_socket = await start_runtime_socket(a)
        try:
            yield a
        finally:
            await a.runtime_socket.stop()


async def socat(target: str, text: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "socat",
        "-t",
        "5",
        "stdio",
        target,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(text.encode()), 20)
    assert proc.returncode == 0
    return out.decode()


async def cmd(app: Any, line: str) -> str:
    return await socat(f"UNIX-CONNECT:{app.runtime_socket.path}", line + "\n")


def parse_stat(text: str) -> list[dict[str, str]]:
    assert text.startswith("# pxname,svname,qcur,qmax,scur,smax,slim,stot,")
    rows = list(csv.DictReader(io.StringIO(text[2:])))
    assert rows
    return rows


def by_name(rows: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["pxname"], r["svname"]): r for r in rows}


async def test_show_stat_is_haproxy_csv(app: Any) -> None:
    app.admin.maintenance("app/a1", CommandContext(actor="t", cause=Cause.API))
    app.admin.drain("app/a2", CommandContext(actor="t", cause=Cause.API))
    web1 = app.registry.find_server("web/web1")
    app.registry.record_check(
        web1,
        CheckResult(
            "System-HTTP",
            Verdict.MAINTENANCE,
            Reason.MAINTENANCE_RESPONSE_CODE_MATCH,
            app.clock.time(),
            0.002,
            503,
        ),
    )
    web2 = app.registry.find_server("web/web2")
    app.registry.record_check(
        web2, CheckResult("System-HTTP", Verdict.PASS, Reason.OK, app.clock.time(), 0.001, 200)
    )
    web2.connections = 3
    text = await cmd(app, "show stat")
    assert text.endswith("\n\n")
    rows = by_name(parse_stat(text))
    assert rows[("www", "FRONTEND")]["status"] == "OPEN"
    assert rows[("app", "a1")]["status"] == "MAINT"
    assert rows[("app", "a2")]["status"] == "DRAIN"
    assert rows[("app", "shared")]["status"] == "no check"
    assert rows[("web", "web1")]["status"] == "NOLB"  # down for maintenance, never DOWN
    # HAProxy's disable-on-404 case: conditionally passed, the server NOLB
    assert rows[("web", "web1")]["check_status"] == "L7OKC"
    assert rows[("web", "web1")]["check_desc"] == "Layer7 check conditionally passed"
    assert rows[("web", "web1")]["check_code"] == "503"
    assert rows[("web", "web2")]["check_status"] == "L7OK"
    assert rows[("web", "web2")]["check_desc"] == "Layer7 check passed"
    assert rows[("web", "web2")]["status"] == "UP"
    assert rows[("web", "web2")]["scur"] == "3"
    assert rows[("web", "web2")]["weight"] == "2"
    assert rows[("web", "BACKEND")]["status"] == "UP"
    assert rows[("other", "BACKEND")]["status"] == "UP"
    assert rows[("web", "web2")]["type"] == "2" and rows[("web", "BACKEND")]["type"] == "1"
    assert rows[("web", "web2")]["addr"] == "127.0.0.1:18082"
    # filters: servers only (type 4) of one proxy
    only = parse_stat(await cmd(app, "show stat app 4 -1"))
    assert [(r["pxname"], r["svname"]) for r in only] == [
        ("app", "a1"),
        ("app", "a2"),
        ("app", "shared"),
    ]


def _doc_rows() -> list[tuple[list[str], str]]:
    """docs/cli.md's ``show stat`` columns table: (the columns of a row, what fills them)."""
    text = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    table = text.split("### `show stat` columns", 1)[1].split("\n### ", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) == 3:
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[2]))
    return rows


async def test_show_stat_fills_the_queue_columns_and_the_docs_say_so(app: Any) -> None:
    queue = app.registry.pools["web"].queue
    now = app.clock.time()
    queue.push("served", now - 0.25, 5.0)
    queue.drain(now, lambda entry: True)  # waited 250 ms, then got a server
    queue.push("waiting", now, 5.0)
    queue.push("waiting too", now, 5.0)
    try:
        text = await cmd(app, "show stat")
    finally:
        queue.expired(now + 10)
    header = text[2:].split("\n", 1)[0].split(",")
    rows = by_name(parse_stat(text))
    backend = rows[("web", "BACKEND")]
    assert [backend[k] for k in ("qcur", "qmax", "qtime", "qtime_max")] == ["2", "2", "250", "250"]
    assert rows[("web", "web1")]["qcur"] == "0" and rows[("www", "FRONTEND")]["qcur"] == ""
    # every column docs/cli.md says is 0 (not counted) is 0, empty or "-" in every row
    documented = _doc_rows()
    assert any(
        "qcur" in cols and meaning.startswith("BACKEND: the pool's queue")
        for cols, meaning in documented
    )
    uncounted = [
        name
        for cols, meaning in documented
        if meaning.startswith("0")
        for pattern in cols
        for name in fnmatch.filter(header, pattern)
    ]
    assert "qcur" not in uncounted and "h2_headers_rcvd" in uncounted and "ctime_max" in uncounted
    for key, row in rows.items():
        for name in uncounted:
            assert row[name] in ("0", "", "-"), (key, name, row[name])


async def test_show_servers_state(app: Any) -> None:
    app.admin.maintenance("app/a1", CommandContext(actor="t", cause=Cause.API))
    text = await cmd(app, "show servers state app")
    lines = text.rstrip("\n").split("\n")
    assert lines[0] == "1"
    assert lines[1].startswith("# be_id be_name srv_id srv_name srv_addr srv_op_state")
    rows = [line.split(" ") for line in lines[2:]]
    header = lines[1][2:].split(" ")
    assert all(len(r) == len(header) for r in rows)
    a1 = dict(zip(header, rows[0], strict=True))
    assert (a1["be_name"], a1["srv_name"], a1["srv_admin_state"]) == ("app", "a1", "1")
    assert a1["srv_port"] == "18091"
    assert "Can't find backend" in await cmd(app, "show servers state nope")


async def test_state_commands_are_audited(app: Any) -> None:
    a1 = app.registry.find_server("app/a1")
    assert await cmd(app, "set server app/a1 state maint") == "\n"
    assert a1.admin.state.value == "maintenance"
    await cmd(app, "set server app/a1 state drain")
    assert a1.admin.state.value == "drain"
    await cmd(app, "set server app/a1 state ready")
    assert a1.admin.state.value == "enabled"
    await cmd(app, "disable server app/a1")
    assert a1.admin.state.value == "maintenance"
    await cmd(app, "enable server app/a1")
    assert a1.admin.state.value == "enabled"
    events = app.admin.events(EventQuery(server="a1", kind="admin_change"))
    assert len(events) == 5
    assert {(e.actor, e.cause) for e in events} == {("runtime-socket", "runtime-socket")}


async def test_errors_as_haproxy_words_them(app: Any) -> None:
    assert await cmd(app, "set server app/zz state maint") == "No such server.\n\n"
    assert await cmd(app, "set server zz/a1 state maint") == "No such backend.\n\n"
    assert await cmd(app, "set server a1 state maint") == "Require 'backend/server'.\n\n"
    assert await cmd(app, "set server app/a1 state bogus") == (
        "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n"
    )
    assert await cmd(app, "set server app/a1 health bogus") == (
        "'set server <srv> health' expects 'up', 'stopping', or 'down'.\n\n"
    )
    assert app.registry.find_server("app/a1").admin.state.value == "enabled"
    # a refused guard says why, and changes nothing
    await cmd(app, "set server app/a1 state maint")
    await cmd(app, "set server app/shared state maint")
    answer = await cmd(app, "set server app/a2 state maint")
    assert "min_servers_up" in answer
    assert app.registry.find_server("app/a2").admin.state.value == "enabled"


async def test_weights(app: Any) -> None:
    assert await cmd(app, "get weight web/web2") == "2 (initial 2)\n\n"
    await cmd(app, "set weight web/web2 50%")
    assert await cmd(app, "get weight web/web2") == "1 (initial 2)\n\n"
    await cmd(app, "set server web/web2 weight 7")
    assert app.registry.find_server("web/web2").weight == 7
    assert await cmd(app, "set weight web/web2 300") == (
        "Absolute weight can only be between 0 and 256 inclusive.\n\n"
    )
    assert await cmd(app, "set weight web/web2") == "Require <weight> or <weight%>.\n\n"
    # HAProxy 2.6's answers to bad weights, word for word.
    for bad, answer in (
        ("-1", "Absolute weight can only be between 0 and 256 inclusive."),
        ("abc", "Empty weight string empty or preceded by garbage"),
        ("5x", "Trailing garbage in weight string"),
        ("-5%", "Relative weight must be positive."),
    ):
        # HAProxy 2.6 prints the two "garbage" messages without their newline
        end = "\n" if "garbage" in answer else "\n\n"
        assert await cmd(app, f"set weight web/web2 {bad}") == answer + end, bad
    assert app.registry.find_server("web/web2").weight == 7
    assert (
        app.admin.events(EventQuery(server="web2", kind="admin_command"))[-1].actor
        == "runtime-socket"
    )


async def test_vars_are_runtime_flags(app: Any) -> None:
    assert await cmd(app, "get var proc.maintenance_mode") == (
        "proc.maintenance_mode: type=bool value=<0>\n\n"
    )
    await cmd(app, "set var proc.maintenance_mode bool(true)")
    assert app.registry.flags["maintenance_mode"] is True
    await cmd(app, "set var proc.banner str(blue)")
    await cmd(app, "set var proc.level int(5)")
    assert app.registry.flags["banner"] == "blue" and app.registry.flags["level"] == "5"
    assert await cmd(app, "get var proc.banner") == "proc.banner: type=str value=<blue>\n\n"
    assert await cmd(app, "get var proc.nope") == "Variable not found.\n\n"
    assert await cmd(app, "set var proc.x nope(1)") == "unknown fetch method 'nope'\n\n"
    assert (await cmd(app, "set var x str(1)")).startswith("invalid variable name 'x'.")
    flag_events = app.admin.events(EventQuery(kind="flag_change"))
    assert {e.actor for e in flag_events} == {"runtime-socket"}


async def test_shutdown_sessions_and_health(app: Any) -> None:
    closed: list[tuple[str, CloseMode]] = []
    app.registry.close_handlers.append(lambda s, mode: closed.append((s.key, mode)))
    await cmd(app, "shutdown sessions server web/web2")
    assert closed == [("web/web2", CloseMode.ALL)]
    assert app.admin.events(EventQuery(kind="connections_closed"))[-1].actor == "runtime-socket"
    web1 = app.registry.find_server("web/web1")
    await cmd(app, "set server web/web1 health up")
    assert web1.oper.value == "up"
    await cmd(app, "set server web/web1 health down")
    assert web1.oper.value == "down"
    last = app.admin.events(EventQuery(server="web1", kind="oper_change"))[-1]
    assert last.cause == "runtime-socket"


async def test_help_unknown_and_several_commands(app: Any) -> None:
    text = await cmd(app, "help")
    assert text.startswith("The following commands are valid at this level:\n")
    assert "  show stat [desc|json|no-maint|typed|up]*: report counters" in text
    assert "  quit                                    : disconnect\n" in text
    # review 14 R8: HAProxy's "remove a dynamically added server" was wrong here, where
    # del server deletes a server of the config file too
    assert "  del server <bk>/<srv>                   : remove a server (in maintenance" in text
    unknown = await cmd(app, "frobnicate now")
    assert unknown.startswith(
        "Unknown command, but maybe one of the following ones is a better match:\n"
    )
    assert "  prompt                                  : toggle interactive mode" in unknown
    both = await cmd(app, "get weight web/web1; get weight web/web2")
    assert both == "1 (initial 1)\n\n2 (initial 2)\n\n"


async def test_interactive_prompt_and_tcp(app: Any) -> None:
    text = await socat(
        f"UNIX-CONNECT:{app.runtime_socket.path}",
        "prompt\nget weight web/web2\nset server app/a1 state drain\nquit\n",
    )
    assert text == "\n> 2 (initial 2)\n\n> \n> "
    assert app.registry.find_server("app/a1").admin.state.value == "drain"
    port = app.runtime_socket.port
    assert await socat(f"TCP:127.0.0.1:{port}", "get weight web/web2\n") == "2 (initial 2)\n\n"


async def test_socket_is_private_and_removed(app: Any, tmp_path: Path) -> None:
    path = app.runtime_socket.path
    assert path == tmp_path / "rt.sock"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    await app.runtime_socket.stop()
    assert not path.exists()


def test_non_loopback_tcp_refused() -> None:
    """Refused by the config itself (``quiesce check`` says so), not at start-up."""
    with pytest.raises(ConfigError, match="loopback only"):
        parse_config(config_dict(runtime_tcp="0.0.0.0:0"))


# --- side by side with HAProxy ---------------------------------------------------------------


@pytest.fixture
async def haproxy(tmp_path: Path) -> AsyncIterator[Path]:
    exe = shutil.which("haproxy")
    if exe is None:
        pytest.skip("needs haproxy")
    sock = tmp_path / "hap.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        f"global\n    stats socket {sock} mode 600 level admin\n"
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n"
        "    timeout server 5s\n"
        "backend web\n    server web1 127.0.0.1:18081\n    server web2 127.0.0.1:18082 weight 2\n"
    )
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-db",
        "-f",
        str(cfg),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(10):
            while True:  # ready when the stats socket accepts
                try:
                    _, w = await asyncio.open_unix_connection(str(sock))
                    w.close()
                    break
                except OSError:
                    await asyncio.sleep(0.02)
        yield sock
    finally:
        proc.terminate()
        await proc.wait()


async def test_same_headers_and_words_as_haproxy(app: Any, haproxy: Path) -> None:
    async def both(line: str) -> tuple[str, str]:
        return await socat(f"UNIX-CONNECT:{haproxy}", line + "\n"), await cmd(app, line)

    theirs, ours = await both("show stat")
    assert ours.split("\n")[0] == theirs.split("\n")[0]
    their_rows = by_name(parse_stat(theirs))
    our_rows = by_name(parse_stat(ours))
    assert set(their_rows[("web", "web2")]) == set(our_rows[("web", "web2")])
    for key in ("pxname", "svname", "weight", "act", "bck", "type", "addr", "mode"):
        assert our_rows[("web", "web2")][key] == their_rows[("web", "web2")][key], key
    theirs, ours = await both("show servers state web")
    assert ours.split("\n")[:2] == theirs.split("\n")[:2]
    for line in ("get weight web/web2", "set server web/nope state maint", "set server web1 state"):
        theirs, ours = await both(line)
        assert ours == theirs, line
    theirs, ours = await both("frobnicate")
    assert ours.split("\n")[0] == theirs.split("\n")[0]
    assert ours.endswith("\n\n") and theirs.endswith("\n\n")


async def test_hostile_input_gets_an_answer_and_changes_nothing(app: Any) -> None:
    nines = "9" * 5000
    answer = await cmd(app, f"set weight web/web2 {nines}")
    assert answer.startswith("Invalid argument:") and answer.endswith("\n\n")
    assert app.registry.find_server("web/web2").weight == 2
    # the socket still serves after it
    assert await cmd(app, "get weight web/web2") == "2 (initial 2)\n\n"
    many = ";".join(["show stat"] * 65)
    assert await cmd(app, many) == "Too many commands on one line (at most 64).\n\n"
    long_line = "x" * (70 * 1024)
    answer = await cmd(app, long_line)
    assert answer.startswith("Line too long")


async def test_string_variables_cannot_end_an_answer_early(app: Any) -> None:
    app.registry.set_flag("x", "a\n\nset server web/web2 state maint", actor="t", cause=Cause.API)
    answer = await cmd(app, "get var proc.x")
    assert answer == "proc.x: type=str value=<a\\n\\nset server web/web2 state maint>\n\n"
    assert answer.count("\n\n") == 1


async def test_health_and_shutdown_are_audited_like_admin_commands(app: Any) -> None:
    """``set server … health`` and ``shutdown sessions server`` go through the admin service:
    their events carry the socket's cause and actor, as every other command's do."""
    await cmd(app, "set server web/web1 health up")
    await cmd(app, "set server web/web1 health stopping")
    down = app.admin.events(EventQuery(server="web1", kind="oper_change"))[-1]
    assert (down.from_, down.to) == ("up", "down")
    assert (down.cause, down.actor) == ("runtime-socket", "runtime-socket")
    assert down.detail["forced"] == "stopping" and down.detail["actor"] == "runtime-socket"
    assert down.eligible is not None
    await cmd(app, "shutdown sessions server web/web2")
    closed = app.admin.events(EventQuery(server="web2", kind="connections_closed"))[-1]
    assert (closed.cause, closed.actor) == ("runtime-socket", "runtime-socket")
    assert closed.reason == "shutdown sessions server"
    assert closed.pool == "web" and closed.detail == {"closed": 0}
    assert closed.eligible is not None and closed.sessions == 0
