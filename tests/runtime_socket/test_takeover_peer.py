"""``quiesce run --takeover`` takes sockets and server state only from a listener whose uid
is root or its own (review F10): another user who bound the runtime socket's path first (a
directory others may write, a stale path after a crash) hands the new process nothing."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from quiesce.frontends.runtime_socket.takeover import COMMAND, TakeoverError, request

pytestmark = pytest.mark.loopback

NOBODY = 65534


def fake_old_process(path: Path, uid: int | None) -> int:
    """A child that binds ``path``, becomes ``uid`` (None: stays as it is) and then listens,
    so ``SO_PEERCRED`` says ``uid``; it answers ``_takeover`` with a forged header (no
    sockets, pid 4242) and exits. Returns its pid."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(ready_r)
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(str(path))
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            srv.listen(1)  # the credentials a client sees are taken here
            os.write(ready_w, b"1")
            srv.settimeout(20)
            conn, _ = srv.accept()
            conn.settimeout(20)
            if conn.recv(100).startswith(COMMAND.encode()):
                header = {"quiesce": "takeover/1", "pid": 4242, "state": False, "listeners": []}
                conn.sendall(json.dumps(header).encode() + b"\n")
            conn.recv(100)  # until the client closes
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"1"
    os.close(ready_r)
    return pid


def reap(pid: int) -> None:
    os.waitpid(pid, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a listener as another uid")
def test_a_listener_of_another_uid_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "quiesce.sock"
    pid = fake_old_process(path, NOBODY)
    try:
        with pytest.raises(TakeoverError) as err:
            request(path, timeout=10)
    finally:
        reap(pid)
    assert f"runs as uid {NOBODY}, neither root nor this process's (0)" in err.value.message


def test_a_listener_of_our_own_uid_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "quiesce.sock"
    pid = fake_old_process(path, None)
    try:
        handover = request(path, timeout=10)
        assert handover.pid == 4242 and handover.listeners == []
        handover.abandon()
    finally:
        reap(pid)
