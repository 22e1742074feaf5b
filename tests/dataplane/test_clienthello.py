"""The sans-IO ClientHello reader of SNI routing (issue 16, items 1 and 6): real hellos made
by OpenSSL through memory BIOs (no socket), every truncation, fragments, and garbage."""

from __future__ import annotations

import functools
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quiesce.dataplane.clienthello import MAX_HELLO, NEED_MORE, Hello, NotHello
from quiesce.dataplane.clienthello import parse_hello as parse

pytestmark = pytest.mark.one_path  # no HTTP head read


@functools.cache
def client_hello(name: str | None = "api.example.com", alpn: tuple[str, ...] = ()) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if name is None:
        ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_the_server_name_and_alpn_of_a_real_hello() -> None:
    data = client_hello("API.Example.com", ("h2", "http/1.1"))
    assert parse(data) == Hello("api.example.com", ("h2", "http/1.1"))
    assert parse(data + b"\x17\x03\x03junk after it") == Hello(
        "api.example.com", ("h2", "http/1.1")
    )


def test_a_hello_without_a_name() -> None:
    assert parse(client_hello(None)) == Hello(None, ())


def test_every_truncation_needs_more_and_never_fails() -> None:
    data = client_hello("a.example")
    for n in range(len(data)):
        assert parse(data[:n]) is NEED_MORE, n


def test_a_hello_fragmented_over_records() -> None:
    data = client_hello("frag.example")
    message = data[5:]
    records = b"".join(
        b"\x16\x03\x01" + len(message[i : i + 7]).to_bytes(2) + message[i : i + 7]
        for i in range(0, len(message), 7)
    )
    assert parse(records) == Hello("frag.example", ())
    for n in range(len(records)):
        assert parse(records[:n]) is NEED_MORE


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a TLS handshake record"),
        (b"\x17\x03\x03\x00\x10" + b"x" * 16, "not a TLS handshake record"),
        (b"\x16\x02\x00\x00\x10" + b"x" * 16, "not a TLS record version"),
        (b"\x16\x03\x01\x00\x00", "bad TLS record length 0"),
        (b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", "not a ClientHello"),
        (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", f"(at most {MAX_HELLO})"),
        # a hello whose session id length runs past its end
        (
            b"\x16\x03\x01\x00\x2a\x01\x00\x00\x26" + b"\x03\x03" + b"r" * 32 + b"\x20\x00\x00\x00",
            "truncated",
        ),
    ],
)
def test_garbage_is_refused_with_a_reason(data: bytes, why: str) -> None:
    with pytest.raises(NotHello, match=why.replace("(", r"\(").replace(")", r"\)")):
        parse(data)


def test_a_corrupted_name_is_refused() -> None:
    data = bytearray(client_hello("bad.example"))
    i = data.find(b"bad.example")
    data[i] = 0x0A  # a line feed in the name
    with pytest.raises(NotHello, match="printable"):
        parse(bytes(data))


@given(st.binary(max_size=600))
def test_random_bytes_never_crash(blob: bytes) -> None:
    try:
        parse(b"\x16\x03\x01" + blob)
    except NotHello:
        pass


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=255))
def test_a_flipped_byte_never_crashes(seed: int, value: int) -> None:
    data = bytearray(client_hello("x.example", ("http/1.1",)))
    data[seed % len(data)] = value
    try:
        parse(bytes(data))
    except NotHello:
        pass
