"""``quiesce upgrade``, the command contrib/quiesce.service's ExecReload runs (review 14 R5:
it was ``quiesce run --takeover & sleep 5``, whose status was sleep's): run for real against
a running quiesce, it returns 0 once the new process has taken over, and non-zero when the
takeover fails or has not happened within --timeout; the new process, hit by SIGHUP from its
first instant (``systemctl kill -s HUP`` during a ``systemctl reload``), survives and
reloads once it has taken over; so does ``quiesce upgrade`` itself, and its --timeout is
above 0."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_reload import config_text
from tests.e2e.test_run_and_demo import Proc, until
from tests.e2e.test_signals_children import alive, children
from tests.support.backend import Backend, serve_in_thread

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def upgrade(cwd: Path, config: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``quiesce upgrade -c CONFIG ARGS``; its output (and the new process's, which keeps
    it) in a file."""
    out = cwd / f"upgrade-{time.monotonic_ns()}.out"
    with out.open("wb") as f:
        p = subprocess.Popen(
            [sys.executable, "-m", "quiesce", "upgrade", "-c", config, "--grace", "5s", *args],
            cwd=cwd,
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return p, out


def get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    status = conn.getresponse().status
    conn.close()
    return status


def stop(pid: int) -> None:
    """A new process (not our child: its parent, quiesce upgrade, has exited)."""
    os.kill(pid, signal.SIGTERM)
    until(lambda: not alive(pid), 30)


def new_process(verb: subprocess.Popen[bytes], out: Path) -> int:
    """The ``quiesce run --takeover`` that ``verb`` started, as soon as it exists."""
    until(lambda: verb.poll() is not None or children(verb.pid), 30)
    kids = children(verb.pid)
    assert kids, out.read_text()
    return kids[0]


def test_upgrade_returns_once_taken_over_and_the_new_process_survives_sighup(
    tmp_path: Path,
) -> None:
    with serve_in_thread(Backend("b1")) as (b1,):
        (tmp_path / "quiesce.yaml").write_text(config_text([("w1", b1.port, 1)]))
        old = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
        new = None
        try:
            port = int(old.wait_for(r"service www listening on port (\d+)").group(1))
            old.wait_for("quiesce: ready")
            verb, out = upgrade(tmp_path, "quiesce.yaml")
            new = new_process(verb, out)
            sent = 0
            while verb.poll() is None:  # SIGHUP from the new process's first instant
                if alive(new):
                    os.kill(new, signal.SIGHUP)
                    sent += 1
                # and SIGHUP / SIGUSR1 to `quiesce upgrade` itself, as `systemctl kill -s HUP`
                # signals every process of the unit (review 90 F2: it died, exit 129/138,
                # the takeover going on)
                os.kill(verb.pid, (signal.SIGHUP, signal.SIGUSR1)[sent % 2])
                time.sleep(0.005)
            text = out.read_text()
            assert verb.returncode == 0, (verb.returncode, text)
            assert f"quiesce upgrade: pid {new} ready, took over from pid {old.p.pid}" in text
            assert sent >= 10, (sent, text)
            assert old.stop(None, 30) == 0, old.output  # it finished and exited on its own
            until(lambda: "reload by SIGHUP: 0 change(s)" in out.read_text(), 30)
            assert "SIGHUP during start-up (" in out.read_text()
            assert alive(new)
            assert get(port) == 200  # the new process serves on the same port
        finally:
            if old.p.poll() is None:
                old.stop(signal.SIGTERM)
            if new is not None and alive(new):
                stop(new)
        assert "Traceback" not in out.read_text()


def test_upgrade_fails_when_the_takeover_fails_or_is_late(tmp_path: Path) -> None:
    import socket

    with serve_in_thread(Backend("b1")) as (b1,):
        (tmp_path / "quiesce.yaml").write_text(config_text([("w1", b1.port, 1)]))
        # no quiesce running: nothing to take over
        verb, out = upgrade(tmp_path, "quiesce.yaml")
        assert verb.wait(60) == 1, out.read_text()
        assert "--takeover: no runtime socket at" in out.read_text()
        assert "exited with status 1 without taking over" in out.read_text()

        old = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        late = None
        try:
            port = int(old.wait_for(r"service www listening on port (\d+)").group(1))
            old.wait_for("quiesce: ready")
            # a file with a problem
            (tmp_path / "bad.yaml").write_text("pools: {web: {servers: [{name: x}]}}\n")
            verb, out = upgrade(tmp_path, "bad.yaml")
            assert verb.wait(60) == 1, out.read_text()
            assert "bad.yaml: " in out.read_text() and "problem(s)" in out.read_text()
            # a service on a port the new process cannot bind: it starts, then gives up
            text = (tmp_path / "quiesce.yaml").read_text()
            text += f'  extra: {{listen: "127.0.0.1:{busy.getsockname()[1]}", pool: web}}\n'
            (tmp_path / "busy.yaml").write_text(text)
            verb, out = upgrade(tmp_path, "busy.yaml")
            assert verb.wait(60) == 1, out.read_text()
            said = out.read_text()
            assert "cannot start" in said and "address already in use" in said, said
            assert "exited with status 1 without taking over" in said
            assert "nothing was handed over: a quiesce that was running serves on" in said
            old.wait_for("takeover abandoned by the new process: still serving")
            assert get(port) == 200 and old.p.poll() is None
            # not taken over within --timeout: exit 1, the new process left to go on
            verb, out = upgrade(tmp_path, "quiesce.yaml", "--timeout", "1ms")
            assert verb.wait(60) == 1, out.read_text()
            assert "has not taken over after 0.001s; left running" in out.read_text()
            assert old.stop(None, 30) == 0, old.output  # ... and it did take over
            said = out.read_text()
            late = int(said.split("the new process (pid ")[1].split(")")[0])
            assert alive(late) and get(port) == 200
        finally:
            busy.close()
            if old.p.poll() is None:
                old.stop(signal.SIGTERM)
            if late is not None and alive(late):
                stop(late)
