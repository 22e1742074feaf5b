"""TCP, HTTP and HTTPS probes: connect, send, read until the verdict is known, classify.

The I/O is a bare :class:`asyncio.Protocol` rather than streams: one object per check and no
extra task, which is what lets one core check ten thousand servers a second (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

from quiesce.config.models import HealthMonitor, HttpsMonitor
from quiesce.core.checks import CheckResult
from quiesce.core.clock import Clock
from quiesce.health.classify import (
    WINDOW,
    build_http_request,
    classify_http,
    classify_tcp,
    expects_payload,
    http_reply_complete,
    stream_reply_complete,
)
from quiesce.health.probes.base import Target, describe, error_result

Done = Callable[[bytes], bool]


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


class StreamProber:
    """Probes ``tcp``, ``http`` and ``https`` monitors."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._tls: dict[tuple[object, ...], ssl.SSLContext] = {}

    def close(self) -> None:
        self._tls.clear()

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

    async def check(self, target: Target, monitor: HealthMonitor, name: str) -> CheckResult:
        clock = self.clock
        started = clock.monotonic()
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        server_hostname: str | None = None
        done: Done | None
        if monitor.type in ("http", "https"):
            http = monitor.http
            if isinstance(http, HttpsMonitor):
                try:
                    tls = self.tls_context(http)
                except (OSError, ssl.SSLError) as exc:
                    return error_result(name, clock, started, exc)
                server_hostname = http.sni or target.host
            host_header = (
                http.sni if isinstance(http, HttpsMonitor) and http.sni else target.host_header
            )
            request = build_http_request(http, host_header)

            def done(reply: bytes) -> bool:
                return http_reply_complete(reply, http)

        else:
            tcp = monitor.tcp
            request = tcp.tcp_request.encode() if tcp.tcp_request else b""
            if expects_payload(tcp.tcp_response, tcp.maintenance_response):

                def done(reply: bytes) -> bool:
                    return stream_reply_complete(reply, tcp.tcp_response, tcp.maintenance_response)

            else:
                done = None
        proto = _Collect(request, done)
        complete = True
        try:
            async with asyncio.timeout(monitor.receive_timeout):
                await loop.create_connection(
                    lambda: proto,
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=server_hostname,
                    ssl_handshake_timeout=monitor.receive_timeout if tls else None,
                )
                await proto.finished
        except TimeoutError as exc:
            if not proto.reply:
                _abort(proto)
                return error_result(name, clock, started, exc)
            complete = False  # classify what arrived before the timeout
        except (OSError, ssl.SSLError) as exc:
            _abort(proto)
            return error_result(name, clock, started, exc)
        except BaseException:  # cancelled (the manager is stopping): leave no socket open
            _abort(proto)
            raise
        if proto.transport is not None:
            proto.transport.close()  # flushes tcp_request when no reply is awaited
        reply = bytes(proto.reply[:WINDOW])
        if monitor.type == "tcp":
            verdict, reason, status = classify_tcp(reply, monitor.tcp, complete=complete)
        else:
            verdict, reason, status = classify_http(reply, monitor.http)
        return CheckResult(
            monitor=name,
            verdict=verdict,
            reason=reason,
            at=clock.time(),
            latency=clock.monotonic() - started,
            status_code=status,
            detail=describe(verdict, reason, status, reply),
        )


def _abort(proto: _Collect) -> None:
    if proto.transport is not None:
        proto.transport.abort()


__all__ = ["StreamProber"]
