"""Reloads a running quiesce refuses although the file is valid (issue 14, reviewer), driven
as an operator drives them: ``quiesce run``, the CLI's ``reload``, the REST API. A file
reduced to no service and no admin user would have wiped everything and locked every client
out of the admin API (401); new listeners on busy ports are every one reported at once."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.e2e.test_reload import _hash, config_text, start
from tests.support.backend import Backend, serve_in_thread

pytestmark = [pytest.mark.peers, pytest.mark.slow]

USERS = f'admin: {{listen: 127.0.0.1:0, users: [{{name: admin, password_hash: "{_hash()}"}}]}}'


def test_a_file_of_nothing_or_without_admin_users_is_refused(tmp_path: Path) -> None:
    with serve_in_thread(Backend("b1")) as (b1,):
        text = config_text([("w1", b1.port, 1)])
        q = start(tmp_path, text)
        try:
            # no pool, no service, no user: before, accepted, and every call then got 401
            q.write("pools: {}\nservices: {}\n")
            r = q.cli("reload")
            assert r.returncode == 1, r
            assert "would lock every client out of the admin API" in r.stderr, r.stderr
            assert "services: none in the file, 1 running (www)" in r.stderr, r.stderr
            assert "stop quiesce" in r.stderr, r.stderr
            # the same with a user: only the services
            q.write(f"{USERS}\npools: {{}}\nservices: {{}}\n")
            status, body = q.api("POST", "/api/v1/reload")
            assert status == 422, body
            assert len(body["problems"]) == 1 and "services: none" in body["problems"][0], body
            # the services kept, no user: only the lock-out
            q.write(
                text.replace('[{name: admin, password_hash: "' + _hash() + '", role: admin}]', "[]")
            )
            status, body = q.api("POST", "/api/v1/reload")
            assert status == 422, body
            assert len(body["problems"]) == 1 and "lock every client" in body["problems"][0]
            # nothing changed: the API answers, the service serves
            assert set(q.servers()) == {"web/w1"}
            assert q.get("/")[0] == 200
        finally:
            code = q.proc.stop(signal.SIGTERM)
        assert code == 0, q.proc.output


def busy_port() -> socket.socket:
    """A listener of another program on a loopback port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_busy_port_of_a_reload_is_reported_at_once(tmp_path: Path) -> None:
    with serve_in_thread(Backend("b1")) as (b1,):
        text = config_text([("w1", b1.port, 1)])
        q = start(tmp_path, text)
        busy = [busy_port(), busy_port()]
        ports = [s.getsockname()[1] for s in busy]
        free = free_port()
        try:
            more = "".join(
                f"\n  new{i}: {{listen: 127.0.0.1:{p}, pool: web}}"
                for i, p in enumerate([*ports, free])
            )
            q.write(text + more)
            # fails before: only services.new0.listen, one reload at a time
            r = q.cli("reload")
            assert r.returncode == 1, r
            for i, p in enumerate(ports):
                assert f"services.new{i}.listen: cannot listen on 127.0.0.1:{p}" in r.stderr
            assert "2 problem(s)" in r.stderr, r.stderr
            # nothing changed, and the free port bound on the way was released
            with socket.socket() as s:
                s.bind(("127.0.0.1", free))
            status, services = q.api("GET", "/api/v1/services")
            assert status == 200, services
            assert [s["name"] for s in services] == ["www"], services
            # the ports freed, the same file applies
            for s in busy:
                s.close()
            r = q.cli("reload")
            assert r.returncode == 0, r
            status, services = q.api("GET", "/api/v1/services")
            assert status == 200, services
            assert sorted(s["name"] for s in services) == ["new0", "new1", "new2", "www"]
        finally:
            for s in busy:
                s.close()
            code = q.proc.stop(signal.SIGTERM)
        assert code == 0, q.proc.output
