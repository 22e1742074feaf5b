"""The client connection's own state machine (quiesce.dataplane.h1.exchange: ``ConnState``,
``CONN_MOVES``), sans-IO: the table alone, then a real ``ClientConnection`` and ``Upstream``
driven through it with fake transports and a fake loop (no socket, no event loop), on both
head paths (the ``h1_path`` fixture)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from quiesce.config.models import Config
from quiesce.dataplane import ConnectionTable
from quiesce.dataplane.h1 import exchange
from quiesce.dataplane.h1.client import ClientConnection
from quiesce.dataplane.h1.exchange import (
    CLIENT_EOF_OF,
    CONN_MOVES,
    LINGER_OF,
    SWITCH_OF,
    ConnEvent,
    ConnState,
    ExchangeError,
    conn_step,
)
from quiesce.dataplane.h1.response import LINGER
from quiesce.dataplane.h1.upstream import Upstream
from quiesce.dataplane.service import make_context
from quiesce.state.registry import Registry

C = ConnState

# The table ------------------------------------------------------------------------------------


@pytest.mark.one_path
@pytest.mark.parametrize(
    ("state", "event"),
    [(s, e) for s, e in itertools.product(C, ConnEvent) if s not in CONN_MOVES[e]],
)
def test_every_illegal_connection_move_raises(state: ConnState, event: ConnEvent) -> None:
    with pytest.raises(ExchangeError, match=f"{event.name} is not allowed in state {state.name}"):
        conn_step(state, event)


@pytest.mark.one_path
def test_the_connection_moves() -> None:
    # only an open connection takes the client's EOF; a switch never leaves a lingering one
    assert CONN_MOVES[ConnEvent.CLIENT_EOF] == {C.OPEN: C.INPUT_DONE}
    assert set(CONN_MOVES[ConnEvent.SWITCH]) == {C.OPEN, C.INPUT_DONE}
    assert C.TUNNEL not in CONN_MOVES[ConnEvent.LINGER]  # a tunnel has no answer to send
    # nothing leaves TUNNEL or LINGERING but lingering again (its timer re-armed)
    for state in (C.TUNNEL, C.LINGERING):
        assert [e for e in ConnEvent if state in CONN_MOVES[e]] == (
            [ConnEvent.LINGER] if state is C.LINGERING else []
        )
    # the shell's dicts are the table, and miss where it raises
    for table, event in (
        (CLIENT_EOF_OF, ConnEvent.CLIENT_EOF),
        (SWITCH_OF, ConnEvent.SWITCH),
        (LINGER_OF, ConnEvent.LINGER),
    ):
        assert type(table) is dict
        assert table == CONN_MOVES[event]


@pytest.mark.one_path
def test_the_docs_show_the_connection_table() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "dataplane.md").read_text()
    start = doc.index("<!-- connection-moves")
    block = doc[doc.index("\n", start) + 1 : doc.index("<!-- /connection-moves -->")]
    assert block == exchange.conn_moves_markdown()


# A ClientConnection, driven without sockets ---------------------------------------------------


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = self.aborted = self.eof = self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def writelines(self, data: Any) -> None:
        self.written.extend(bytes(d) for d in data)

    def get_extra_info(self, key: str) -> Any:
        return ("127.0.0.1", 5555) if key == "peername" else None

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def out(self) -> bytes:
        data = b"".join(self.written)
        self.written.clear()
        return data


class Handle:
    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when, self.callback, self.args, self.cancelled = when, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """The little of an event loop a client connection uses, with time set by the test."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Handle:
        handle = Handle(self.now + delay, callback, args)
        self.timers.append(handle)
        return handle

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Handle:
        return self.call_later(0.0, callback, *args)

    def create_task(self, coro: Any) -> Any:
        coro.close()
        raise AssertionError("no new upstream connection in these tests: one is pooled")

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for handle in sorted(self.timers, key=lambda h: h.when):
            if handle.when <= self.now and not handle.cancelled:
                self.timers.remove(handle)
                handle.callback(*handle.args)


class Rig:
    def __init__(self) -> None:
        cfg = Config.model_validate(
            {
                "pools": {"p": {"servers": [{"name": "s", "address": "127.0.0.1:1"}]}},
                "services": {"w": {"listen": "127.0.0.1:0", "pool": "p"}},
            }
        )
        self.loop = Loop()
        self.registry = Registry(cfg)
        self.table = ConnectionTable(self.registry)
        self.server = self.registry.pool("p").servers[0]
        self.ctx = make_context(
            "w",
            cfg.services["w"],
            self.registry,
            self.table,
            self.loop,  # type: ignore[arg-type]
        )
        self.up_t = Transport()
        self.up = Upstream(self.server, self.table)
        self.up.connection_made(self.up_t)  # type: ignore[arg-type]
        self.table.put_upstream(self.server, self.up, 10)
        self.t = Transport()
        self.conn = ClientConnection(self.ctx)
        self.conn.connection_made(self.t)  # type: ignore[arg-type]


GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_keep_alive_exchange_leaves_the_connection_open_and_parkable() -> None:
    rig = Rig()
    conn = rig.conn
    assert conn.state is C.OPEN
    conn.data_received(GET)
    assert not conn.parkable()  # a request in flight
    rig.up.data_received(OK)
    assert rig.t.out().endswith(b"\r\n\r\nok")
    assert conn.state is C.OPEN and conn.current is None
    assert conn.parkable()


def test_the_clients_eof_is_answered_then_the_connection_closes() -> None:
    rig = Rig()
    conn = rig.conn
    conn.data_received(GET)
    assert conn.eof_received() is True  # keep the transport: the answer is still to come
    assert conn.state is C.INPUT_DONE and not conn.parkable()
    rig.up.data_received(OK)
    out = rig.t.out()
    assert b"Connection: close\r\n" in out and out.endswith(b"ok")
    assert conn.closed and rig.t.closed and conn.state is C.INPUT_DONE


def test_an_eof_with_nothing_in_flight_closes_at_once() -> None:
    rig = Rig()
    assert rig.conn.eof_received() is False  # the transport closes itself
    rig.conn.connection_lost(None)
    assert rig.conn.closed and rig.conn.state is C.OPEN  # closed as it was


def test_a_malformed_request_lingers_drops_what_follows_then_closes() -> None:
    rig = Rig()
    conn = rig.conn
    conn.data_received(b"NOT HTTP\r\n\r\n")
    assert rig.t.out().startswith(b"HTTP/1.1 400 ")
    assert conn.state is C.LINGERING and rig.t.eof and not rig.t.closed
    conn.data_received(GET)  # read and dropped: no request, no answer
    assert conn.current is None and rig.t.out() == b""
    assert conn.eof_received() is False
    rig.loop.advance(LINGER)
    assert conn.closed and rig.t.closed and conn.state is C.LINGERING


def test_an_upgrade_answered_101_is_a_tunnel_until_closed() -> None:
    rig = Rig()
    conn = rig.conn
    conn.data_received(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    assert conn.state is C.OPEN
    rig.up.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    assert rig.t.out().startswith(b"HTTP/1.1 101 ")
    assert conn.state is C.TUNNEL and not conn.parkable()
    rig.up_t.written.clear()
    conn.data_received(b"\x81\x01x")  # relayed as it is, not parsed
    assert rig.up_t.out() == b"\x81\x01x"
    rig.up.data_received(b"\x81\x01y")
    assert rig.t.out() == b"\x81\x01y"
    conn.check(rig.loop.now + 3600)  # no timeout applies to a tunnel
    assert conn.state is C.TUNNEL
    conn.connection_lost(None)
    assert conn.closed and conn.state is C.TUNNEL
    assert rig.up_t.closed and not rig.up_t.aborted  # a tunnel's server side is closed, not reset
    # the server is released as a tunnel's: its request was counted at the 101
    assert rig.server.connections == 0 and rig.server.requests_in_flight == 0


def test_a_tunnel_closed_from_the_server_side_is_released_as_a_tunnel() -> None:
    """The server ends the tunnel: the client connection is closed by the proxy first, then
    lost; it is still a tunnel then (closing keeps the state), so its server's books are
    released once, as a tunnel's."""
    rig = Rig()
    conn = rig.conn
    conn.data_received(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    rig.up.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    assert conn.state is C.TUNNEL and rig.server.connections == 1
    rig.up.connection_lost(None)
    assert conn.closed and rig.t.closed and conn.state is C.TUNNEL
    conn.connection_lost(None)
    assert rig.server.connections == 0 and rig.server.requests_in_flight == 0


def test_an_illegal_move_leaves_the_state_as_it_was() -> None:
    rig = Rig()
    conn = rig.conn
    conn.data_received(b"NOT HTTP\r\n\r\n")
    assert conn.state is C.LINGERING
    with pytest.raises(KeyError):
        conn.state = SWITCH_OF[conn.state]  # a lingering connection never becomes a tunnel
    assert conn.state is C.LINGERING
