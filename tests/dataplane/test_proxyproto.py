"""The PROXY protocol codec, sans-IO (quiesce.dataplane.proxyproto): versions 1 and 2 read
whole, byte by byte and with data behind; what it makes read back; malformed and spoofed
headers refused naming what is wrong. Bytes from the spec (haproxy's proxy-protocol.txt)."""

from __future__ import annotations

import pytest

from quiesce.dataplane.proxyproto import SIGNATURE, Header, ProxyHeaderError, read, v1, v2

pytestmark = pytest.mark.one_path  # no HTTP head is read

V1 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
V2_4 = (
    SIGNATURE
    + b"\x21\x11\x00\x0c"
    + bytes([192, 168, 0, 1, 192, 168, 0, 11])
    + (56324).to_bytes(2, "big")
    + (443).to_bytes(2, "big")
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (V1, Header(len(V1), ("192.168.0.1", 56324), ("192.168.0.11", 443), 1)),
        (
            b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n",
            Header(36, ("2001:db8::1", 1), ("::1", 65535), 1),
        ),
        (b"PROXY UNKNOWN\r\n", Header(15, None, None, 1)),
        (b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n", Header(31, None, None, 1)),
        (V2_4, Header(28, ("192.168.0.1", 56324), ("192.168.0.11", 443), 2)),
        (SIGNATURE + b"\x20\x00\x00\x00", Header(16, None, None, 2)),  # LOCAL
        (SIGNATURE + b"\x21\x00\x00\x00", Header(16, None, None, 2)),  # UNSPEC
        # TLVs behind the addresses are skipped
        (V2_4[:14] + b"\x00\x11" + V2_4[16:] + b"\x04\x00\x02ab", None),
    ],
)
def test_reads_whole_and_piece_by_piece(raw: bytes, expected: Header | None) -> None:
    got = read(raw + b"GET / HTTP/1.1\r\n")
    if expected is None:  # the TLV case: the same addresses, 5 more bytes consumed
        assert got == Header(33, ("192.168.0.1", 56324), ("192.168.0.11", 443), 2)
    else:
        assert got == expected
    for i in range(got.consumed):  # fewer bytes than the header: never a verdict
        assert read(raw[:i]) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "no PROXY header"),
        (b"PROXX TCP4", "not a PROXY header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "expected PROXY TCP4|TCP6"),
        (b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n", "'1.2.3.999' is not an IP address"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "::1 is not an IPv4 address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "'65536' is not a port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "'01' is not a port"),
        (b"PROXY TCP4 " + b"1" * 120, "longer than 107 bytes"),
        (SIGNATURE[:5] + b"x", "bad version 2 signature"),
        (SIGNATURE + b"\x11\x11\x00\x00", "version 1 in the header"),
        (SIGNATURE + b"\x22\x11\x00\x00", "unknown command 2"),
        (SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "0x12 is not TCP"),
        (SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "shorter than 12 bytes"),
    ],
)
def test_refuses_malformed_headers(raw: bytes, message: str) -> None:
    with pytest.raises(ProxyHeaderError, match=message.replace("|", r"\|")):
        read(raw)


@pytest.mark.parametrize(
    ("src", "dst"),
    [(("10.0.0.1", 40000), ("10.0.0.2", 80)), (("2001:db8::5", 1), ("2001:db8::6", 443))],
)
def test_what_it_makes_reads_back(src: tuple[str, int], dst: tuple[str, int]) -> None:
    for make, version in ((v1, 1), (v2, 2)):
        raw = make(src, dst)
        assert read(raw + b"rest") == Header(len(raw), src, dst, version)


def test_made_bytes_match_the_spec() -> None:
    assert v1(("192.168.0.1", 56324), ("192.168.0.11", 443)) == V1
    assert v2(("192.168.0.1", 56324), ("192.168.0.11", 443)) == V2_4
    assert v1(("10.0.0.1", 1), ("::1", 2)) == b"PROXY UNKNOWN\r\n"
    assert v2(None, None) == SIGNATURE + b"\x20\x00\x00\x00"
