"""Small HTTP back ends for the dashboard tests, each in its own thread on 127.0.0.1:0.

``/health`` answers 200 "ok", or ``maintenance_status`` with "under construction" once
``maintenance`` is set; ``/hold`` keeps the request (and so the proxied connection) open until
``release()`` is called, which is how the tests get "draining (N)" rows; anything else answers
the back end's name.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Backend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.maintenance = False
        self.maintenance_status = 503
        self.holding = 0
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._held_cond = threading.Condition(self._lock)
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/health"):
                    if backend.maintenance:
                        self._send(backend.maintenance_status, b"under construction\n")
                    else:
                        self._send(200, b"ok\n")
                    return
                if self.path.startswith("/hold"):
                    with backend._held_cond:
                        backend.holding += 1
                        backend._held_cond.notify_all()
                    backend._release.wait(120)
                    with backend._held_cond:
                        backend.holding -= 1
                    self._send(200, f"released by {backend.name}\n".encode())
                    return
                self._send(200, f"hello from {backend.name}\n".encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients cut by the balancer (a drain deadline) are expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Backend:
        self.thread.start()
        return self

    def wait_holding(self, count: int, timeout: float = 10.0) -> None:
        with self._held_cond:
            if not self._held_cond.wait_for(lambda: self.holding >= count, timeout):
                raise TimeoutError(f"{self.name}: {self.holding} held requests, wanted {count}")

    def release(self) -> None:
        self._release.set()

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
