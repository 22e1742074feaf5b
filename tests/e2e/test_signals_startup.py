"""SIGHUP and SIGUSR1 during ``quiesce run``'s start-up (review 14 R4), with a real process
sent them every 5 ms from the moment it catches them until it is ready: held and done once
ready (they killed it, exit 129/138, no log line; the start-up takes a second or more, and
every takeover's new process has one). Children of quiesce under the same signals:
test_signals_children.py; ``quiesce upgrade``'s new process: test_signals_upgrade.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.test_reload import config_text
from tests.e2e.test_run_and_demo import Proc
from tests.support.backend import Backend, serve_in_thread

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def catches(pid: int, sig: int) -> bool:
    """The process has a handler for ``sig`` (/proc/PID/status SigCgt)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in text.splitlines() if line[:7] == "SigCgt:")
    return bool(mask >> (sig - 1) & 1)


def pending(pid: int, sig: int) -> bool:
    """``sig`` sent to the process and not yet delivered (/proc/PID/status ShdPnd)."""
    text = Path(f"/proc/{pid}/status").read_text()
    mask = next(int(line.split()[1], 16) for line in text.splitlines() if line[:7] == "ShdPnd:")
    return bool(mask >> (sig - 1) & 1)


def hammer_until_ready(proc: Proc, pids: list[int]) -> int:
    """SIGHUP (and every fourth time SIGUSR1) to ``pids`` every few milliseconds until
    ``proc`` says it is ready or ends; how many were sent."""
    sent = 0
    deadline = time.monotonic() + 60
    while not any("quiesce: ready" in line for line in list(proc.lines)):
        assert proc.p.poll() is None, f"quiesce died ({proc.p.returncode}):\n{proc.output}"
        assert time.monotonic() < deadline, proc.output
        for pid in pids:
            os.kill(pid, signal.SIGUSR1 if sent % 4 == 3 else signal.SIGHUP)
        sent += 1
        time.sleep(0.005)
    return sent


def test_sighup_and_sigusr1_during_start_up_are_done_once_ready(tmp_path: Path) -> None:
    with serve_in_thread(Backend("b1")) as (b1,):
        (tmp_path / "quiesce.yaml").write_text(config_text([("w1", b1.port, 1)]))
        started = time.monotonic()
        proc = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
        try:
            # from quiesce's first line (quiesce.main, before its imports) it catches them;
            # before that only the interpreter's own start (a signal then kills any Python)
            while not (catches(proc.p.pid, signal.SIGHUP) and catches(proc.p.pid, signal.SIGUSR1)):
                assert proc.p.poll() is None and time.monotonic() - started < 30, proc.output
                time.sleep(0.001)
            window = time.monotonic() - started
            sent = hammer_until_ready(proc, [proc.p.pid])
            # the start-up took long enough to be hit many times (it was 1.1 s in review 14)
            assert sent >= 10, (sent, window, proc.output)
            hups = proc.wait_for(r"SIGHUP during start-up \((\d+)\): reloading")
            assert int(hups.group(1)) >= 1
            proc.wait_for(r"SIGUSR1 during start-up \(\d+\): reopening the access log")
            # one reload for all of them, once ready
            proc.wait_for(r"reload by SIGHUP: 0 change\(s\)")
            # and SIGHUP reloads as before: the file changed since
            (tmp_path / "quiesce.yaml").write_text(config_text([("w1", b1.port, 3)]))
            proc.p.send_signal(signal.SIGHUP)
            proc.wait_for(r"reload by SIGHUP: 1 change\(s\)")
            assert proc.p.poll() is None
        finally:
            code = proc.stop(signal.SIGTERM)
        assert code == 0, proc.output
        assert "Traceback" not in proc.output, proc.output
        print(f"SIGHUP caught {window * 1000:.0f} ms after Popen; {sent} rounds of signals")


def test_a_burst_of_sighups_is_one_reload_queued_and_sigterm_abandons_it(tmp_path: Path) -> None:
    """SIGHUPs in a burst queue one reload behind the running one (it reads the file when it
    starts: theirs too), not one each; SIGTERM meanwhile stops cleanly, the reloads
    abandoned (one applied on into the stop, against a closed store: a traceback)."""
    with serve_in_thread(Backend("b1")) as (b1,):
        (tmp_path / "quiesce.yaml").write_text(config_text([("w1", b1.port, 1)]))
        proc = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
        try:
            proc.wait_for("quiesce: ready")
            proc.p.send_signal(signal.SIGHUP)  # its reload starts the worker: a second or so
            proc.wait_for("SIGHUP: reloading")
            for _ in range(5):  # each one delivered on its own (not merged while pending)
                proc.p.send_signal(signal.SIGHUP)
                while pending(proc.p.pid, signal.SIGHUP):
                    time.sleep(0.001)
        finally:
            code = proc.stop(signal.SIGTERM)
        assert code == 0, proc.output
        assert "Traceback" not in proc.output, proc.output
        assert 1 <= proc.output.count("SIGHUP: reloading") <= 2, proc.output
