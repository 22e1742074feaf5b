"""A real gRPC server (grpcio, generic handlers on raw bytes: no generated stubs) on
127.0.0.1, port 0, h2c (or TLS with ``tls``), for the gRPC-through-quiesce tests.

Methods of ``quiesce.test.Echo``:

* ``Say`` (unary): answers ``<name>:<request>``, trailing metadata ``x-served-by: <name>``;
* ``Fail`` (unary): aborts with NOT_FOUND and the request as the message;
* ``Count`` (server streaming): the request is a number N, answered with N messages
  ``<name>:<i>``;
* ``Slow`` (unary): the request is milliseconds to wait, then answers like ``Say``; a call
  its client resets meanwhile is counted as ``cancelled``.

``calls`` counts the calls each method took (a drain test looks at them).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent import futures
from typing import Any

import grpc

SERVICE = "quiesce.test.Echo"


class EchoServer:
    def __init__(
        self,
        name: str = "a",
        port: int = 0,
        workers: int = 16,
        tls: tuple[bytes, bytes] | None = None,
        max_streams: int | None = None,
        health: bool = False,
    ) -> None:
        self.name = name
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        options = [] if max_streams is None else [("grpc.max_concurrent_streams", max_streams)]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options)
        handlers = {
            "Say": grpc.unary_unary_rpc_method_handler(self._say),
            "Fail": grpc.unary_unary_rpc_method_handler(self._fail),
            "Count": grpc.unary_stream_rpc_method_handler(self._count),
            "Slow": grpc.unary_unary_rpc_method_handler(self._slow),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        if health:  # the standard grpc.health.v1.Health service, "" SERVING (grpc monitors)
            from grpc_health.v1 import health as health_mod
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            self.health = health_mod.HealthServicer()
            self.health.set("", health_pb2.HealthCheckResponse.SERVING)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if tls is None:
            self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        else:  # (key PEM, certificate chain PEM): TLS, ALPN h2
            credentials = grpc.ssl_server_credentials([tls])
            self.port = self.server.add_secure_port(f"127.0.0.1:{port}", credentials)
        self.server.start()  # listening when it returns

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _count_call(self, method: str) -> None:
        with self.lock:
            self.calls[method] += 1

    def _say(self, request: bytes, context: Any) -> bytes:
        self._count_call("Say")
        context.set_trailing_metadata((("x-served-by", self.name),))
        return self.name.encode() + b":" + request

    def _fail(self, request: bytes, context: Any) -> bytes:
        self._count_call("Fail")
        context.abort(grpc.StatusCode.NOT_FOUND, request.decode())
        raise AssertionError("abort raises")

    def _count(self, request: bytes, context: Any) -> Any:
        self._count_call("Count")
        for i in range(int(request)):
            yield b"%s:%d" % (self.name.encode(), i)

    def _slow(self, request: bytes, context: Any) -> bytes:
        self._count_call("Slow")
        end = time.monotonic() + int(request) / 1000
        while time.monotonic() < end:
            if not context.is_active():  # the client (quiesce) reset the stream
                self._count_call("cancelled")
                return b""
            time.sleep(0.005)
        return self.name.encode() + b":" + request

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace=grace).wait(10)

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
