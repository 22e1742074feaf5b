"""A ``quiesce`` subprocess as the tests that start one drive it (tests/e2e, tests/admin,
tests/store...): :class:`Proc` (stdout read line by line in the background, ``wait_for`` a
line), :func:`run_quiesce` (``quiesce run`` started and waited for until ready, with its
service and admin URLs), :class:`BackendThread` (demo back ends on their own loop) and
:func:`until`. Readiness is a line the process prints, never a fixed sleep."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

from quiesce.demo import DemoBackend


class BackendThread:
    """DemoBackends served from their own event loop in a thread."""

    def __init__(self, names: list[str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.backends = [DemoBackend(n) for n in names]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> BackendThread:
        self.thread.start()

        async def start() -> None:
            for b in self.backends:
                await b.start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for b in self.backends:
                await b.stop()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Proc:
    """A quiesce process whose stdout is read line by line in the background; ``prefix``
    runs it under another command (``prlimit --nofile=…``)."""

    def __init__(self, args: list[str], cwd: Path, prefix: tuple[str, ...] = ()) -> None:
        # faulthandler: a process that will not stop dumps every thread's stack on SIGABRT
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
        self.args = args
        self.p = subprocess.Popen(
            [*prefix, sys.executable, "-m", "quiesce", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        # 60 s: a start took 15-18 s at load 10 on 2 cores (an etcd node's more); only a
        # failing test waits it out
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        with self.cond:
            while True:
                for line in self.lines:
                    if m := rx.search(line):
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.p.poll() is not None:
                    raise AssertionError(f"no line matching {pattern!r} in:\n" + self.output)
                self.cond.wait(min(left, 0.2))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` (None: just wait) and return the exit code."""
        if sig is not None and self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            # say where it hangs: the stacks (faulthandler, on SIGABRT) and what it printed
            self.p.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.p.wait(5)
            self.reader.join(5)
            tail = "\n".join(self.lines[-150:])
            raise AssertionError(
                f"quiesce {self.args} did not exit within {timeout}s of signal {sig}; "
                f"its last output and stacks:\n{tail}"
            ) from None
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()
            self.reader.join(5)
            assert self.p.stdout is not None
            self.p.stdout.close()


def quiesce_cli(admin_port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``quiesce ARGS`` (the client) against the admin API on ``admin_port`` as admin / pw."""
    env = {
        **os.environ,
        "QUIESCE_HOSTS": f"127.0.0.1:{admin_port}",
        "QUIESCE_USER": "admin",
        "QUIESCE_PASSWORD": "pw",
    }
    return subprocess.run(
        [sys.executable, "-m", "quiesce", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def quiesce_check(path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """Write ``text`` to the file ``path`` and run ``quiesce check -c path`` on it."""
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "quiesce", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def runtime_command(path: Path, command: str) -> str:
    """One command to the runtime socket at ``path`` (as ``socat`` would send it): the whole
    answer, read until the socket closes."""
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode()


def until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


class Started(NamedTuple):
    proc: Proc
    www: str  # the service's URL, http://127.0.0.1:PORT/
    api: str  # the admin API's base URL, http://127.0.0.1:PORT/api/v1


def run_quiesce(cwd: Path, config: str = "quiesce.yaml", service: str = "www") -> Started:
    """``quiesce run -c CONFIG`` in ``cwd``, returned once it says ready; the config listens
    on port 0 (the ports are read from the process's output)."""
    proc = Proc(["run", "-c", config], cwd)
    try:
        port = int(proc.wait_for(rf"service {service} listening on port (\d+)").group(1))
        admin = int(proc.wait_for(r"admin listening on port (\d+)").group(1))
        proc.wait_for("quiesce: ready")
    except BaseException:
        proc.stop(signal.SIGKILL)
        raise
    return Started(proc, f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{admin}/api/v1")


def write_simple_config(cwd: Path, backends: list[DemoBackend], extra: str = "") -> None:
    """``cwd/quiesce.yaml``: user admin (password ``pw``) on a port-0 admin listener, pool
    ``web`` of ``backends`` (by their names), service ``www`` on port 0, ``extra`` appended."""
    from quiesce.security import hash_password

    servers = "".join(
        f"\n      - {{name: {b.name}, address: 127.0.0.1:{b.port}}}" for b in backends
    )
    (cwd / "quiesce.yaml").write_text(
        f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{hash_password("pw")}", role: admin}}]
state: {{sqlite: ./state.db}}
pools:
  web:
    servers:{servers}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
{extra}"""
    )
