"""TCP, HTTP and HTTPS probes: connect, send, read until the verdict is known, classify.

Three I/O paths share one plan (the request bytes, when to stop reading, how to classify):

* the **C engine** (plain TCP/HTTP to an IP address, when the optional extension
  ``quiesce._checkfast`` is built and ``QUIESCE_PURE`` is not set): :mod:`.fast`. The health
  manager starts a whole tick's checks with one call (:meth:`StreamProber.start_batch`); a
  single :meth:`StreamProber.start` is a batch of one.
* the **Python fast path**, for the same checks when the extension is not there, is
  :class:`_FastCheck`: a non-blocking socket in the prober's own epoll set
  (:class:`_Reactor`), no transport, no task. On a fast
  network the request is written straight after ``connect()`` (loopback completes the
  handshake inside the call), so a check costs about eight system calls: socket, connect,
  send, epoll_ctl, recv, setsockopt (linger 0), close, plus its share of the loop's waits.
  This is what lets one core check thousands of servers a second (BENCHMARKS.md, "Health
  checks at scale").
* the **asyncio path** (TLS, host names) uses ``loop.create_connection`` and a small
  :class:`asyncio.Protocol`.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import errno
import ipaddress
import os
import select
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from quiesce.config.models import HealthMonitor, HttpsMonitor
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import Clock
from quiesce.health.classify import (
    WINDOW,
    Classified,
    HttpRules,
    build_http_request,
    classify_tcp,
    expects_payload,
    stream_reply_complete,
)
from quiesce.health.probes import fast
from quiesce.health.probes.base import (
    OnDone,
    Running,
    Target,
    describe,
    error_result,
    failure,
    probe_error,
    start_task,
)

if TYPE_CHECKING:
    from quiesce._checkfast import Rules, Spec

Done = Callable[[bytes], bool]
# pools.X.send_proxy's header on a check, as HAProxy's check-send-proxy sends it: v2 LOCAL,
# v1 UNKNOWN; both tell the server to take the check's own connection addresses
# (quiesce.dataplane.proxyproto makes the same bytes)
PROXY_CHECK = {"v1": b"PROXY UNKNOWN\r\n", "v2": b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"}
_LINGER_ZERO = struct.pack("ii", 1, 0)
Classify = Callable[[bytes, bool], Classified]


def _tcp_request(monitor: HealthMonitor) -> bytes:
    """What a tcp check sends: ``tcp_request`` (``\\r\\n`` written as such in the file is
    CRLF), after the pool's PROXY header when it has ``send_proxy``."""
    tcp = monitor.tcp
    request = tcp.tcp_request.replace("\\r\\n", "\r\n").encode() if tcp.tcp_request else b""
    if monitor.send_proxy:
        request = PROXY_CHECK[monitor.send_proxy] + request
    return request


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one check sends and how it reads the reply, derived from a monitor definition."""

    request: bytes
    done: Done | None  # None: the handshake (and sending the request) suffices
    classify: Classify
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None
    spec: Spec | None = None  # the C engine's form of this check, when it can run it


def _result(
    name: str, clock: Clock, started: float, verdict_reason: Classified, reply: bytes
) -> CheckResult:
    verdict, reason, status = verdict_reason
    return CheckResult(
        monitor=name,
        verdict=verdict,
        reason=reason,
        at=clock.time(),
        latency=clock.monotonic() - started,
        status_code=status,
        detail=describe(verdict, reason, status, reply),
    )


class StreamProber:
    """Probes ``tcp``, ``http`` and ``https`` monitors."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._tls: dict[tuple[object, ...], ssl.SSLContext] = {}
        # (id(monitor), target) -> (monitor, plan); the monitor is kept so its id stays valid.
        self._plans: dict[tuple[int, Target], tuple[HealthMonitor, _Plan]] = {}
        # id(monitor) -> (monitor, its C engine parts): fast_spec's, shared by its servers
        self._parts: dict[int, tuple[HealthMonitor, tuple[bytes | None, Rules] | None]] = {}
        self._literal: dict[str, bool] = {}
        self._fast: _Reactor | None = None
        self._engine: fast.FastEngine | None = None

    def close(self) -> None:
        self._tls.clear()
        self._plans.clear()
        self._parts.clear()
        if self._fast is not None:
            self._fast.close()
            self._fast = None
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def engine(self) -> fast.FastEngine:
        """The C engine of this prober (created in the running loop at first use)."""
        engine = self._engine
        if engine is None:
            engine = self._engine = fast.FastEngine(asyncio.get_running_loop(), self.clock)
        return engine

    def _reactor(self) -> _Reactor:
        fast = self._fast
        if fast is None:  # a prober lives in one loop (the manager makes one per start)
            fast = self._fast = _Reactor(asyncio.get_running_loop())
        return fast

    def tls_context(self, https: HttpsMonitor) -> ssl.SSLContext:
        cert = https.client_cert
        key = (https.verify, https.ca, cert.cert if cert else None, cert.key if cert else None)
        ctx = self._tls.get(key)
        if ctx is None:
            if https.verify:
                ctx = ssl.create_default_context(cafile=https.ca)
            else:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if cert is not None:
                ctx.load_cert_chain(cert.cert, cert.key)
            self._tls[key] = ctx
        return ctx

    def plan(self, target: Target, monitor: HealthMonitor) -> _Plan:
        key = (id(monitor), target)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is monitor:
            return cached[1]
        plan = self._make_plan(target, monitor)
        if len(self._plans) > 100_000:
            self._plans.clear()
        self._plans[key] = (monitor, plan)
        return plan

    def _make_plan(self, target: Target, monitor: HealthMonitor) -> _Plan:
        if monitor.type in ("http", "https"):
            http = monitor.http
            tls = None
            server_hostname = None
            host_header = target.host_header
            if isinstance(http, HttpsMonitor):
                tls = self.tls_context(http)
                server_hostname = http.sni or target.host
                host_header = http.sni or host_header
            rules = HttpRules.of(http)

            def classify(reply: bytes, complete: bool) -> Classified:
                return rules.classify(reply)

            request = build_http_request(http, host_header)
            if tls is None and monitor.send_proxy:
                request = PROXY_CHECK[monitor.send_proxy] + request
            spec = None
            if tls is None and fast.available():
                spec = fast.spec(target, monitor, request, fast.http_rules(http))
            return _Plan(request, rules.complete, classify, tls, server_hostname, spec)
        tcp = monitor.tcp
        request = _tcp_request(monitor)

        def classify_stream(reply: bytes, complete: bool) -> Classified:
            return classify_tcp(reply, tcp, complete=complete)

        spec = None
        if fast.available():
            spec = fast.spec(target, monitor, request, fast.tcp_rules(tcp))
        if not expects_payload(tcp.tcp_response, tcp.maintenance_response):
            return _Plan(request, None, classify_stream, spec=spec)

        def stream_done(reply: bytes) -> bool:
            return stream_reply_complete(reply, tcp.tcp_response, tcp.maintenance_response)

        return _Plan(request, stream_done, classify_stream, spec=spec)

    def _is_literal(self, host: str) -> bool:
        known = self._literal.get(host)
        if known is None:
            try:
                ipaddress.ip_address(host)
                known = True
            except ValueError:
                known = False
            self._literal[host] = known
        return known

    def fast_spec(self, target: Target, monitor: HealthMonitor) -> Spec | None:
        """The C engine's form of this check, or None when it takes another path (TLS, a
        host name, no extension: :meth:`start` then). Made once for a (server, monitor)
        pair, which keeps it (the health manager's job), from the monitor's parts made once
        for all its servers (:meth:`_fast_parts`); nothing of it is kept here (issue 21: a
        plan per server in ``_plans``, with its ``Rules`` and closures, took 2.3 KiB a
        server). Equal to ``plan(target, monitor).spec``."""
        parts = self._fast_parts(monitor)
        if parts is None:
            return None
        request, rules = parts
        if request is None:  # http: the request names the server (Host)
            request = build_http_request(monitor.http, target.host_header)
            if monitor.send_proxy:
                request = PROXY_CHECK[monitor.send_proxy] + request
        return fast.spec(target, monitor, request, rules)

    def _fast_parts(self, monitor: HealthMonitor) -> tuple[bytes | None, Rules] | None:
        """A monitor's request (None for http: each server's own, for its Host header) and
        the C engine's ``Rules``, shared by its servers; None when it never runs there."""
        hit = self._parts.get(id(monitor))
        if hit is not None and hit[0] is monitor:
            return hit[1]
        parts: tuple[bytes | None, Rules] | None = None
        if fast.available():
            if monitor.type in ("http", "https"):
                http = monitor.http
                if not isinstance(http, HttpsMonitor):
                    parts = (None, fast.http_rules(http))
            else:
                tcp = monitor.tcp
                parts = (_tcp_request(monitor), fast.tcp_rules(tcp))
        if len(self._parts) > 10_000:  # definitions replaced by reloads
            self._parts.clear()
        self._parts[id(monitor)] = (monitor, parts)
        return parts

    def start_batch(self, batch: list[tuple[fast.Token, Spec]]) -> None:
        """Start many checks on the C engine in one call (specs from :meth:`fast_spec`);
        each token's ``on_done`` gets its result, unless ``engine().cancel(token)``."""
        self.engine().start(batch)

    def start(self, target: Target, monitor: HealthMonitor, name: str, on_done: OnDone) -> Running:
        started = self.clock.monotonic()
        try:
            plan = self.plan(target, monitor)
        except (OSError, ssl.SSLError) as exc:  # a bad ca / client_cert file
            detail = f"cannot load the TLS settings (ca, client_cert): {exc}"
            result = failure(name, self.clock, started, Reason.TLS_ERROR, detail)
            return _Immediate(result, on_done)
        if plan.spec is not None:
            engine = self.engine()
            single = fast.Single(engine, name, on_done)
            engine.start([(single, plan.spec)])
            return single
        if plan.tls is None and self._is_literal(target.host):
            return _FastCheck(
                self._reactor(), self.clock, started, target, monitor, name, plan, on_done
            )
        return start_task(
            self._check_async(target, monitor, name, plan, started),
            on_done,
            lambda exc: probe_error(name, self.clock, started, exc),
        )

    async def check(self, target: Target, monitor: HealthMonitor, name: str) -> CheckResult:
        fut: asyncio.Future[CheckResult] = asyncio.get_running_loop().create_future()
        running = self.start(target, monitor, name, fut.set_result)
        try:
            return await fut
        except asyncio.CancelledError:
            running.cancel()
            raise

    async def _check_async(
        self, target: Target, monitor: HealthMonitor, name: str, plan: _Plan, started: float
    ) -> CheckResult:
        clock = self.clock
        loop = asyncio.get_running_loop()
        proto = _Collect(plan.request, plan.done)
        complete = True
        try:
            async with asyncio.timeout(monitor.receive_timeout):
                await loop.create_connection(
                    lambda: proto,
                    target.host,
                    target.port,
                    ssl=plan.tls,
                    server_hostname=plan.server_hostname,
                    ssl_handshake_timeout=monitor.receive_timeout if plan.tls else None,
                )
                await proto.finished
        except TimeoutError as exc:
            if not proto.reply:
                proto.abort()
                return error_result(name, clock, started, exc)
            complete = False  # classify what arrived before the timeout
        except (OSError, ssl.SSLError) as exc:
            proto.abort()
            return error_result(name, clock, started, exc)
        except BaseException:  # cancelled: leave no socket open
            proto.abort()
            raise
        if proto.transport is not None:
            proto.transport.close()  # flushes tcp_request when no reply is awaited
        reply = bytes(proto.reply[:WINDOW])
        return _result(name, clock, started, plan.classify(reply, complete), reply)


