"""``protocol: mysql`` through a real ``quiesce run`` to a real MariaDB 10.11, driven by
PyMySQL and the CLI (issue 20): maintenance lets an open transaction commit and closes its
connection right after; an idle connection gets ERR 1053 at once; ``--force`` aborts an open
transaction; a drain deadline cuts the rest; a client speaking another protocol and an
oversized packet each close their own connection with a log line; a rolling maintenance of
two servers under a loop of short transactions that reconnects on 1053 loses none; a client
that asks for TLS is drained at connection level, and quiesce says so; a service with ``tls``
terminates it (PyMySQL verifying quiesce's certificate) and keeps the transaction boundary."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import browser  # noqa: F401  (the fixture)
from tests.e2e.test_access_log import _hash, cli, until
from tests.e2e.test_run_and_demo import Proc
from tests.support.mariadb import MariaDB, mariadb_server

pymysql = pytest.importorskip("pymysql")
AUTH = ("admin", "pw")
QUIESCE = (sys.executable, "-m", "quiesce")

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def config(*ports: int, extra: str = "") -> str:
    """One mysql service over servers my1, my2, … at these ports."""
    servers = "".join(
        f"\n      - {{name: my{i}, address: 127.0.0.1:{p}}}" for i, p in enumerate(ports, 1)
    )
    return f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state:
  sqlite: ./state.db
pools:
  db:
    servers:{servers}
services:
  my: {{listen: 127.0.0.1:0, protocol: mysql, pool: db{extra}}}
"""


def run(tmp_path: Path) -> tuple[Proc, int, int]:
    """``quiesce run`` on tmp_path/quiesce.yaml, ready: (process, service port, admin port)."""
    q = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
    try:
        port = int(q.wait_for(r"service my listening on port (\d+)").group(1))
        admin = int(q.wait_for(r"admin listening on port (\d+)").group(1))
        q.wait_for("quiesce: ready")
    except BaseException:
        q.stop()
        raise
    return q, port, admin


def backends(db: MariaDB) -> int:
    """Sessions of the ``app`` user the server has (the relay's COM_QUIT ends them)."""
    rows = db.sql("SELECT count(*) FROM information_schema.processlist WHERE user = 'app'")
    return int(rows[0][0])


def sessions(admin: int, server: str = "db/my1") -> dict[str, int]:
    r = cli(admin, "--json", "show", "server", server)
    assert r.returncode == 0, r
    return dict(json.loads(r.stdout)["sessions"] or {})


def code(exc: pytest.ExceptionInfo[Any]) -> int:
    return int(exc.value.args[0])


