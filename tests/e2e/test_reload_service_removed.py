"""A reload that removes a service: its idle keep-alive clients' next request is answered (with
``Connection: close``), as a takeover answers it, not refused by a connection closed under it
(review 14 R8: 3 of 3 idle keep-alive clients got ``RemoteDisconnected`` on their next
request, 0.3 s after the reload). A real ``quiesce run``, ``quiesce reload``, ``http.client``."""

from __future__ import annotations

import http.client
import signal
from pathlib import Path

import pytest

from tests.e2e.test_reload import _hash, start
from tests.support.backend import Backend, serve_in_thread

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def config(port: int, *, second: bool) -> str:
    www2 = "  www2: {listen: 127.0.0.1:0, pool: web, grace_period: 20s}\n" if second else ""
    return f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
pools:
  web:
    servers:
      - {{name: w1, address: 127.0.0.1:{port}}}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
{www2}"""


def test_idle_keep_alive_clients_of_a_removed_service_get_their_next_answer(
    tmp_path: Path,
) -> None:
    with serve_in_thread(Backend("b1")) as (b1,):
        q = start(tmp_path, config(b1.port, second=True))
        try:
            port = int(q.proc.wait_for(r"service www2 listening on port (\d+)").group(1))
            clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(3)]
            for c in clients:  # each one keep-alive connection, idle after its answer
                c.request("GET", "/")
                r = c.getresponse()
                r.read()
                assert r.status == 200 and not r.will_close
            q.write(config(b1.port, second=False))
            done = q.cli("reload")
            assert done.returncode == 0, done
            assert "service www2: removed (stops accepting; it answers the requests in flight" in (
                done.stdout
            ), done.stdout
            for c in clients:  # their next request, on the same connection
                c.request("GET", "/")
                r = c.getresponse()
                assert r.status == 200 and r.read() and r.will_close, r.getheaders()
                c.close()
            # and the service is gone: a new connection is refused
            with pytest.raises(ConnectionRefusedError):
                http.client.HTTPConnection("127.0.0.1", port, timeout=5).connect()
        finally:
            q.proc.stop(signal.SIGTERM)
