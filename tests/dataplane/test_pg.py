"""The sans-IO PostgreSQL framer (quiesce.dataplane.pg): start-up, typed messages both ways,
transaction state, split reads, malformed and oversized input."""

from __future__ import annotations

import random

import pytest

from quiesce.dataplane.pg import (
    GOODBYE,
    BackendFramer,
    FrontendFramer,
    Session,
)
from tests.support import dbframers

pytestmark = pytest.mark.one_path  # sans-IO: no HTTP head path; the framers' own two


framers = dbframers.sans_io(
    {
        "Session": "PgSession",
        "FrontendFramer": "PgFrontendFramer",
        "BackendFramer": "PgBackendFramer",
    }
)  # every test on both


def msg(t: bytes, body: bytes = b"") -> bytes:
    return t + (len(body) + 4).to_bytes(4, "big") + body


def startup(user: bytes = b"u") -> bytes:
    body = (196608).to_bytes(4, "big") + b"user\0" + user + b"\0\0"
    return (len(body) + 4).to_bytes(4, "big") + body


SSL = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
GSS = (8).to_bytes(4, "big") + (80877104).to_bytes(4, "big")
CANCEL = (16).to_bytes(4, "big") + (80877102).to_bytes(4, "big") + b"\1\2\3\4\5\6\7\x08"


def rfq(status: bytes) -> bytes:
    return msg(b"Z", status)


AUTH_OK = msg(b"R", b"\0\0\0\0") + msg(b"S", b"a\0b\0") + msg(b"K", b"\0" * 8)


def pair() -> tuple[Session, FrontendFramer, BackendFramer]:
    s = Session()
    return s, FrontendFramer(s), BackendFramer(s)


def started() -> tuple[Session, FrontendFramer, BackendFramer]:
    s, f, b = pair()
    assert f.feed(startup()) == (startup(), b"", None)
    assert s.state == "query"  # the start-up waits for its ReadyForQuery
    assert b.feed(AUTH_OK + rfq(b"I")) is None
    assert s.state == "idle" and s.closable()
    return s, f, b


def test_ssl_request_is_answered_n_and_not_passed_on() -> None:
    s, f, _b = pair()
    assert f.feed(SSL) == (b"", b"N", None)
    assert not s.started
    assert f.feed(GSS) == (b"", b"N", None)
    # then the start-up, split across reads
    data = startup()
    out = b""
    for i in range(len(data)):
        fwd, reply, err = f.feed(data[i : i + 1])
        assert err is None and reply == b""
        out += fwd
    assert out == data and s.started and s.pending == 1


def test_a_session_is_fresh_until_its_first_query() -> None:
    s, f, _ = started()
    assert s.fresh and s.closable()
    f.feed(msg(b"Q", b"SELECT 1\0"))
    assert not s.fresh
    s, f, _ = started()
    f.feed(msg(b"P", b"\0SELECT 1\0\0\0"))
    assert not s.fresh


def test_transaction_state_follows_ready_for_query() -> None:
    s, f, b = started()
    f.feed(msg(b"Q", b"BEGIN\0"))
    assert s.state == "query" and not s.closable()
    b.feed(msg(b"C", b"BEGIN\0") + rfq(b"T"))
    assert s.state == "transaction" and not s.closable()
    f.feed(msg(b"Q", b"SELECT 1/0\0"))
    b.feed(msg(b"E", b"SERROR\0C22012\0\0") + rfq(b"E"))
    assert s.state == "transaction"
    f.feed(msg(b"Q", b"ROLLBACK\0"))
    assert s.state == "query"
    b.feed(msg(b"C", b"ROLLBACK\0") + rfq(b"I"))
    assert s.state == "idle" and s.closable()


