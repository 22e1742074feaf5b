"""The raw-socket probes (root / CAP_NET_RAW) and the capability check."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from quiesce.config.models import Config, HealthMonitor
from quiesce.core.checks import Reason
from quiesce.core.clock import SystemClock
from quiesce.core.states import Verdict
from quiesce.health import raw_socket_problems
from quiesce.health.probes import HalfOpenProber, IcmpProber, Target
from quiesce.health.probes.raw import (
    checksum,
    echo_request,
    parse_icmp_reply,
    parse_tcp_reply,
    syn_segment,
)

root = pytest.mark.root
loopback = pytest.mark.loopback  # every root test opens raw or TCP sockets on 127.0.0.1
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root / CAP_NET_RAW")

HALF_OPEN = HealthMonitor(type="tcp_half_open", send_interval=1.0, receive_timeout=0.3)
ICMP = HealthMonitor(type="icmp", send_interval=1.0, receive_timeout=0.3)


def test_checksum_and_segments() -> None:
    # RFC 1071 example words: 0001 f203 f4f5 f6f7 -> sum ddf2 -> checksum 220d
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    seg = syn_segment("127.0.0.1", "127.0.0.1", 40000, 80, 12345)
    pseudo = socket.inet_aton("127.0.0.1") * 2 + bytes([0, 6, 0, len(seg)])
    assert checksum(pseudo + seg) == 0  # a correct checksum sums to zero
    req = echo_request(0x1234, 7, b"abc")
    assert checksum(req) == 0


def _ipv4(proto: int, src: str, dst: str, payload: bytes) -> bytes:
    header = bytes([0x45, 0]) + (20 + len(payload)).to_bytes(2, "big") + bytes(5)
    header += bytes([proto]) + bytes(2) + socket.inet_aton(src) + socket.inet_aton(dst)
    return header + payload


def test_parsers_match_only_our_replies() -> None:
    synack = bytearray(syn_segment("10.0.0.2", "10.0.0.1", 80, 40000, 999))
    synack[8:12] = (12346).to_bytes(4, "big")  # ack = our seq + 1
    synack[13] = 0x12
    packet = _ipv4(6, "10.0.0.2", "10.0.0.1", bytes(synack))
    assert parse_tcp_reply(packet, 40000) == (("10.0.0.2", 80, 12346), 0x12)
    assert parse_tcp_reply(packet, 40001) is None
    reply = bytearray(echo_request(0x1234, 7, b"x"))
    reply[0] = 0
    assert parse_icmp_reply(_ipv4(1, "10.0.0.9", "10.0.0.1", bytes(reply)), 0x1234) == (
        ("10.0.0.9", 7),
        0,
    )
    assert parse_icmp_reply(_ipv4(1, "10.0.0.9", "10.0.0.1", bytes(reply)), 0x4321) is None
    own_request = _ipv4(1, "10.0.0.1", "10.0.0.9", echo_request(0x1234, 7, b"x"))
    assert parse_icmp_reply(own_request, 0x1234) is None
    quoted = _ipv4(1, "10.0.0.1", "10.0.0.9", echo_request(0x1234, 8, b"x"))
    unreachable = bytes([3, 1, 0, 0, 0, 0, 0, 0]) + quoted
    assert parse_icmp_reply(_ipv4(1, "10.0.0.254", "10.0.0.1", unreachable), 0x1234) == (
        ("10.0.0.9", 8),
        3,
    )


@root
@loopback
@needs_root
async def test_half_open_listening_port_never_reaches_accept_queue() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    prober = HalfOpenProber(SystemClock())
    try:
        for _ in range(3):
            r = await prober.check(Target("127.0.0.1", port), HALF_OPEN, "syn")
            assert (r.verdict, r.reason, r.detail) == (Verdict.PASS, Reason.OK, "SYN-ACK")
            assert r.latency < 0.3
        # A real client now: the accept queue holds exactly that one connection.
        client = socket.create_connection(("127.0.0.1", port))
        conn, peer = listener.accept()
        assert peer == client.getsockname()
        conn.close()
        client.close()
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        prober.close()
        listener.close()


@root
@loopback
@needs_root
async def test_half_open_closed_port_and_silence(closed_port: int) -> None:
    prober = HalfOpenProber(SystemClock())
    try:
        r = await prober.check(Target("127.0.0.1", closed_port), HALF_OPEN, "syn")
        assert (r.verdict, r.reason, r.detail) == (Verdict.FAIL, Reason.CONNECTION_REFUSED, "RST")
    finally:
        prober.close()


@root
@loopback
@needs_root
async def test_half_open_silence_is_timeout() -> None:
    """Silence without iptables: Linux drops a SYN (no SYN-ACK, no RST) while the listener's
    accept queue is full, so fill a backlog-0 listener with one unaccepted connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    prober = HalfOpenProber(SystemClock())
    try:
        r = await prober.check(Target("127.0.0.1", port), HALF_OPEN, "syn")
        assert (r.verdict, r.reason) == (Verdict.FAIL, Reason.TIMEOUT)
        assert r.latency >= 0.29
    finally:
        prober.close()
        filler.close()
        listener.close()