def test_maintenance_at_the_transaction_boundary(tmp_path: Path) -> None:
    with mariadb_server() as db:
        (tmp_path / "quiesce.yaml").write_text(config(db.port, extra=", max_message_size: 65536"))
        q, port, admin = run(tmp_path)
        try:
            q.wait_for(r"services\.my: a mysql service without tls does not")  # start-up
            intx = db.connect(port)  # PyMySQL: autocommit off, a transaction left open
            with intx.cursor() as cur:
                cur.execute("INSERT INTO t (v) VALUES (1)")
            idle = db.connect(port, autocommit=True)  # idle, out of a transaction
            with idle.cursor() as cur:
                cur.execute("SELECT 2")
            until(lambda: sessions(admin) == {"idle": 1, "transaction": 1, "query": 0})
            assert backends(db) == 2
            metrics = httpx.get(f"http://127.0.0.1:{admin}/metrics", auth=AUTH).text
            for state, n in (("idle", 1), ("transaction", 1), ("query", 0)):
                labels = f'pool="db",server="my1",state="{state}"'
                assert f"quiesce_server_database_sessions{{{labels}}} {n}.0" in metrics

            r = cli(admin, "set", "server", "db/my1", "maintenance", "--force-guard")
            assert r.returncode == 0, r
            # the idle one is closed at once: its server session ends, the client reads 1053
            until(lambda: backends(db) == 1)
            with pytest.raises(pymysql.err.OperationalError) as shut:
                idle.cursor().execute("SELECT 3")
            assert code(shut) == 1053, shut.value
            assert "Server shutdown in progress" in str(shut.value)
            assert sessions(admin) == {"idle": 0, "transaction": 1, "query": 0}

            # the open transaction carries on and commits; its connection closes right after
            with intx.cursor() as cur:
                cur.execute("INSERT INTO t (v) VALUES (2)")
            intx.commit()
            until(lambda: backends(db) == 0)
            with pytest.raises(pymysql.err.OperationalError) as after:
                intx.cursor().execute("SELECT 4")
            assert code(after) == 1053, after.value
            assert db.sql("SELECT group_concat(v ORDER BY v) FROM app.t") == [("1,2",)]
            assert sessions(admin) == {"idle": 0, "transaction": 0, "query": 0}
            with pytest.raises(pymysql.err.OperationalError):  # no new session to it
                db.connect(port, connect_timeout=5)

            # a client speaking HTTP, then one sending a packet over max_message_size: each
            # closed with a log line and an event; a third connection carries on
            r = cli(admin, "clear", "server", "db/my1", "maintenance")
            assert r.returncode == 0, r
            other = db.connect(port, autocommit=True)
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.settimeout(10)
                assert s.recv(4096)[4:5] == b"\x0a"  # the server's greeting, relayed
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                with contextlib.suppress(ConnectionResetError):  # closed or reset: both fine
                    while s.recv(4096):
                        pass
            q.wait_for(
                r"closing the connection of 127\.0\.0\.1:\d+ \(server db/my1\): client "
                r"does not speak MySQL"
            )
            big = db.connect(port, autocommit=True)
            with pytest.raises(pymysql.err.OperationalError):
                big.cursor().execute("SELECT '" + "x" * 100_000 + "'")
            q.wait_for(r"client sent a packet of 100\d+ bytes \(limit 65536\)")
            with other.cursor() as cur:
                cur.execute("SELECT 5")
                assert cur.fetchone() == (5,)
            events = httpx.get(
                f"http://127.0.0.1:{admin}/api/v1/events",
                params={"kind": "protocol_error"},
                auth=AUTH,
            ).json()
            assert [(e["pool"], e["server"]) for e in events] == [("db", "my1")] * 2, events
            assert events[0]["detail"]["service"] == "my"
            metrics = httpx.get(f"http://127.0.0.1:{admin}/metrics", auth=AUTH).text
            assert 'quiesce_service_protocol_errors_total{service="my"} 2.0' in metrics
            other.close()

            # --force aborts an open transaction
            forced = db.connect(port)
            with forced.cursor() as cur:
                cur.execute("INSERT INTO t (v) VALUES (3)")
            r = cli(admin, "set", "server", "db/my1", "maintenance", "--force", "--force-guard")
            assert r.returncode == 0, r
            with pytest.raises(pymysql.err.OperationalError):
                forced.commit()
            until(lambda: backends(db) == 0)
            assert db.sql("SELECT count(*) FROM app.t WHERE v = 3") == [(0,)]
            r = cli(admin, "show", "server", "db/my1")
            assert "Sessions" in r.stdout, r.stdout
            r = cli(admin, "clear", "server", "db/my1", "maintenance")
            assert r.returncode == 0, r

            # a drain deadline cuts what is left
            left = db.connect(port)
            with left.cursor() as cur:
                cur.execute("INSERT INTO t (v) VALUES (4)")
            began = time.monotonic()
            r = cli(admin, "set", "server", "db/my1", "drain", "--timeout", "1s")
            assert r.returncode == 0, r
            until(lambda: backends(db) == 0)
            assert time.monotonic() - began >= 0.9
            with pytest.raises(pymysql.err.OperationalError):
                left.commit()
            assert db.sql("SELECT count(*) FROM app.t WHERE v = 4") == [(0,)]
        finally:
            q.stop()


