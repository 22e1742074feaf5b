"""The check-reply classifiers: bytes (or a gRPC health answer) in, the verdict out.

Theory of operation
-------------------
Every probe is a thin I/O shell that collects a reply and hands it to a function here; nothing
in this module touches a socket, a clock or an event loop, so every rule is tested with plain
bytes (``tests/health/test_classify.py``).

The rules follow Avi's health monitors (DESIGN §1, §4):

* Only the first :data:`WINDOW` (2048) bytes of a reply count, headers included. A string that
  *starts* beyond byte 2048 is not seen, and neither is one that straddles the boundary.
* Maintenance wins over everything else: a status in ``maintenance_code`` or
  ``maintenance_response`` in the window is :attr:`Verdict.MAINTENANCE`, whatever the other
  settings say. It is checked first, then the ordinary pass conditions.
* A reply that satisfies the pass conditions is :attr:`Verdict.PASS`; otherwise
  :attr:`Verdict.FAIL` with the most specific reason (status mismatch before content mismatch).

Probes read until the verdict cannot change any more (:func:`http_reply_complete`,
:func:`stream_reply_complete`) so a server that keeps the connection open does not cost a
whole ``receive_timeout`` when the answer is already known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from quiesce.config.models import HttpMonitor, TcpMonitor, UdpMonitor
from quiesce.config.monitors import GrpcMonitor
from quiesce.core.checks import Reason
from quiesce.core.states import Verdict

WINDOW = 2048
"""How many leading bytes of a reply the content rules look at (Avi: "the first 2K bytes")."""

Classified = tuple[Verdict, Reason, int | None]


def _needle(text: str | None) -> bytes | None:
    """A configured match string as bytes; blank means "not set" (Avi's CLI ``no ...``)."""
    if not text:
        return None
    return text.encode()


def in_window(reply: bytes, needle: bytes) -> bool:
    """``needle`` occurs entirely within the first :data:`WINDOW` bytes of ``reply``."""
    return reply.find(needle, 0, WINDOW) >= 0


# --- HTTP ----------------------------------------------------------------------------------


def parse_status(reply: bytes) -> int | None:
    """The status code of an HTTP/1.x status line, or None when the reply has none (yet)."""
    end = reply.find(b"\n", 0, WINDOW)
    line = reply[: end if end >= 0 else min(len(reply), WINDOW)]
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return None
    code = parts[1]
    if len(code) != 3 or not code.isdigit():
        return None
    value = int(code)
    return value if 100 <= value <= 599 else None


def code_matches(code: int, patterns: list[str | int]) -> bool:
    """``code`` is one of ``patterns``: exact codes, classes ``1xx``…``5xx``, or ``any``."""
    for p in patterns:
        text = str(p).lower()
        if text == "any":
            return True
        if text.endswith("xx"):
            if text[0].isdigit() and code // 100 == int(text[0]):
                return True
        elif text.isdigit() and int(text) == code:
            return True
    return False


@dataclass(frozen=True, slots=True)
class HttpRules:
    """An HTTP monitor's rules, compiled once: the accepted status codes as a set, the match
    strings as bytes. :func:`classify_http` is ``HttpRules.of(monitor).classify``."""

    accept: frozenset[int]
    maintenance_codes: frozenset[int]
    maintenance: bytes | None
    expected: bytes | None

    @classmethod
    def of(cls, monitor: HttpMonitor) -> HttpRules:
        patterns = monitor.http_response_code
        return cls(
            frozenset(c for c in range(100, 600) if code_matches(c, patterns)),
            frozenset(monitor.maintenance_code),
            _needle(monitor.maintenance_response),
            _needle(monitor.http_response),
        )

    def classify(self, reply: bytes) -> Classified:
        status = parse_status(reply)
        if status is not None and status in self.maintenance_codes:
            return Verdict.MAINTENANCE, Reason.MAINTENANCE_RESPONSE_CODE_MATCH, status
        maintenance = self.maintenance
        if maintenance is not None and reply.find(maintenance, 0, WINDOW) >= 0:
            return Verdict.MAINTENANCE, Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH, status
        if status is None:
            return Verdict.FAIL, Reason.MALFORMED_RESPONSE, None
        if status not in self.accept:
            return Verdict.FAIL, Reason.RESPONSE_CODE_MISMATCH, status
        expected = self.expected
        if expected is not None and reply.find(expected, 0, WINDOW) < 0:
            return Verdict.FAIL, Reason.PAYLOAD_CONTENT_MISMATCH, status
        return Verdict.PASS, Reason.OK, status

    def complete(self, reply: bytes) -> bool:
        """True when more bytes could not change :meth:`classify` (the probe may stop)."""
        if len(reply) >= WINDOW:
            return True
        maintenance = self.maintenance
        if maintenance is None and self.expected is None:
            # Only the status line matters; wait for it to be whole.
            return b"\n" in reply and parse_status(reply) is not None
        status = parse_status(reply)
        if status is None:
            return False
        if status in self.maintenance_codes:
            return True
        if maintenance is not None:
            return reply.find(maintenance, 0, WINDOW) >= 0
        assert self.expected is not None
        return status not in self.accept or reply.find(self.expected, 0, WINDOW) >= 0


def classify_http(reply: bytes, monitor: HttpMonitor) -> Classified:
    """Classify one HTTP(S) reply (status line, headers and the start of the body)."""
    return HttpRules.of(monitor).classify(reply)


def http_reply_complete(reply: bytes, monitor: HttpMonitor) -> bool:
    """True when more bytes could not change :func:`classify_http` (the probe may stop)."""
    return HttpRules.of(monitor).complete(reply)


def build_http_request(monitor: HttpMonitor, host_header: str) -> bytes:
    """The bytes a check sends. ``exact_http_request`` sends ``http_request`` as written
    (only the final blank line is added when missing); otherwise a ``Host`` header is added
    when absent, and ``Connection: close`` for HTTP/1.1 so the server ends the reply."""
    text = monitor.http_request.replace("\\r\\n", "\r\n").replace("\\n", "\n")
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    if not monitor.exact_http_request:
        names = {line.split(":", 1)[0].strip().lower() for line in lines[1:] if ":" in line}
        if "host" not in names:
            lines.insert(1, f"Host: {host_header}")
        if lines[0].upper().endswith("HTTP/1.1") and "connection" not in names:
            lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- TCP and UDP payloads --------------------------------------------------------------------


def _classify_payload(
    reply: bytes, expected: str | None, maintenance: str | None, *, complete: bool
) -> Classified:
    want_maint = _needle(maintenance)
    if want_maint is not None and in_window(reply, want_maint):
        return Verdict.MAINTENANCE, Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH, None
    want = _needle(expected)
    if want is None or in_window(reply, want):
        return Verdict.PASS, Reason.OK, None
    if not reply and not complete:
        return Verdict.FAIL, Reason.TIMEOUT, None
    return Verdict.FAIL, Reason.PAYLOAD_CONTENT_MISMATCH, None


def classify_tcp(reply: bytes, monitor: TcpMonitor, *, complete: bool = True) -> Classified:
    """Classify what a TCP server sent after the handshake (and ``tcp_request``, if any).

    ``complete`` is False when the probe stopped on ``receive_timeout`` rather than on
    end-of-stream: an expected reply that never came is then ``TIMEOUT``. A blank
    ``tcp_response`` means the handshake alone passes."""
    return _classify_payload(
        reply, monitor.tcp_response, monitor.maintenance_response, complete=complete
    )


def classify_udp(reply: bytes, monitor: UdpMonitor, *, complete: bool = True) -> Classified:
    """Classify one UDP reply datagram (``b""`` with ``complete=False`` when none came)."""
    return _classify_payload(
        reply, monitor.udp_response, monitor.maintenance_response, complete=complete
    )


def expects_payload(expected: str | None, maintenance: str | None) -> bool:
    """Whether a TCP/UDP probe must wait for the server to send something."""
    return bool(expected) or bool(maintenance)


def stream_reply_complete(reply: bytes, expected: str | None, maintenance: str | None) -> bool:
    """True when more bytes could not change :func:`classify_tcp`: the maintenance string
    was seen, the window is full, or the expected string was seen and no maintenance string
    is configured. (With both configured, the probe reads until end-of-stream, a full window
    or the timeout, then classifies what it has.)"""
    if len(reply) >= WINDOW:
        return True
    want_maint = _needle(maintenance)
    if want_maint is not None:
        return in_window(reply, want_maint)
    want = _needle(expected)
    return want is None or in_window(reply, want)


# --- gRPC health (grpc.health.v1.Health/Check) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class GrpcAnswer:
    """One ``Health/Check`` call: the ``ServingStatus`` name when the call succeeded
    (``code`` OK), else the call's gRPC status code name (``NOT_FOUND``, ``UNAVAILABLE``…)
    and its details."""

    status: str | None = None
    code: str = "OK"
    details: str = ""

    @property
    def transport_failed(self) -> bool:
        """No answer from the server's health service: nothing to read a status from."""
        return self.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")

    @property
    def serving_status(self) -> str | None:
        """The status; a ``NOT_FOUND`` call (the standard servicer's answer for a name it
        does not know) is ``SERVICE_UNKNOWN``."""
        return "SERVICE_UNKNOWN" if self.code == "NOT_FOUND" else self.status


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 240 else text[:237] + "..."


_GRPC_ADDRESS = re.compile(r"^(?:[A-Z_]+: )?(?:ipv[46]:\S+: |unix:\S+: )?")


def _grpc_transport(answer: GrpcAnswer, what: str) -> tuple[Verdict, Reason, str]:
    details = answer.details
    # "failed to connect to all addresses; last error: UNKNOWN: ipv4:1.2.3.4:50051: Failed
    # to connect to remote host: Connection refused": the last part says it
    if "last error: " in details:
        details = _GRPC_ADDRESS.sub("", details.split("last error: ", 1)[1])
    lower = details.lower()
    if answer.code == "DEADLINE_EXCEEDED":
        return Verdict.FAIL, Reason.TIMEOUT, f"{what}no answer within receive_timeout"
    if "connection refused" in lower:
        reason = Reason.CONNECTION_REFUSED
    elif any(w in lower for w in ("ssl", "tls", "handshake", "certificate", "verification")):
        reason = Reason.TLS_ERROR
    elif "reset" in lower:
        reason = Reason.CONNECTION_RESET
    else:
        reason = Reason.CONNECTION_ERROR
    return Verdict.FAIL, reason, _short(f"{what}{answer.code}: {details}")


def classify_grpc(
    settings: GrpcMonitor, answer: GrpcAnswer, maintenance: GrpcAnswer | None = None
) -> tuple[Verdict, Reason, str]:
    """The verdict of a grpc check: ``answer`` for ``settings.service``, ``maintenance`` for
    ``settings.maintenance_service`` (None when not asked). Maintenance wins, as everywhere:
    the maintenance service SERVING, or the service's status in ``maintenance_status``."""
    if answer.transport_failed:
        return _grpc_transport(answer, "")
    if maintenance is not None:
        if maintenance.transport_failed:
            return _grpc_transport(maintenance, "maintenance_service: ")
        if maintenance.serving_status == "SERVING":
            return (
                Verdict.MAINTENANCE,
                Reason.MAINTENANCE_SERVICE_MATCH,
                f"maintenance_service {settings.maintenance_service!r}: SERVING",
            )
    status = answer.serving_status
    if status is not None and status in settings.maintenance_status:
        return Verdict.MAINTENANCE, Reason.MAINTENANCE_STATUS_MATCH, f"{status} (maintenance)"
    if status == "SERVING":
        return Verdict.PASS, Reason.OK, "SERVING"
    if status == "SERVICE_UNKNOWN":
        return Verdict.FAIL, Reason.SERVICE_UNKNOWN, f"service {settings.service!r} unknown"
    if status is not None:  # NOT_SERVING, or UNKNOWN: the server does not say it serves
        return Verdict.FAIL, Reason.NOT_SERVING, status
    if answer.code == "UNIMPLEMENTED":
        return (
            Verdict.FAIL,
            Reason.UNIMPLEMENTED,
            "UNIMPLEMENTED: the server has no grpc.health.v1.Health service",
        )
    return Verdict.FAIL, Reason.GRPC_ERROR, _short(f"{answer.code}: {answer.details}")


__all__ = [
    "WINDOW",
    "Classified",
    "GrpcAnswer",
    "HttpRules",
    "build_http_request",
    "classify_grpc",
    "classify_http",
    "classify_tcp",
    "classify_udp",
    "code_matches",
    "expects_payload",
    "http_reply_complete",
    "in_window",
    "parse_status",
    "stream_reply_complete",
]
