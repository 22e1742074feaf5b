"""headers.plain_h2c_head: an Upgrade request offering only h2c made a plain HTTP/1.1 head
(curl --http2 on cleartext, served as HTTP/1.1 as nginx and HAProxy do); any other upgrade
left alone. The wire test is tests/e2e/test_h2c_upgrade.py."""

from __future__ import annotations

import httptools
import pytest

from quiesce.dataplane.h1.exchange import Request
from quiesce.dataplane.h1.headers import forward_request, plain_h2c_head


def req(method: bytes = b"POST", http10: bool = False) -> Request:
    r = Request()
    r.method, r.url, r.http10 = method, b"/x?y", http10
    return r


CURL = [
    (b"Host", b"www"),
    (b"Connection", b"Upgrade, HTTP2-Settings"),
    (b"Upgrade", b"h2c"),
    (b"HTTP2-Settings", b"AAMAAABkAAQCAAAAAAIAAAAA"),
    (b"Content-Length", b"5"),
]


def test_curl_http2_head_made_plain() -> None:
    assert plain_h2c_head(req(), CURL) == (
        b"POST /x?y HTTP/1.1\r\nHost: www\r\nContent-Length: 5\r\n\r\n"
    )


def test_other_connection_options_kept_and_case_ignored() -> None:
    headers = [
        (b"connection", b"keep-alive, UPGRADE,http2-settings, X-Hop"),
        (b"UPGRADE", b" H2C "),
        (b"X-Hop", b"1"),
    ]
    assert plain_h2c_head(req(b"GET", http10=True), headers) == (
        b"GET /x?y HTTP/1.0\r\nconnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n"
    )


@pytest.mark.parametrize(
    "upgrades",
    [[b"websocket"], [b"h2c, websocket"], [b"h2c", b"websocket"], [b"h2"], [b""]],
)
def test_any_other_upgrade_is_left_alone(upgrades: list[bytes]) -> None:
    headers = [(b"Host", b"www"), (b"Connection", b"upgrade")]
    headers += [(b"Upgrade", u) for u in upgrades]
    assert plain_h2c_head(req(), headers) is None


def test_the_plain_head_parses_without_an_upgrade() -> None:
    """What the connection reads again: httptools no longer sees an upgrade, and reads the
    body behind it."""
    head = plain_h2c_head(req(), CURL)
    assert head is not None
    got: list[bytes] = []

    class Sink:
        def on_body(self, body: bytes) -> None:
            got.append(body)

    p = httptools.HttpRequestParser(Sink())
    p.feed_data(head + b"helloGET / HTTP/1.1\r\n")
    assert not p.should_upgrade()
    assert got == [b"hello"]


def test_h2c_among_others_is_not_forwarded() -> None:
    r = req(b"GET")
    headers = [(b"Host", b"www"), (b"Connection", b"upgrade"), (b"Upgrade", b"h2c, websocket")]
    forward_request(r, headers, True, b"127.0.0.1")
    assert b"\r\nUpgrade: websocket\r\n" in r.head and b"h2c" not in r.head
    r = req(b"GET")
    forward_request(r, [(b"Upgrade", b"websocket"), (b"Upgrade", b"h2c")], True, b"127.0.0.1")
    assert b"\r\nUpgrade: websocket\r\n" in r.head and b"h2c" not in r.head
