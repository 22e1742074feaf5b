"""The connection phase of a mysql service with ``tls``, sans-IO (quiesce.dataplane.mysqltls):
CLIENT_SSL offered in the greeting, the client's SSL request taken (never passed on) with the
TLS handshake bytes after it, the handshake response inside TLS passed on with CLIENT_SSL
cleared and the sequence ids renumbered both ways (auth switch and more-data packets too)
until the server's OK or ERR, whatever the reads' split; a cleartext client untouched; a
hostile client's cleartext bytes after its SSL request, a wrong sequence id or a second SSL
request refused. The rewritten bytes, fed to the framers, end in the command phase."""

from __future__ import annotations

import random

import pytest

from quiesce.dataplane.mysql import (
    CLIENT_PROTOCOL_41,
    CLIENT_SSL,
    COMMAND,
    ClientFramer,
    ServerFramer,
    Session,
)
from quiesce.dataplane.mysqltls import Splice
from tests.dataplane.test_mysql import greeting, ok, packet, response

pytestmark = pytest.mark.one_path

SSL_REQUEST = response(CLIENT_PROTOCOL_41 | CLIENT_SSL)  # 32 bytes, sequence id 1
HELLO = b"\x16\x03\x01\x00\x05hello"  # the start of a TLS ClientHello


def caps_of(greet: bytes) -> int:
    q = greet.index(b"\0", 5) + 1 + 4 + 8 + 1
    return int.from_bytes(greet[q : q + 2], "little")


def auth_switch(seq: int) -> bytes:
    return packet(seq, b"\xfemysql_native_password\0" + b"s" * 20 + b"\0")


