"""A real gRPC server with the standard health servicer (grpcio's
``grpc_health.v1.health.HealthServicer``) on 127.0.0.1, port 0, for the grpc monitor's tests.

``GrpcHealthServer()`` serves h2c; with ``cert``/``key`` it serves TLS (and asks for a client
certificate signed by ``client_ca`` when given). :meth:`set` changes a service's status as a
back end would; ``hold`` makes every Check wait until it is cleared (a server that does not
answer in time). ``health=False``: a gRPC server without the health service (UNIMPLEMENTED).
"""

from __future__ import annotations

import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
health = pytest.importorskip("grpc_health.v1.health")
health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")

STATUS = {
    name: getattr(health_pb2.HealthCheckResponse, name)
    for name in ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")
}


class _Servicer(health.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()
        self.release = threading.Event()

    def Check(self, request: Any, context: Any) -> Any:
        if self.hold.is_set():
            self.release.wait(30)
        return super().Check(request, context)


class GrpcHealthServer:
    def __init__(
        self,
        *,
        cert: Path | None = None,
        key: Path | None = None,
        client_ca: Path | None = None,
        health: bool = True,
        port: int = 0,
    ) -> None:
        self.servicer = _Servicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        if health:
            health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        address = f"127.0.0.1:{port}"
        if cert is not None and key is not None:
            credentials = grpc.ssl_server_credentials(
                [(key.read_bytes(), cert.read_bytes())],
                root_certificates=None if client_ca is None else client_ca.read_bytes(),
                require_client_auth=client_ca is not None,
            )
            self.port = self.server.add_secure_port(address, credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        self.server.start()  # listening when it returns
        self.set("", "SERVING")

    def set(self, service: str, status: str) -> None:
        self.servicer.set(service, STATUS[status])

    def hold(self) -> None:
        """Every Check waits (until :meth:`stop`): a server that does not answer in time."""
        self.servicer.hold.set()

    def stop(self) -> None:
        self.servicer.release.set()
        self.server.stop(grace=None)

    def __enter__(self) -> GrpcHealthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
