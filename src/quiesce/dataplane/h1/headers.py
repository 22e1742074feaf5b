"""Header policy: what the proxy removes, keeps, adds and refuses, both ways.

Hop-by-hop headers (RFC 9110 §7.6.1) are removed, and so is whatever ``Connection`` names,
except the framing and routing headers (``NEVER_HOP_BY_HOP``); ``X-Forwarded-For`` is
appended to, ``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``X-Forwarded-Client-Cert``
replaced; ambiguous request
framing is refused (400). :func:`forward_request` and :func:`forward_response` apply it to
heads httptools parsed; the C fast path applies the same policy to the heads it accepts.
"""

from __future__ import annotations

from typing import NamedTuple

from quiesce.core.errors import QuiesceError
from quiesce.dataplane.h1.exchange import RQ_COMPLETE, Request
from quiesce.dataplane.pages import reason_phrase


class WireError(QuiesceError):
    """A request the proxy refuses to read further: answered with ``status`` (the status hint;
    0: closed without an answer) and closed. Raised on malformed input only, never on the
    common path."""

    def __init__(self, status: int) -> None:
        super().__init__(f"request refused with {status}", status_hint=status)
        self.status = status


# What the proxy does with a header, by lower-case name. Every name not in POLICY is
# forwarded as it came, both ways.
H_DROP, H_HOST, H_LENGTH, H_COOKIE, H_XFF, H_TE, H_CONNECTION, H_UPGRADE, H_EXPECT = range(9)
H_FORWARD = -1  # not special: forwarded as it came
FAST_DECLINES = -2  # the C fast path leaves the message to httptools (the Python path)
ACTIONS = {
    H_FORWARD: "forward",
    H_DROP: "drop",
    H_HOST: "host",
    H_LENGTH: "length",
    H_COOKIE: "cookie",
    H_XFF: "append",
    H_TE: "framing",
    H_CONNECTION: "connection",
    H_UPGRADE: "upgrade",
    H_EXPECT: "expect",
    FAST_DECLINES: "declined",
}


class Rule(NamedTuple):
    """One row of the header policy."""

    request: int  # what the proxy does with it in a request (H_*)
    response: int  # in a response
    hop_by_hop: bool  # describes one connection only (RFC 9110 §7.6.1): never forwarded
    framing: bool  # frames or routes the message: ``Connection`` never removes it
    fast_request: int  # what quiesce._httpfast does with it (FAST_DECLINES: leaves it to us)
    fast_response: int


# The one header policy. The Python path reads REQUEST_SPECIAL / RESPONSE_SPECIAL (derived
# below); the C fast path (src/quiesce/_ext/httpfast.c, request_kind / response_kind) is
# checked against the table, row by row, by tests/dataplane/test_headers.py.
#   name                        request       response      hop    framing  C request     C response
POLICY: dict[bytes, Rule] = {
    b"connection": Rule(H_CONNECTION, H_CONNECTION, True, False, H_CONNECTION, H_CONNECTION),
    b"keep-alive": Rule(H_DROP, H_DROP, True, False, H_DROP, H_DROP),
    b"proxy-connection": Rule(H_DROP, H_DROP, True, False, H_DROP, H_DROP),
    b"proxy-authenticate": Rule(H_DROP, H_DROP, True, False, H_DROP, H_DROP),
    b"proxy-authorization": Rule(H_DROP, H_DROP, True, False, H_DROP, H_DROP),
    b"te": Rule(H_DROP, H_DROP, True, False, H_DROP, H_DROP),
    b"trailer": Rule(H_DROP, H_DROP, True, False, H_DROP, H_DROP),
    b"transfer-encoding": Rule(H_TE, H_TE, True, True, FAST_DECLINES, FAST_DECLINES),
    b"upgrade": Rule(H_UPGRADE, H_UPGRADE, True, False, FAST_DECLINES, H_DROP),
    b"content-length": Rule(H_LENGTH, H_LENGTH, False, True, H_LENGTH, H_LENGTH),
    b"host": Rule(H_HOST, H_FORWARD, False, True, H_HOST, H_FORWARD),
    b"cookie": Rule(H_COOKIE, H_FORWARD, False, False, H_COOKIE, H_FORWARD),
    b"expect": Rule(H_EXPECT, H_FORWARD, False, False, FAST_DECLINES, H_FORWARD),
    # Set by the proxy; a client's own values are replaced (X-Forwarded-For appended to).
    b"x-forwarded-for": Rule(H_XFF, H_FORWARD, False, False, H_XFF, H_FORWARD),
    b"x-forwarded-proto": Rule(H_DROP, H_FORWARD, False, False, H_DROP, H_FORWARD),
    b"x-forwarded-host": Rule(H_DROP, H_FORWARD, False, False, H_DROP, H_FORWARD),
    # a TLS listener's verified client certificate (quiesce.dataplane.tls): never a client's
    b"x-forwarded-client-cert": Rule(H_DROP, H_FORWARD, False, False, H_DROP, H_FORWARD),
}

