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
import shutil
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


class DemoTraffic:
    """Gentle traffic through the demo's own service: ``rate`` GETs a second over one
    keep-alive connection (opened again after an error), so the counters and the dashboard
    move from the first second. Errors are counted, never raised: a drained pool or a
    maintenance page are part of the story. The task ends with the loop (asyncio.run cancels
    it after the staged shutdown)."""

    def __init__(self, port: int, rate: float = 4.0, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.interval = host, port, 1.0 / rate
        self.sent = self.ok = self.failed = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while True:
            await asyncio.sleep(self.interval)
            self.sent += 1
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the inner
                # result when a cancel and a refusal land together, so the shutdown's cancel
                # was lost and this loop kept the process from exiting
                if conn is None:
                    async with asyncio.timeout(2.0):
                        conn = await asyncio.open_connection(self.host, self.port)
                async with asyncio.timeout(5.0):
                    keep = await self.get(*conn)
                self.ok += 1
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ValueError,
            ):  # OSError: TimeoutError too
                self.failed += 1
                keep = False
            if not keep and conn is not None:
                conn[1].close()
                conn = None

    async def get(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One ``GET /``; True when the connection may be used again."""
        writer.write(
            f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "User-Agent: quiesce-demo-traffic\r\n\r\n".encode()
        )
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        length = 0
        for line in head.split("\r\n")[1:]:
            if line.startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        await reader.readexactly(length)
        return "connection: close" not in head


def demo_lines(
    *, www: str, api: str, password: str, backends: list[DemoBackend], socket_path: Path
) -> list[str]:
    """What the demo prints once it is up: where everything is, and for every command it
    suggests, the one that undoes it."""
    b2 = f"http://127.0.0.1:{backends[1].port}"
    sock = f"socat stdio UNIX-CONNECT:{socket_path}"
    return [
        "",
        "quiesce demo is running",
        f"  balanced service   {www}",
        f"  monitor URI        {www}site_alive",
        f"  dashboard and API  {api}/   (user admin, password {password})",
        f"  metrics            {api}/metrics   (the same credentials: curl -u)",
        f"  runtime socket     {socket_path}",
        "  back ends          "
        + ", ".join(f"{b.name} http://127.0.0.1:{b.port}/" for b in backends),
        "",
        "Try (each with the command that undoes it):",
        f"  curl -s {www}                         # round robin over web1..web3",
        f"  curl -s -u admin:{password} {api}/metrics | grep quiesce_server_requests",
        f"  curl -s {b2}/_demo/maintenance   # web2 answers 503: 'down for maintenance'",
        f"    undo: curl -s {b2}/_demo/ready",
        f"  export QUIESCE_HOSTS={api.removeprefix('http://')} QUIESCE_USER=admin "
        f"QUIESCE_PASSWORD={password}",
        "  quiesce list servers",
        "  quiesce top   # a live view, keys d drain, e enable (pip install 'quiesce[top]')",
        "  quiesce set server web/web1 drain --timeout 30s --reason deploy --wait",
        "    undo: quiesce clear server web/web1 drain",
        "  quiesce set server web/web3 maintenance --reason patching",
        "    undo: quiesce clear server web/web3 maintenance",
        "  quiesce set flag maintenance_mode true   # the site shows its maintenance page",
        "    undo: quiesce clear flag maintenance_mode",
        f'  echo "show stat" | {sock}',
        f'  echo "set server web/web1 state drain" | {sock}',
        f'    undo: echo "set server web/web1 state ready" | {sock}',
        "",
    ]


def busy_port_hint(exc: Exception) -> str | None:
    """On a port already in use, the option that avoids it."""
    text = str(exc)
    if "address already in use" not in text.lower():
        return None
    # both options at once: when the default service port is taken, the default admin port
    # often is too (a demo already running), and one hint at a time made two failed starts
    which = "the admin port" if text.startswith("admin") else "the service port"
    return f"quiesce demo: {which} is busy; try --port 0 --admin-port 0 (any free ports)"


def run_demo(port: int = 8080, admin_port: int = 9900, *, traffic: bool = True) -> int:
    """Run the demo until SIGINT/SIGTERM; its temp directory (state, runtime socket) is
    removed on the way out, whatever the way."""
    state_dir = Path(tempfile.mkdtemp(prefix="quiesce-demo-"))
    try:
        return _run_demo(port, admin_port, traffic, state_dir)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def _run_demo(port: int, admin_port: int, traffic: bool, state_dir: Path) -> int:
    from quiesce.app import App, run_forever

    password = os.environ.get("QUIESCE_DEMO_PASSWORD") or secrets.token_urlsafe(12)
    backends = [DemoBackend(f"web{i}") for i in (1, 2, 3)]
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

    mover: list[DemoTraffic] = []

    def banner(app: App) -> None:
        svc = app.services["www"]
        admin = app.admin_server.port if app.admin_server is not None else admin_port
        lines = demo_lines(
            www=f"http://127.0.0.1:{svc.port}/",
            api=f"http://127.0.0.1:{admin}",
            password=password,
            backends=backends,
            socket_path=state_dir / "quiesce.sock",
        )
        if traffic:
            mover.append(DemoTraffic(svc.port))
            mover[0].start()
            lines.insert(-1, "Sending 4 requests a second to the service (--no-traffic: none).")
        print("\n".join(lines), flush=True)

    async def start_backends() -> None:
        for b, p in zip(backends, ports, strict=True):
            await b.start(port=p)

    return run_forever(
        config,
        state_dir,
        grace=2.0,
        banner=banner,
        before_start=start_backends,
        startup_hint=busy_port_hint,
    )
