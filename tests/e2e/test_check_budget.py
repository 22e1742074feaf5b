"""``quiesce check`` refuses what ``quiesce run`` refuses at start for the descriptor budget
(issue 14, reviewer): a file whose idle upstream connections (``max_idle_per_server`` per
server) leave no descriptor for clients under RLIMIT_NOFILE. Before, check said ok and run
refused. Both run as an operator runs them, under the same ``ulimit -n``. And check warns
of a listen address in use (the README said it checked that; it did not)."""

from __future__ import annotations

import re
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.peers]

NOFILE = 2048


def config_text(servers: int, idle: int) -> str:
    lines = "\n".join(
        f"      - {{name: s{i}, address: 127.0.0.1:{9000 + i}}}" for i in range(servers)
    )
    return f"""
admin:
  listen: 127.0.0.1:0
  tokens: [{{name: ci, token_hash: "scrypt$16384$8$1$c2FsdA$aGFzaA"}}]
state:
  sqlite: ./state.db
pools:
  web:
    max_idle_per_server: {idle}
    servers:
{lines}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def quiesce(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quiesce", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limited,
    )


def test_check_refuses_the_descriptor_budget_run_refuses(tmp_path: Path) -> None:
    (tmp_path / "quiesce.yaml").write_text(config_text(40, 64))  # 2,560 idle connections
    checked = quiesce(tmp_path, "check", "-c", "quiesce.yaml")
    ran = quiesce(tmp_path, "run", "-c", "quiesce.yaml")
    assert ran.returncode != 0, ran
    why = f"RLIMIT_NOFILE {NOFILE} leaves no descriptor for client connections"
    assert why in ran.stdout + ran.stderr, ran
    # fails before: "quiesce.yaml: ok (1 service(s), 1 pool(s), 40 server(s)...)", exit 0
    assert checked.returncode == 1, checked
    assert "quiesce.yaml: 1 problem(s)" in checked.stderr, checked.stderr
    assert f"limits: {why}" in checked.stderr, checked.stderr
    assert "idle upstream connections 2560" in checked.stderr, checked.stderr
    assert f"measured against this process's RLIMIT_NOFILE {NOFILE}" in checked.stderr
    # the message names the setting of the pool to lower and a value that fits (review F9)
    hint = re.search(
        r"or lower pools\.web\.max_idle_per_server \(40 server\(s\) × 64 = 2560 reserved; "
        r"(\d+) or less fits here",
        checked.stderr,
    )
    assert hint is not None, checked.stderr
    fits = int(hint.group(1))
    assert 0 < fits < 64, fits
    # with room for the idle connections (the value the message gave) it is ok again
    (tmp_path / "quiesce.yaml").write_text(config_text(40, fits))
    checked = quiesce(tmp_path, "check", "-c", "quiesce.yaml")
    assert checked.returncode == 0 and ": ok (" in checked.stdout, checked


def test_check_warns_of_a_listen_address_in_use(tmp_path: Path) -> None:
    """README: check tells of listen ports in use. A warning, not a problem: the quiesce
    running this file holds its own ports (a reload reports a busy new one itself)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        text = config_text(2, 4).replace(
            "listen: 127.0.0.1:0, pool", f"listen: 127.0.0.1:{port}, pool"
        )
        (tmp_path / "quiesce.yaml").write_text(text)
        checked = quiesce(tmp_path, "check", "-c", "quiesce.yaml")
        # fails before: no word of it
        assert checked.returncode == 0, checked
        assert f"warning: services.www.listen: cannot listen on 127.0.0.1:{port} now" in (
            checked.stderr
        ), checked.stderr
    checked = quiesce(tmp_path, "check", "-c", "quiesce.yaml")
    assert checked.returncode == 0 and "cannot listen" not in checked.stderr, checked


def test_check_accepts_but_warns_of_a_file_a_reload_refuses(tmp_path: Path) -> None:
    """No service and no admin user: a start takes it (nobody to lock out, nothing served
    yet), a reload of a process serving with users refuses it (test_reload_refusals.py);
    check says so."""
    (tmp_path / "quiesce.yaml").write_text("pools: {}\nservices: {}\n")
    checked = quiesce(tmp_path, "check", "-c", "quiesce.yaml")
    assert checked.returncode == 0, checked
    assert "warning: admin.users: no user and no admin.tokens" in checked.stderr, checked
    assert "warning: services: none: nothing is served" in checked.stderr, checked
