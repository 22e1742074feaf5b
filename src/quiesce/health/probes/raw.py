"""The raw-socket probes: ``tcp_half_open`` (SYN, then SYN-ACK or RST) and ``icmp`` (echo).

Theory of operation
-------------------
Each probe type opens **one** raw socket for all of its checks and demultiplexes the replies
(:class:`_RawSocket`): a check registers a future under a key made from the reply it expects,
the reader callback parses every packet the kernel hands the socket and resolves the matching
future. Standard library only; IPv4 only (an IPv6 server fails its check with a clear detail).

Half-open: the SYN goes out from one local port reserved for the prober's lifetime by a TCP
socket that is bound but never listens or connects. The server's SYN-ACK therefore reaches no
socket, so the local kernel answers it with a RST itself: the handshake is never completed and
the server's accept queue never sees the check (it is removed from the SYN queue by that RST).
The key is (server address, server port, our sequence number + 1), which the SYN-ACK and the
RST of a closed port both carry as their acknowledgement number.

ICMP: echo requests carry a per-prober identifier and a per-check sequence number; the reply
(type 0) or a destination-unreachable error quoting our request (type 3) resolves the check.
On loopback a raw socket also sees our own outgoing packets; the parsers skip them.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Hashable

from quiesce.config.models import HealthMonitor
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import Clock
from quiesce.core.states import Verdict
from quiesce.health.probes.base import Target, TaskStart, error_result, failure

SYN, RST, ACK = 0x02, 0x04, 0x10

Parser = Callable[[bytes], tuple[Hashable, object] | None]


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_segment(src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
    """A TCP SYN (with an MSS option) whose checksum covers the IPv4 pseudo-header."""
    options = struct.pack("!BBH", 2, 4, 1460)
    offset = (20 + len(options)) // 4
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, offset << 4, SYN, 64240, 0, 0)
    segment = header + options
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(segment))
    csum = checksum(pseudo + segment)
    return segment[:16] + struct.pack("!H", csum) + segment[18:]


def parse_tcp_reply(packet: bytes, our_port: int) -> tuple[tuple[str, int, int], int] | None:
    """(server address, server port, ack number) and the flags of a segment sent to
    ``our_port``, from an IPv4 packet as a raw socket returns it."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 6:
        return None
    ihl = (packet[0] & 0x0F) * 4
    tcp = packet[ihl : ihl + 20]
    if len(tcp) < 20:
        return None
    sport, dport, _seq, ack, _off, flags = struct.unpack("!HHIIBB", tcp[:14])
    if dport != our_port:
        return None
    return (socket.inet_ntoa(packet[12:16]), sport, ack), flags


def echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    csum = checksum(header + payload)
    return struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload


def parse_icmp_reply(packet: bytes, ident: int) -> tuple[tuple[str, int], int] | None:
    """((server address, sequence), ICMP type) of an echo reply to us, or of a
    destination-unreachable error quoting one of our echo requests."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
        return None
    ihl = (packet[0] & 0x0F) * 4
    kind, _code, _sum, rid, rseq = struct.unpack("!BBHHH", packet[ihl : ihl + 8])
    if kind == 0 and rid == ident:
        return (socket.inet_ntoa(packet[12:16]), rseq), kind
    if kind == 3:
        inner = packet[ihl + 8 :]
        if len(inner) < 28 or inner[9] != 1:
            return None
        iihl = (inner[0] & 0x0F) * 4
        ikind, _c, _s, iid, iseq = struct.unpack("!BBHHH", inner[iihl : iihl + 8])
        if ikind == 8 and iid == ident:
            return (socket.inet_ntoa(inner[16:20]), iseq), kind
    return None


SO_ATTACH_FILTER = 26


def tcp_port_filter(port: int) -> bytes:
    """A classic BPF program for a raw IPv4 TCP socket: keep only segments to ``port``.

    Without it the socket gets a copy of every TCP segment the host receives (the data
    plane's too), each parsed in Python; with it the kernel drops them."""
    program = [
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)   X = IP header length
        (0x48, 0, 0, 2),  # ldh  [x+2]         A = TCP destination port
        (0x15, 0, 1, port),  # jeq  #port, keep, drop
        (0x06, 0, 0, 0x40000),  # keep: ret #262144
        (0x06, 0, 0, 0),  # drop: ret #0
    ]
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