class _Immediate:
    """A check decided before any I/O (reported on the next loop iteration)."""

    def __init__(self, result: CheckResult, on_done: OnDone) -> None:
        self.handle = asyncio.get_running_loop().call_soon(on_done, result)

    def cancel(self) -> None:
        self.handle.cancel()


class _Reactor:
    """One ``epoll`` set for every fast check of a prober, itself watched by the event loop.

    Registering a check socket here costs one ``epoll_ctl`` and closing it removes it from
    the set for free; the event loop's own per-descriptor machinery (about six ``epoll_ctl``
    calls, a ``getpid`` and an ``ioctl`` per check under uvloop, measured with strace) is
    skipped. The loop watches the epoll descriptor, level-triggered, so readiness is never
    lost between two loop iterations."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.epoll = select.epoll()
        self.checks: dict[int, _FastCheck] = {}
        loop.add_reader(self.epoll.fileno(), self._ready)

    def _ready(self) -> None:
        checks = self.checks
        for fd, events in self.epoll.poll(0, 1024):
            check = checks.get(fd)
            if check is None:
                continue
            try:
                check.ready(events)
            except Exception as exc:  # a bug must not leave a ready socket behind (busy loop)
                check.fail(exc)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, ValueError):  # the loop is closed already
            self.loop.remove_reader(self.epoll.fileno())
        for check in list(self.checks.values()):
            check.cancel()
        self.epoll.close()


_IN = select.EPOLLIN | select.EPOLLRDHUP
_OUT = select.EPOLLOUT


class _FastCheck:
    """One plain TCP/HTTP check driven by the prober's :class:`_Reactor`."""

    __slots__ = (
        "clock",
        "fd",
        "finished",
        "name",
        "on_done",
        "pending",
        "plan",
        "reactor",
        "reading",
        "registered",
        "reply",
        "sock",
        "started",
        "timer",
    )

    def __init__(
        self,
        reactor: _Reactor,
        clock: Clock,
        started: float,
        target: Target,
        monitor: HealthMonitor,
        name: str,
        plan: _Plan,
        on_done: OnDone,
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.name = name
        self.plan = plan
        self.on_done = on_done
        self.started = started
        self.reply = b""
        self.pending = plan.request
        self.finished = False
        self.reading = False
        self.registered = False
        loop = reactor.loop
        family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
        # The C socket type: socket.socket's Python wrapper costs microseconds per check.
        self.sock = sock = _socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        self.fd = sock.fileno()
        self.timer = loop.call_later(monitor.receive_timeout, self._timeout)
        err = sock.connect_ex((target.host, target.port))
        if err not in (0, errno.EINPROGRESS):
            loop.call_soon(self._fail, OSError(err, os.strerror(err)))
            return
        reactor.checks[self.fd] = self
        if self.pending:
            self._send()  # loopback and fast LANs are connected already
        else:
            self._watch(_OUT)

    def _watch(self, events: int) -> None:
        if self.registered:
            self.reactor.epoll.modify(self.fd, events)
        else:
            self.reactor.epoll.register(self.fd, events)
            self.registered = True

    def _send(self) -> None:
        try:
            n = self.sock.send(self.pending)
        except (BlockingIOError, InterruptedError):
            self._watch(_OUT)
            return
        except OSError as exc:
            self.reactor.loop.call_soon(self._fail, exc)
            return
        self.pending = self.pending[n:]
        if self.pending:
            self._watch(_OUT)
        elif self.plan.done is not None:
            self.reading = True
            self._watch(_IN)
        else:  # nothing to read: report on the next iteration, never from inside start()
            self.reactor.loop.call_soon(self._classify, True)

    def ready(self, events: int) -> None:
        if self.finished:
            return
        if not self.reading:  # waiting for the connection (or to write the rest)
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._fail(OSError(err, os.strerror(err)))
            elif self.pending:
                self._send()
            elif self.plan.done is None:
                self._classify(True)
            else:
                self.reading = True
                self._watch(_IN)
            return
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if self.reply:
                self._classify(True)
            else:
                self._fail(exc)
            return
        if not data:
            self._classify(True)
            return
        if len(self.reply) < WINDOW:
            self.reply += data
        done = self.plan.done
        if done is not None and done(self.reply):
            self._classify(True)

    def _timeout(self) -> None:
        if self.finished:
            return
        if self.reading:
            # A busy loop may run this timer before the readiness event of a reply that
            # arrived in time: read what is there so lateness here is not a false TIMEOUT.
            eof = False
            try:
                while len(self.reply) < WINDOW:
                    data = self.sock.recv(65536)
                    if not data:
                        eof = True
                        break
                    self.reply += data
            except OSError:
                pass
            if eof or (self.reply and self.plan.done is not None and self.plan.done(self.reply)):
                self._classify(True)
                return
        if self.reply:
            self._classify(False)
        else:
            self._fail(TimeoutError())

    # endings ----------------------------------------------------------------------------------

    def _classify(self, complete: bool) -> None:
        if self.finished:
            return
        reply = self.reply[:WINDOW]
        result = _result(
            self.name, self.clock, self.started, self.plan.classify(reply, complete), reply
        )
        self._finish(result)

    def _fail(self, exc: BaseException) -> None:
        if not self.finished:
            self._finish(error_result(self.name, self.clock, self.started, exc))

    def fail(self, exc: Exception) -> None:
        """End the check as failed because handling it raised ``exc`` (a bug)."""
        if not self.finished:
            self._finish(probe_error(self.name, self.clock, self.started, exc))

    def _finish(self, result: CheckResult) -> None:
        if self.finished:
            return
        self.cancel()
        self.on_done(result)

    def cancel(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.timer.cancel()
        self.reactor.checks.pop(self.fd, None)
        if self.reading or not self.plan.request:
            # Close with a RST, as HAProxy does for checks: the server keeps no TIME_WAIT
            # and a busy checker does not run into its own old connections. (Not when a
            # request was just sent and no reply awaited: a RST could discard it unsent.)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        self.sock.close()  # also leaves the epoll set


class _Collect(asyncio.Protocol):
    """Writes ``request`` once connected; collects the reply until ``done(reply)``, EOF or
    the connection ends. ``finished`` resolves to True on EOF/close, False when ``done``."""

    def __init__(self, request: bytes, done: Done | None) -> None:
        self.request = request
        self.done = done
        self.reply = bytearray()
        self.finished: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.request:
            self.transport.write(self.request)
        if self.done is None:
            self._finish(False)

    def data_received(self, data: bytes) -> None:
        if len(self.reply) < WINDOW:
            self.reply += data
        if self.done is not None and self.done(bytes(self.reply)):
            self._finish(False)

    def eof_received(self) -> bool | None:
        self._finish(True)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.finished.done():
            return
        if exc is not None and not self.reply:
            self.finished.set_exception(exc)
        else:
            self.finished.set_result(True)

    def _finish(self, eof: bool) -> None:
        if not self.finished.done():
            self.finished.set_result(eof)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


__all__ = ["StreamProber"]
