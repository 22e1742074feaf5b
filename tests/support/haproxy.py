"""HAProxy 2.6 as a peer, for tests: started with a config text whose ``bind`` is a
loopback socket bound here (port 0, handed over as ``fd@{fd}``), so it is connectable at
once (connections wait in the backlog until HAProxy runs). ``port`` is None without HAProxy::

    async with HAProxy(tmp_path, "frontend fe\\n    bind fd@{fd}\\n ...") as h:
        h.port
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from pathlib import Path

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
DEFAULTS = (
    "global\n    maxconn 256\n"
    "defaults\n    timeout connect 5s\n    timeout client 10s\n    timeout server 10s\n"
)


def available() -> bool:
    return os.access(HAPROXY, os.X_OK)


class HAProxy:
    def __init__(self, base: Path, sections: str) -> None:
        self.base = base
        self.sections = sections
        self.proc: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None
        self.port: int | None = None

    async def __aenter__(self) -> HAProxy:
        if not available():
            return self
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        fd = self.sock.fileno()
        cfg = self.base / f"haproxy-{fd}.cfg"
        cfg.write_text(DEFAULTS + self.sections.replace("{fd}", str(fd)))
        self.proc = await asyncio.create_subprocess_exec(
            HAPROXY,
            "-db",
            "-f",
            str(cfg),
            pass_fds=(fd,),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self.port = self.sock.getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            await self.proc.wait()
        if self.sock is not None:
            self.sock.close()