class Loop:
    """Client threads running short transactions (BEGIN, INSERT, UPDATE, COMMIT; with
    ``read``: BEGIN, two SELECTs, COMMIT) through quiesce; a 1053 before the transaction
    began (the relay's goodbye to an idle session) means: reconnect and run it again.
    Anything else is a failed transaction."""

    def __init__(self, db: MariaDB, port: int, clients: int = 4, read: bool = False) -> None:
        self.db, self.port, self.read = db, port, read
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.committed = self.reconnects = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]
        for t in self.threads:
            t.start()

    def _client(self, n: int) -> None:
        conn = None
        while not self.stop.is_set():
            if conn is None:
                try:
                    conn = self.db.connect(self.port, autocommit=True)
                except pymysql.err.OperationalError as e:
                    with self.lock:
                        self.failures.append(f"client {n} connect: {e}")
                    time.sleep(0.05)  # before the next try (a refused connection)
                    continue
            cur = conn.cursor()
            try:
                cur.execute("BEGIN")
            except pymysql.err.OperationalError as e:
                if e.args[0] != 1053:
                    with self.lock:
                        self.failures.append(f"client {n} BEGIN: {e}")
                conn = None
                with self.lock:
                    self.reconnects += 1
                continue
            try:
                if self.read:
                    cur.execute("SELECT count(*) FROM t")
                    cur.fetchall()
                    cur.execute("SELECT @@server_id, @@read_only")
                    cur.fetchall()
                else:
                    cur.execute("INSERT INTO t (v) VALUES (%s)", (n,))
                    cur.execute("UPDATE t SET v = v + 1 WHERE id = LAST_INSERT_ID()")
                cur.execute("COMMIT")
            except pymysql.err.MySQLError as e:
                with self.lock:
                    self.failures.append(f"client {n} in a transaction: {e}")
                conn = None
                continue
            with self.lock:
                self.committed += 1
        if conn is not None:
            conn.close()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


@pytest.mark.parametrize("pair", ["two servers", "primary and replica"])
def test_rolling_maintenance_under_a_loop_of_transactions_loses_none(
    tmp_path: Path, pair: str
) -> None:
    """Two MariaDB servers behind a mysql service, each put in maintenance in turn and back
    (waiting until its last session has closed) under four clients running short
    transactions: no failed transaction. Two independent servers take writes (every
    committed one is then in a database); a primary and its read-only replica (real
    replication) take read transactions."""
    replica = pair == "primary and replica"
    with (
        mariadb_server(binlog=replica) as db_a,
        mariadb_server(primary=db_a if replica else None) as db_b,
    ):
        if replica:
            db_b.sql("SET GLOBAL read_only = 1")
            db_a.sql("INSERT INTO app.t (v) VALUES (1)")
            until(lambda: db_b.sql("SELECT count(*) FROM app.t") == [(1,)])
        (tmp_path / "quiesce.yaml").write_text(config(db_a.port, db_b.port))
        q, port, admin = run(tmp_path)
        loop = Loop(db_a, port, read=replica)
        try:

            def live(server: str) -> int:
                return sum(sessions(admin, f"db/{server}").values())

            for _round in range(2):
                for name in ("my1", "my2"):
                    until(lambda name=name: live(name) > 0, 30)  # under load
                    r = cli(admin, "set", "server", f"db/{name}", "maintenance", "--force-guard")
                    assert r.returncode == 0, r
                    until(lambda name=name: live(name) == 0, 30)  # its last session closed
                    r = cli(admin, "clear", "server", f"db/{name}", "maintenance")
                    assert r.returncode == 0, r
            before = loop.committed
            until(lambda: loop.committed > before + 20, 30)  # still committing after it
        finally:
            loop.finish()
            q.stop()
        rows = sum(int(db.sql("SELECT count(*) FROM app.t")[0][0]) for db in (db_a, db_b))
        print(
            f"mysql rolling maintenance ({pair}, 2 rounds, 4 clients): {loop.committed} "
            f"transactions committed, {loop.reconnects} reconnects on 1053, "
            f"{len(loop.failures)} failed; {rows} rows in the databases"
        )
        assert loop.failures == []
        assert loop.committed > 0
        if not replica:
            assert rows == loop.committed


