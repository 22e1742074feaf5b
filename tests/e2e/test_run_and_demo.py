"""`quiesce run` and `quiesce demo` driven as a user drives them: a real process, real sockets,
curl, signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from quiesce.demo import DemoBackend

pytestmark = [pytest.mark.peers, pytest.mark.slow]


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
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
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

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
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
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()
            self.reader.join(5)
            assert self.p.stdout is not None
            self.p.stdout.close()


def until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def backends() -> Iterator[BackendThread]:
    with BackendThread(["b1", "b2"]) as bt:
        yield bt


def test_run_serves_balances_and_stops_cleanly(tmp_path: Path, backends: BackendThread) -> None:
    from quiesce.security import hash_password

    b1, b2 = backends.backends
    (tmp_path / "quiesce.yaml").write_text(
        f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{hash_password("pw")}", role: admin}}]
state: {{sqlite: ./state.db}}
healthmonitors:
  hm:
    type: http
    send_interval: 200ms
    receive_timeout: 100ms
    http_monitor: {{http_request: "GET /health HTTP/1.0", maintenance_code: [503]}}
pools:
  web:
    healthmonitors: [hm]
    servers:
      - {{name: b1, address: 127.0.0.1:{b1.port}}}
      - {{name: b2, address: 127.0.0.1:{b2.port}}}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""
    )
    proc = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
    try:
        port = int(proc.wait_for(r"service www listening on port (\d+)").group(1))
        admin = int(proc.wait_for(r"admin listening on port (\d+)").group(1))
        proc.wait_for("quiesce: ready")
        url = f"http://127.0.0.1:{port}/"

        def both_up() -> bool:
            r = httpx.get(f"http://127.0.0.1:{admin}/api/v1/servers", auth=("admin", "pw"))
            return r.status_code == 200 and all(s["status"] == "up" for s in r.json())

        until(both_up)
        seen = set()
        for _ in range(4):
            out = subprocess.run(["curl", "-sS", url], capture_output=True, text=True, check=True)
            seen.add(out.stdout.split()[2])
        assert seen == {"b1", "b2"}
        # b2 says "maintenance" in its health reply: traffic goes to b1 only, no error.
        b2.maintenance = True

        def b2_in_maintenance() -> bool:
            r = httpx.get(f"http://127.0.0.1:{admin}/api/v1/servers/web/b2", auth=("admin", "pw"))
            return bool(r.json()["status"] == "down for maintenance")

        until(b2_in_maintenance)
        for _ in range(4):
            r = httpx.get(url)
            assert r.status_code == 200 and r.headers["x-backend"] == "b1"
    finally:
        code = proc.stop(signal.SIGTERM)
    assert code == 0, proc.output


def test_run_refuses_a_bad_config(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("pools: {web: {servers: [{name: a, address: x}]}}\n")
    proc = Proc(["run", "-c", "bad.yaml"], tmp_path)
    assert proc.stop(None, timeout=20) == 1
    assert "pools.web.servers[0].address" in proc.output


def test_demo_comes_up_proxies_and_shows_maintenance(tmp_path: Path) -> None:
    proc = Proc(["demo", "--port", "0", "--admin-port", "0"], tmp_path)
    try:
        www = proc.wait_for(r"balanced service\s+(http://\S+)").group(1)
        api, password = proc.wait_for(
            r"dashboard and API\s+(http://\S+?)/\s.*password (\S+)\)"
        ).groups()
        backends = dict(
            re.findall(r"(web\d) (http://\S+?)/", proc.wait_for(r"back ends .*").group(0))
        )
        auth = ("admin", password)

        def all_up() -> bool:
            r = httpx.get(f"{api}/api/v1/servers", auth=auth)
            return r.status_code == 200 and all(s["status"] == "up" for s in r.json())

        until(all_up, 15)
        r = httpx.get(www)
        assert r.status_code == 200 and r.text.startswith("hello from web")
        httpx.get(backends["web2"] + "/_demo/maintenance").raise_for_status()

        def web2_maint() -> bool:
            r = httpx.get(f"{api}/api/v1/servers/web/web2", auth=auth)
            return bool(r.json()["status"] == "down for maintenance")

        until(web2_maint, 15)
        names = {httpx.get(www).headers["x-backend"] for _ in range(6)}
        assert names == {"web1", "web3"}
    finally:
        code = proc.stop(signal.SIGINT)
    assert code == 0, proc.output