def test_extended_protocol_is_running_until_sync_answered() -> None:
    s, f, b = started()
    f.feed(msg(b"P", b"\0SELECT 1\0\0\0") + msg(b"B", b"\0\0\0\0\0\0\0\0"))
    assert s.state == "query" and s.unsynced  # no Sync yet: a query is running
    f.feed(msg(b"E", b"\0\0\0\0\0") + msg(b"S"))
    assert s.pending == 1 and not s.unsynced
    b.feed(msg(b"1") + msg(b"2") + msg(b"D", b"\0\1\0\0\0\1" + b"1") + msg(b"C", b"SELECT 1\0"))
    assert s.state == "query"
    b.feed(rfq(b"I"))
    assert s.closable()


def test_listen_keeps_the_session_until_unlisten() -> None:
    s, f, b = started()
    f.feed(msg(b"Q", b"LISTEN ch\0"))
    b.feed(msg(b"C", b"LISTEN\0") + rfq(b"I"))
    assert s.state == "idle" and not s.closable()
    f.feed(msg(b"Q", b"UNLISTEN *\0"))
    b.feed(msg(b"C", b"UNLISTEN\0") + rfq(b"I"))
    assert s.closable()


def test_every_split_of_a_conversation_gives_the_same_state() -> None:
    server = AUTH_OK + rfq(b"I") + msg(b"C", b"BEGIN\0") + rfq(b"T")
    server += msg(b"T", b"\0\1" + b"x" * 300) + msg(b"D", b"y" * 1000) + msg(b"C", b"SELECT 1\0")
    server += rfq(b"T")
    client = startup() + msg(b"Q", b"BEGIN\0") + msg(b"Q", b"SELECT " + b"z" * 500 + b"\0")
    rng = random.Random(7)
    for _ in range(200):
        s, f, b = pair()
        for data, feed in ((client, f.feed), (server, b.feed)):
            pos = 0
            while pos < len(data):
                step = rng.choice((1, 2, 3, 5, 7, 64, 1000))
                r = feed(data[pos : pos + step])
                assert r is None or r[2] is None
                pos += step
        assert (s.status, s.pending, s.state) == (ord("T"), 0, "transaction")


def test_cancel_request_passes_and_nothing_may_follow() -> None:
    s, f, _ = pair()
    assert f.feed(CANCEL) == (CANCEL, b"", None)
    assert s.cancel
    assert f.feed(b"Q")[2] == "client sent more after a CancelRequest"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "does not speak PostgreSQL 3"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01", "does not speak PostgreSQL 3"),  # a TLS hello
        ((20000).to_bytes(4, "big") + (196608).to_bytes(4, "big"), "start-up packet of length"),
        ((12).to_bytes(4, "big") + (80877103).to_bytes(4, "big"), "encryption request"),
        ((8).to_bytes(4, "big") + (80877102).to_bytes(4, "big"), "CancelRequest of length"),
    ],
)
def test_a_bad_start_up_is_an_error(data: bytes, error: str) -> None:
    _, f, _ = pair()
    fwd, _, err = f.feed(data)
    assert err is not None and error in err and fwd == b""


def test_malformed_and_oversized_messages_are_errors() -> None:
    s, f, b = started()
    assert "unknown message type b'!'" in str(f.feed(msg(b"!"))[2])
    s, f, b = started()
    assert "length 3" in str(f.feed(b"Q\0\0\0\3")[2])
    s = Session()
    small = FrontendFramer(s, 2048)
    small.feed(startup())
    assert "length 2053" in str(small.feed(b"Q" + (2053).to_bytes(4, "big"))[2])
    s2 = Session()
    ok = FrontendFramer(s2, 2048)
    ok.feed(startup())
    assert ok.feed(msg(b"Q", b"x" * 2000))[2] is None
    _, _, b = started()
    assert b.feed(msg(b"q")) == "server sent an unknown message type b'q'"


def test_goodbye_is_a_fatal_admin_shutdown() -> None:
    assert GOODBYE[:1] == b"E"
    assert int.from_bytes(GOODBYE[1:5], "big") == len(GOODBYE) - 1
    fields = GOODBYE[5:-1].split(b"\0")
    assert b"C57P01" in fields and b"SFATAL" in fields
