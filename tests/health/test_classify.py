"""The sans-IO classifiers, driven with bytes only."""

from __future__ import annotations

import pytest

from quiesce.config.models import HttpMonitor, TcpMonitor, UdpMonitor
from quiesce.core.checks import Reason
from quiesce.core.states import Verdict
from quiesce.health.classify import (
    WINDOW,
    build_http_request,
    classify_http,
    classify_tcp,
    classify_udp,
    code_matches,
    http_reply_complete,
    parse_status,
    stream_reply_complete,
)

P, F, M = Verdict.PASS, Verdict.FAIL, Verdict.MAINTENANCE


def reply(status: str = "200 OK", body: bytes = b"hello") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"HTTP/1.1 200 OK\r\n", 200),
        (b"HTTP/1.0 503 Service Unavailable\r\n\r\n", 503),
        (b"HTTP/1.1 404\r\n", 404),
        (b"HTTP/1.1 200", 200),
        (b"", None),
        (b"SSH-2.0-OpenSSH\r\n", None),
        (b"HTTP/1.1 2000 OK\r\n", None),
        (b"HTTP/1.1 099 OK\r\n", None),
        (b"HTTP/1.1 abc OK\r\n", None),
    ],
)
def test_parse_status(data: bytes, code: int | None) -> None:
    assert parse_status(data) == code


@pytest.mark.parametrize(
    ("code", "patterns", "ok"),
    [
        (200, ["2xx"], True),
        (204, ["2xx"], True),
        (301, ["2xx"], False),
        (301, ["2xx", "3xx"], True),
        (404, ["any"], True),
        (418, ["418"], True),
        (418, [418], True),
        (419, ["418"], False),
        (500, ["1xx", "2xx", "3xx", "4xx"], False),
    ],
)
def test_code_matches(code: int, patterns: list[str | int], ok: bool) -> None:
    assert code_matches(code, patterns) is ok


def test_http_defaults_pass_2xx_only() -> None:
    m = HttpMonitor()
    assert classify_http(reply(), m) == (P, Reason.OK, 200)
    assert classify_http(reply("503 Unavailable"), m) == (F, Reason.RESPONSE_CODE_MISMATCH, 503)
    assert classify_http(reply("302 Found"), m) == (F, Reason.RESPONSE_CODE_MISMATCH, 302)


def test_http_malformed_and_empty() -> None:
    m = HttpMonitor()
    assert classify_http(b"", m) == (F, Reason.MALFORMED_RESPONSE, None)
    assert classify_http(b"garbage\r\n\r\n", m) == (F, Reason.MALFORMED_RESPONSE, None)


def test_http_maintenance_code_wins_over_pass_codes() -> None:
    m = HttpMonitor(http_response_code=["any"], maintenance_code=[503, 500])
    assert classify_http(reply("503 X"), m) == (M, Reason.MAINTENANCE_RESPONSE_CODE_MATCH, 503)
    assert classify_http(reply("500 X"), m) == (M, Reason.MAINTENANCE_RESPONSE_CODE_MATCH, 500)
    assert classify_http(reply("502 X"), m) == (P, Reason.OK, 502)


def test_http_maintenance_string_in_window() -> None:
    m = HttpMonitor(maintenance_response="under construction")
    body = b"<p>site under construction</p>"
    assert classify_http(reply(body=body), m) == (
        M,
        Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH,
        200,
    )
    # also when the status would fail: maintenance is checked first
    assert classify_http(reply("500 X", body), m)[0] is M


def test_http_maintenance_string_beyond_2048_is_not_seen() -> None:
    m = HttpMonitor(maintenance_response="under construction")
    head = reply(body=b"")
    inside = head + b"x" * (WINDOW - len(head) - len(b"under construction")) + b"under construction"
    assert len(inside) == WINDOW
    assert classify_http(inside, m)[0] is M
    # one byte later it straddles the boundary: not in the first 2048 bytes
    straddle = head + b"x" * (WINDOW - len(head) - len(b"under construction") + 1)
    straddle += b"under construction"
    assert classify_http(straddle, m) == (P, Reason.OK, 200)
    late = head + b"x" * WINDOW + b"under construction"
    assert classify_http(late, m) == (P, Reason.OK, 200)


def test_http_response_string() -> None:
    m = HttpMonitor(http_response="healthy")
    assert classify_http(reply(body=b"i am healthy"), m) == (P, Reason.OK, 200)
    assert classify_http(reply(body=b"i am sick"), m) == (F, Reason.PAYLOAD_CONTENT_MISMATCH, 200)
    late = reply(body=b"x" * WINDOW + b"healthy")
    assert classify_http(late, m) == (F, Reason.PAYLOAD_CONTENT_MISMATCH, 200)
    # the header block counts too ("the first 2048 bytes of the reply")
    assert classify_http(reply(body=b""), HttpMonitor(http_response="Content-Length"))[0] is P


