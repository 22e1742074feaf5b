"""What every probe shares: the target, the probe protocol, and error → reason mapping."""

from __future__ import annotations

import errno
import ssl
from dataclasses import dataclass
from typing import Protocol

from quiesce.config.models import HealthMonitor
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import Clock
from quiesce.core.states import Verdict


@dataclass(frozen=True, slots=True)
class Target:
    """Where one check goes: the server's host and the port to probe."""

    host: str
    port: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port in (80, 443) else f"{host}:{self.port}"


class Prober(Protocol):
    """One probe type. ``check`` never raises for a network problem: it reports a failed
    :class:`CheckResult`. It must finish within ``monitor.receive_timeout`` (plus scheduling
    slack); ``close`` releases shared resources (the raw sockets)."""

    async def check(self, target: Target, monitor: HealthMonitor, name: str) -> CheckResult: ...

    def close(self) -> None: ...


def reason_for_error(exc: BaseException) -> tuple[Reason, str]:
    """Map a connect/read error to the most specific reason code and a short detail."""
    if isinstance(exc, TimeoutError):
        return Reason.TIMEOUT, "no reply within receive_timeout"
    if isinstance(exc, ConnectionRefusedError):
        return Reason.CONNECTION_REFUSED, "connection refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return Reason.CONNECTION_RESET, "connection reset by peer"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        text = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
        return Reason.TLS_ERROR, f"TLS: {text}"
    if isinstance(exc, OSError) and exc.errno in (
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
    ):
        return Reason.HOST_UNREACHABLE, exc.strerror or str(exc)
    if isinstance(exc, OSError):
        return Reason.CONNECTION_ERROR, exc.strerror or str(exc) or type(exc).__name__
    return Reason.CONNECTION_ERROR, f"{type(exc).__name__}: {exc}"


def failure(name: str, clock: Clock, started: float, reason: Reason, detail: str) -> CheckResult:
    return CheckResult(
        monitor=name,
        verdict=Verdict.FAIL,
        reason=reason,
        at=clock.time(),
        latency=clock.monotonic() - started,
        detail=detail,
    )


def error_result(name: str, clock: Clock, started: float, exc: BaseException) -> CheckResult:
    reason, detail = reason_for_error(exc)
    return failure(name, clock, started, reason, detail)


def describe(verdict: Verdict, reason: Reason, status: int | None, reply: bytes) -> str:
    """A short human detail for events and ``show server``."""
    if status is not None:
        first = reply.split(b"\n", 1)[0].strip()[:80].decode("latin-1")
        return first
    if reason is Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH:
        return "maintenance string found in reply"
    if reason is Reason.PAYLOAD_CONTENT_MISMATCH:
        return f"expected string not in the first 2048 bytes ({len(reply)} bytes received)"
    if reason is Reason.TIMEOUT:
        return "no reply within receive_timeout"
    if verdict is Verdict.PASS:
        return f"{len(reply)} bytes received" if reply else "connected"
    return reason.value.lower().replace("_", " ")


__all__ = ["Prober", "Target", "describe", "error_result", "failure", "reason_for_error"]
