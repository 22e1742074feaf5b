# ruff: noqa: E501 - HAProxy's answers are kept one a line
"""The runtime socket's add server / del server / set server addr over a real socat, with
HAProxy 2.6's answers word for word (checked against haproxy 2.6.12) (issue 14, item 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from quiesce.core.events import EventQuery
from quiesce.frontends.runtime_socket import start_runtime_socket
from tests.api.harness import config_dict, running
from tests.runtime_socket.test_runtime_socket import app, cmd  # noqa: F401 - the fixture

pytestmark = pytest.mark.peers


async def test_add_set_addr_del(app: Any) -> None:  # noqa: F811
    assert await cmd(app, "add server web/web3 127.0.0.1:18083 weight 3 backup") == (
        "New server registered.\n\n"
    )
    web3 = app.registry.find_server("web/web3")
    assert (web3.address, web3.weight, web3.config.backup) == ("127.0.0.1:18083", 3, True)
    assert web3.oper.value == "unknown"  # the pool's monitor will check it
    (e,) = app.admin.events(EventQuery(kind="server_added"))
    assert (e.actor, e.cause) == ("runtime-socket", "runtime-socket")

    assert await cmd(app, "set server web/web3 addr 127.0.0.2") == (
        "IP changed from '127.0.0.1' to '127.0.0.2' by 'stats socket command'\n\n"
    )
    assert await cmd(app, "set server web/web3 addr 127.0.0.2 port 9000") == (
        "no need to change the addr, port changed from '18083' to '9000' by "
        "'stats socket command'\n\n"
    )
    assert await cmd(app, "set server web/web3 addr 127.0.0.3 port 9001") == (
        "IP changed from '127.0.0.2' to '127.0.0.3', port changed from '9000' to '9001' by "
        "'stats socket command'\n\n"
    )
    assert await cmd(app, "set server web/web3 addr 127.0.0.3 port 9001") == (
        "no need to change the addr, no need to change the port by 'stats socket command'\n\n"
    )
    assert web3.address == "127.0.0.3:9001"
    assert len(app.admin.events(EventQuery(kind="server_updated"))) == 3

    assert await cmd(app, "del server web/web3") == (
        "Only servers in maintenance mode can be deleted.\n"
    )
    assert await cmd(app, "set server web/web3 state maint") == "\n"
    assert await cmd(app, "del server web/web3") == "Server deleted.\n"
    assert "web3" not in [s.name for s in app.registry.pools["web"].servers]
    assert await cmd(app, "del server web/web3") == "No such server.\n"


async def test_add_server_takes_haproxys_check_enabled_and_disabled(app: Any) -> None:  # noqa: F811
    """Review F12: HAProxy operators' usual ``add server b/s addr:port check`` (then ``enable
    health``): ``check`` is taken (the pool's monitors apply to every server), ``enabled``
    too, and ``disabled`` starts the server in maintenance, as HAProxy's."""
    assert await cmd(app, "add server web/c1 127.0.0.1:18084 check") == "New server registered.\n\n"
    c1 = app.registry.find_server("web/c1")
    assert c1.oper.value == "unknown" and c1.admin.state.value == "enabled"  # monitored
    assert await cmd(app, "enable health web/c1") == "\n"
    assert await cmd(app, "add server web/c2 127.0.0.1:18085 weight 2 check enabled") == (
        "New server registered.\n\n"
    )
    assert app.registry.find_server("web/c2").admin.state.value == "enabled"
    assert await cmd(app, "add server web/c3 127.0.0.1:18086 check disabled") == (
        "New server registered.\n\n"
    )
    c3 = app.registry.find_server("web/c3")
    assert c3.admin.state.value == "maintenance"
    assert await cmd(app, "del server web/c3") == "Server deleted.\n"


async def test_add_server_takes_haproxys_maxconn(app: Any) -> None:  # noqa: F811
    """Review 14 R8: ``maxconn`` (HAProxy's word for quiesce's max_connections) was refused
    as an unknown keyword; 0 is HAProxy's "no limit"."""
    line = "add server web/m1 127.0.0.1:18087 maxconn 20 check"
    assert await cmd(app, line) == "New server registered.\n\n"
    assert app.registry.find_server("web/m1").config.max_connections == 20
    assert await cmd(app, "add server web/m2 127.0.0.1:18088 maxconn 0") == (
        "New server registered.\n\n"
    )
    assert app.registry.find_server("web/m2").config.max_connections is None
    assert await cmd(app, "add server web/m3 127.0.0.1:18089 maxconn lots") == (
        "invalid maxconn 'lots' for server m3.\n\n"
    )
    assert await cmd(app, "add server web/m3 127.0.0.1:18089 maxconn") == (
        "invalid maxconn '' for server m3.\n\n"
    )
    assert [s.name for s in app.registry.pools["web"].servers][-2:] == ["m1", "m2"]
    # HAProxy's check settings are not "unknown": the answer says where they are set
    assert await cmd(app, "add server web/m3 127.0.0.1:18089 check inter 2s") == (
        "'inter' is a check setting: quiesce checks the servers of a pool with its health "
        "monitors (send_interval, receive_timeout, successful_checks, failed_checks); nothing "
        "changed.\n\n"
    )
    assert "m3" not in [s.name for s in app.registry.pools["web"].servers]


async def test_added_servers_come_back_in_the_order_they_were_added(tmp_path: Path) -> None:
    """Servers added over the runtime socket, one deleted and added again (its tombstone
    then a new record): after a restart they are in the pool in the order of their last
    addition, as before it (before: the one added again came back in its first place)."""
    data = config_dict(runtime_socket="rt.sock")
    data["services"] = {"www": {"listen": "127.0.0.1:0", "pool": "web"}}
    data["state"] = {"sqlite": str(tmp_path / "state.db")}

    async def names(running_app: Any) -> list[str]:
        stat = await cmd(running_app, "show servers state web")
        return [line.split()[3] for line in stat.splitlines()[2:] if line]

    async with running(tmp_path, data) as a:
        a.runtime_socket = await start_runtime_socket(a)
        try:
            for name in ("zz", "aa", "mm"):
                line = f"add server web/{name} 127.0.0.1:1808{len(name)}"
                assert await cmd(a, line) == "New server registered.\n\n"
            assert await cmd(a, "set server web/zz state maint") == "\n"
            assert await cmd(a, "del server web/zz") == "Server deleted.\n"
            assert await cmd(a, "add server web/zz 127.0.0.1:18089") == (
                "New server registered.\n\n"
            )
            before = await names(a)
        finally:
            await a.runtime_socket.stop()
    assert before == ["web1", "web2", "aa", "mm", "zz"]
    async with running(tmp_path, data) as b:  # the same state file: a restart
        b.runtime_socket = await start_runtime_socket(b)
        try:
            assert await names(b) == before
            assert b.registry.find_server("web/zz").address == "127.0.0.1:18089"
        finally:
            await b.runtime_socket.stop()


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("add server web/web1 127.0.0.1:1", "Already exists a server with the same name in backend.\n\n"),
        ("add server nope/x 127.0.0.1:1", "No such backend.\n"),
        ("add server web", "Require 'backend/server'.\n"),
        ("add server web/x", "'server' expects <name> and <addr>[:<port>] as arguments.\n\n"),
        ("add server web/x 127.0.0.1:1 weight 300", "weight of server x is not within 0 and 256 (300)..\n\n"),
        ("add server web/x 127.0.0.1:1 weight x", "invalid weight 'x' for server x.\n\n"),
        ("add server web/x 127.0.0.1:1 bogus", "unknown keyword 'bogus'.\n\n"),
        ("add server web/x 127.0.0.1:99999", "invalid address '127.0.0.1:99999': port 99999 is out of range\n\n"),
        # review 14 R2: what the resolver would take for another host, or for no host at all
        ("add server web/x 999.1.1.1:80", "invalid address '999.1.1.1:80': '999.1.1.1' is not an IPv4 address\n\n"),
        ("add server web/x 10.0.0:80", "invalid address '10.0.0:80': '10.0.0' is not an IPv4 address\n\n"),
        ("add server web/x 127.0.0.1", "invalid address '127.0.0.1': the port is required (<addr>:<port>, 1 to 65535; quiesce has no server without a port).\n\n"),
        ("add server web/x ::1", "invalid address '::1': the port is required (<addr>:<port>, 1 to 65535; quiesce has no server without a port).\n\n"),
        ("add server web/x [::1]", "invalid address '[::1]': the port is required (<addr>:<port>, 1 to 65535; quiesce has no server without a port).\n\n"),
        ("del server nope/x", "No such backend.\n"),
        ("del server web", "Require 'backend/server'.\n"),
        ("set server web/web1 addr bad", "Invalid addr 'bad' by 'stats socket command'\n\n"),
        ("set server web/web1 addr", "set server <b>/<s> addr requires an address and optionally a port.\n\n"),
        ("set server web/web1 addr 127.0.0.1 port x", "problem converting port 'x' to an int (a port is 1 to 65535); nothing changed.\n\n"),
    ],
)  # fmt: skip
async def test_bad_input_changes_nothing(app: Any, line: str, answer: str) -> None:  # noqa: F811
    assert await cmd(app, line) == answer
    assert [s.name for s in app.registry.pools["web"].servers] == ["web1", "web2"]
    assert app.registry.find_server("web/web1").address == "127.0.0.1:18081"
    assert app.store.load_servers() == {}