def test_http_code_mismatch_reported_before_content() -> None:
    m = HttpMonitor(http_response="healthy")
    assert classify_http(reply("404 No", b"nope"), m)[1] is Reason.RESPONSE_CODE_MISMATCH


def test_http_reply_complete() -> None:
    plain = HttpMonitor()
    assert not http_reply_complete(b"HTTP/1.1 200", plain)
    assert http_reply_complete(b"HTTP/1.1 200 OK\r\n", plain)
    maint = HttpMonitor(maintenance_response="under construction", maintenance_code=[503])
    assert http_reply_complete(b"HTTP/1.1 503 X\r\n", maint)
    assert not http_reply_complete(b"HTTP/1.1 200 OK\r\n\r\n", maint)
    assert http_reply_complete(b"HTTP/1.1 200 OK\r\n\r\nunder construction", maint)
    assert http_reply_complete(b"HTTP/1.1 200 OK\r\n" + b"x" * WINDOW, maint)
    wants = HttpMonitor(http_response="ok!")
    assert http_reply_complete(b"HTTP/1.1 500 X\r\n", wants)
    assert not http_reply_complete(b"HTTP/1.1 200 X\r\n", wants)
    assert http_reply_complete(b"HTTP/1.1 200 X\r\n\r\nok!", wants)


def test_build_http_request() -> None:
    assert build_http_request(HttpMonitor(), "10.0.0.1:8080") == (
        b"GET / HTTP/1.0\r\nHost: 10.0.0.1:8080\r\n\r\n"
    )
    m = HttpMonitor(http_request="GET /health HTTP/1.1\\r\\nHost: app.example\\r\\nX-A: 1")
    assert build_http_request(m, "10.0.0.1") == (
        b"GET /health HTTP/1.1\r\nHost: app.example\r\nX-A: 1\r\nConnection: close\r\n\r\n"
    )
    exact = HttpMonitor(http_request="HEAD /status HTTP/1.0", exact_http_request=True)
    assert build_http_request(exact, "10.0.0.1") == b"HEAD /status HTTP/1.0\r\n\r\n"


def test_tcp_rules() -> None:
    handshake = TcpMonitor()
    assert classify_tcp(b"", handshake) == (P, Reason.OK, None)
    assert classify_tcp(b"", handshake, complete=False) == (P, Reason.OK, None)
    banner = TcpMonitor(tcp_response="220 ", maintenance_response="maintenance")
    assert classify_tcp(b"220 mail ready\r\n", banner) == (P, Reason.OK, None)
    assert classify_tcp(b"421 down for maintenance\r\n", banner) == (
        M,
        Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH,
        None,
    )
    assert classify_tcp(b"500 no\r\n", banner) == (F, Reason.PAYLOAD_CONTENT_MISMATCH, None)
    assert classify_tcp(b"", banner) == (F, Reason.PAYLOAD_CONTENT_MISMATCH, None)
    assert classify_tcp(b"", banner, complete=False) == (F, Reason.TIMEOUT, None)
    assert classify_tcp(b"x" * WINDOW + b"220 ", banner)[0] is F
    only_maint = TcpMonitor(maintenance_response="maint")
    assert classify_tcp(b"", only_maint, complete=False)[0] is P


def test_stream_reply_complete() -> None:
    assert stream_reply_complete(b"", None, None)
    assert not stream_reply_complete(b"22", "220", None)
    assert stream_reply_complete(b"220 hi", "220", None)
    assert not stream_reply_complete(b"220 hi", "220", "maint")
    assert stream_reply_complete(b"maint", "220", "maint")
    assert stream_reply_complete(b"x" * WINDOW, "220", "maint")


def test_udp_rules() -> None:
    echo = UdpMonitor(udp_request="ping", udp_response="pong", maintenance_response="maint")
    assert classify_udp(b"pong", echo) == (P, Reason.OK, None)
    assert classify_udp(b"maint pong", echo)[0] is M
    assert classify_udp(b"what", echo) == (F, Reason.PAYLOAD_CONTENT_MISMATCH, None)
    assert classify_udp(b"", echo, complete=False) == (F, Reason.TIMEOUT, None)
    silent_ok = UdpMonitor(udp_request="ping")
    assert classify_udp(b"", silent_ok, complete=False) == (P, Reason.OK, None)
