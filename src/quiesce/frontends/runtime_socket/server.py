"""The runtime socket's listeners: a Unix socket (created 0600, level admin) and, when
configured, a TCP port on loopback only (no authentication: any local user connects, so its
commands are those of ``admin.runtime_tcp_level``, ``user`` by default: read-only). One
command per connection, or interactive mode after ``prompt``; every answer ends with an empty
line."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import stat
from pathlib import Path
from typing import Any

from quiesce.admin.reload_gate import settled
from quiesce.config.addresses import is_loopback, split_address
from quiesce.core.errors import QuiesceError
from quiesce.frontends.runtime_socket import takeover
from quiesce.frontends.runtime_socket.commands import RuntimeCommands, Session

IDLE_TIMEOUT = 600.0
MAX_LINE = 64 * 1024


class RuntimeSocket:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.commands = RuntimeCommands(app)
        self.servers: list[asyncio.Server] = []
        self.path: Path | None = None
        self.port: int | None = None
        # the socket file is left in place at stop: an upgrade's new process listens there
        self.keep_path = False
        self._conns: set[asyncio.Task[None]] = set()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, level: str = "admin"
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        session = Session(level=level)
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
                if line == takeover.COMMAND and not session.interactive:
                    await takeover.serve(self.app, self, writer, reader)
                    break
                was_interactive = session.interactive
                # the prompts ("> " after each command) are part of the answer
                parts = self.commands.stream(line, session)
                if parts is not None:  # show stat: sent as made, the loop given back between
                    for part in parts:
                        writer.write(part.encode())
                        await writer.drain()
                        await asyncio.sleep(0)
                else:
                    await self._answer(line, session, writer)
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

    async def _answer(self, line: str, session: Session, writer: asyncio.StreamWriter) -> None:
        if self.commands.waits_for_reload(line):  # a reload being applied: after its end
            await settled(self.app)  # (or refused by the command: quiesce.admin.reload_gate)
        before = self.app.admin.writes
        mark = self.app.admin.write_mark()  # a shared store: etcd confirms the change
        if line.strip() == "reload":  # the one command that awaits (it binds)
            answer = await self.commands.reload(session)
        else:
            answer = self.commands.execute(line, session)
        if self.app.admin.writes != before:  # a change: on disk before the answer
            answer = await self._durable(answer)
        if mark is not None:
            answer = await self._confirmed(answer, mark)
        writer.write(answer.encode())
        await writer.drain()

    async def _durable(self, answer: str) -> str:
        try:
            await self.app.admin.durable()
        except QuiesceError as exc:
            return f"State store error: the change is applied but not recorded: {exc}.\n" + answer
        return answer

    async def _confirmed(self, answer: str, mark: int) -> str:
        try:
            await self.app.admin.confirm_writes(mark)
        except QuiesceError as exc:
            kind = "Conflict" if exc.status_hint == 409 else "State store error"
            return f"{kind}: {exc.message}.\n" + answer
        return answer

    @property
    def unix_sockets(self) -> list[Any]:
        """The listening Unix socket (an upgrade hands it over), or none."""
        return [s for srv in self.servers for s in srv.sockets if s.family == socket.AF_UNIX]

    @property
    def tcp_sockets(self) -> list[Any]:
        return [s for srv in self.servers for s in srv.sockets if s.family != socket.AF_UNIX]

    async def start(
        self,
        path: Path | None,
        tcp: str | None,
        *,
        unix_sock: socket.socket | None = None,
        tcp_sock: socket.socket | None = None,
        tcp_level: str = "user",
    ) -> None:
        """Listen; ``unix_sock``/``tcp_sock``: listeners handed over by the process this
        one upgrades (the path is the old process's until it confirmed, so kept);
        ``tcp_level``: the commands the TCP listener answers (commands.LEVELS)."""
        try:
            if path is not None and unix_sock is not None:
                self.keep_path = True
                server = await asyncio.start_unix_server(
                    self._handle, sock=unix_sock, limit=MAX_LINE
                )
                self.servers.append(server)
                self.path = path
            elif path is not None:
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
                handle = functools.partial(self._handle, level=tcp_level)
                if tcp_sock is not None:
                    server = await asyncio.start_server(handle, sock=tcp_sock, limit=MAX_LINE)
                else:
                    server = await asyncio.start_server(handle, host, port, limit=MAX_LINE)
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
        if self.path is not None and not self.keep_path:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.path = None


def runtime_socket_path(app: Any) -> Path | None:
    """``admin.runtime_socket``, relative to the config's directory (absolute)."""
    admin = app.config.admin
    if not admin.runtime_socket:
        return None
    path = Path(admin.runtime_socket)
    if not path.is_absolute():
        path = Path(getattr(app, "base_dir", ".")) / path
    return path.absolute()


async def start_runtime_socket(
    app: Any,
    *,
    unix_sock: socket.socket | None = None,
    tcp_sock: socket.socket | None = None,
) -> RuntimeSocket:
    """Listen on ``admin.runtime_socket`` (relative to the config's directory) and on
    ``admin.runtime_tcp`` when set (loopback only), or on the listeners handed over."""
    sock = RuntimeSocket(app)
    await sock.start(
        runtime_socket_path(app),
        app.config.admin.runtime_tcp,
        unix_sock=unix_sock,
        tcp_sock=tcp_sock,
        tcp_level=app.config.admin.runtime_tcp_level,
    )
    return sock
