"""The UDP probe: one datagram out, one datagram (or an ICMP error, or silence) back.

The socket is connected, so an ICMP port-unreachable comes back as ``ECONNREFUSED``
(:meth:`asyncio.DatagramProtocol.error_received`): an immediate ``PORT_UNREACHABLE`` fail.
Silence fails only when a reply is expected (``udp_response`` set); otherwise the check waits
``receive_timeout`` for an ICMP error or a maintenance reply and passes without either.
"""

from __future__ import annotations

import asyncio
from typing import cast

from quiesce.config.models import HealthMonitor
from quiesce.core.checks import CheckResult, Reason
from quiesce.health.classify import WINDOW, classify_udp
from quiesce.health.probes.base import Target, TaskStart, describe, error_result, failure


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, request: bytes) -> None:
        self.request = request
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.DatagramTransport, transport).sendto(self.request)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc or ConnectionError("socket closed"))


class UdpProber(TaskStart):
    async def check(self, target: Target, monitor: HealthMonitor, name: str) -> CheckResult:
        clock = self.clock
        started = clock.monotonic()
        udp = monitor.udp
        request = udp.udp_request.replace("\\r\\n", "\r\n").encode()
        loop = asyncio.get_running_loop()
        transport: asyncio.DatagramTransport | None = None
        complete = True
        try:
            transport, proto = await loop.create_datagram_endpoint(
                lambda: _Datagram(request), remote_addr=(target.host, target.port)
            )
            try:
                async with asyncio.timeout(monitor.receive_timeout):
                    reply = await proto.reply
            except TimeoutError:
                reply, complete = b"", False
        except ConnectionRefusedError:
            return failure(name, clock, started, Reason.PORT_UNREACHABLE, "ICMP port unreachable")
        except OSError as exc:
            return error_result(name, clock, started, exc)
        finally:
            if transport is not None:
                transport.close()
        reply = reply[:WINDOW]
        verdict, reason, status = classify_udp(reply, udp, complete=complete)
        return CheckResult(
            monitor=name,
            verdict=verdict,
            reason=reason,
            at=clock.time(),
            latency=clock.monotonic() - started,
            status_code=status,
            detail=describe(verdict, reason, status, reply),
        )


__all__ = ["UdpProber"]
