"""The access log and the process log of a real ``quiesce run`` (issue 17, items 1, 6, 7):
httplog lines in a file and the same lines as RFC 5424 datagrams received by a real
``socat`` UDP listener; the file reopened after ``mv`` + ``SIGUSR1`` (logrotate); curl cut
by ``set server … maintenance --force`` and by a drain deadline gets a 503 (curl exit 0, not
52) and the line says why; the process log as JSON lines with the state events; a
destination that cannot be opened refuses the start, a reload naming one is refused and
changes nothing, and a reload naming stdout moves the lines there."""

from __future__ import annotations

import functools
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_run_and_demo import Proc
from tests.support.backend import Backend, serve_in_thread
from tests.support.process import quiesce_cli as cli

pytestmark = [pytest.mark.peers, pytest.mark.slow]

LINE = re.compile(
    r"127\.0\.0\.1:(?P<port>\d+) \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\.\d{3}\] www web/w1 "
    r"0/(?P<tc>-?\d+)/(?P<tr>-?\d+)/(?P<tt>\d+) (?P<status>\d+) (?P<out>\d+) (?P<inb>\d+) "
    r"(?P<term>\S\S) (?P<retries>\d) (?P<id>\S+) \"GET (?P<path>\S+)\""
)


@functools.cache
def _hash() -> str:
    from quiesce.security import hash_password

    return hash_password("pw")


def config(backend: int, udp: int, path: str = "./access.log") -> str:
    return f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state:
  sqlite: ./state.db
logging:
  access: {{format: httplog, path: "{path}", syslog: "udp://127.0.0.1:{udp}"}}
  process: {{format: json, level: info}}
pools:
  web:
    servers:
      - {{name: w1, address: 127.0.0.1:{backend}}}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


