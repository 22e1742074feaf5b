"""A config file that is not UTF-8 (a Latin-1 comment, a half-written copy) is one problem,
"(file): … is not UTF-8 at byte N (line, column …)", reported by ``quiesce check`` (exit 1, no
traceback), the REST reload (422), the CLI's reload, the runtime socket's ``reload`` and
SIGHUP, and nothing changes (review F17: a traceback, a 500, an empty socket answer)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_reload import config_text, start
from tests.support.backend import Backend, serve_in_thread

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def _latin1(text: str) -> bytes:
    """``text`` with a Latin-1 comment line at its end (0xe9: "é" in Latin-1)."""
    return text.encode() + b"# r\xe9seau\n"


def test_check_reports_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    path.write_bytes(b'admin:\n  listen: "127.0.0.1:19900\xff"\n')
    r = subprocess.run(
        [sys.executable, "-m", "quiesce", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1, r
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert "is not UTF-8 at byte 33 (line 2, column 27" in r.stderr + r.stdout, r


def test_every_reload_route_refuses_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    with serve_in_thread(Backend("b1")) as (b1,):
        text = config_text([("w1", b1.port, 1)])
        q = start(tmp_path, text)
        try:
            bad = _latin1(config_text([("w1", b1.port, 1), ("w2", b1.port, 1)]))
            at = bad.index(b"\xe9")
            (tmp_path / "quiesce.yaml").write_bytes(bad)
            status, body = q.api("POST", "/api/v1/reload")
            assert status == 422, body
            assert len(body["problems"]) == 1, body
            assert f"is not UTF-8 at byte {at}" in body["problems"][0], body
            r = q.cli("reload")
            assert r.returncode == 1 and "is not UTF-8" in r.stderr, r
            out = q.socat("reload")
            assert "Reload refused: 1 problem(s)" in out and "is not UTF-8" in out, out
            q.proc.p.send_signal(signal.SIGHUP)
            q.proc.wait_for(r"reload by SIGHUP refused: .*1 problem\(s\)")
            assert "Traceback" not in q.proc.output
            assert set(q.servers()) == {"web/w1"}  # nothing changed
            status, events = q.api("GET", "/api/v1/events?kind=config_reload")
            assert status == 200 and events and "refused" in str(events[-1]), events
            # the same file saved as UTF-8 reloads
            (tmp_path / "quiesce.yaml").write_bytes(bad.decode("latin-1").encode())
            status, body = q.api("POST", "/api/v1/reload")
            assert status == 200, body
            assert set(q.servers()) == {"web/w1", "web/w2"}
        finally:
            code = q.proc.stop(signal.SIGTERM)
        assert code == 0, q.proc.output
