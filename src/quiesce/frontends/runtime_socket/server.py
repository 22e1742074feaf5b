"""The runtime socket's listeners: a Unix socket (created 0600) and, when configured, a TCP
port on loopback only (the socket has no authentication). One command per connection, or
interactive mode after ``prompt``; every answer ends with an empty line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from pathlib import Path
from typing import Any

from quiesce.config.addresses import is_loopback, split_address
from quiesce.frontends.runtime_socket.commands import RuntimeCommands, Session

IDLE_TIMEOUT = 600.0
MAX_LINE = 64 * 1024


class RuntimeSocket:
    def __init__(self, app: Any) -> None:
        self.commands = RuntimeCommands(app)
        self.servers: list[asyncio.AbstractServer] = []
        self.path: Path | None = None
        self.port: int | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        session = Session()
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                except ValueError:  # the line is longer than MAX_LINE
                    writer.write(f"Line too long (at most {MAX_LINE} bytes).\n\n".encode())
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    break
                except (TimeoutError, ConnectionError):
                    break
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                was_interactive = session.interactive
                # the prompts ("> " after each command) are part of the answer
                answer = self.commands.execute(line, session)
                writer.write(answer.encode())
                await writer.drain()
                # HAProxy: one line per connection unless interactive; a line that turns
                # the prompt off is still followed by one more command
                if session.quit or not (session.interactive or was_interactive):
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def start(self, path: Path | None, tcp: str | None) -> None:
        try:
            if path is not None:
                if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
                    path.unlink()
                old = os.umask(0o177)  # the socket is created 0600, like HAProxy's "mode 600"
                try:
                    server = await asyncio.start_unix_server(
                        self._handle, path=str(path), limit=MAX_LINE
                    )
                finally:
                    os.umask(old)
                self.servers.append(server)
                self.path = path
            if tcp is not None:
                host, port = split_address(tcp)
                if not is_loopback(host):
                    raise OSError(
                        f"admin.runtime_tcp {tcp}: the runtime socket has no authentication "
                        "and listens on loopback only"
                    )
                server = await asyncio.start_server(self._handle, host, port, limit=MAX_LINE)
                self.servers.append(server)
                self.port = server.sockets[0].getsockname()[1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self._conns):
            task.cancel()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self.servers = []
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.path = None


async def start_runtime_socket(app: Any) -> RuntimeSocket:
    """Listen on ``admin.runtime_socket`` (relative to the config's directory) and on
    ``admin.runtime_tcp`` when set (loopback only)."""
    admin = app.config.admin
    path: Path | None = None
    if admin.runtime_socket:
        path = Path(admin.runtime_socket)
        if not path.is_absolute():
            path = Path(getattr(app, "base_dir", ".")) / path
    sock = RuntimeSocket(app)
    await sock.start(path, admin.runtime_tcp)
    return sock
