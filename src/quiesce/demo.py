"""``quiesce demo``: everything on one machine with no config file.

Three small HTTP back ends run in-process. Each answers ``/`` with its name and ``/health`` with
200 — or with 503 and "under construction" once it is flipped into maintenance through
``/_demo/maintenance`` (``/_demo/ready`` flips it back). A health monitor with Avi's
maintenance fields watches them, so flipping one shows "down for maintenance" in the API and
the dashboard, and the balancer stops sending it requests without a single error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from quiesce.config import parse_config
from quiesce.config.models import Config
from quiesce.security import hash_password


class DemoBackend:
    """A tiny HTTP/1.1 server: enough for curl, browsers and the proxy's keep-alive pool."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.maintenance = False
        self.server: asyncio.Server | None = None
        self.port = 0
        self.hits = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = await asyncio.start_server(self._handle, host, port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)

    def respond(self, path: str) -> tuple[int, str]:
        if path.startswith("/_demo/maintenance"):
            self.maintenance = True
            return 200, f"{self.name} is now answering its health check with 503\n"
        if path.startswith("/_demo/ready"):
            self.maintenance = False
            return 200, f"{self.name} is ready again\n"
        if path.startswith("/health"):
            if self.maintenance:
                return 503, "under construction\n"
            return 200, "ok\n"
        self.hits += 1
        return 200, f"hello from {self.name} (request {self.hits})\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split()
                if len(parts) < 3:
                    return
                method, path, version = parts[0], parts[1], parts[2]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                status, body = self.respond(path)
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                data = body.encode()
                reason = {200: "OK", 503: "Service Unavailable"}[status]
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {len(data)}\r\nX-Backend: {self.name}\r\n"
                    f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n".encode()
                    + (b"" if method == "HEAD" else data)
                )
                await writer.drain()
                if not keep:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()


def demo_config(
    ports: list[int], *, port: int, admin_port: int, password_hash: str, state_dir: Path
) -> Config:
    raw: dict[str, Any] = {
        "admin": {
            "listen": f"127.0.0.1:{admin_port}",
            "users": [{"name": "admin", "password_hash": password_hash, "role": "admin"}],
            "runtime_socket": str(state_dir / "quiesce.sock"),
        },
        "state": {"sqlite": str(state_dir / "quiesce-state.db")},
        "healthmonitors": {
            "System-HTTP": {
                "type": "http",
                "send_interval": "1s",
                "receive_timeout": "500ms",
                "successful_checks": 2,
                "failed_checks": 2,
                "http_monitor": {
                    "http_request": "GET /health HTTP/1.0",
                    "http_response_code": ["2xx"],
                    "maintenance_code": [503],
                    "maintenance_response": "under construction",
                },
            }
        },
        "pools": {
            "web": {
                "algorithm": "round_robin",
                "healthmonitors": ["System-HTTP"],
                "graceful_disable_timeout": "1m",
                "min_servers_up": 1,
                "servers": [
                    {"name": f"web{i + 1}", "address": f"127.0.0.1:{p}"}
                    for i, p in enumerate(ports)
                ],
            }
        },
        "services": {
            "www": {
                "listen": f"127.0.0.1:{port}",
                "protocol": "http",
                "pool": "web",
                "maintenance_page": {"status": 503, "retry_after": 60},
                "monitor_uri": {
                    "path": "/site_alive",
                    "fail_if": {"usable_servers_below": {"web": 1}},
                },
                "rules": [{"if": {"flag": "maintenance_mode"}, "then": "maintenance_page"}],
            }
        },
    }
    return parse_config(raw, "demo")


def run_demo(port: int = 8080, admin_port: int = 9900) -> int:
    from quiesce.app import App, run_forever

    password = os.environ.get("QUIESCE_DEMO_PASSWORD") or secrets.token_urlsafe(12)
    backends = [DemoBackend(f"web{i}") for i in (1, 2, 3)]
    state_dir = Path(tempfile.mkdtemp(prefix="quiesce-demo-"))

    # The back ends run in the balancer's loop (started by before_start), but the config needs
    # their ports first: reserve free ones here.
    import socket

    ports = []
    reserved = []
    for _ in backends:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        reserved.append(s)
    for s in reserved:
        s.close()
    config = demo_config(
        ports,
        port=port,
        admin_port=admin_port,
        password_hash=hash_password(password),
        state_dir=state_dir,
    )

    def banner(app: App) -> None:
        svc = app.services["www"]
        admin = app.admin_server.port if app.admin_server is not None else admin_port
        www = f"http://127.0.0.1:{svc.port}/"
        api = f"http://127.0.0.1:{admin}"
        lines = [
            "",
            "quiesce demo is running",
            f"  balanced service   {www}",
            f"  monitor URI        {www}site_alive",
            f"  dashboard and API  {api}/   (user admin, password {password})",
            f"  metrics            {api}/metrics",
            "  back ends          "
            + ", ".join(f"{b.name} http://127.0.0.1:{b.port}/" for b in backends),
            "",
            "Try:",
            f"  curl -s {www}                         # round robin over web1..web3",
            f"  curl -s http://127.0.0.1:{backends[1].port}/_demo/maintenance"
            "   # web2 answers 503: 'down for maintenance'",
            f"  export QUIESCE_HOSTS=127.0.0.1:{admin} QUIESCE_USER=admin "
            f"QUIESCE_PASSWORD={password}",
            "  quiesce list servers",
            "  quiesce set server web/web1 drain --timeout 30s --reason deploy --wait",
            "  quiesce set flag maintenance_mode true   # the site shows its maintenance page",
            "",
        ]
        print("\n".join(lines), flush=True)

    async def start_backends() -> None:
        for b, p in zip(backends, ports, strict=True):
            await b.start(port=p)

    return run_forever(config, state_dir, grace=2.0, banner=banner, before_start=start_backends)
