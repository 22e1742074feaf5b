"""Issue 12, item 3: a connection flood must not lock operators out.

``quiesce run`` under ``prlimit --nofile=1024:1024`` gets 1,500 client connections, each
sending a request. The data plane caps itself below the descriptor limit (the derived
``limits.max_connections``) and stops accepting; the connections beyond the cap wait in the
kernel's listen backlog, and while they do the admin API, the runtime socket, a maintenance
command and the health checks all keep working. Then the answered clients go away and every
waiting one is accepted and answered: none was refused or reset.
"""

from __future__ import annotations

import re
import resource
import selectors
import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest

from quiesce.security import hash_password
from tests.e2e.test_run_and_demo import BackendThread, Proc, until
from tests.support.process import runtime_command

pytestmark = [pytest.mark.peers, pytest.mark.slow]

AUTH = ("admin", "pw")
CLIENTS = 1500
NOFILE = 1024


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not in metrics"
    return float(m.group(1))


class Clients:
    """Many plain client sockets, each sending one keep-alive request; tracks which were
    answered (a whole response read) and which failed (EOF or reset before an answer)."""

    REQUEST = b"GET / HTTP/1.1\r\nHost: flood\r\n\r\n"

    def __init__(self, port: int, n: int) -> None:
        self.sel = selectors.DefaultSelector()
        self.buf: dict[socket.socket, bytes] = {}
        self.answered: list[socket.socket] = []
        self.failed: list[tuple[socket.socket, str]] = []
        for _ in range(n):
            # The handshake completes in the kernel even when quiesce does not accept: the
            # connection then waits in the listen backlog.
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(self.REQUEST)
            s.setblocking(False)
            self.buf[s] = b""
            self.sel.register(s, selectors.EVENT_READ)

    @property
    def waiting(self) -> int:
        return len(self.buf)

    def poll(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(65536)
            except OSError as exc:
                self._done(s, failed=repr(exc))
                continue
            if not data:
                self._done(s, failed="EOF before an answer")
                continue
            got = self.buf[s] + data
            self.buf[s] = got
            head, sep, body = got.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?i)content-length: *(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    assert head.startswith(b"HTTP/1.1 200"), head
                    self._done(s)

    def _done(self, s: socket.socket, failed: str | None = None) -> None:
        self.sel.unregister(s)
        del self.buf[s]
        if failed is None:
            self.answered.append(s)
        else:
            self.failed.append((s, failed))

    def close_answered(self) -> int:
        n = len(self.answered)
        for s in self.answered:
            s.close()
        self.answered = []
        return n

    def close(self) -> None:
        for s in list(self.buf) + self.answered + [s for s, _ in self.failed]:
            s.close()
        self.sel.close()


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_flood_under_nofile_1024_leaves_operators_in_control(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < CLIENTS + 1000:
        pytest.skip(f"this test process needs {CLIENTS + 1000} descriptors (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    clients: Clients | None = None
    try:
        with BackendThread(["b1", "b2"]) as bt:
            b1, b2 = bt.backends
            (tmp_path / "quiesce.yaml").write_text(
                f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{hash_password("pw")}", role: admin}}]
  runtime_socket: ./quiesce.sock
state: {{sqlite: ./state.db}}
healthmonitors:
  hm:
    type: http
    send_interval: 200ms
    receive_timeout: 150ms
    http_monitor: {{http_request: "GET /health HTTP/1.0"}}
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
            proc = Proc(
                ["run", "-c", "quiesce.yaml"],
                tmp_path,
                prefix=("prlimit", f"--nofile={NOFILE}:{NOFILE}"),
            )
            try:
                port = int(proc.wait_for(r"service www listening on port (\d+)").group(1))
                admin = int(proc.wait_for(r"admin listening on port (\d+)").group(1))
                proc.wait_for("quiesce: ready")
                api = f"http://127.0.0.1:{admin}/api/v1"
                metrics = f"http://127.0.0.1:{admin}/metrics"
                sock = tmp_path / "quiesce.sock"
                http = httpx.Client(auth=AUTH, timeout=10)

                def both_up() -> bool:
                    r = http.get(f"{api}/servers")
                    return r.status_code == 200 and all(s["status"] == "up" for s in r.json())

                until(both_up, 15)

                clients = Clients(port, CLIENTS)

                # The data plane fills up to its limit and stops there.
                def at_limit() -> bool:
                    assert clients is not None
                    clients.poll(0.05)
                    text = http.get(metrics).text
                    return _metric(text, "quiesce_connections") == _metric(
                        text, "quiesce_connections_max"
                    )

                until(at_limit, 30)
                text = http.get(metrics).text
                limit = _metric(text, "quiesce_connections_max")
                assert 100 < limit < NOFILE // 2, text
                assert _metric(text, "quiesce_connections_limit_reached_total") >= 1
                assert clients.waiting >= CLIENTS - limit

                # The operators' ways in all work while the flood waits.
                r = http.get(f"{api}/servers")
                assert r.status_code == 200 and {s["name"] for s in r.json()} == {"b1", "b2"}
                stat = runtime_command(sock, "show stat")
                assert stat.startswith("# pxname,svname,"), stat
                www = next(line for line in stat.splitlines() if line.startswith("www,FRONTEND,"))
                fields = stat.splitlines()[0][2:].split(",")
                row = dict(zip(fields, www.split(","), strict=False))
                assert row["status"] == "FULL" and int(row["scur"]) == int(row["slim"]) == limit

                def checked_at() -> float:
                    checks = http.get(f"{api}/servers/web/b2").json()["last_checks"]
                    return max(c["at"] for c in checks)

                before = checked_at()
                r = http.post(f"{api}/servers/web/b1/maintenance", json={"reason": "flood"})
                assert r.status_code == 200 and r.json()["changed"], r.text
                view = http.get(f"{api}/servers/web/b1").json()
                assert (view["admin"], view["status"]) == ("maintenance", "disabled")
                until(lambda: checked_at() > before, 15)  # health checks still run
                assert "connection limit reached" in proc.output

                # The waiting clients were queued, not refused: as the answered ones leave,
                # every one of them is accepted and answered (b1 being in maintenance, by b2).
                hits = b2.hits
                deadline = time.monotonic() + 60
                while clients.waiting and time.monotonic() < deadline:
                    clients.close_answered()
                    clients.poll(0.2)
                assert not clients.failed, clients.failed[:5]
                assert clients.waiting == 0
                assert b2.hits > hits
                clients.close_answered()
                until(lambda: "accepting connections again" in proc.output, 15)
                http.close()
            finally:
                if clients is not None:
                    clients.close()
                code = proc.stop()
            assert code == 0, proc.output
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