# The lines the proxy adds after X-Forwarded-For on a cleartext listener (a TLS one says
# https, and may add the client certificate's subject: quiesce.dataplane.tls).
HTTP_FORWARDED = b"X-Forwarded-Proto: http\r\n"

HOP_BY_HOP = frozenset(name for name, rule in POLICY.items() if rule.hop_by_hop)
FORWARDED = frozenset(name for name in POLICY if name.startswith(b"x-forwarded-"))
# Header names the proxy acts on, by lower-case name (one dict lookup per header).
REQUEST_SPECIAL: dict[bytes, int] = {
    name: rule.request for name, rule in POLICY.items() if rule.request != H_FORWARD
}
RESPONSE_SPECIAL: dict[bytes, int] = {
    name: rule.response for name, rule in POLICY.items() if rule.response != H_FORWARD
}

_PLAIN_CONNECTION = frozenset(
    {b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade"}
)

# Connection options that are not removed with the header they name: the options themselves
# and the framing and routing headers. The proxy frames every message it forwards itself
# (RFC 9112 §6) and must send Host (RFC 9110 §7.2), so a ``Connection: Content-Length``
# cannot take them away; dropping one while forwarding the body would let the next hop read
# the body as another message (request smuggling). As HAProxy and nginx: the header is kept,
# the option ignored.
CONNECTION_OPTIONS = frozenset({b"", b"keep-alive", b"close", b"upgrade"})
NEVER_HOP_BY_HOP = CONNECTION_OPTIONS | {name for name, rule in POLICY.items() if rule.framing}


def connection_tokens(value: bytes, extra: list[bytes] | None) -> list[bytes] | None:
    """Header names listed in Connection (beyond keep-alive/close/upgrade): hop-by-hop too,
    except the framing and routing headers (``NEVER_HOP_BY_HOP``)."""
    if value in _PLAIN_CONNECTION:
        return extra
    for tok in value.lower().split(b","):
        tok = tok.strip(b" \t")
        if tok not in NEVER_HOP_BY_HOP:
            extra = extra or []
            extra.append(tok)
    return extra


_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}
_REASONS: dict[int, bytes] = {}


def status_line(status: int, reason: bytes) -> bytes:
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        line = b"HTTP/1.1 %d %s" % (status, reason or _reason(status))
        if len(_STATUS_LINES) < 512:  # reasons come from servers: keep the cache bounded
            _STATUS_LINES[(status, reason)] = line
    return line


def _reason(status: int) -> bytes:
    r = _REASONS.get(status)
    if r is None:
        r = _REASONS[status] = reason_phrase(status)
    return r


_AUTHORITY_CHARS = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:[]"
)


def authority(url: bytes) -> bytes | None:
    """The authority of an absolute-form ``http``/``https`` request target; None when there is
    none, it carries userinfo (RFC 9110 §4.2.4: treated as an error) or a byte no host has."""
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    end = len(rest)
    for delim in b"/?#":
        i = rest.find(bytes((delim,)))
        if 0 <= i < end:
            end = i
    authority = rest[:end]
    if not authority or not _AUTHORITY_CHARS.issuperset(authority):
        return None
    return authority


