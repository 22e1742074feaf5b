"""The C check engine: plain ``http`` and ``tcp`` checks in batches (``quiesce._checkfast``).

Theory of operation
-------------------
:class:`FastEngine` wraps one ``_checkfast.Engine``: its own epoll set, watched by the event
loop as one descriptor. :meth:`FastEngine.start` starts a whole batch of checks in one call
(socket, connect, send, register: all in C), the loop's readiness callback hands every ready
socket to C in one call (receive, classify, close), and one loop timer, set to the earliest
deadline, ends the checks that ran out of ``receive_timeout``. C returns ``(token, result)``
pairs, the :class:`CheckResult` already made (its slots set from C, see checkfast.c); Python
only calls each token's ``on_done``.

The C side never reads a clock: deadlines are in the event loop's time, latency in the
injected clock's monotonic time, ``at`` in its wall time, all passed in. Its classification
is the same as :mod:`quiesce.health.classify` (``tests/health/test_checkfast.py`` compares
them on random replies and rules); that module stays the reference and the pure-Python path
(``probes/stream.py``'s ``_FastCheck``) is used when the extension is missing or
``QUIESCE_PURE=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from quiesce import _accel
from quiesce.config.models import HealthMonitor, HttpMonitor, TcpMonitor
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import Clock
from quiesce.core.states import Verdict
from quiesce.health.classify import HttpRules
from quiesce.health.probes.base import OnDone, Target

if TYPE_CHECKING:
    from quiesce._checkfast import Engine, Rules, Spec

log = logging.getLogger("quiesce.health")

checkfast: Any = _accel.checkfast
"""The extension module, or None (then every check takes the Python path)."""

VERDICTS = (Verdict.PASS, Verdict.FAIL, Verdict.MAINTENANCE)
"""In the order of the C engine's verdict indices."""

REASONS = (
    Reason.OK,
    Reason.MAINTENANCE_RESPONSE_CODE_MATCH,
    Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH,
    Reason.RESPONSE_CODE_MISMATCH,
    Reason.PAYLOAD_CONTENT_MISMATCH,
    Reason.CONNECTION_REFUSED,
    Reason.CONNECTION_RESET,
    Reason.CONNECTION_ERROR,
    Reason.TIMEOUT,
    Reason.HOST_UNREACHABLE,
    Reason.MALFORMED_RESPONSE,
)
"""In the order of the C engine's reason indices."""


def available() -> bool:
    return checkfast is not None


def _needle(text: str | None) -> bytes | None:
    return text.encode() if text else None


def http_rules(monitor: HttpMonitor) -> Rules:
    rules = HttpRules.of(monitor)
    return checkfast.Rules(  # type: ignore[no-any-return]
        "http", rules.accept, rules.maintenance_codes, rules.maintenance, rules.expected
    )


def tcp_rules(monitor: TcpMonitor) -> Rules:
    return checkfast.Rules(  # type: ignore[no-any-return]
        "tcp", (), (), _needle(monitor.maintenance_response), _needle(monitor.tcp_response)
    )


def spec(target: Target, monitor: HealthMonitor, request: bytes, rules: Rules) -> Spec | None:
    """The C description of one check, or None when the target is not an IP address."""
    try:
        return checkfast.Spec(  # type: ignore[no-any-return]
            target.host, target.port, request, rules, monitor.receive_timeout
        )
    except ValueError:
        return None


class Token(Protocol):
    """What a check in the engine reports to: the monitor's name and a completion callback."""

    monitor: str
    on_done: OnDone


DELIVER_AT_ONCE = 32
"""Results handed over in one turn of the loop at most: after a stall, a thousand ready checks
that change state (events, the store) would otherwise hold it for as long as they take."""


class FastEngine:
    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        self.loop = loop
        self.clock = clock
        self.engine: Engine = checkfast.Engine(VERDICTS, REASONS, CheckResult)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        # Around each delivery of finished checks: the health manager makes it a batch of
        # the registry (one pool event per pool for a burst of changes, issue 21).
        self.around: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
        loop.add_reader(self.engine.fileno(), self._ready)

    def __len__(self) -> int:
        return len(self.engine)

    def start(self, batch: list[tuple[Token, Spec]]) -> None:
        """Start every check of ``batch``; each token's ``on_done`` is called once, never
        from inside this call, unless :meth:`cancel` is called first."""
        clock = self.clock
        done = self.engine.start(batch, self.loop.time(), clock.monotonic(), clock.time())
        if done:
            self.loop.call_soon(self._deliver, done)
        self._arm()

    def cancel(self, token: Token) -> None:
        self.engine.cancel(token)

    def _arm(self) -> None:
        deadline = self.engine.next_deadline()
        if deadline is None or deadline >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        # A loop timer may fire a little before its time on the loop's clock: the deadline
        # it was set for has come.
        now = max(self.loop.time(), self._timer_at)
        self._timer = None
        self._timer_at = math.inf
        done = self.engine.expire(now, self.clock.monotonic(), self.clock.time())
        if done:
            self._deliver(done)
        self._arm()

    def _ready(self) -> None:
        done = self.engine.poll(self.clock.monotonic(), self.clock.time())
        if done:
            self._deliver(done)

    def _deliver(self, done: list[tuple[Token, CheckResult | None]]) -> None:
        if len(done) > DELIVER_AT_ONCE:  # a backlog: the rest after the requests waiting
            self.loop.call_soon(self._deliver, done[DELIVER_AT_ONCE:])
            done = done[:DELIVER_AT_ONCE]
        with self.around():
            self._deliver_each(done)

    def _deliver_each(self, done: list[tuple[Token, CheckResult | None]]) -> None:
        for token, result in done:
            try:
                if result is None:  # C could not make it (see checkfast.c: finish)
                    result = CheckResult(
                        getattr(token, "monitor", "?"),
                        Verdict.FAIL,
                        Reason.CONNECTION_ERROR,
                        self.clock.time(),
                        0.0,
                        detail="probe error: the check engine could not make the result",
                    )
                token.on_done(result)
            except Exception:  # one consumer's bug must not lose the other results
                log.exception("delivering a check result of %s failed", token.monitor)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(RuntimeError, ValueError):  # the loop is closed already
            self.loop.remove_reader(self.engine.fileno())
        self.engine.close()


class Single:
    """A check started on its own (``StreamProber.start``): the token and its ``cancel``."""

    __slots__ = ("engine", "monitor", "on_done")

    def __init__(self, engine: FastEngine, monitor: str, on_done: OnDone) -> None:
        self.engine = engine
        self.monitor = monitor
        self.on_done = on_done

    def cancel(self) -> None:
        self.engine.cancel(self)
        self.on_done = _ignore  # a result already taken from the engine is not delivered


def _ignore(result: CheckResult) -> None:
    pass


__all__ = ["REASONS", "VERDICTS", "FastEngine", "Single", "Token", "available", "checkfast"]