def chunks(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def feed_server(splice: Splice, data: bytes, rng: random.Random) -> bytes:
    out = b""
    for piece in chunks(data, rng):
        got = splice.server(piece)
        assert isinstance(got, bytes), got
        out += got
    return out


def feed_client(splice: Splice, data: bytes, rng: random.Random) -> tuple[bytes, bytes | None]:
    out, tls = b"", None
    for piece in chunks(data, rng):
        if tls is not None:  # the TLS engine's from now on, not the splice's
            tls += piece
            continue
        forward, start, err = splice.client(piece)
        assert err is None
        out += forward
        tls = start
    return out, tls


def test_the_greeting_offers_tls_whatever_the_server_does() -> None:
    for caps in (CLIENT_PROTOCOL_41, CLIENT_PROTOCOL_41 | CLIENT_SSL):
        greet = greeting(caps)
        for cut in range(len(greet) + 1):
            s = Splice()
            first, second = s.server(greet[:cut]), s.server(greet[cut:])
            assert isinstance(first, bytes) and isinstance(second, bytes)
            out = first + second
            assert caps_of(out) == caps | CLIENT_SSL
            assert out == greeting(caps | CLIENT_SSL)  # that bit only
            assert s.greeted and not s.done


@pytest.mark.parametrize("seed", range(40))
def test_a_tls_session_is_renumbered_until_the_ok_whatever_the_split(seed: int) -> None:
    rng = random.Random(seed)
    s = Splice()
    feed_server(s, greeting(), rng)
    # the SSL request and the start of the TLS handshake, in one read or split
    forward, tls = feed_client(s, SSL_REQUEST + HELLO, rng)
    assert forward == b"" and tls == HELLO  # the TLS engine's, never the server's
    # inside TLS: the full handshake response with sequence id 2 and CLIENT_SSL
    inner = response(CLIENT_PROTOCOL_41 | CLIENT_SSL, 1)
    inner = inner[:3] + b"\x02" + inner[4:]
    forward, tls = feed_client(s, inner, rng)
    assert tls is None
    assert forward == response(CLIENT_PROTOCOL_41, 1)  # sequence id 1, CLIENT_SSL cleared
    # the server asks for another method (2), the client answers (3), more data, then OK
    assert feed_server(s, auth_switch(2), rng) == auth_switch(3)
    assert not s.done
    assert feed_client(s, packet(4, b"x" * 20), rng) == (packet(3, b"x" * 20), None)
    more = packet(4, b"\x01\x03")
    assert feed_server(s, more + ok(5), rng) == packet(5, b"\x01\x03") + ok(6)
    assert s.done
    # the command phase is not touched (the relay stops calling it there anyway)
    assert feed_server(s, ok(1), rng) == ok(1)


@pytest.mark.parametrize("seed", range(10))
def test_a_refused_login_is_renumbered_too(seed: int) -> None:
    rng = random.Random(seed)
    s = Splice()
    feed_server(s, greeting(), rng)
    feed_client(s, SSL_REQUEST, rng)
    inner = response(CLIENT_PROTOCOL_41 | CLIENT_SSL, 1)
    feed_client(s, inner[:3] + b"\x02" + inner[4:], rng)
    err = packet(2, b"\xff\x15\x04#28000Access denied")
    assert feed_server(s, err, rng) == packet(3, err[4:])
    assert s.done


def test_the_rewritten_bytes_take_the_framers_to_the_command_phase() -> None:
    session = Session()
    c, b = ClientFramer(session), ServerFramer(session)
    s = Splice()
    for side, data in (
        ("s", greeting()),
        ("c", SSL_REQUEST + HELLO),
        ("c", response(CLIENT_PROTOCOL_41 | CLIENT_SSL, 1).replace(b"\x01", b"\x02", 1)),
        ("s", auth_switch(2)),
        ("c", packet(4, b"x" * 20)),
        ("s", ok(5)),
    ):
        if side == "s":
            out = s.server(data)
            assert isinstance(out, bytes)
            assert b.feed(data) is None  # the server's own view, before the rewrite
        else:
            forward, _, err = s.client(data)
            assert err is None
            if forward:
                assert c.feed(forward)[2] is None
    assert session.phase == COMMAND and session.started and not session.opaque


def test_a_cleartext_client_passes_untouched() -> None:
    rng = random.Random(1)
    s = Splice()
    feed_server(s, greeting(), rng)
    plain = response(CLIENT_PROTOCOL_41, 1)
    assert feed_client(s, plain, rng) == (plain, None)
    assert s.done
    assert s.server(ok(2)) == ok(2)


@pytest.mark.parametrize(
    ("after", "error"),
    [
        (response(CLIENT_PROTOCOL_41, 1), "client sent 83 bytes after its SSL request"),
        (b"\x03SELECT", "client sent 7 bytes after its SSL request that are not TLS"),
    ],
)
def test_cleartext_after_an_ssl_request_is_refused(after: bytes, error: str) -> None:
    """Bytes that follow an SSL request must be the TLS handshake: cleartext there would be
    taken as if it came inside TLS (PostgreSQL's CVE-2021-23214)."""
    s = Splice()
    s.server(greeting())
    forward, tls, err = s.client(SSL_REQUEST + after)
    assert forward == b"" and tls is None and err is not None and err.startswith(error)


def test_a_wrong_sequence_or_a_second_ssl_request_inside_tls_is_refused() -> None:
    s = Splice()
    s.server(greeting())
    assert s.client(SSL_REQUEST)[1] == b""
    assert s.client(SSL_REQUEST.replace(b"\x01", b"\x02", 1))[2] == (
        "client sent a second SSL request inside TLS"
    )
    s = Splice()
    s.server(greeting())
    s.client(SSL_REQUEST)
    assert s.client(response(CLIENT_PROTOCOL_41 | CLIENT_SSL, 1))[2] == (
        "client's handshake response inside TLS has sequence id 1"
    )
    s = Splice()
    s.server(greeting())
    assert s.client(SSL_REQUEST.replace(b"\x01", b"\x00", 1))[2] == (
        "client sent an SSL request with sequence id 0"
    )


def test_an_oversized_greeting_is_refused() -> None:
    s = Splice()
    assert s.server(packet(0, b"\x0a" * 5000)) == (
        "server sent a greeting of 5000 bytes (limit 4096)"
    )


def feed_both(splice: Splice, data: bytes, rng: random.Random) -> tuple[bytes, bytes]:
    """A handshake response, split: (the framer's view, what goes to the server: ``wire``
    in place of the read that made it, then the rest as the framer sees it)."""
    view, to_server = b"", b""
    for piece in chunks(data, rng):
        forward, tls, err = splice.client(piece)
        assert err is None and tls is None
        view += forward
        if splice.wire is not None:
            to_server += splice.wire
            splice.wire = None
        elif to_server:
            to_server += forward
    return view, to_server


def ssl_request_of(resp: bytes) -> bytes:
    """The relay's own SSL request for a handshake response: its first 32 bytes, CLIENT_SSL."""
    caps = int.from_bytes(resp[4:8], "little") | CLIENT_SSL
    return packet(1, caps.to_bytes(4, "little") + resp[8:36])


@pytest.mark.parametrize("seed", range(20))
def test_tls_to_the_server_for_a_cleartext_client(seed: int) -> None:
    """A pool with tls, a cleartext client: the server gets the relay's SSL request then the
    response with sequence id 2 (``wire``, for TLS); the framer's view is the response as it
    came; server to client -1, client to server +1, until the OK."""
    rng = random.Random(seed)
    s = Splice(offer=False, server_tls=True)
    assert caps_of(feed_server(s, greeting(), rng)) & CLIENT_SSL == 0  # not offered
    resp = response(CLIENT_PROTOCOL_41, 1)
    view, to_server = feed_both(s, resp, rng)
    assert view == resp
    wire_resp = packet(2, (CLIENT_PROTOCOL_41 | CLIENT_SSL).to_bytes(4, "little") + resp[8:])
    assert to_server == ssl_request_of(resp) + wire_resp
    assert feed_server(s, auth_switch(3), rng) == auth_switch(2)
    assert feed_client(s, packet(3, b"x" * 20), rng) == (packet(4, b"x" * 20), None)
    assert feed_server(s, ok(5), rng) == ok(4)
    assert s.done


@pytest.mark.parametrize("seed", range(20))
def test_tls_both_ways_keeps_the_sequence_ids(seed: int) -> None:
    rng = random.Random(seed)
    s = Splice(offer=True, server_tls=True)
    feed_server(s, greeting(), rng)
    assert feed_client(s, SSL_REQUEST + HELLO, rng) == (b"", HELLO)
    inner = response(CLIENT_PROTOCOL_41 | CLIENT_SSL, 1)
    inner = inner[:3] + b"\x02" + inner[4:]
    view, to_server = feed_both(s, inner, rng)
    assert view == response(CLIENT_PROTOCOL_41, 1)  # the framer's view
    assert to_server == ssl_request_of(inner) + inner  # as the client sent it inside TLS
    assert feed_server(s, auth_switch(3) + ok(5), rng) == auth_switch(3) + ok(5)
    assert s.done


def test_a_server_without_tls_or_a_client_asking_unoffered_tls_is_refused() -> None:
    s = Splice(server_tls=True)
    assert s.server(greeting(CLIENT_PROTOCOL_41)) == (
        "server does not offer TLS (CLIENT_SSL), which its pool's tls asks for"
    )
    s = Splice(offer=False, server_tls=True)
    s.server(greeting())
    assert s.client(SSL_REQUEST)[2] == "client asked for TLS, which this service does not offer"
