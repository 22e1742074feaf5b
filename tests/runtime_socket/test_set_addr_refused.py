# ruff: noqa: E501 - the answers are kept one a line
"""``set server … addr <ip> port <bad>`` over a real socat: bad input gets a clear error and
changes nothing. HAProxy 2.6 applies the IP and answers "IP changed …, problem converting
port …"; quiesce refuses the whole line and says nothing changed. ``port 0`` (HAProxy: the
client's destination port) is refused as not supported."""

from __future__ import annotations

from typing import Any

import pytest

from quiesce.core.events import EventQuery
from tests.runtime_socket.test_runtime_socket import app, cmd  # noqa: F401 - the fixture

pytestmark = pytest.mark.peers


async def web1_state(app: Any) -> tuple[str, str]:  # noqa: F811
    """web1's srv_addr and srv_port as ``show servers state`` reports them."""
    lines = (await cmd(app, "show servers state web")).rstrip("\n").split("\n")
    header = lines[1][2:].split(" ")
    rows = [dict(zip(header, line.split(" "), strict=True)) for line in lines[2:]]
    (row,) = [r for r in rows if r["srv_name"] == "web1"]
    return row["srv_addr"], row["srv_port"]


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("set server web/web1 addr 10.9.9.9 port abc", "problem converting port 'abc' to an int (a port is 1 to 65535); nothing changed.\n\n"),
        ("set server web/web1 addr 10.9.9.9 port", "problem converting port '' to an int (a port is 1 to 65535); nothing changed.\n\n"),
        ("set server web/web1 addr 10.9.9.9 port -1", "problem converting port '-1' to an int (a port is 1 to 65535); nothing changed.\n\n"),
        ("set server web/web1 addr 10.9.9.9 port \u00b2", "problem converting port '\u00b2' to an int (a port is 1 to 65535); nothing changed.\n\n"),
        ("set server web/web1 addr 10.9.9.9 port 0", "port 0 is not supported by quiesce (HAProxy takes it as the client's destination port): give 1 to 65535; nothing changed.\n\n"),
        ("set server web/web1 addr 10.9.9.9 port 70000", "port 70000 is out of range (1 to 65535); nothing changed.\n\n"),
        ("set server web/web1 addr 127.0.0.1 port 0", "port 0 is not supported by quiesce (HAProxy takes it as the client's destination port): give 1 to 65535; nothing changed.\n\n"),
        ("set server web/web1 addr 10.9.9.9 prot 80", "unexpected 'prot 80': set server <b>/<s> addr <ip> [port <port>]; nothing changed.\n\n"),
        ("set server web/web1 addr 10.9.9.9 port 80 now", "unexpected 'now': set server <b>/<s> addr <ip> [port <port>]; nothing changed.\n\n"),
    ],
)  # fmt: skip
async def test_bad_port_changes_nothing(app: Any, line: str, answer: str) -> None:  # noqa: F811
    assert await web1_state(app) == ("127.0.0.1", "18081")
    got = await cmd(app, line)
    assert got == answer
    assert "changed from" not in got  # no change is claimed
    assert await web1_state(app) == ("127.0.0.1", "18081")
    assert app.registry.find_server("web/web1").address == "127.0.0.1:18081"
    assert app.admin.events(EventQuery(kind="server_updated")) == []
    assert app.store.load_servers() == {}


async def test_good_port_still_changes(app: Any) -> None:  # noqa: F811
    assert await cmd(app, "set server web/web1 addr 10.9.9.9 port 65535") == (
        "IP changed from '127.0.0.1' to '10.9.9.9', port changed from '18081' to '65535' by "
        "'stats socket command'\n\n"
    )
    assert await web1_state(app) == ("10.9.9.9", "65535")