def attach_filter(sock: socket.socket, program: bytes) -> ctypes.Array[ctypes.c_char]:
    """SO_ATTACH_FILTER, then drop what the socket queued before the filter was on.
    Returns the program's buffer, which must outlive the call."""
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    while True:
        try:
            sock.recv(65535, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return buffer


class _RawSocket:
    """One raw socket shared by every check of a prober; replies resolve futures by key."""

    def __init__(self, proto: int, parse: Parser, bpf: bytes | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
        if bpf is not None:
            try:
                attach_filter(self.sock, bpf)
            except OSError:
                pass  # no filter: correct, only slower (the parser checks the port too)
        self.sock.setblocking(False)
        self.parse = parse
        self.waiters: dict[Hashable, asyncio.Future[object]] = {}
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(256):  # bounded, so a flood cannot starve the loop
            try:
                packet = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            parsed = self.parse(packet)
            if parsed is None:
                continue
            key, value = parsed
            fut = self.waiters.pop(key, None)
            if fut is not None and not fut.done():
                fut.set_result(value)

    def expect(self, key: Hashable) -> asyncio.Future[object]:
        fut: asyncio.Future[object] = self.loop.create_future()
        self.waiters[key] = fut
        return fut

    def forget(self, key: Hashable) -> None:
        self.waiters.pop(key, None)

    def close(self) -> None:
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (RuntimeError, ValueError):
            pass  # loop already closed
        self.sock.close()
        for fut in self.waiters.values():
            fut.cancel()
        self.waiters.clear()


async def _ipv4(host: str) -> str | None:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, None, family=socket.AF_INET)
        return str(infos[0][4][0]) if infos else None
    return str(addr) if addr.version == 4 else None


def _source_for(dst: str) -> str:
    """The local address the kernel would use to reach ``dst`` (a route lookup, no packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((dst, 9))
        return str(s.getsockname()[0])


class HalfOpenProber(TaskStart):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._raw: _RawSocket | None = None
        self._holder: socket.socket | None = None
        self._port = 0
        self._sources: dict[str, str] = {}

    def _open(self) -> _RawSocket:
        if self._raw is None:
            holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            holder.bind(("0.0.0.0", 0))
            self._holder, self._port = holder, holder.getsockname()[1]
            port = self._port

            def parse(packet: bytes) -> tuple[Hashable, object] | None:
                return parse_tcp_reply(packet, port)

            self._raw = _RawSocket(socket.IPPROTO_TCP, parse, tcp_port_filter(port))
        return self._raw

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self._holder is not None:
            self._holder.close()
            self._holder = None

    async def check(self, target: Target, monitor: HealthMonitor, name: str) -> CheckResult:
        clock = self.clock
        started = clock.monotonic()
        try:
            raw = self._open()
            dst = await _ipv4(target.host)
            if dst is None:
                return failure(
                    name, clock, started, Reason.CONNECTION_ERROR, "tcp_half_open is IPv4 only"
                )
            src = self._sources.get(dst)
            if src is None:
                src = self._sources[dst] = _source_for(dst)
        except OSError as exc:
            return error_result(name, clock, started, exc)
        seq = int.from_bytes(os.urandom(4), "big")
        key = (dst, target.port, (seq + 1) & 0xFFFFFFFF)
        fut = raw.expect(key)
        try:
            raw.sock.sendto(syn_segment(src, dst, self._port, target.port, seq), (dst, 0))
            async with asyncio.timeout(monitor.receive_timeout):
                flags = await fut
        except OSError as exc:  # TimeoutError included
            return error_result(name, clock, started, exc)
        finally:
            raw.forget(key)
        assert isinstance(flags, int)
        if flags & SYN and flags & ACK:
            verdict, reason, detail = Verdict.PASS, Reason.OK, "SYN-ACK"
        elif flags & RST:
            verdict, reason, detail = Verdict.FAIL, Reason.CONNECTION_REFUSED, "RST"
        else:
            verdict, reason, detail = Verdict.FAIL, Reason.CONNECTION_ERROR, f"flags {flags:#x}"
        return CheckResult(
            monitor=name,
            verdict=verdict,
            reason=reason,
            at=clock.time(),
            latency=clock.monotonic() - started,
            detail=detail,
        )


class IcmpProber(TaskStart):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._raw: _RawSocket | None = None
        self._ident = int.from_bytes(os.urandom(2), "big")
        self._seq = 0

    def _open(self) -> _RawSocket:
        if self._raw is None:
            ident = self._ident

            def parse(packet: bytes) -> tuple[Hashable, object] | None:
                return parse_icmp_reply(packet, ident)

            self._raw = _RawSocket(socket.IPPROTO_ICMP, parse)
        return self._raw

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    async def check(self, target: Target, monitor: HealthMonitor, name: str) -> CheckResult:
        clock = self.clock
        started = clock.monotonic()
        try:
            raw = self._open()
            dst = await _ipv4(target.host)
        except OSError as exc:
            return error_result(name, clock, started, exc)
        if dst is None:
            return failure(name, clock, started, Reason.CONNECTION_ERROR, "icmp is IPv4 only")
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        key = (dst, seq)
        fut = raw.expect(key)
        try:
            raw.sock.sendto(echo_request(self._ident, seq, b"quiesce-health-check"), (dst, 0))
            async with asyncio.timeout(monitor.receive_timeout):
                kind = await fut
        except OSError as exc:
            return error_result(name, clock, started, exc)
        finally:
            raw.forget(key)
        latency = clock.monotonic() - started
        if kind == 0:
            return CheckResult(
                monitor=name,
                verdict=Verdict.PASS,
                reason=Reason.OK,
                at=clock.time(),
                latency=latency,
                detail="echo reply",
            )
        return CheckResult(
            monitor=name,
            verdict=Verdict.FAIL,
            reason=Reason.HOST_UNREACHABLE,
            at=clock.time(),
            latency=latency,
            detail="ICMP destination unreachable",
        )


__all__ = [
    "HalfOpenProber",
    "IcmpProber",
    "checksum",
    "echo_request",
    "parse_icmp_reply",
    "parse_tcp_reply",
    "syn_segment",
    "tcp_port_filter",
]
