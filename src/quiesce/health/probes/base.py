"""What every probe shares: the target, the probe protocol, and error → reason mapping."""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

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


OnDone = Callable[[CheckResult], None]


class Running(Protocol):
    """A check in progress; ``cancel`` stops it and its ``on_done`` is then never called."""

    def cancel(self) -> Any: ...


class Prober(Protocol):
    """One probe type.

    ``check`` never raises for a network problem: it reports a failed :class:`CheckResult`,
    within ``monitor.receive_timeout`` (plus scheduling slack). ``start`` is the same check
    in callback style, which the scheduler uses: it must call ``on_done`` exactly once unless
    cancelled. ``close`` releases shared resources (the raw sockets)."""

    async def check(self, target: Target, monitor: HealthMonitor, name: str) -> CheckResult: ...

    def start(
        self, target: Target, monitor: HealthMonitor, name: str, on_done: OnDone
    ) -> Running: ...

    def close(self) -> None: ...


def start_task(
    coro: Coroutine[Any, Any, CheckResult],
    on_done: OnDone,
    fallback: Callable[[BaseException], CheckResult],
) -> Running:
    """``start`` for probes written as coroutines: run ``coro`` as a task."""
    task = asyncio.get_running_loop().create_task(coro)

    def finished(t: asyncio.Task[CheckResult]) -> None:
        if t.cancelled():
            return
        exc = t.exception()
        on_done(fallback(exc) if exc is not None else t.result())

    task.add_done_callback(finished)
    return task


class TaskStart:
    """Mixin: ``start`` runs ``check`` as a task (for the probe types that are not hot)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def close(self) -> None:
        """Nothing shared to release."""

    async def check(self, target: Target, monitor: HealthMonitor, name: str) -> CheckResult:
        raise NotImplementedError

    def start(self, target: Target, monitor: HealthMonitor, name: str, on_done: OnDone) -> Running:
        started = self.clock.monotonic()
        return start_task(
            self.check(target, monitor, name),
            on_done,
            lambda exc: probe_error(name, self.clock, started, exc),
        )


def probe_error(name: str, clock: Clock, started: float, exc: BaseException) -> CheckResult:
    """A probe raised (a bug, not a network problem): a failed check that says so."""
    return CheckResult(
        monitor=name,
        verdict=Verdict.FAIL,
        reason=Reason.CONNECTION_ERROR,
        at=clock.time(),
        latency=clock.monotonic() - started,
        detail=f"probe error: {type(exc).__name__}: {exc}",
    )


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


def outcome(
    name: str, clock: Clock, started: float, verdict: Verdict, reason: Reason, detail: str
) -> CheckResult:
    """A check's result, completed now (``started``: the clock's monotonic at its start)."""
    return CheckResult(
        monitor=name,
        verdict=verdict,
        reason=reason,
        at=clock.time(),
        latency=clock.monotonic() - started,
        detail=detail,
    )


def failure(name: str, clock: Clock, started: float, reason: Reason, detail: str) -> CheckResult:
    return outcome(name, clock, started, Verdict.FAIL, reason, detail)


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


__all__ = [
    "OnDone",
    "Prober",
    "Running",
    "Target",
    "TaskStart",
    "describe",
    "error_result",
    "failure",
    "outcome",
    "probe_error",
    "reason_for_error",
    "start_task",
]
