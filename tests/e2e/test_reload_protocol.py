"""A reload that switches a pool's ``protocol`` between http/1.1 and h2 (issue 16, reviewer):
the requests after it go out on the new protocol only, the idle upstream connections of the
old one are closed, and a request in flight on the old one finishes, its connection then
closed rather than pooled. Before, the keep-alive pool kept its connections of the other
protocol and handed them to the next requests.

Driven as an operator drives it: a real ``quiesce run`` in front of one back end that
speaks both HTTP/1.1 and h2c on its port (tests.support.dualserver: it says which protocol
each request came by and when each connection closed), reloaded by ``POST /api/v1/reload``
and by ``SIGHUP`` while a client sends requests one after another."""

from __future__ import annotations

import http.client
import signal
import threading
from pathlib import Path

import pytest

from tests.e2e.test_reload import Running, _hash, start
from tests.support.dualserver import DualServer, serving
from tests.support.process import until

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def config(port: int, protocol: str) -> str:
    return f"""
admin:
  listen: 127.0.0.1:0
  runtime_socket: ./quiesce.sock
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state:
  sqlite: ./state.db
pools:
  web:
    protocol: {protocol}
    servers:
      - {{name: d1, address: 127.0.0.1:{port}}}
services:
  www:
    listen: 127.0.0.1:0
    pool: web
"""


class Client:
    """Requests one after another (``/PREFIX/1``, ``/PREFIX/2``...) on one keep-alive
    connection."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port = port
        self.prefix = prefix
        self.sent = 0
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            self.sent += 1
            try:
                conn.request("GET", f"/{self.prefix}/{self.sent}")
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    self.failed.append(f"{self.sent}: {r.status} {body[:80]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.failed.append(f"{self.sent}: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.close()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)


def hold(q: Running, out: list[tuple[int, bytes]]) -> threading.Thread:
    """A request held by the back end (``/hold``) on its own client connection."""

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", q.port, timeout=30)
        conn.request("GET", "/hold")
        r = conn.getresponse()
        out.append((r.status, r.read()))
        conn.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def switch(q: Running, d: DualServer, to: str, old: str, how: str) -> None:
    """Switch the pool to ``to`` (from ``old``) by ``how`` under a client and a request in
    flight, and check what the back end saw."""
    new = "h2" if to == "h2" else "h1"
    was = "h2" if old == "h2" else "h1"
    client = Client(q.port, to)
    until(lambda: client.sent > 20, 20)
    held: list[tuple[int, bytes]] = []
    t = hold(q, held)
    until(lambda: d.held == 1, 20)
    old_conns = [c for c in d.conns if c.proto == was and not c.closed]
    assert old_conns  # the held one's, and the idle one(s) the client's requests went on
    q.write(config(d.port, to))
    if how == "api":
        status, body = q.api("POST", "/api/v1/reload")
        assert status == 200, body
        assert [c["kind"] for c in body["changes"]] == ["pool_changed"], body
    else:
        n = q.proc.output.count("reload by SIGHUP: 1 change(s)")
        q.proc.p.send_signal(signal.SIGHUP)
        until(lambda: q.proc.output.count("reload by SIGHUP: 1 change(s)") > n, 20)
    after = client.sent + 1  # the first request the client sends after the reload
    until(lambda: client.sent > after + 20, 20)
    client.finish()
    assert client.failed == [], client.failed
    later = [d.protocol_of(f"/{to}/{i}") for i in range(after, client.sent)]
    assert later and all(p == [new] for p in later), later
    # the old protocol's idle connections closed at once; the held one stays until answered
    holding = [c for c in old_conns if "/hold" in c.paths]
    assert len(holding) == 1
    until(lambda: all(c.closed for c in old_conns if c is not holding[0]), 10)
    assert not holding[0].closed
    # the request in flight finishes on the old protocol, its connection then closed
    d.release()
    t.join(30)
    assert held == [(200, f"{was}:{holding[0].no}".encode())]
    until(lambda: holding[0].closed, 10)
    assert not [c for c in d.conns if c.proto == was and not c.closed]
    status, body = q.get("/after")
    assert status == 200 and body.startswith(new.encode() + b":")


@pytest.mark.parametrize("how", ["api", "sighup"])
def test_a_reload_switching_protocol_uses_the_new_one_only(tmp_path: Path, how: str) -> None:
    with serving() as d:
        q = start(tmp_path, config(d.port, "http/1.1"))
        try:
            switch(q, d, "h2", "http/1.1", how)
            switch(q, d, "http/1.1", "h2", how)
        finally:
            q.proc.stop()
