"""One request/response exchange, without transports: the request record, and the
decisions about sending a request again (the keep-alive race).
"""

from __future__ import annotations

from quiesce.dataplane.h1.codec import raw_headers
from quiesce.rules.decision import RequestView

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})
REPLAY_LIMIT = 64 * 1024
# The keep-alive race: a reused idle upstream connection the server closed as we wrote to it
# fails at once, before any response byte. A request is resent then only when it may be sent
# twice (RFC 9110 §9.2.2: an idempotent method, or an Idempotency-Key) and the failure came
# within RACE_WINDOW seconds of the request being written: later, the server may have worked
# on it and died (a crash, not the race), and the client gets a 502.
RACE_WINDOW = 0.5


class Request:
    __slots__ = (
        "body_since",
        "chunked",
        "complete",
        "cookie",
        "expect",
        "head",
        "head_only",
        "headers",
        "host",
        "http10",
        "keep_alive",
        "method",
        "path",
        "pending",
        "pending_size",
        "raw",
        "replay",
        "retried",
        "upgrade",
        "url",
    )

    def __init__(self) -> None:
        self.body_since = 0.0  # loop time its head was read (requests with a body)
        self.complete = False
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.replay: list[bytes] | None = None
        self.retried = False
        self.cookie: bytes | None = None
        self.host: bytes | None = None
        self.upgrade = False
        self.expect = False
        self.chunked = False
        self.head = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.url = b""
        self.http10 = False
        self.keep_alive = True
        self.head_only = False
        self.raw: bytes | None = None  # the head as received, when the C fast path read it

    def view(self, source: str) -> RequestView:
        headers: dict[str, str] = {}
        fields = self.headers if self.raw is None else raw_headers(self.raw)
        for raw_name, raw_value in fields:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        cookies: dict[str, str] = {}
        cookie_header = headers.get("cookie")
        if cookie_header:
            for part in cookie_header.split(";"):
                k, sep, v = part.strip().partition("=")
                if sep:
                    cookies.setdefault(k, v)
        url = self.url.decode("latin-1")
        path = url.split("?", 1)[0]
        if path.startswith(("http://", "https://")):
            rest = path.split("://", 1)[1]
            path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        host = headers.get("host")
        if self.raw is None and self.host is not None:
            # the Host the request is forwarded with (an absolute-form target's authority)
            host = headers["host"] = self.host.decode("latin-1")
        return RequestView(
            method=self.method.decode("latin-1"),
            path=path,
            host=host,  # raw: the router normalises case, port and IPv6 brackets
            headers=headers,
            cookies=cookies,
            source=source,
        )


def resendable(req: Request) -> bool:
    """May ``req`` be sent to a server a second time (RFC 9110 §9.2.2)? An idempotent method,
    or a request that carries an ``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key)."""
    if req.method in IDEMPOTENT:
        return True
    fields = req.headers if req.raw is None else raw_headers(req.raw)
    return any(name.lower() == b"idempotency-key" for name, _ in fields)


def may_resend(req: Request, reused: bool, got_byte: bool, sent_for: float) -> bool:
    """The keep-alive race, told from a server that took the request and died: resend only a
    request written to a *reused* connection that failed before any response byte, within
    ``RACE_WINDOW`` of being written (``sent_for`` seconds ago; negative: its body is still
    being sent), whose whole body is still held, and that may be sent twice."""
    return (
        reused
        and not got_byte
        and req.replay is not None
        and sent_for <= RACE_WINDOW
        and resendable(req)
    )