@root
@loopback
@needs_root
async def test_icmp_loopback() -> None:
    prober = IcmpProber(SystemClock())
    try:
        for _ in range(3):
            r = await prober.check(Target("127.0.0.1", 0), ICMP, "ping")
            assert (r.verdict, r.reason, r.detail) == (Verdict.PASS, Reason.OK, "echo reply")
            assert 0 < r.latency < 0.3
        r = await prober.check(Target("::1", 0), ICMP, "ping")
        assert (r.verdict, r.detail) == (Verdict.FAIL, "icmp is IPv4 only")
    finally:
        prober.close()


def _config(**types: str) -> Config:
    return Config.model_validate(
        {
            "healthmonitors": {name: {"type": t} for name, t in types.items()},
            "pools": {
                "p": {
                    "healthmonitors": [n for n in types if n != "ping" and n != "unused"],
                    "servers": [
                        {"name": "a", "address": "127.0.0.1:80", "healthmonitors": ["ping"]}
                    ],
                }
            },
        }
    )


def test_raw_socket_problems_names_monitor_and_capability() -> None:
    config = _config(ping="icmp", syn="tcp_half_open", web="http", unused="icmp")
    problems = raw_socket_problems(config, can_open=lambda proto: False)
    assert len(problems) == 2  # the unattached monitor does not count
    assert "'ping'" in problems[0] and "icmp" in problems[0] and "CAP_NET_RAW" in problems[0]
    assert "'syn'" in problems[1] and "tcp_half_open" in problems[1]
    assert raw_socket_problems(config, can_open=lambda proto: True) == []


@root
@loopback
@needs_root
@pytest.mark.peers
def test_raw_socket_problems_without_cap_net_raw() -> None:
    """A real process without CAP_NET_RAW (dropped with setpriv) reports both monitors."""
    code = textwrap.dedent(
        """
        from quiesce.config.models import Config
        from quiesce.health import raw_socket_problems
        config = Config.model_validate({
            "healthmonitors": {"ping": {"type": "icmp"}, "syn": {"type": "tcp_half_open"}},
            "pools": {"p": {"healthmonitors": ["syn"], "servers": [
                {"name": "a", "address": "127.0.0.1:80", "healthmonitors": ["ping"]}]}},
        })
        print("\\n".join(raw_socket_problems(config)))
        """
    )
    with_cap = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert with_cap.returncode == 0 and with_cap.stdout.strip() == ""
    dropped = subprocess.run(
        ["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw", sys.executable, "-c", code],
        capture_output=True,
        text=True,
    )
    assert dropped.returncode == 0, dropped.stderr
    lines = dropped.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all("CAP_NET_RAW" in line for line in lines)


@root
@loopback
@needs_root
def test_half_open_socket_filter_drops_other_traffic() -> None:
    """The BPF filter keeps only segments to the prober's port out of the raw socket."""
    from quiesce.health.probes.raw import attach_filter, tcp_port_filter

    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    port = holder.getsockname()[1]
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    keep = attach_filter(raw, tcp_port_filter(port))
    raw.settimeout(0.3)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        socket.create_connection(listener.getsockname()).close()  # unrelated traffic
        with pytest.raises(TimeoutError):
            raw.recv(100)
        with pytest.raises(ConnectionRefusedError):  # a SYN to the prober's port
            socket.create_connection(("127.0.0.1", port), timeout=0.3)
        packet = raw.recv(100)
        assert packet[9] == 6  # TCP
        ihl = (packet[0] & 0x0F) * 4
        assert int.from_bytes(packet[ihl + 2 : ihl + 4], "big") == port
    finally:
        del keep
        raw.close()
        holder.close()
        listener.close()
