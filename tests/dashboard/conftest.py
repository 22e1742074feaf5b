"""The real stack for the dashboard tests: `quiesce run -c <tmp config>` as a subprocess, small
HTTP back ends on 127.0.0.1:0, and Debian's Chromium driven by Playwright.

One stack serves the whole module; each test works on its own pool so tests do not step on
each other (``web`` for the drain, ``edge`` for the monitor editor, ``guarded`` for the guard).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from quiesce.security import hash_password
from tests.support.backend import Backend, serve_in_thread

CHROMIUM = os.environ.get("QUIESCE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

ADMIN = ("alice", "alice-password")
VIEWER = ("victor", "victor-password")


@dataclass
class Stack:
    admin_url: str
    service_url: str
    backends: dict[str, Backend]
    process: subprocess.Popen[str]
    pump: threading.Thread
    log: list[str] = field(default_factory=list)

    def client(self, who: tuple[str, str] = ADMIN) -> httpx.Client:
        return httpx.Client(base_url=self.admin_url, auth=who, timeout=10.0)

    def get(self, path: str) -> Any:
        with self.client() as c:
            r = c.get(path)
            r.raise_for_status()
            return r.json()

    def server(self, pool: str, name: str) -> dict[str, Any]:
        view: dict[str, Any] = self.get(f"/api/v1/servers/{pool}/{name}")
        return view


def _config(backends: dict[str, Backend], tmp: Path) -> dict[str, Any]:
    def member(name: str, backend: str) -> dict[str, Any]:
        return {"name": name, "address": backends[backend].address}

    return {
        "admin": {
            "listen": "127.0.0.1:0",
            "users": [
                {"name": ADMIN[0], "password_hash": hash_password(ADMIN[1]), "role": "admin"},
                {
                    "name": VIEWER[0],
                    "password_hash": hash_password(VIEWER[1]),
                    "role": "read_only",
                },
            ],
        },
        "state": {"sqlite": str(tmp / "state.db")},
        "healthmonitors": {
            "System-HTTP": {
                "type": "http",
                "send_interval": "300ms",
                "receive_timeout": "200ms",
                "successful_checks": 1,
                "failed_checks": 2,
                "http_monitor": {"http_request": "GET /health HTTP/1.0"},
            },
            "Maint-Check": {
                "type": "http",
                "send_interval": "300ms",
                "receive_timeout": "200ms",
                "successful_checks": 1,
                "failed_checks": 2,
                "http_monitor": {"http_request": "GET /health HTTP/1.0", "maintenance_code": [503]},
            },
        },
        "pools": {
            "web": {
                "healthmonitors": ["System-HTTP"],
                "graceful_disable_timeout": "1m",
                "servers": [member("web1", "web1"), member("web2", "web2"), member("web3", "web3")],
            },
            "edge": {"servers": [member("edge1", "edge1")]},
            "guarded": {
                "min_servers_up": 2,
                "servers": [member("g1", "web1"), member("g2", "web2")],
            },
        },
        "services": {
            "www": {
                "listen": "127.0.0.1:0",
                "pool": "web",
                "grace_period": "1s",
                "rules": [{"if": {"flag": "maintenance_mode"}, "then": "maintenance_page"}],
            }
        },
        "flags": {"maintenance_mode": False},
    }


def _start(config_path: Path, backends: dict[str, Backend]) -> Stack:
    proc = subprocess.Popen(
        [sys.executable, "-m", "quiesce", "run", "-c", str(config_path), "--grace", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    admin_port = service_port = None
    deadline = time.monotonic() + 30
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            proc.kill()
            proc.wait(5)
            reader.join(5)
            if proc.stdout is not None:
                proc.stdout.close()
            raise RuntimeError("quiesce run did not become ready:\n" + "".join(log))
        try:
            line = lines.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if m := re.match(r"quiesce: admin listening on port (\d+)", line):
            admin_port = int(m.group(1))
        elif m := re.match(r"quiesce: service www listening on port (\d+)", line):
            service_port = int(m.group(1))
        elif line.startswith("quiesce: ready"):
            break
    assert admin_port and service_port, "".join(log)
    return Stack(
        admin_url=f"http://127.0.0.1:{admin_port}",
        service_url=f"http://127.0.0.1:{service_port}",
        backends=backends,
        process=proc,
        pump=reader,
        log=log,
    )


@contextlib.contextmanager
def serve_stack(tmp: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Iterator[Stack]:
    """The back ends and `quiesce run` on the config above (``edit`` may change it first),
    stopped at the end."""
    served = contextlib.ExitStack()
    made = served.enter_context(serve_in_thread(*map(Backend, ("web1", "web2", "web3", "edge1"))))
    backends = {b.name: b for b in made}
    config = _config(backends, tmp)
    if edit is not None:
        edit(config)
    config_path = tmp / "quiesce.yaml"
    config_path.write_text(yaml.safe_dump(config))
    s = _start(config_path, backends)
    try:
        yield s
    finally:
        for b in backends.values():
            b.release()
        s.process.send_signal(signal.SIGTERM)
        try:
            s.process.wait(15)
        except subprocess.TimeoutExpired:
            s.process.kill()
            s.process.wait(5)
        s.pump.join(5)
        if s.process.stdout is not None:
            s.process.stdout.close()
        served.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with serve_stack(tmp_path_factory.mktemp("dashboard")) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
