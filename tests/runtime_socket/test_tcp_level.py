"""``admin.runtime_tcp_level`` (review F1): the TCP runtime socket has no authentication, so
any local user who connects gets only the commands of its level, ``user`` by default (read
only); a command above it is answered ``Permission denied`` as HAProxy 2.6's stats socket
answers it at the same level (compared with a real HAProxy below). The Unix socket (0600)
stays admin."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from quiesce.config.loader import ConfigError, config_warnings, parse_config
from quiesce.frontends.runtime_socket import start_runtime_socket
from quiesce.frontends.runtime_socket.commands import HELP, LEVELS, RuntimeCommands
from quiesce.frontends.runtime_socket.server import RuntimeSocket
from tests.api.harness import config_dict, running
from tests.runtime_socket.test_runtime_socket import socat

pytestmark = [
    pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat"),
    pytest.mark.peers,
]

WRITES = [
    "set server web/web1 addr 127.0.0.9 port 9999",
    "set server web/web1 state maint",
    "set server",  # the level is checked before the arguments, as HAProxy does
    "set weight web/web1 5",
    "disable health web/web1",
    "enable health web/web1",
    "disable agent web/web1",
    "enable agent web/web1",
    "disable server web/web1",
    "enable server web/web1",
    "shutdown sessions server web/web1",
    "add server web/evil 127.0.0.1:1",
    "del server web/web2",
]
READS = ["show stat", "show servers state", "show info", "show version", "show backend"]
OPERATOR_READS = ["show sess", "get var proc.x"]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    data = config_dict(runtime_socket="rt.sock", runtime_tcp="127.0.0.1:0")
    async with running(tmp_path, data) as a:
        a.runtime_socket = await start_runtime_socket(a)
        try:
            yield a
        finally:
            await a.runtime_socket.stop()


def tcp(app: Any) -> str:
    return f"TCP:127.0.0.1:{app.runtime_socket.port}"


def state(app: Any) -> list[tuple[str, str, int, str]]:
    return [
        (s.key, s.config.address, s.weight, s.admin.state.value)
        for pool in app.registry.pools.values()
        for s in pool.servers
    ]


async def test_tcp_is_user_by_default_writes_denied_and_nothing_changes(app: Any) -> None:
    assert app.config.admin.runtime_tcp_level == "user"
    before = state(app)
    for line in [*WRITES, "reload", *OPERATOR_READS]:
        assert await socat(tcp(app), line + "\n") == "Permission denied\n\n", line
    assert state(app) == before
    for line in READS:
        assert "Permission denied" not in await socat(tcp(app), line + "\n"), line
    assert await socat(tcp(app), "get weight web/web2\n") == "2 (initial 2)\n\n"
    # several commands on one line: each answered at its level, as HAProxy does
    both = "get weight web/web1; set weight web/web1 3; get weight web/web1\n"
    assert await socat(tcp(app), both) == (
        "1 (initial 1)\n\nPermission denied\n\n1 (initial 1)\n\n"
    )
    # interactive: denied, and the prompt follows
    text = await socat(tcp(app), "prompt\nset server web/web1 addr 127.0.0.9\nreload\nquit\n")
    assert text == "\n> Permission denied\n\n> Permission denied\n\n> "
    assert await socat(tcp(app), "local set server web/web1 state maint\n") == (
        "Permission denied\n\n"
    )
    assert state(app) == before
    # the Unix socket (0600) is admin: the same change goes through there
    unix = f"UNIX-CONNECT:{app.runtime_socket.path}"
    assert await socat(unix, "set server web/web1 addr 127.0.0.9 port 9999\n") != (
        "Permission denied\n\n"
    )
    assert app.registry.find_server("web/web1").config.address == "127.0.0.9:9999"


async def test_operator_reads_everything_changes_nothing_admin_changes(app: Any) -> None:
    for level in ("operator", "admin"):
        sock = RuntimeSocket(app)
        await sock.start(None, "127.0.0.1:0", tcp_level=level)
        try:
            target = f"TCP:127.0.0.1:{sock.port}"
            for line in OPERATOR_READS:
                assert "Permission denied" not in await socat(target, line + "\n"), line
            answer = await socat(target, "set weight web/web2 7\n")
            if level == "operator":
                assert answer == "Permission denied\n\n"
                assert app.registry.find_server("web/web2").weight == 2
            else:
                assert answer == "\n"
                assert app.registry.find_server("web/web2").weight == 7
        finally:
            await sock.stop()


async def test_every_command_of_help_has_a_level(app: Any) -> None:
    """The command table is the one source of levels: every command of ``help`` has one."""
    cmds: RuntimeCommands = app.runtime_socket.commands
    for usage, _text in HELP:
        words = [w for w in usage.split() if not w.startswith(("<", "[", "("))]
        assert cmds.level_needed(words) in LEVELS, usage
    assert cmds.level_needed(["show", "stat"]) == "user"
    assert cmds.level_needed(["reload"]) == "admin"
    assert cmds.level_needed(["local", "set", "server", "x/y"]) == "admin"


def test_level_config_validated_defaulted_and_warned() -> None:
    assert parse_config(config_dict(runtime_tcp="127.0.0.1:0")).admin.runtime_tcp_level == "user"
    with pytest.raises(ConfigError) as err:
        parse_config(config_dict(runtime_tcp="127.0.0.1:0", runtime_tcp_level="root"))
    assert any("admin.runtime_tcp_level" in p for p in err.value.problems), err.value.problems
    for level in ("user", "operator"):
        cfg = parse_config(config_dict(runtime_tcp="127.0.0.1:9999", runtime_tcp_level=level))
        assert not [w for w in config_warnings(cfg) if "runtime_tcp" in w]
    cfg = parse_config(config_dict(runtime_tcp="127.0.0.1:9999", runtime_tcp_level="admin"))
    (warning,) = [w for w in config_warnings(cfg) if "runtime_tcp" in w]
    assert "admin on 127.0.0.1:9999" in warning and "any user of this host" in warning
    # no TCP listener: nothing to warn about
    cfg = parse_config(config_dict(runtime_tcp_level="admin"))
    assert not [w for w in config_warnings(cfg) if "runtime_tcp" in w]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")
async def test_denied_as_haproxy_denies_at_the_same_level(app: Any, tmp_path: Path) -> None:
    """HAProxy 2.6 with a ``level user`` and a ``level operator`` stats socket: every command
    is denied, or not, at the same level, with the same answer."""
    socks = {lv: tmp_path / f"hap-{lv}.sock" for lv in ("user", "operator")}
    (tmp_path / "haproxy.cfg").write_text(
        "global\n"
        + "".join(f"    stats socket {p} mode 600 level {lv}\n" for lv, p in socks.items())
        + "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n"
        "    timeout server 5s\n"
        "backend web\n    server web1 127.0.0.1:18081\n    server web2 127.0.0.1:18082 weight 2\n"
    )
    proc = await asyncio.create_subprocess_exec(
        shutil.which("haproxy") or "haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    ours = {"user": app.runtime_socket}
    try:
        async with asyncio.timeout(10):
            while not all(p.exists() for p in socks.values()):
                await asyncio.sleep(0.02)
        ours["operator"] = RuntimeSocket(app)
        await ours["operator"].start(None, "127.0.0.1:0", tcp_level="operator")
        lines = [*WRITES, *OPERATOR_READS, *READS, "get weight web/web1"]
        for level, path in socks.items():
            for line in lines:
                theirs = await socat(f"UNIX-CONNECT:{path}", line + "\n")
                mine = await socat(f"TCP:127.0.0.1:{ours[level].port}", line + "\n")
                denied = "Permission denied\n\n"
                assert (theirs == denied) == (mine == denied), (level, line, theirs, mine)
                if theirs == denied:
                    assert mine == theirs
    finally:
        with contextlib.suppress(KeyError):
            await ours["operator"].stop()
        proc.terminate()
        await proc.wait()


def test_a_reload_does_not_change_the_level_and_says_so() -> None:
    """The level is the listener's, read at start: a reload warns, as for runtime_tcp."""
    from quiesce.state.reload import plan_reload

    old = parse_config(config_dict(runtime_tcp="127.0.0.1:9999"))
    new = parse_config(config_dict(runtime_tcp="127.0.0.1:9999", runtime_tcp_level="admin"))
    assert plan_reload(old, new).warnings == [
        "admin.runtime_tcp_level: changed in the file, applied at the next restart"
    ]


def test_quiesce_check_warns_of_an_admin_tcp_socket(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from quiesce.main import check_cmd

    path = tmp_path / "quiesce.yaml"
    base = "pools:\n  web:\n    servers: [{name: a, address: '127.0.0.1:18081'}]\n"
    for level, warned in (("user", False), ("admin", True)):
        path.write_text(
            base + f"admin:\n  runtime_tcp: '127.0.0.1:9999'\n  runtime_tcp_level: {level}\n"
        )
        out = CliRunner().invoke(check_cmd, ["-c", str(path)])
        assert out.exit_code == 0, out.output
        assert ("warning: admin.runtime_tcp_level: admin on 127.0.0.1:9999" in out.output) is (
            warned
        ), out.output
