"""Issue 14: an admin change answered during a takeover is never lost and both processes
agree on it (docs/upgrade.md, *Admin writes during the takeover*). Real ``quiesce``
processes, the change sent as an operator sends it (the CLI, REST, the runtime socket), the
state store read back and the process that serves killed -9 and started again.

The window is held open by a test hook, not by timing: the processes under test run with a
``sitecustomize`` (written by :func:`hooked`) that holds the new process after it listens and
before it sends ``finish``, or stalls the old process's store commits, until the test
removes or creates a file."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_reload import AUTH, Running, config_text, start
from tests.support.backend import Backend, serve_in_thread
from tests.support.process import Proc, quiesce_cli

pytestmark = [pytest.mark.peers, pytest.mark.slow]

HOOK = """
import os, pathlib, sys, time

_hold = os.environ.get("QUIESCE_TEST_HOLD_BEFORE_FINISH")
if _hold:  # the new process: listening on what it took, holding "finish" until the file is
    import asyncio
    from quiesce.app import core

    _start = core.App._start

    async def _held_start(self, handover):
        await _start(self, handover)
        if handover is not None:
            port = self.admin_server.port
            print(f"test hook: listening, admin on port {port}, finish held", flush=True)
            while not pathlib.Path(_hold).exists():
                await asyncio.sleep(0.02)

    core.App._start = _held_start

_stall = os.environ.get("QUIESCE_TEST_STALL_COMMITS")
if _stall:  # the old process: its writer thread commits nothing while the file exists
    from quiesce.store import sqlite_writer

    _apply = sqlite_writer.Writer._apply

    def _stalled_apply(self, ops):
        if pathlib.Path(_stall).exists():
            print("test hook: commit stalled", flush=True)
            while pathlib.Path(_stall).exists():
                time.sleep(0.01)
        return _apply(self, ops)

    sqlite_writer.Writer._apply = _stalled_apply
"""


def hooked(tmp_path: Path, **env: Path) -> tuple[str, ...]:
    """A ``Proc`` prefix running quiesce with the test hook and ``env`` (its switches)."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    return ("env", f"PYTHONPATH={path}", *(f"{k}={v}" for k, v in env.items()))


def post(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, Any, str | None]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request(
        "POST",
        path,
        body=b"{}",
        headers={"Authorization": AUTH, "Content-Type": "application/json"},
    )
    r = conn.getresponse()
    body = json.loads(r.read() or b"null")
    conn.close()
    return r.status, body, r.getheader("Retry-After")


def admin_state(host: str, port: int) -> dict[str, str]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", "/api/v1/servers", headers={"Authorization": AUTH})
    data = json.loads(conn.getresponse().read())
    conn.close()
    return {f"{s['pool']}/{s['name']}": s["admin"] for s in data}