def forward_request(
    req: Request,
    headers: list[tuple[bytes, bytes]],
    upgrade: bool,
    peer: bytes,
    forwarded: bytes = HTTP_FORWARDED,
) -> None:
    """Apply the policy to a request head httptools parsed: ``req.head`` (the head sent to
    the server), ``req.host``, ``req.cookie``, ``req.chunked`` and ``req.expect``; raises
    :class:`WireError` (400) for a head the proxy refuses."""
    out = [req.method + b" " + req.url + b" HTTP/1.1"]
    append = out.append
    xff: bytes | None = None
    conn_extra: list[bytes] | None = None
    upgrade_value = b""
    host: bytes | None = None
    length: bytes | None = None
    te: bytes | None = None
    special = REQUEST_SPECIAL
    for name, value in headers:
        code = special.get(name.lower())
        if code is None:
            append(name + b": " + value)
        elif code == H_HOST:
            if host is not None:
                raise WireError(400)  # two Hosts: which one routes? (RFC 9112 §3.2)
            host = value
            append(name + b": " + value)
        elif code == H_LENGTH:
            if length is not None and length.strip() != value.strip():
                raise WireError(400)
            length = value
            append(name + b": " + value)
        elif code == H_COOKIE:
            req.cookie = value if req.cookie is None else req.cookie + b"; " + value
            append(name + b": " + value)
        elif code == H_XFF:
            xff = value if xff is None else xff + b", " + value
        elif code == H_TE:
            te = value if te is None else te + b", " + value
        elif code == H_CONNECTION:
            conn_extra = connection_tokens(value, conn_extra)
        elif code == H_UPGRADE:
            upgrade_value = upgrade_value + b", " + value if upgrade_value else value
        elif code == H_EXPECT:
            if value.lower() == b"100-continue":
                # Answered by the proxy once a server is connected (not forwarded):
                # back ends that ignore Expect would otherwise leave the client waiting.
                req.expect = True
            else:
                append(name + b": " + value)
        # else: hop-by-hop or set by us (H_DROP)
    if conn_extra:
        drop = set(conn_extra)
        out = [out[0]] + [h for h in out[1:] if h.split(b":", 1)[0].lower() not in drop]
        append = out.append
    if req.url[:1] != b"/" and req.url != b"*":
        # absolute-form (RFC 9112 §3.2.2): the target's authority is the Host, whatever
        # Host said, for the rules and the server alike (as HAProxy does).
        target = authority(req.url)
        if target is None:
            raise WireError(400)
        out = [out[0]] + [h for h in out[1:] if h.split(b":", 1)[0].lower() != b"host"]
        append = out.append
        append(b"Host: " + target)
        host = target
    req.host = host
    append(b"X-Forwarded-For: " + (xff + b", " + peer if xff else peer))
    append(forwarded[:-2])  # CRLF-separated lines, the last CRLF added by the join
    if host is not None:
        append(b"X-Forwarded-Host: " + host)
    if te is not None:
        # Ambiguous framing is refused, as HAProxy does (RFC 9112 §6.1, §6.3): the last
        # coding must be chunked, once, and Content-Length must not come along.
        if te == b"chunked" or te == b"Chunked":
            append(b"Transfer-Encoding: chunked")
        else:
            codings = [c.strip().lower() for c in te.split(b",")]
            if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
                raise WireError(400)
            append(b"Transfer-Encoding: " + b", ".join(codings))
        if length is not None:
            raise WireError(400)
        req.chunked = True
        if req.http10:
            # RFC 9112 §6.1: chunked in an HTTP/1.0 request; the framing may be wrong, so the
            # connection closes after the response (as HAProxy does): nothing pipelined behind
            # it is read.
            req.keep_alive = False
    if upgrade:
        if req.chunked or (length is not None and length.strip() != b"0"):
            # An Upgrade request with a body: the HTTP/1.1 parser switches right after the head
            # and never reads the body, which a server then reads as the start of the next
            # request on that connection (request smuggling). Refused (issue 12).
            raise WireError(400)
        # h2c is never offered to a server (the client would get an HTTP/2 it did not ask
        # the proxy for); alone it never gets here (plain_h2c_head: served as HTTP/1.1).
        offered = [t for t in upgrade_value.split(b",") if t.strip(b" \t").lower() != b"h2c"]
        if offered:
            append(b"Connection: upgrade")
            append(b"Upgrade: " + b",".join(offered).strip(b" \t"))
        else:
            req.upgrade = False
    out.append(b"\r\n")
    req.head = b"\r\n".join(out)
    if not req.chunked and (length is None or length.strip() == b"0"):
        req.state = RQ_COMPLETE  # no body: complete from the start, for every decision below


