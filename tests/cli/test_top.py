"""``quiesce top`` as a user drives it (issue 19, item 3): a real ``quiesce run`` with two back
ends and traffic, ``quiesce top`` in a detached tmux session of a fixed size, keys sent with
``send-keys`` and the screen read with ``capture-pane`` until it shows what the key did
(polled, no fixed sleep); the server's state is checked through the API."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.process import BackendThread, Started, run_quiesce, until, write_simple_config

pytestmark = pytest.mark.peers
AUTH = ("admin", "pw")


class Tmux:
    """One tmux server of its own (its socket ``-S`` in the test's directory, gone with it),
    one session running ``command``."""

    def __init__(self, socket: Path, command: str, width: int = 120, height: int = 30) -> None:
        self.socket = str(socket)
        self.tmux("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), command)

    def tmux(self, *args: str) -> str:
        r = subprocess.run(
            ["tmux", "-S", self.socket, "-f", "/dev/null", "-u", *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if r.returncode != 0:
            raise AssertionError(f"tmux {args[0]}: {r.stderr.strip()}")
        return r.stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def alive(self) -> bool:
        r = subprocess.run(
            ["tmux", "-S", self.socket, "has-session", "-t", "top"], capture_output=True
        )
        return r.returncode == 0

    def wait_screen(self, predicate: object, what: str, timeout: float = 30.0) -> str:
        seen: list[str] = [""]

        def check() -> bool:
            seen[0] = self.screen()
            return bool(predicate(seen[0]))  # type: ignore[operator]

        try:
            until(check, timeout)
        except AssertionError:
            raise AssertionError(f"the screen never showed {what}:\n{seen[0]}") from None
        return seen[0]

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


def row(screen: str, name: str) -> str:
    """The table's line of server (or pool) ``name``, "" if not on the screen."""
    for line in screen.splitlines():
        if line.split()[:1] == [name]:
            return line
    return ""


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Started]:
    with BackendThread(["b1", "b2"]) as bt:
        write_simple_config(tmp_path, bt.backends)
        config = tmp_path / "quiesce.yaml"
        # one server must stay eligible: draining the second is refused (the guard)
        config.write_text(
            config.read_text().replace("  web:\n", "  web:\n    min_servers_up: 1\n", 1)
        )
        started = run_quiesce(tmp_path)
        try:
            yield started
        finally:
            started.proc.stop()


@pytest.fixture
def traffic(running: Started) -> Iterator[None]:
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                try:
                    client.get(running.www)
                except httpx.HTTPError:
                    pass
                stop.wait(0.02)  # about 40 requests a second: pacing, not a wait for a state

    t = threading.Thread(target=send, daemon=True)
    t.start()
    yield
    stop.set()
    t.join(10)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux (scripts/install-test-deps)")
def test_top_drains_a_server_with_a_key(tmp_path: Path, running: Started, traffic: None) -> None:
    pytest.importorskip("textual")  # the `top` extra, part of `test`
    admin_port = running.api.split(":")[2].split("/")[0]
    env = {
        "QUIESCE_HOSTS": f"127.0.0.1:{admin_port}",
        "QUIESCE_USER": "admin",
        "QUIESCE_PASSWORD": "pw",
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    # wrong credentials: said on stderr before the screen is taken, exit 1 (as any verb)
    bad = subprocess.run(
        [sys.executable, "-m", "quiesce", "top"],
        env={**os.environ, **env, "QUIESCE_PASSWORD": "wrong"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and bad.stdout == "", bad
    assert bad.stderr.startswith("quiesce: 401: ") and "QUIESCE_PASSWORD" in bad.stderr
    command = "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    command += f" {shlex.quote(sys.executable)} -m quiesce top"
    tmux = Tmux(tmp_path / "tmux.sock", command)
    try:
        api = running.api

        def server(name: str) -> dict[str, object]:
            r = httpx.get(f"{api}/servers/web/{name}", auth=AUTH)
            assert r.status_code == 200, r.text
            data: dict[str, object] = r.json()
            return data

        # both servers listed as `list servers` words them, traffic in the pool's spark
        tmux.wait_screen(
            lambda s: (
                "up" in row(s, "b1")
                and "up" in row(s, "b2")
                and any(c in row(s, "web") for c in "▁▂▃▄▅▆▇█")
            ),
            "b1 and b2 up and the pool's traffic",
        )
        # the cursor starts on the first server: down to b2, drain it
        tmux.keys("Down", "d")
        screen = tmux.wait_screen(
            lambda s: row(s, "b2").split()[1:2] in (["draining"], ["drained"]),
            "b2 draining",
        )
        assert "web/b2: enabled → drain" in screen
        assert server("b2")["admin"] == "drain"
        assert server("b1")["admin"] == "enabled"
        # up to b1: draining it too would leave no eligible server; refused, in words
        tmux.keys("Up", "d")
        screen = tmux.wait_screen(lambda s: "drain web/b1: refused" in s, "the refusal")
        assert "min_servers_up 1; nothing changed" in screen
        assert "--force-guard" not in screen
        assert server("b1")["admin"] == "enabled"
        # back to b2 and enable it
        tmux.keys("Down", "e")
        tmux.wait_screen(lambda s: row(s, "b2").split()[1:2] == ["up"], "b2 up again")
        assert server("b2")["admin"] == "enabled"
        # v follows the events: the drain and the enable, as `quiesce events` prints them
        tmux.keys("v")
        screen = tmux.wait_screen(
            lambda s: "admin_change web/b2 drain → enabled" in s, "the event log"
        )
        assert "admin_refused web/b1" in screen
        tmux.keys("q")
        until(lambda: not tmux.alive(), 15)
    finally:
        tmux.kill()