def test_a_client_asking_for_tls_is_drained_at_connection_level(tmp_path: Path) -> None:
    """A mysql service does not terminate TLS: a client that asks for it (CLIENT_SSL) is
    relayed opaque, counted ``tls`` in the server view and left out of the transaction
    boundary (a cleartext one beside it is closed at once); quiesce says so at start-up and
    at the first such client; --force cuts it."""
    with mariadb_server(tls=True) as db:
        (tmp_path / "quiesce.yaml").write_text(config(db.port))
        q, port, admin = run(tmp_path)
        try:
            q.wait_for(r"services\.my: a mysql service without tls does not terminate TLS")
            secure = db.connect(port, ssl_ca=str(db.ca_file))
            with secure.cursor() as cur:
                cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                assert cur.fetchone()[1], "not TLS end to end"
                cur.execute("INSERT INTO t (v) VALUES (1)")  # a transaction left open
            q.wait_for(r"service my: client 127\.0\.0\.1:\d+ asked for TLS, which this service")
            plain = db.connect(port, autocommit=True, ssl_disabled=True)  # (PyMySQL prefers TLS)
            plain.cursor().execute("SELECT 1")
            until(lambda: sessions(admin) == {"idle": 1, "transaction": 0, "query": 0, "tls": 1})
            r = cli(admin, "show", "server", "db/my1")
            assert "1 TLS (drained at connection level)" in r.stdout, r.stdout

            r = cli(admin, "set", "server", "db/my1", "maintenance", "--force-guard")
            assert r.returncode == 0, r
            until(lambda: backends(db) == 1)  # the cleartext idle one, at once
            with pytest.raises(pymysql.err.OperationalError) as shut:
                plain.cursor().execute("SELECT 2")
            assert code(shut) == 1053
            with secure.cursor() as cur:  # the TLS one goes on, past its commit too
                cur.execute("INSERT INTO t (v) VALUES (2)")
                secure.commit()
                cur.execute("SELECT count(*) FROM t")
                assert cur.fetchone() == (2,)
            assert sessions(admin) == {"idle": 0, "transaction": 0, "query": 0, "tls": 1}

            # --wait counts it too, until --force cuts it
            waiting = subprocess.Popen(
                [*QUIESCE, "set", "server", "db/my1", "maintenance", "--force-guard", "--wait"],
                env={
                    **os.environ,
                    "QUIESCE_HOSTS": f"127.0.0.1:{admin}",
                    "QUIESCE_USER": "admin",
                    "QUIESCE_PASSWORD": "pw",
                },
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert waiting.stderr is not None
            line = waiting.stderr.readline()
            assert "1/1 connection(s) left (0 idle, 0 in transaction, 0 query running, 1 TLS (" in (
                line
            ), line
            r = cli(admin, "set", "server", "db/my1", "maintenance", "--force", "--force-guard")
            assert r.returncode == 0, r
            out, err = waiting.communicate(timeout=30)
            assert waiting.returncode == 0 and "no connection left" in out, (out, err)
            until(lambda: backends(db) == 0)
            with pytest.raises(pymysql.err.OperationalError):
                secure.cursor().execute("SELECT 3")
        finally:
            q.stop()


def test_tls_terminated_keeps_the_transaction_boundary(tmp_path: Path) -> None:
    """A mysql service with ``tls`` terminates the TLS a client asks for inside MySQL's
    handshake (CLIENT_SSL offered in the greeting, the SSL request taken, the connection
    phase renumbered, cleartext to a MariaDB without TLS): PyMySQL verifying quiesce's
    certificate logs in (mysql_native_password), and its session is followed as a cleartext
    one: an open transaction commits across maintenance, then ERR 1053; a cleartext client
    beside it is served and closed at once; a wrong password is refused as the server says;
    bytes after an SSL request that are not TLS are refused with a protocol_error event."""
    from tests.support.certs import Certs

    certs = Certs(tmp_path)
    cert, key = certs.leaf("my", "127.0.0.1", "localhost")
    with mariadb_server() as db:
        tls = f'tls: {{certificates: [{{cert: "{cert}", key: "{key}"}}]}}'
        (tmp_path / "quiesce.yaml").write_text(config(db.port, extra=f", {tls}"))
        q, port, admin = run(tmp_path)
        try:
            intx = db.connect(port, ssl={"ca": str(certs.ca_file)})
            with intx.cursor() as cur:
                cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                assert not cur.fetchone()[1], "the server should see cleartext"
                cur.execute("INSERT INTO t (v) VALUES (1)")  # a transaction left open
            assert intx._sock.version().startswith("TLS"), "not TLS to quiesce"
            idle = db.connect(port, autocommit=True, ssl={"ca": str(certs.ca_file)})
            with idle.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
            # cleartext beside it (a quick client answers the greeting before the relay's
            # connect task has its upstream: 2013 on a third of these before that was handled)
            for _ in range(30):
                secure = db.connect(port, autocommit=True, ssl={"ca": str(certs.ca_file)})
                quick = db.connect(port, autocommit=True, ssl_disabled=True)
                quick.cursor().execute("SELECT 2")
                quick.close()
                secure.close()
            plain = db.connect(port, autocommit=True, ssl_disabled=True)
            plain.cursor().execute("SELECT 2")
            with pytest.raises(pymysql.err.OperationalError) as denied:
                pymysql.connect(
                    host="127.0.0.1",
                    port=port,
                    user="app",
                    password="wrong",
                    ssl={"ca": str(certs.ca_file)},
                )
            assert code(denied) == 1045  # access denied, renumbered to the client's count
            (tmp_path / "other").mkdir()
            other = Certs(tmp_path / "other").ca_file  # a CA that did not sign quiesce's
            with pytest.raises(pymysql.err.OperationalError):  # quiesce's certificate checked
                db.connect(port, ssl={"ca": str(other)})
            until(lambda: sessions(admin) == {"idle": 2, "transaction": 1, "query": 0})

            # bytes after an SSL request that are not a TLS handshake: refused
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.settimeout(10)
                head = s.recv(4)
                s.recv(int.from_bytes(head[:3], "little"))
                request = (0x8A00 | 0x200).to_bytes(4, "little") + bytes(28)
                s.sendall(b"\x20\0\0\x01" + request + b"\x0a\0\0\x02" + bytes(10))
                assert s.recv(100) == b""
            q.wait_for(r"client sent 14 bytes after its SSL request that are not TLS")
            events = httpx.get(
                f"http://127.0.0.1:{admin}/api/v1/events",
                params={"kind": "protocol_error"},
                auth=AUTH,
            ).json()
            assert [e["detail"]["service"] for e in events] == ["my"], events

            r = cli(admin, "set", "server", "db/my1", "maintenance", "--force-guard")
            assert r.returncode == 0, r
            until(lambda: backends(db) == 1)  # the idle ones at once
            for conn in (idle, plain):
                with pytest.raises(pymysql.err.OperationalError) as shut:
                    conn.cursor().execute("SELECT 3")
                assert code(shut) == 1053
            with intx.cursor() as cur:  # the open transaction commits, then 1053
                cur.execute("INSERT INTO t (v) VALUES (2)")
                intx.commit()
            until(lambda: backends(db) == 0)
            with pytest.raises(pymysql.err.OperationalError) as shut:
                intx.cursor().execute("SELECT 4")
            assert code(shut) == 1053
            assert db.sql("SELECT count(*) FROM app.t") == [(2,)]
        finally:
            q.stop()


def test_tls_to_the_server_after_an_ssl_request(tmp_path: Path) -> None:
    """A pool with ``tls`` in front of a MariaDB with TLS: the relay sends an SSL request of
    its own and speaks TLS to the server (``Ssl_cipher`` set), for a cleartext client and
    for a client whose TLS quiesce terminates (the sequence ids renumbered either way, or
    not at all), and follows the session inside it: an open transaction commits across
    maintenance, then 1053. A server without TLS is refused with a protocol_error."""
    from tests.support.certs import Certs

    certs = Certs(tmp_path)
    cert, key = certs.leaf("my", "127.0.0.1", "localhost")
    with mariadb_server(tls=True) as db, mariadb_server() as plain_db:
        assert db.ca_file is not None
        tls = f'tls: {{certificates: [{{cert: "{cert}", key: "{key}"}}]}}'
        text = config(db.port, plain_db.port, extra=f", {tls}").replace(
            "  db:\n", f'  db:\n    tls: {{ca: "{db.ca_file}"}}\n'
        )
        (tmp_path / "quiesce.yaml").write_text(text)
        q, port, admin = run(tmp_path)
        try:
            r = cli(admin, "set", "server", "db/my2", "maintenance", "--force-guard")
            assert r.returncode == 0, r  # (my2 has no TLS: used at the end)
            intx = db.connect(port, ssl_disabled=True)  # cleartext to quiesce
            idle = db.connect(port, autocommit=True, ssl={"ca": str(certs.ca_file)})
            for conn in (intx, idle):
                with conn.cursor() as cur:
                    cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                    assert cur.fetchone()[1], "no TLS from quiesce to the server"
            assert idle._sock.version().startswith("TLS")
            with intx.cursor() as cur:
                cur.execute("INSERT INTO t (v) VALUES (1)")  # a transaction left open
            until(lambda: sessions(admin) == {"idle": 1, "transaction": 1, "query": 0})
            r = cli(admin, "set", "server", "db/my1", "maintenance", "--force-guard")
            assert r.returncode == 0, r
            until(lambda: backends(db) == 1)
            with pytest.raises(pymysql.err.OperationalError) as shut:
                idle.cursor().execute("SELECT 1")
            assert code(shut) == 1053
            with intx.cursor() as cur:
                cur.execute("INSERT INTO t (v) VALUES (2)")
                intx.commit()
            until(lambda: backends(db) == 0)
            with pytest.raises(pymysql.err.OperationalError) as shut:
                intx.cursor().execute("SELECT 2")
            assert code(shut) == 1053
            assert db.sql("SELECT count(*) FROM app.t") == [(2,)]

            # my1 in maintenance: the next one goes to my2, which has no TLS: refused
            r = cli(admin, "clear", "server", "db/my2", "maintenance")
            assert r.returncode == 0, r
            with pytest.raises(pymysql.err.OperationalError):
                db.connect(port, ssl_disabled=True)
            q.wait_for(r"server does not offer TLS \(CLIENT_SSL\), which its pool's tls")
        finally:
            q.stop()


@pytest.mark.browser
def test_dashboard_shows_tls_sessions(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    """The dashboard's servers table counts a mysql server's sessions by state, and says
    which it cannot follow (a client that asked for TLS)."""
    expect = pytest.importorskip("playwright.sync_api").expect
    with mariadb_server(tls=True) as db:
        (tmp_path / "quiesce.yaml").write_text(config(db.port))
        q, port, admin = run(tmp_path)
        try:
            secure = db.connect(port, ssl_ca=str(db.ca_file))
            plain = db.connect(port, ssl_disabled=True)
            plain.cursor().execute("SELECT 1")  # autocommit off: no table, no transaction
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{admin}/")
            page.get_by_label("User").fill(AUTH[0])
            page.get_by_label("Password").fill(AUTH[1])
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#who")).to_contain_text(AUTH[0])
            page.goto(f"http://127.0.0.1:{admin}/#/servers?pool=db")
            cell = page.locator('#servers-table tr[data-server="db/my1"] .sessions')
            expect(cell).to_have_text(
                "1 idle · 0 in transaction · 0 running · 1 TLS (connection-level drain)"
            )
            page.close()
            secure.close()
            plain.close()
        finally:
            q.stop()