_H2C_OPTIONS = frozenset({b"upgrade", b"http2-settings"})


def plain_h2c_head(req: Request, headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """An Upgrade request whose only protocol is ``h2c`` (curl ``--http2`` on cleartext) made
    a plain HTTP/1.1 one, as nginx and HAProxy serve it: its head again without ``Upgrade``,
    ``HTTP2-Settings`` and those two Connection options; None for any other Upgrade. Read
    again by the parser, with the rest behind it, it is an ordinary request whose body (if
    any) is read by its own framing: nothing asks a server to switch protocols, so the
    Upgrade-with-a-body refusal (forward_request) has nothing to guard. Only requests the
    parser took as upgrades come here: no cost to any other."""
    offered = [
        t.strip(b" \t").lower()
        for name, value in headers
        if name.lower() == b"upgrade"
        for t in value.split(b",")
    ]
    if not offered or any(t != b"h2c" for t in offered):
        return None
    lines = [req.method + b" " + req.url + (b" HTTP/1.0" if req.http10 else b" HTTP/1.1")]
    for name, value in headers:
        low = name.lower()
        if low == b"upgrade" or low == b"http2-settings":
            continue
        if low == b"connection":
            kept = [t for t in value.split(b",") if t.strip(b" \t").lower() not in _H2C_OPTIONS]
            value = b",".join(kept).strip(b" \t")
            if not value:
                continue
        lines.append(name + b": " + value)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def forward_response(
    status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[list[bytes], bytes | None, bool]:
    """Apply the policy to a final response head httptools parsed: the status line and the
    header lines to send the client (without the proxy's own: Set-Cookie, Connection,
    Transfer-Encoding), its Content-Length (the last one) and whether it is chunked."""
    lines = [status_line(status, reason)]
    append = lines.append
    conn_extra: list[bytes] | None = None
    content_length: bytes | None = None
    chunked = False
    special = RESPONSE_SPECIAL
    for name, value in headers:
        code = special.get(name.lower())
        if code is None:
            append(name + b": " + value)
        elif code == H_LENGTH:
            content_length = value
            append(name + b": " + value)
        elif code == H_TE:
            chunked = b"chunked" in value.lower()
        elif code == H_CONNECTION:
            conn_extra = connection_tokens(value, conn_extra)
        elif code == H_UPGRADE and status == 101:
            append(b"Upgrade: " + value)
    if conn_extra:
        drop = set(conn_extra)
        lines = [lines[0]] + [h for h in lines[1:] if h.split(b":", 1)[0].lower() not in drop]
    return lines, content_length, chunked


# Never passed on in a chunked body's trailer section: framing, routing, hop-by-hop.
_NOT_TRAILERS = HOP_BY_HOP | {b"content-length", b"host", b"trailer", b"content-encoding"}


def last_chunk(trailers: list[tuple[bytes, bytes]]) -> bytes:
    """A chunked body's end with the server's trailer fields (gRPC's ``grpc-status``),
    less those that must not be trailers (RFC 9110 §6.5.1)."""
    lines = [b"0\r\n"]
    for name, value in trailers:
        if name.lower() not in _NOT_TRAILERS:
            lines.append(name + b": " + value + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)
