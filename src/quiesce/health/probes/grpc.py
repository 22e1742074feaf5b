"""The ``grpc`` probe: the standard ``grpc.health.v1.Health/Check`` of ``grpc_monitor.service``.

It uses grpcio's asyncio API (``grpc.aio``) and the stubs of grpcio-health-checking (an
optional dependency: ``pip install 'quiesce[grpc]'``), imported at the first grpc check only.
Each check opens its own channel (its own connection: ``use_local_subchannel_pool``, so two
checks never share one), plaintext h2c or TLS (``grpc_monitor.tls``, or the pool's TLS with
``use_pool_tls``), and closes it at the end; the calls' deadline is what is left of
``receive_timeout``. The verdict is :func:`quiesce.health.classify.classify_grpc` (sans-IO).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from quiesce.config.models import HealthMonitor
from quiesce.config.monitors import GRPC_STATUSES, GrpcTls
from quiesce.core.checks import CheckResult, Reason
from quiesce.health.classify import GrpcAnswer, classify_grpc
from quiesce.health.probes.base import Target, TaskStart, failure, outcome

INSTALL_HINT = "grpc monitors need grpcio and grpcio-health-checking: pip install 'quiesce[grpc]'"


def library() -> tuple[Any, Any, Any]:
    """``(grpc, health_pb2, health_pb2_grpc)``; ImportError when not installed."""
    # grpc's C core logs each failed TLS handshake at INFO on stderr; errors only
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import grpc
    from grpc_health.v1 import (
        health_pb2,
        health_pb2_grpc,
    )

    return grpc, health_pb2, health_pb2_grpc


def missing() -> str | None:
    """None when grpc checks can run here; else what to install (for ``quiesce check``)."""
    try:
        library()
    except ImportError:
        return INSTALL_HINT
    return None


def _address(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port}"


class GrpcProber(TaskStart):
    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self._credentials: dict[tuple[str | None, ...], Any] = {}

    def close(self) -> None:
        self._credentials.clear()

    def credentials(self, grpc: Any, tls: GrpcTls) -> Any:
        """The channel credentials of ``tls`` (files read once per set of paths)."""
        cert = tls.client_cert
        key = (tls.ca, cert.cert if cert else None, cert.key if cert else None)
        made = self._credentials.get(key)
        if made is None:
            roots = None if tls.ca is None else Path(tls.ca).read_bytes()
            chain = private = None
            if cert is not None:
                chain = Path(cert.cert).read_bytes()
                private = Path(cert.key).read_bytes() if cert.key else chain
            made = grpc.ssl_channel_credentials(roots, private, chain)
            if len(self._credentials) > 1000:
                self._credentials.clear()
            self._credentials[key] = made
        return made

    async def check(self, target: Target, monitor: HealthMonitor, name: str) -> CheckResult:
        clock = self.clock
        started = clock.monotonic()
        settings = monitor.grpc
        try:
            grpc, pb2, pb2_grpc = library()
        except ImportError:
            return failure(name, clock, started, Reason.CONNECTION_ERROR, INSTALL_HINT)
        # a fresh connection per check, never shared; no retries: one call, one answer
        options: list[tuple[str, Any]] = [
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.enable_retries", 0),
        ]
        if settings.authority:
            options.append(("grpc.default_authority", settings.authority))
        tls = settings.tls
        if tls is None:
            channel = grpc.aio.insecure_channel(_address(target), options=options)
        else:
            if not tls.verify:  # the pool's tls (use_pool_tls) has verify: false
                return failure(
                    name,
                    clock,
                    started,
                    Reason.TLS_ERROR,
                    "the pool's tls has verify: false, which a grpc monitor cannot do "
                    "(grpcio always verifies): give the pool's tls a ca",
                )
            try:
                credentials = self.credentials(grpc, tls)
            except OSError as exc:
                detail = f"cannot load the TLS settings (ca, client_cert): {exc}"
                return failure(name, clock, started, Reason.TLS_ERROR, detail)
            if tls.sni:
                options.append(("grpc.ssl_target_name_override", tls.sni))
            channel = grpc.aio.secure_channel(_address(target), credentials, options=options)
        deadline = started + monitor.receive_timeout
        stub = pb2_grpc.HealthStub(channel)

        async def ask(service: str) -> GrpcAnswer:
            left = deadline - clock.monotonic()
            if left <= 0:
                return GrpcAnswer(code="DEADLINE_EXCEEDED")
            try:
                reply = await stub.Check(pb2.HealthCheckRequest(service=service), timeout=left)
            except grpc.aio.AioRpcError as exc:
                return GrpcAnswer(code=exc.code().name, details=exc.details() or "")
            status = reply.status
            return GrpcAnswer(GRPC_STATUSES[status] if 0 <= status < 4 else "UNKNOWN")

        try:
            answer = await ask(settings.service)
            maintenance = None
            if settings.maintenance_service is not None and not answer.transport_failed:
                maintenance = await ask(settings.maintenance_service)
        finally:
            await channel.close()
        return outcome(name, clock, started, *classify_grpc(settings, answer, maintenance))


__all__ = ["INSTALL_HINT", "GrpcProber", "library", "missing"]
