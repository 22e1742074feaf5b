"""The sans-IO MySQL / MariaDB tracker (quiesce.dataplane.mysql): a real MariaDB 10.11
session recorded through PyMySQL (tests/dataplane/mysql_session.json, made by
tests/support/mysql_record.py) replayed read by read and split at random, with the state the
session was in after each step; TLS, the goodbye packet, result sets without EOF, long
packets, and malformed or oversized input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from quiesce.dataplane.mysql import (
    CLIENT_DEPRECATE_EOF,
    CLIENT_PROTOCOL_41,
    CLIENT_SSL,
    GOODBYE,
    QUIT,
    ClientFramer,
    ServerFramer,
    Session,
)
from tests.support import dbframers

pytestmark = pytest.mark.one_path  # sans-IO: no HTTP head path; the framers' own two


framers = dbframers.sans_io(
    {
        "Session": "MysqlSession",
        "ClientFramer": "MysqlClientFramer",
        "ServerFramer": "MysqlServerFramer",
    }
)  # every test on both


RECORDED = json.loads((Path(__file__).parent / "mysql_session.json").read_text())


def packet(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def trio(limit: int = 0x3FFFFFFF) -> tuple[Session, ClientFramer, ServerFramer]:
    s = Session()
    return s, ClientFramer(s, limit), ServerFramer(s, limit)


def replay(reads: list[list[str]]) -> list[tuple[str, str, str]]:
    """Feed the recorded reads; (expected state, state seen, note) at each mark."""
    s, c, b = trio()
    seen = []
    for entry in reads:
        if entry[0] == "mark":
            seen.append((entry[1], s.state, entry[2]))
            continue
        data = bytes.fromhex(entry[1])
        if entry[0] == "c":
            forward, reply, err = c.feed(data) if not s.started else (data, b"", c.typed(data))
            assert (forward, reply, err) == (data, b"", None)
        else:
            assert b.feed(data) is None
    assert s.ended and not s.queue  # the recording ends with COM_QUIT
    return seen


def test_a_recorded_session_is_followed_read_by_read() -> None:
    seen = replay(RECORDED)
    assert len(seen) >= 12
    for expected, state, note in seen:
        assert state == expected, note


def test_the_recording_split_at_random_points_is_followed_the_same() -> None:
    rng = random.Random(20)
    for _ in range(30):
        reads: list[list[str]] = []
        for entry in RECORDED:  # each read cut in up to 4 pieces at random
            if entry[0] == "mark":
                reads.append(entry)
                continue
            data = bytes.fromhex(entry[1])
            cuts = sorted(rng.sample(range(1, len(data)), min(3, len(data) - 1)))
            for a, z in zip([0, *cuts], [*cuts, len(data)], strict=True):
                reads.append([entry[0], data[a:z].hex()])
        for expected, state, note in replay(reads):
            assert state == expected, note


def greeting(caps: int = CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_DEPRECATE_EOF) -> bytes:
    body = b"\x0a" + b"10.11.19-MariaDB\0" + b"\1\0\0\0" + b"abcdefgh\0"
    body += (caps & 0xFFFF).to_bytes(2, "little") + b"\x2d" + b"\2\0"
    body += (caps >> 16).to_bytes(2, "little") + b"\x15" + b"\0" * 10 + b"ijklmnopqrst\0"
    return packet(0, body)


def response(caps: int, size: int = 0) -> bytes:
    body = caps.to_bytes(4, "little") + b"\0\0\0\1" + b"\x2d" + b"\0" * 23
    if size:
        body += b"app\0" + b"\x14" + b"p" * 20 + b"mysql_native_password\0"
    return packet(1, body)


def ok(seq: int, status: int = 0x0002) -> bytes:
    return packet(seq, b"\0\0\0" + status.to_bytes(2, "little") + b"\0\0")


def authed(caps: int = CLIENT_PROTOCOL_41) -> tuple[Session, ClientFramer, ServerFramer]:
    s, c, b = trio()
    assert b.feed(greeting()) is None
    assert s.state == "query" and not s.closable()
    assert c.feed(response(caps, 1))[2] is None
    assert b.feed(ok(2)) is None
    assert s.started and s.state == "idle" and s.closable() and s.fresh
    return s, c, b


def test_an_ssl_request_makes_the_session_opaque_and_is_passed_on() -> None:
    s, c, b = trio()
    assert b.feed(greeting()) is None
    hello = response(CLIENT_PROTOCOL_41 | CLIENT_SSL)  # 32 bytes: the SSL request
    client_hello = b"\x16\x03\x01\x02\x00" + b"\x01" * 40
    assert c.feed(hello + client_hello) == (hello + client_hello, b"", None)
    assert s.opaque and s.state == "tls" and not s.closable()
    assert b.feed(b"\x16\x03\x03\x00\x7a" + b"\x02" * 300) is None  # TLS: not read
    assert c.feed(b"\x17\x03\x03" + b"\xff" * 100)[2] is None
    assert s.goodbye() == (b"", b"")  # nothing cleartext to say


def test_the_goodbye_is_err_1053_with_sqlstate_08s01_and_com_quit() -> None:
    s, c, _b = authed()
    assert s.goodbye() == (GOODBYE, QUIT)
    length = int.from_bytes(GOODBYE[:3], "little")
    assert len(GOODBYE) == 4 + length and GOODBYE[3] == 1  # the answer to the next command
    assert GOODBYE[4] == 0xFF and int.from_bytes(GOODBYE[5:7], "little") == 1053
    assert GOODBYE[7:13] == b"#08S01" and b"shutdown" in GOODBYE
    assert packet(0, b"\x01") == QUIT
    c.typed(QUIT)
    assert s.done and s.goodbye() == (b"", b"")


def test_a_result_set_without_eof_packets_deprecate_eof() -> None:
    s, c, b = authed(CLIENT_PROTOCOL_41 | CLIENT_DEPRECATE_EOF)
    assert s.deprecate_eof
    assert c.typed(packet(0, b"\x03SELECT a FROM t")) is None
    assert s.state == "query" and not s.fresh
    col = packet(2, b"\x03def" + b"\0" * 20)
    row = packet(3, b"\x01x")
    end = packet(5, b"\xfe\0\0" + (0x0001).to_bytes(2, "little") + b"\0\0")  # OK, in trans
    assert b.feed(packet(1, b"\x01") + col + row) is None
    assert s.state == "query"  # no EOF after the column: a row, not the end
    assert b.feed(row + end) is None
    assert s.state == "transaction" and not s.closable()
    c.typed(packet(0, b"\x03COMMIT"))
    assert b.feed(ok(1)) is None
    assert s.state == "idle" and s.closable()


def test_a_query_over_16_mib_spans_packets() -> None:
    s, c, b = authed()
    first = b"\x03" + b"x" * (0xFFFFFF - 1)
    big = packet(0, first) + packet(1, b"y" * 10)
    assert c.typed(big[:70000]) is None
    assert c.typed(big[70000:]) is None
    assert s.queue == [0x03]
    assert b.feed(ok(2)) is None and s.state == "idle"


def test_pipelined_commands_each_wait_for_their_response() -> None:
    s, c, b = authed()
    close = packet(0, b"\x19\1\0\0\0")  # COM_STMT_CLOSE: no response
    assert c.typed(close + packet(0, b"\x03BEGIN") + packet(0, b"\x0e")) is None
    assert s.queue == [0x03, 0x0E]
    assert b.feed(ok(1, 0x0003)) is None
    assert s.state == "query"  # the ping still waits
    assert b.feed(ok(1, 0x0003)) is None
    assert s.state == "transaction"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "client does not speak MySQL"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40, "does not speak MySQL"),
        (packet(1, b"\0" * 40), "protocol 4.1"),
        (packet(1, b"\0" * 8), "first packet: 8 bytes"),
    ],
)
def test_a_client_speaking_something_else_is_an_error(data: bytes, reason: str) -> None:
    _s, c, b = trio()
    assert b.feed(greeting()) is None
    err = c.feed(data)[2]
    assert err is not None and reason in err


def test_an_oversized_packet_is_an_error_before_it_is_read() -> None:
    _s, c, b = trio(limit=4096)
    assert b.feed(greeting()) is None
    c.feed(response(CLIENT_PROTOCOL_41, 1))
    b.feed(ok(2))
    err = c.typed(b"\xff\xff\x00\x00\x03SELECT")
    assert err == "client sent a packet of 65535 bytes (limit 4096)"
    _s2, c2, _b2 = authed()
    c2.max = 0x1000000
    err = c2.typed(packet(0, b"\x03" + b"x" * (0xFFFFFF - 1)) + b"\xff\xff\x00\x01")
    assert err is not None and "more than 16777216 bytes" in err


def test_a_server_out_of_step_is_an_error() -> None:
    _s, _c, b = trio()
    err = b.feed(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert err is not None and "server" in err
    _s, c, b = authed()
    assert b.feed(ok(1)) == "server sent a packet with no command outstanding"
    _s, c, b = authed()
    assert b.feed(packet(0, b"\xff\x1d\x04#08S01bye")) is None  # its last word: allowed
    _s, c, b = authed()
    err = c.typed(packet(3, b"\x03SELECT 1"))
    assert err == "client sent a packet with sequence id 3 and no command outstanding"


def test_a_refused_connection_is_done() -> None:
    s, _c, b = trio()
    assert b.feed(packet(0, b"\xff\x10\x04Too many connections")) is None
    assert s.done and not s.closable()
