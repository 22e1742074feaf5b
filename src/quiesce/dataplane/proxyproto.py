"""The PROXY protocol (HAProxy's, versions 1 and 2), sans-IO: read a header from the first
bytes of a connection, and make one to send before ours.

    header = read(buf)          # None: not enough bytes yet; raises ProxyHeaderError
    header.consumed, header.source, header.destination   # (ip, port) or None (LOCAL, UNKNOWN)
    v1(source, destination) / v2(source, destination)    # the bytes to send

Version 1 is one text line, ``PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n`` (at most 107
bytes) or ``PROXY UNKNOWN …\\r\\n``; version 2 a 12-byte signature, a version and command
byte, a family byte, a 2-byte length and the addresses (TLVs after them are skipped). What
is not one of those exactly is refused, naming what is wrong: a listener that accepts the
protocol closes such a connection (spec: "the receiver must not try to guess").
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107
V2_MAX = 16 + 65535

Address = tuple[str, int]


class ProxyHeaderError(ValueError):
    """A malformed or unsupported PROXY header; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Header:
    consumed: int  # bytes of the buffer the header took
    source: Address | None  # None: LOCAL (v2) or UNKNOWN (v1): the connection's own
    destination: Address | None
    version: int


def read(buf: bytes) -> Header | None:
    """The header at the start of ``buf``, or None when more bytes are needed to tell."""
    if not buf:
        return None
    if buf[:1] == b"P":
        return _v1(buf)
    if buf[:1] == b"\r":
        return _v2(buf)
    raise ProxyHeaderError("no PROXY header (neither 'PROXY ' nor the version 2 signature)")


def _v1(buf: bytes) -> Header | None:
    if not b"PROXY "[: len(buf)] == buf[:6]:
        raise ProxyHeaderError("not a PROXY header")
    end = buf.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(buf) >= V1_MAX:
            raise ProxyHeaderError(f"version 1 header longer than {V1_MAX} bytes")
        return None
    parts = buf[:end].decode("ascii", "replace").split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return Header(end + 2, None, None, 1)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("version 1: expected PROXY TCP4|TCP6 SRC DST SPORT DPORT")
    family = 4 if parts[1] == "TCP4" else 6
    src = _address(parts[2], parts[4], family)
    dst = _address(parts[3], parts[5], family)
    return Header(end + 2, src, dst, 1)


def _address(ip: str, port: str, family: int) -> Address:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise ProxyHeaderError(f"version 1: {ip!r} is not an IP address") from None
    if addr.version != family:
        raise ProxyHeaderError(f"version 1: {ip} is not an IPv{family} address")
    if not port.isdigit() or not 0 <= int(port) <= 65535 or (len(port) > 1 and port[0] == "0"):
        raise ProxyHeaderError(f"version 1: {port!r} is not a port")
    return str(addr), int(port)


def _v2(buf: bytes) -> Header | None:
    n = min(len(buf), 12)
    if buf[:n] != SIGNATURE[:n]:
        raise ProxyHeaderError("not a PROXY header (bad version 2 signature)")
    if len(buf) < 16:
        return None
    ver_cmd, family, length = buf[12], buf[13], struct.unpack_from("!H", buf, 14)[0]
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"version 2: version {ver_cmd >> 4} in the header")
    command = ver_cmd & 0x0F
    if command > 1:
        raise ProxyHeaderError(f"version 2: unknown command {command}")
    if len(buf) < 16 + length:
        return None
    consumed = 16 + length
    if command == 0:  # LOCAL: the sender's own connection (a health check)
        return Header(consumed, None, None, 2)
    body = buf[16:consumed]
    if family == 0x11:  # TCP over IPv4
        if length < 12:
            raise ProxyHeaderError("version 2: an IPv4 address block shorter than 12 bytes")
        s, d, sp, dp = struct.unpack_from("!4s4sHH", body)
        return Header(consumed, (_ip(s), sp), (_ip(d), dp), 2)
    if family == 0x21:  # TCP over IPv6
        if length < 36:
            raise ProxyHeaderError("version 2: an IPv6 address block shorter than 36 bytes")
        s, d, sp, dp = struct.unpack_from("!16s16sHH", body)
        return Header(consumed, (_ip(s), sp), (_ip(d), dp), 2)
    if family == 0x00:  # UNSPEC
        return Header(consumed, None, None, 2)
    raise ProxyHeaderError(f"version 2: family/protocol 0x{family:02x} is not TCP")


def _ip(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def v1(source: Address, destination: Address) -> bytes:
    """A version 1 header: ``PROXY TCP4|TCP6 …`` (both addresses of one family)."""
    s, d = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if s.version != d.version:
        return b"PROXY UNKNOWN\r\n"
    return (f"PROXY TCP{s.version} {s} {d} {source[1]} {destination[1]}\r\n").encode()


def v2(source: Address | None, destination: Address | None) -> bytes:
    """A version 2 header, PROXY command over TCP; LOCAL when ``source`` is None."""
    if source is None or destination is None:
        return SIGNATURE + b"\x20\x00\x00\x00"
    s, d = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if s.version != d.version:
        return SIGNATURE + b"\x21\x00\x00\x00"  # UNSPEC: the receiver keeps its own
    if s.version == 4:
        body = struct.pack("!4s4sHH", s.packed, d.packed, source[1], destination[1])
        return SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body
    body = struct.pack("!16s16sHH", s.packed, d.packed, source[1], destination[1])
    return SIGNATURE + b"\x21\x21" + struct.pack("!H", len(body)) + body


def for_upstream(version: str, transport: Any, proxied: Header | None) -> bytes:
    """``pools.X.send_proxy``'s header (``"v1"``/``"v2"``) for a client connection: the
    client address it carried in (``proxied``) or its own, and the address it reached."""
    if proxied is not None and proxied.source is not None:
        source: Address | None = proxied.source
        destination = proxied.destination
    else:
        source = _pair(transport.get_extra_info("peername"))
        destination = _pair(transport.get_extra_info("sockname"))
    if version == "v2":
        return v2(source, destination)
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    return v1(source, destination)


def _pair(name: Any) -> Address | None:
    """(ip, port) of a socket name, None for one that is not IP (a unix socket)."""
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return None
