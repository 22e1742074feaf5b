"""The admin listener: uvicorn inside the proxy's own event loop.

uvicorn's ``Server.serve()`` installs signal handlers, which belong to the process (the
composition root). So this module does what ``serve()`` does minus the signals: load the
config, ``startup(sockets=[...])`` on a socket bound here (port 0 allowed, so tests and
``quiesce demo`` learn the port), run ``main_loop()`` as a task, and on stop set
``should_exit`` and ``shutdown()``. Open event streams end when :attr:`stopping` is set, so
shutdown never waits on them.

The listener binds loopback unless ``admin.allow_non_loopback``; with ``admin.tls`` it speaks
TLS, and with ``tls.client_ca`` it requires a client certificate signed by that CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from pathlib import Path
from typing import Any

import uvicorn

from quiesce.config.addresses import is_loopback, split_address
from quiesce.config.models import AdminConfig
from quiesce.frontends.api.routes import AppLike, create_api
from quiesce.frontends.api.series import series_router
from quiesce.frontends.api.services import services_router


def check_listen(admin: AdminConfig) -> tuple[str, int]:
    host, port = split_address(admin.listen)
    if not admin.allow_non_loopback and not is_loopback(host):
        raise OSError(
            f"refusing to bind the admin listener to non-loopback address {admin.listen}: "
            "set admin.allow_non_loopback: true (and use tls with client_ca or strong "
            "passwords)"
        )
    return host, port


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    infos = socket.getaddrinfo(host, port, family if host != "localhost" else 0, socket.SOCK_STREAM)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(512)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _resolve(base: Path, path: str) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else base / p)


class AdminServer:
    def __init__(self, api: Any, server: uvicorn.Server, sock: socket.socket) -> None:
        self.api = api
        self._server = server
        self._sock = sock
        self.host, self.port = sock.getsockname()[:2]
        self.tls = server.config.is_ssl
        self._task: asyncio.Task[None] | None = None

    @property
    def sock(self) -> socket.socket:
        """The listening socket (what an upgrade hands over to the new process)."""
        return self._sock

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def _start(self) -> None:
        server = self._server
        server.config.load()
        server.lifespan = server.config.lifespan_class(server.config)
        await server.startup(sockets=[self._sock])
        self._task = asyncio.create_task(server.main_loop(), name="quiesce-admin-api")

    async def stop(self) -> None:
        self.api.state.stopping.set()
        self._server.should_exit = True
        if self._task is not None:
            # main_loop() only polls should_exit every 100 ms; nothing in it needs finishing.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            await self._server.shutdown(sockets=[self._sock])
        self._sock.close()


async def start_admin_server(app: AppLike, sock: socket.socket | None = None) -> AdminServer:
    """Bind ``admin.listen`` and serve the admin API in the running loop. ``sock``: a
    listening socket already bound (handed over by the process this one upgrades)."""
    admin = app.config.admin
    host, port = check_listen(admin)
    base: Path = Path(getattr(app, "base_dir", "."))
    tls: dict[str, Any] = {}
    if admin.tls is not None:
        tls = {
            "ssl_certfile": _resolve(base, admin.tls.cert),
            "ssl_keyfile": _resolve(base, admin.tls.key),
        }
        if admin.tls.client_ca:
            tls["ssl_ca_certs"] = _resolve(base, admin.tls.client_ca)
            tls["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    api = create_api(app)
    # GET /api/v1/series: the live series (quiesce.frontends.api.series)
    api.include_router(series_router(app))
    api.include_router(services_router(app))
    config = uvicorn.Config(
        api,
        lifespan="off",
        loop="none",
        http="h11",
        log_config=None,
        access_log=False,
        # The source of a request (rate limit, login_failed events) is always the real peer:
        # never X-Forwarded-For, which uvicorn would otherwise trust from 127.0.0.1.
        proxy_headers=False,
        timeout_graceful_shutdown=2,
        **tls,
    )
    if sock is None:
        sock = _bind(host, port)
    else:
        sock.setblocking(False)
    server = uvicorn.Server(config)
    admin_server = AdminServer(api, server, sock)
    try:
        await admin_server._start()
    except BaseException:
        sock.close()
        raise
    return admin_server


__all__ = ["AdminServer", "check_listen", "is_loopback", "start_admin_server"]