def stored_admin(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as c:
        return {k: json.loads(d)["state"] for k, d in c.execute("SELECT key, data FROM admin")}


def count(proc: Proc, text: str) -> int:
    return sum(text in line for line in list(proc.lines))


def wait_until(what: str, predicate: Any, *procs: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}:\n" + "\n---\n".join(p.output for p in procs)
        time.sleep(0.02)


def quiesce_cli_at(hosts: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QUIESCE_HOSTS": hosts, "QUIESCE_USER": "admin", "QUIESCE_PASSWORD": "pw"}
    return subprocess.run(
        [sys.executable, "-m", "quiesce", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def restarted(tmp_path: Path, config: str) -> Proc:
    proc = Proc(["run", "-c", config], tmp_path)
    proc.wait_for("quiesce: ready")
    return proc


def test_the_new_process_refuses_writes_until_finish_then_records_them(tmp_path: Path) -> None:
    """The new process listens (its own admin address here, so the test reaches it for
    sure) but has not sent ``finish``: a write there would be held, not recorded, and lost
    with an abandoned takeover or a kill -9. It refuses it (503 ``handing over``, Retry-After,
    'taking over from pid N'); the CLI sends it again until the new process has taken over,
    which records it: in its registry, in the store, and after a kill -9 and a start."""
    release = tmp_path / "release"
    with serve_in_thread(Backend("b1")) as (backend,):
        q = start(tmp_path, config_text([("w1", backend.port, 1)]))
        old_pid = q.proc.p.pid
        text = (tmp_path / "quiesce.yaml").read_text()
        (tmp_path / "new.yaml").write_text(
            text.replace("listen: 127.0.0.1:0\n", "listen: 127.0.0.2:0\n", 1)
        )
        new = Proc(
            ["run", "-c", "new.yaml", "--takeover"],
            tmp_path,
            prefix=hooked(tmp_path, QUIESCE_TEST_HOLD_BEFORE_FINISH=release),
        )
        after: Proc | None = None
        cli: threading.Thread | None = None
        try:
            held = r"test hook: listening, admin on port (\d+), finish held"
            port = int(new.wait_for(held, timeout=60).group(1))
            status, body, retry = post(port, "/api/v1/servers/web/w1/maintenance", "127.0.0.2")
            assert status == 503 and body["error"] == "handing over", body
            assert retry == "1"
            assert f"taking over from pid {old_pid}" in body["detail"], body
            assert admin_state("127.0.0.2", port)["web/w1"] == "enabled"  # reads answered
            # the runtime socket's path is shared now: whichever answers refuses
            out = q.socat("set server web/w1 state maint")
            assert re.match(r"(Handing over to|Taking over from pid \d+) ", out), out
            result: list[subprocess.CompletedProcess[str]] = []
            cli = threading.Thread(
                target=lambda: result.append(
                    quiesce_cli_at(f"127.0.0.2:{port}", "set", "server", "web/w1", "maintenance")
                )
            )
            cli.start()
            refused = "by admin refused: taking over from pid"
            wait_until("the CLI's write refused 3 times", lambda: count(new, refused) >= 3, new)
            assert cli.is_alive()  # still sending it again: nothing acknowledged
            assert stored_admin(tmp_path / "state.db").get("web/w1", "enabled") == "enabled"
            release.touch()
            new.wait_for("quiesce: ready")
            assert q.proc.stop(None, timeout=30) == 0, q.proc.output
            cli.join(40)
            assert result and result[0].returncode == 0, result
            assert admin_state("127.0.0.2", port)["web/w1"] == "maintenance"
            assert stored_admin(tmp_path / "state.db")["web/w1"] == "maintenance"
            assert new.stop(signal.SIGKILL) == -signal.SIGKILL
            after = restarted(tmp_path, "new.yaml")
            port = int(after.wait_for(r"admin listening on port (\d+)").group(1))
            assert admin_state("127.0.0.2", port)["web/w1"] == "maintenance"
        finally:
            release.touch()
            if cli is not None:
                cli.join(40)
            for p in (q.proc, new, after):
                if p is not None and p.p.poll() is None:
                    p.stop(signal.SIGKILL)


def test_a_new_process_killed_before_finish_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """Both processes accept on the one admin listener before ``finish``: the CLI's write,
    sent again on every refusal, is refused by both (each says so in its log), the new
    process is killed -9 before ``finish``, and the write reaches the old one, which carries
    on: in its registry and the store, and after its own kill -9 and a start."""
    release = tmp_path / "release"
    with serve_in_thread(Backend("b1")) as (backend,):
        q = start(tmp_path, config_text([("w1", backend.port, 1)]))
        new = Proc(
            ["run", "-c", "quiesce.yaml", "--takeover"],
            tmp_path,
            prefix=hooked(tmp_path, QUIESCE_TEST_HOLD_BEFORE_FINISH=release),
        )
        after: Proc | None = None
        cli: threading.Thread | None = None
        try:
            new.wait_for("test hook: listening, .*, finish held", timeout=60)
            result: list[subprocess.CompletedProcess[str]] = []
            cli = threading.Thread(
                target=lambda: result.append(
                    quiesce_cli(q.admin, "set", "server", "web/w1", "maintenance")
                )
            )
            cli.start()
            wait_until(
                "the CLI's write refused by both processes",
                lambda: (
                    count(new, "refused: taking over") and count(q.proc, "refused: handing over")
                ),
                q.proc,
                new,
            )
            assert cli.is_alive()
            assert new.stop(signal.SIGKILL) == -signal.SIGKILL
            q.proc.wait_for("takeover abandoned by the new process: still serving")
            cli.join(40)
            assert result and result[0].returncode == 0, result
            assert q.servers()["web/w1"]["admin"] == "maintenance"
            assert stored_admin(tmp_path / "state.db")["web/w1"] == "maintenance"
            assert q.proc.stop(signal.SIGKILL) == -signal.SIGKILL
            after = restarted(tmp_path, "quiesce.yaml")
            port = int(after.wait_for(r"admin listening on port (\d+)").group(1))
            assert admin_state("127.0.0.1", port)["web/w1"] == "maintenance"
        finally:
            release.touch()
            if cli is not None:
                cli.join(40)
            for p in (q.proc, new, after):
                if p is not None and p.p.poll() is None:
                    p.stop(signal.SIGKILL)


def test_a_write_the_old_process_has_not_committed_is_in_before_the_handover(
    tmp_path: Path,
) -> None:
    """The old process applied a write (maintenance of w1) whose commit is still on its
    writer thread (stalled by the hook; a batch of check results holds commits up to a
    second) when ``_takeover`` comes in. It commits it before it hands anything over, so
    the new process, which reads the store once it has the descriptors, has it too; before,
    the write was answered 200 after the new process had read the store without it."""
    stall = tmp_path / "stall"
    with serve_in_thread(Backend("b1")) as (backend,):
        (tmp_path / "quiesce.yaml").write_text(config_text([("w1", backend.port, 1)]))
        q = Running(
            tmp_path,
            Proc(
                ["run", "-c", "quiesce.yaml"],
                tmp_path,
                prefix=hooked(tmp_path, QUIESCE_TEST_STALL_COMMITS=stall),
            ),
        )
        new: Proc | None = None
        answer: list[tuple[int, Any, str | None]] = []
        write = threading.Thread(
            target=lambda: answer.append(post(q.admin, "/api/v1/servers/web/w1/maintenance"))
        )
        try:
            stall.touch()
            write.start()
            q.proc.wait_for("test hook: commit stalled")
            assert not answer  # answered only once committed
            new = Proc(["run", "-c", "quiesce.yaml", "--takeover"], tmp_path)
            committing = "takeover: committing the admin writes made so far before handing over"
            read = "takeover: the state of"
            wait_until(
                "the takeover's first step",
                lambda: count(q.proc, committing) or count(new, read),
                q.proc,
                new,
            )
            assert not count(new, read), "the new process read the store before the commit"
            stall.unlink()
            write.join(30)
            assert answer and answer[0][0] == 200, answer
            new.wait_for("quiesce: ready", timeout=60)
            assert q.proc.stop(None, timeout=30) == 0, q.proc.output
            port = int(new.wait_for(r"admin listening on port (\d+)").group(1))
            assert admin_state("127.0.0.1", port)["web/w1"] == "maintenance"
        finally:
            stall.unlink(missing_ok=True)
            write.join(30)
            for p in (q.proc, new):
                if p is not None and p.p.poll() is None:
                    p.stop(signal.SIGKILL)


def test_a_write_whose_body_arrives_once_the_takeover_began_is_refused(tmp_path: Path) -> None:
    """A runtime add server whose request head reached the old process before ``_takeover``
    and its body after: it is refused (its route read the body after the check, and added
    the server in the old process once the new one had read the store, 201). The test plays
    the new process (it holds the handover, then abandons it); the old one takes it then."""
    from quiesce.frontends.runtime_socket import takeover

    with serve_in_thread(Backend("b1")) as (backend,):
        q = start(tmp_path, config_text([("w1", backend.port, 1)]))
        handover: takeover.Handover | None = None
        body = json.dumps({"name": "w9", "address": f"127.0.0.1:{backend.port}"}).encode()
        head = (
            "POST /api/v1/pools/web/servers HTTP/1.1\r\nHost: quiesce\r\n"
            f"Authorization: {AUTH}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            assert "web/w1" in q.servers()  # the credentials verified once (then cached)
            with socket.create_connection(("127.0.0.1", q.admin), timeout=30) as conn:
                conn.sendall(head)
                q.servers()  # answered after the head was taken in: its route waits for the body
                handover = takeover.request(tmp_path / "quiesce.sock")
                q.proc.wait_for("takeover: .* handed over; waiting for finish")
                conn.sendall(body)
                r = http.client.HTTPResponse(conn)
                r.begin()
                answer = json.loads(r.read())
            assert r.status == 503 and answer["error"] == "handing over", (r.status, answer)
            assert r.getheader("Retry-After") == "1"
            assert "web/w9" not in q.servers()
            handover.abandon()
            handover = None
            q.proc.wait_for("takeover abandoned by the new process: still serving")
            added = q.cli("create", "server", "web/w9", f"127.0.0.1:{backend.port}")
            assert added.returncode == 0, added
            assert "web/w9" in q.servers()
        finally:
            if handover is not None:
                handover.abandon()
            assert q.proc.stop(signal.SIGTERM) == 0, q.proc.output