class Syslog:
    """``socat -u UDP-RECV:PORT`` appending every datagram to a file; ready once a probe
    datagram of ours came through."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_udp_port()
        self.out = tmp_path / "syslog.out"
        self.p = subprocess.Popen(
            ["socat", "-u", f"UDP-RECV:{self.port},bind=127.0.0.1", f"CREATE:{self.out}"],
            stderr=subprocess.DEVNULL,
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:

            def probed() -> bool:
                s.sendto(b"probe\n", ("127.0.0.1", self.port))
                return self.out.exists() and b"probe" in self.out.read_bytes()

            until(probed)

    def frames(self) -> list[str]:
        text = self.out.read_text(errors="replace")
        return ["<134>1 " + f for f in text.split("<134>1 ")[1:]]

    def stop(self) -> None:
        self.p.terminate()
        self.p.wait(10)


def curl(port: int, path: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}{path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines(path: Path) -> list[re.Match[str]]:
    out = []
    for line in path.read_text().splitlines():
        m = LINE.fullmatch(line)
        assert m, line
        out.append(m)
    return out


def test_file_syslog_reopen_and_cut_requests(tmp_path: Path) -> None:
    syslog = Syslog(tmp_path)
    log = tmp_path / "access.log"
    try:
        with serve_in_thread(Backend("b1")) as (b1,):
            (tmp_path / "quiesce.yaml").write_text(config(b1.port, syslog.port))
            q = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
            try:
                port = int(q.wait_for(r"service www listening on port (\d+)").group(1))
                admin = int(q.wait_for(r"admin listening on port (\d+)").group(1))
                q.wait_for("quiesce: ready")

                # a normal request: in the file, and the same line over syslog
                c = curl(port, "/a")
                assert c.communicate(timeout=30) == ("200", "") and c.returncode == 0
                until(lambda: log.exists() and log.read_text().count("\n") == 1)
                (a,) = lines(log)
                assert (a["status"], a["term"], a["path"], a["retries"]) == ("200", "--", "/a", "0")
                assert int(a["out"]) > 0 and int(a["inb"]) > 0 and int(a["tc"]) >= 0
                until(lambda: any(a["id"] in f for f in syslog.frames()))
                (frame,) = [f for f in syslog.frames() if a["id"] in f]
                assert re.fullmatch(
                    r"<134>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ quiesce "
                    + str(q.p.pid)
                    + r" access - "
                    + re.escape(a.group(0)),
                    frame,
                ), frame

                # logrotate: mv, SIGUSR1, the next line in a new file
                log.rename(tmp_path / "access.log.1")
                q.p.send_signal(signal.SIGUSR1)
                until(log.exists)
                c = curl(port, "/b")
                assert c.communicate(timeout=30)[0] == "200"
                until(lambda: log.read_text().count("\n") == 1)
                assert [m["path"] for m in lines(log)] == ["/b"]
                assert [m["path"] for m in lines(tmp_path / "access.log.1")] == ["/a"]

                # maintenance --force cuts a request waiting on the slow back end: 503
                c = curl(port, "/slow/30")
                until(lambda: any(p == "/slow/30" for p in b1.paths))
                r = cli(admin, "set", "server", "web/w1", "maintenance", "--force", "--force-guard")
                assert r.returncode == 0, r
                assert c.communicate(timeout=30) == ("503", "") and c.returncode == 0
                r = cli(admin, "clear", "server", "web/w1", "maintenance")
                assert r.returncode == 0, r

                # a drain deadline (1 s) does the same
                c = curl(port, "/slow/29")
                until(lambda: any(p == "/slow/29" for p in b1.paths))
                r = cli(admin, "set", "server", "web/w1", "drain", "--timeout", "1s")
                assert r.returncode == 0, r
                assert c.communicate(timeout=30) == ("503", "") and c.returncode == 0
                until(lambda: log.read_text().count("\n") == 3)
                _, forced, deadline = lines(log)
                assert (forced["path"], forced["status"], forced["term"]) == (
                    "/slow/30",
                    "503",
                    "KH",
                )
                assert (deadline["status"], deadline["term"]) == ("503", "DH")
                assert int(deadline["tt"]) >= 900  # the drain's second, near enough
                assert forced["tr"] == "-1" and deadline["tr"] == "-1"
            finally:
                assert q.stop() == 0
            # the process log: JSON lines on stderr, the state events among them
            docs = [json.loads(x) for x in q.lines if x.startswith("{")]
            assert docs and all({"time", "level", "message"} <= set(d) for d in docs)
            events = [d["event"] for d in docs if "event" in d]
            kinds = {(e["kind"], e["to"]) for e in events}
            assert ("admin_change", "maintenance") in kinds, kinds
            assert any(e["cause"] == "deadline" for e in events), events
    finally:
        syslog.stop()


def test_a_destination_that_cannot_be_opened_and_a_reload(tmp_path: Path) -> None:
    udp = free_udp_port()
    with serve_in_thread(Backend("b1")) as (b1,):
        (tmp_path / "quiesce.yaml").write_text(config(b1.port, udp, "./nowhere/access.log"))
        q = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
        assert q.stop(None) == 1
        assert "logging.access.path: cannot open" in q.output and "nowhere" in q.output, q.output

        # running: a reload naming one is refused and changes nothing
        (tmp_path / "quiesce.yaml").write_text(config(b1.port, udp))
        q = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
        try:
            port = int(q.wait_for(r"service www listening on port (\d+)").group(1))
            q.wait_for("quiesce: ready")
            (tmp_path / "quiesce.yaml").write_text(config(b1.port, udp, "./nowhere/x.log"))
            q.p.send_signal(signal.SIGHUP)
            q.wait_for(r"reload by SIGHUP refused: .*logging\.access\.path: cannot open")
            c = curl(port, "/still")
            assert c.communicate(timeout=30)[0] == "200"
            log = tmp_path / "access.log"
            until(lambda: log.exists() and "/still" in log.read_text())
            assert not (tmp_path / "nowhere").exists()

            # a reload that can open it switches: the next lines on quiesce's stdout
            (tmp_path / "quiesce.yaml").write_text(config(b1.port, udp, "stdout"))
            q.p.send_signal(signal.SIGHUP)
            q.wait_for(r"reload: logging: access\.path changed")  # counted and named
            q.wait_for(r"reload by SIGHUP: 1 change")
            c = curl(port, "/out")
            assert c.communicate(timeout=30)[0] == "200"
            m = q.wait_for(r"^127\.0\.0\.1:\d+ \[.*\] www web/w1 .* 200 .*\"GET /out\"$")
            assert LINE.fullmatch(m.group(0)), m.group(0)
            assert "/out" not in log.read_text()
        finally:
            assert q.stop() == 0


def test_quiesce_check_names_each_bad_logging_key(tmp_path: Path) -> None:
    (tmp_path / "quiesce.yaml").write_text(
        """
logging:
  access: {format: "{status} {colour}", syslog: "tcp://h:514", sample: 2}
  process: {level: loud}
pools:
  web: {servers: [{name: w1, address: 127.0.0.1:8081}]}
services:
  www: {listen: 127.0.0.1:0, pool: web, access_log: maybe}
"""
    )
    r = subprocess.run(
        [sys.executable, "-m", "quiesce", "check", "-c", "quiesce.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 1, r
    out = r.stdout + r.stderr
    for key in (
        "logging.access.format: unknown field {colour}",
        "logging.access.syslog: 'tcp://h:514'",
        "logging.access.sample:",
        "logging.process.level:",
        "services.www.access_log:",
    ):
        assert key in out, out
