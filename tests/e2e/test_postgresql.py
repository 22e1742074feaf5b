"""``protocol: postgresql`` through a real ``quiesce run`` to a real PostgreSQL 15, driven by
psycopg 3 and the CLI (issue 20): maintenance lets an open transaction commit and closes its
connection right after; an idle connection is closed at once with FATAL 57P01; ``--force``
aborts an open transaction; the server view counts sessions by state; a client that does
not speak PostgreSQL is closed with a log line, the others carry on."""

from __future__ import annotations

import asyncio
import json
import os
import re
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
from tests.support.postgres import BIN, PASSWORD, USER, Postgres, postgres_server

psycopg = pytest.importorskip("psycopg")
AUTH = ("admin", "pw")
QUIESCE = (sys.executable, "-m", "quiesce")

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def config(*pg_ports: int) -> str:
    """One postgresql service over servers pg1, pg2, … at these ports."""
    servers = "".join(
        f"\n      - {{name: pg{i}, address: 127.0.0.1:{p}}}" for i, p in enumerate(pg_ports, 1)
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
  pg: {{listen: 127.0.0.1:0, protocol: postgresql, pool: db}}
"""


def run(tmp_path: Path) -> tuple[Proc, int, int]:
    """``quiesce run`` on tmp_path/quiesce.yaml, ready: (process, service port, admin port)."""
    q = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
    try:
        port = int(q.wait_for(r"service pg listening on port (\d+)").group(1))
        admin = int(q.wait_for(r"admin listening on port (\d+)").group(1))
        q.wait_for("quiesce: ready")
    except BaseException:
        q.stop()
        raise
    return q, port, admin


def backends(pg: Postgres) -> int:
    """Sessions of the ``app`` user the server has (the relay's Terminate ends them)."""
    out = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
    return int(out.strip())


def sessions(admin: int) -> dict[str, int]:
    r = cli(admin, "--json", "show", "server", "db/pg1")
    assert r.returncode == 0, r
    view = json.loads(r.stdout)
    return dict(view["sessions"])


def test_maintenance_at_the_transaction_boundary(tmp_path: Path) -> None:
    with postgres_server() as pg:
        pg.psql("CREATE TABLE t (v int)")
        (tmp_path / "quiesce.yaml").write_text(config(pg.port))
        q, port, admin = run(tmp_path)
        try:
            # sslmode=prefer: the relay answers the SSLRequest 'N', the client goes on
            with psycopg.connect(pg.dsn(port).replace("disable", "prefer")) as c:
                assert c.execute("SELECT 1").fetchone() == (1,)

            intx = psycopg.connect(pg.dsn(port))  # a transaction left open
            intx.execute("INSERT INTO t VALUES (1)")
            idle = psycopg.connect(pg.dsn(port), autocommit=True)  # idle, out of a transaction
            assert idle.execute("SELECT 2").fetchone() == (2,)
            until(lambda: sessions(admin) == {"idle": 1, "transaction": 1, "query": 0})
            # connected, no query yet: closed after a grace, not at once (pgrelay.FRESH_GRACE)
            fresh = psycopg.connect(pg.dsn(port), autocommit=True)
            until(lambda: sessions(admin) == {"idle": 2, "transaction": 1, "query": 0})
            assert backends(pg) == 3
            metrics = httpx.get(f"http://127.0.0.1:{admin}/metrics", auth=("admin", "pw")).text
            for state, n in (("idle", 2), ("transaction", 1), ("query", 0)):
                labels = f'pool="db",server="pg1",state="{state}"'
                assert f"quiesce_server_database_sessions{{{labels}}} {n}.0" in metrics

            # --wait: the progress lines count the sessions by state until none is left
            waiting = subprocess.Popen(
                [*QUIESCE, "set", "server", "db/pg1", "maintenance", "--force-guard", "--wait"],
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
            # the idle one is closed at once: its server session ends, the client reads 57P01
            until(lambda: backends(pg) <= 2)
            with pytest.raises(psycopg.errors.AdminShutdown) as shut:
                idle.execute("SELECT 3")
            assert shut.value.sqlstate == "57P01"
            until(lambda: sessions(admin) == {"idle": 0, "transaction": 1, "query": 0})
            with pytest.raises(psycopg.errors.AdminShutdown):
                fresh.execute("SELECT 3")

            # the open transaction carries on and commits; its connection closes right after
            # --wait shows the one left in its transaction (each change is a line: no tty)
            assert waiting.stderr is not None
            shown = []
            while "1/3 connection(s) left (0 idle, 1 in transaction, 0 query running)" not in (
                shown[-1] if shown else ""
            ):
                shown.append(waiting.stderr.readline())
                assert shown[-1], shown
            intx.execute("INSERT INTO t VALUES (2)")
            intx.commit()
            until(lambda: backends(pg) == 0)
            out, err = waiting.communicate(timeout=30)
            assert waiting.returncode == 0, (out, err)
            assert "0/3 connection(s) left" in err and "no connection left" in out, (out, err)
            # (libpq reads the 57P01 that came right after the commit's ReadyForQuery as it
            # comes, so the next call finds the connection closed)
            with pytest.raises(psycopg.OperationalError):
                intx.execute("SELECT 4")
            assert pg.psql("SELECT string_agg(v::text, ',' ORDER BY v) FROM t").strip() == "1,2"
            assert sessions(admin) == {"idle": 0, "transaction": 0, "query": 0}
            # no new connection to a server in maintenance
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(pg.dsn(port))

            # --force aborts an open transaction
            r = cli(admin, "clear", "server", "db/pg1", "maintenance")
            assert r.returncode == 0, r
            forced = psycopg.connect(pg.dsn(port))
            forced.execute("INSERT INTO t VALUES (3)")
            other = psycopg.connect(pg.dsn(port))  # a client speaking HTTP is cut, alone
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                s.settimeout(10)
                assert s.recv(100) == b""
            q.wait_for(
                r"closing the connection of 127\.0\.0\.1:\d+ \(server db/pg1\): client "
                r"does not speak PostgreSQL 3"
            )
            assert other.execute("SELECT 5").fetchone() == (5,)
            events = httpx.get(
                f"http://127.0.0.1:{admin}/api/v1/events",
                params={"kind": "protocol_error"},
                auth=AUTH,
            ).json()
            assert [(e["pool"], e["server"]) for e in events] == [("db", "pg1")], events
            assert "does not speak PostgreSQL 3" in events[0]["reason"]
            assert events[0]["detail"]["service"] == "pg"
            metrics = httpx.get(f"http://127.0.0.1:{admin}/metrics", auth=AUTH).text
            assert 'quiesce_service_protocol_errors_total{service="pg"} 1.0' in metrics
            # a CancelRequest is relayed (a new connection, the session's key) and cancels
            running = (
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE 'SELECT pg_sleep%'"
            )

            def cancel_when_running() -> None:
                until(lambda: pg.psql(running).strip() == "1")
                other.cancel()

            canceller = threading.Thread(target=cancel_when_running)
            canceller.start()
            with pytest.raises(psycopg.errors.QueryCanceled):
                other.execute("SELECT pg_sleep(30)")
            canceller.join()
            other.rollback()
            other.close()
            r = cli(admin, "set", "server", "db/pg1", "maintenance", "--force", "--force-guard")
            assert r.returncode == 0, r
            with pytest.raises(psycopg.OperationalError):
                forced.commit()
            until(lambda: backends(pg) == 0)
            assert pg.psql("SELECT count(*) FROM t WHERE v = 3").strip() == "0"
            r = cli(admin, "show", "server", "db/pg1")
            assert "Sessions" in r.stdout, r.stdout
            r = cli(admin, "clear", "server", "db/pg1", "maintenance")
            assert r.returncode == 0, r

            # a drain deadline cuts what is left
            left = psycopg.connect(pg.dsn(port))
            left.execute("INSERT INTO t VALUES (4)")
            began = time.monotonic()
            r = cli(admin, "set", "server", "db/pg1", "drain", "--timeout", "1s")
            assert r.returncode == 0, r
            until(lambda: backends(pg) == 0)
            assert time.monotonic() - began >= 0.9
            with pytest.raises(psycopg.OperationalError):
                left.commit()
        finally:
            q.stop()


def monitor_config(pg_port: int, good: Path, bad: Path) -> str:
    """Three pools on the same server: a primary monitor with a maintenance query, one with a
    wrong password, one that wants a replica."""
    timing = "send_interval: 0.5s, receive_timeout: 0.4s, successful_checks: 1, failed_checks: 1"
    # a text flag, as a setting reads ('off' must not mean maintenance)
    maint = "SELECT coalesce((SELECT max(flag) FROM maint), 'off')"
    primary = f'user: app, password_file: "{good}", role: primary, maintenance_query: "{maint}"'
    monitors = {
        "pg_primary": primary,
        "pg_bad": f'user: app, password_file: "{bad}"',
        "pg_replica": f'user: app, password_file: "{good}", role: replica',
    }
    lines = ["healthmonitors:"]
    for name, settings in monitors.items():
        lines.append(
            f"  {name}: {{type: postgresql, {timing}, postgresql_monitor: {{{settings}}}}}"
        )
    lines.append("pools:")
    for pool, monitor in (("db", "pg_primary"), ("bad", "pg_bad"), ("rep", "pg_replica")):
        lines.append(
            f"  {pool}: {{healthmonitors: [{monitor}], servers: [{{name: pg1, "
            f"address: 127.0.0.1:{pg_port}}}]}}"
        )
    return (
        f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state:
  sqlite: ./state.db
services:
  pg: {{listen: 127.0.0.1:0, protocol: postgresql, pool: db}}
"""
        + "\n".join(lines)
        + "\n"
    )


def test_postgresql_monitor(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("secret\n")
    bad.write_text("wrong\n")
    with postgres_server() as pg:
        pg.psql("CREATE TABLE maint (flag text)")
        (tmp_path / "quiesce.yaml").write_text(monitor_config(pg.port, good, bad))
        q, _, admin = run(tmp_path)
        try:

            def view(ref: str) -> dict[str, object]:
                r = httpx.get(f"http://127.0.0.1:{admin}/api/v1/servers/{ref}", auth=AUTH)
                return dict(r.json())

            def last(ref: str) -> tuple[object, str, str]:
                v = view(ref)
                checks = v["last_checks"]
                assert isinstance(checks, list)
                c = checks[-1] if checks else {"reason": "", "detail": ""}
                return v["oper"], c["reason"], c["detail"]

            until(lambda: last("db/pg1") == ("up", "OK", "primary"))
            until(lambda: last("bad/pg1")[:2] == ("down", "AUTH_FAILED"))
            assert "password authentication failed" in last("bad/pg1")[2]
            until(lambda: last("rep/pg1") == ("down", "ROLE_MISMATCH", "primary, expected replica"))
            pg.psql("INSERT INTO maint VALUES ('on')")
            until(lambda: last("db/pg1")[:2] == ("maintenance", "MAINTENANCE_QUERY_MATCH"))
            assert view("db/pg1")["status"] == "down for maintenance"
            pg.psql("DELETE FROM maint")
            until(lambda: last("db/pg1") == ("up", "OK", "primary"))
        finally:
            q.stop()


@pytest.mark.parametrize("pair", ["two primaries", "primary and replica"])
def test_rolling_maintenance_under_pgbench_loses_nothing(tmp_path: Path, pair: str) -> None:
    """pgbench -C (a new connection per transaction) through a postgresql service over two
    PostgreSQL servers, each put in maintenance in turn and back, waiting each time until its
    last session has closed: no failed transaction, no aborted client. Two primaries take
    TPC-B-like transactions (BEGIN, 3 UPDATEs, a SELECT, an INSERT, END); a primary and its
    streaming replica take select-only ones (-S: a replica takes no write)."""
    env = {**os.environ, "PGPASSWORD": PASSWORD, "PGSSLMODE": "disable"}
    bench = [str(BIN / "pgbench"), "-h", "127.0.0.1", "-U", USER]

    def init(pg: Postgres) -> None:
        subprocess.run(
            [*bench, "-p", str(pg.port), "-i", "-q", "postgres"],
            env=env,
            check=True,
            capture_output=True,
        )

    with postgres_server() as pg_a:
        init(pg_a)
        with postgres_server(pg_a if pair == "primary and replica" else None) as pg_b:
            if pair == "two primaries":
                init(pg_b)
            else:
                assert pg_b.psql("SELECT pg_is_in_recovery()").strip() == "t"
                until(lambda: pg_b.psql("SELECT count(*) FROM pgbench_branches").strip() == "1")
            _rolling(tmp_path, pg_a, pg_b, ["-S"] if pair == "primary and replica" else [])


def _rolling(tmp_path: Path, pg_a: Postgres, pg_b: Postgres, mode: list[str]) -> None:
    env = {**os.environ, "PGPASSWORD": PASSWORD, "PGSSLMODE": "disable"}
    bench = [str(BIN / "pgbench"), "-h", "127.0.0.1", "-U", USER]
    (tmp_path / "quiesce.yaml").write_text(config(pg_a.port, pg_b.port))
    q, port, admin = run(tmp_path)
    try:

        def live(server: str) -> int:
            r = httpx.get(f"http://127.0.0.1:{admin}/api/v1/servers/db/{server}", auth=AUTH)
            counts = r.json()["sessions"] or {}
            return sum(counts.values())

        load = subprocess.Popen(
            [*bench, "-p", str(port), *mode, "-C", "-c", "4", "-j", "2", "-T", "15", "postgres"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for name in ("pg1", "pg2"):
                until(lambda name=name: live(name) > 0, 30)  # under load
                r = cli(admin, "set", "server", f"db/{name}", "maintenance")
                assert r.returncode == 0, (r, q.output[-4000:])
                until(lambda name=name: live(name) == 0, 30)  # its last session closed
                r = cli(admin, "clear", "server", f"db/{name}", "maintenance")
                assert r.returncode == 0, r
            until(lambda: live("pg1") > 0, 30)  # both serve again
            elapsed_ok = load.poll() is None  # the rolling ended under load
        finally:
            out, err = load.communicate(timeout=60)  # pgbench -T 15 ends by itself
        done = re.search(r"number of transactions actually processed: (\d+)", out)
        failed = re.search(r"number of failed transactions: (\d+)", out)
        print(
            f"pgbench -C {' '.join(mode)}: {done and done.group(1)} transactions, "
            f"{failed and failed.group(1)} failed; {err.count('aborted')} clients aborted"
        )
        assert elapsed_ok, "pgbench ended before the rolling maintenance did"
        assert "aborted" not in err, err[-2000:]
        assert done is not None and int(done.group(1)) > 0, out + err
        assert failed is None or failed.group(1) == "0", out
    finally:
        q.stop()


def test_active_standby_follows_pg_is_in_recovery(tmp_path: Path) -> None:
    """An active-standby pool over a primary and its streaming replica, with a postgresql
    monitor wanting ``role: primary``: the replica is never elected; with the primary in
    maintenance there is no primary at all until the replica is promoted, which is then
    elected (an election event)."""
    pw = tmp_path / "pw"
    pw.write_text(f"{PASSWORD}\n")
    with postgres_server() as primary, postgres_server(primary) as replica:
        assert replica.psql("SELECT pg_is_in_recovery()").strip() == "t"
        monitor = (
            "{type: postgresql, send_interval: 0.5s, receive_timeout: 0.4s, successful_checks: 1,"
            f' failed_checks: 1, postgresql_monitor: {{user: app, password_file: "{pw}",'
            " role: primary}}"
        )
        text = config(primary.port, replica.port).replace(
            "  db:\n    servers:",
            "  db:\n    mode: active_standby\n    healthmonitors: [pg]\n    servers:",
        )
        (tmp_path / "quiesce.yaml").write_text(f"{text}healthmonitors:\n  pg: {monitor}\n")
        q, _, admin = run(tmp_path)
        try:

            def get(path: str, **params: str) -> object:
                r = httpx.get(f"http://127.0.0.1:{admin}/api/v1{path}", params=params, auth=AUTH)
                assert r.status_code == 200, r.text
                return r.json()

            def primary_of_pool() -> object:
                return dict(get("/pools/db"))["primary"]  # type: ignore[call-overload]

            def check_of(server: str) -> tuple[object, object]:
                view = dict(get(f"/servers/db/{server}"))  # type: ignore[call-overload]
                checks = view["last_checks"] or [{"reason": None, "detail": None}]
                return checks[-1]["reason"], checks[-1]["detail"]

            until(lambda: primary_of_pool() == "pg1")
            until(lambda: check_of("pg2") == ("ROLE_MISMATCH", "replica, expected primary"))
            r = cli(admin, "set", "server", "db/pg1", "maintenance", "--force-guard")
            assert r.returncode == 0, r
            until(lambda: primary_of_pool() is None)  # never the replica, never pg1
            replica.promote()
            until(lambda: primary_of_pool() == "pg2")
            assert check_of("pg2") == ("OK", "primary")
            events = get("/events", kind="election")
            assert isinstance(events, list)
            assert [(e["from"], e["to"]) for e in events][-2:] == [("pg1", None), (None, "pg2")]
        finally:
            q.stop()


@pytest.mark.browser
def test_dashboard_shows_sessions_by_state(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    """The dashboard's servers table counts a postgresql server's sessions by state."""
    expect = pytest.importorskip("playwright.sync_api").expect
    with postgres_server() as pg:
        (tmp_path / "quiesce.yaml").write_text(config(pg.port))
        q, port, admin = run(tmp_path)
        try:
            intx = psycopg.connect(pg.dsn(port))
            intx.execute("SELECT 1")  # a transaction left open
            idle = psycopg.connect(pg.dsn(port), autocommit=True)
            idle.execute("SELECT 1")
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{admin}/")
            page.get_by_label("User").fill(AUTH[0])
            page.get_by_label("Password").fill(AUTH[1])
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#who")).to_contain_text(AUTH[0])
            page.goto(f"http://127.0.0.1:{admin}/#/servers?pool=db")
            cell = page.locator('#servers-table tr[data-server="db/pg1"] .sessions')
            expect(cell).to_have_text("1 idle · 1 in transaction · 0 running")
            intx.commit()
            expect(cell).to_have_text("2 idle · 0 in transaction · 0 running", timeout=15000)
            page.close()
            intx.close()
            idle.close()
        finally:
            q.stop()


def test_tls_terminated_keeps_the_transaction_boundary(tmp_path: Path) -> None:
    """A postgresql service with ``tls`` answers an SSLRequest ``S`` and terminates TLS:
    a client with ``sslmode=verify-full`` connects (TLS to quiesce, cleartext to the server)
    and its session is followed as any other: an open transaction commits across
    maintenance, then 57P01; a cleartext client is still served; bytes sent after an
    SSLRequest before its answer are refused with a log line and a protocol_error event.
    Without tls, quiesce says at start-up that an SSLRequest is answered N."""
    from tests.support.certs import Certs

    cert, key = Certs(tmp_path).leaf("pg", "127.0.0.1", "localhost")
    ca = tmp_path / "ca.pem"
    with postgres_server() as pg:
        pg.psql("CREATE TABLE t (v int)")
        (tmp_path / "quiesce.yaml").write_text(config(pg.port))
        q, _, _ = run(tmp_path)  # without tls: the start-up warning
        try:
            q.wait_for(r"services\.pg: a postgresql service without tls answers")
        finally:
            q.stop()
        text = config(pg.port).replace(
            "protocol: postgresql,",
            f'protocol: postgresql, tls: {{certificates: [{{cert: "{cert}", key: "{key}"}}]}},',
        )
        (tmp_path / "quiesce.yaml").write_text(text)
        q, port, admin = run(tmp_path)
        try:
            dsn = pg.dsn(port).replace("disable", f"verify-full sslrootcert={ca}")
            intx = psycopg.connect(dsn)
            assert intx.pgconn.ssl_in_use
            intx.execute("INSERT INTO t VALUES (1)")  # a transaction left open, over TLS
            idle = psycopg.connect(dsn, autocommit=True)
            assert idle.execute("SELECT 1").fetchone() == (1,)
            plain = psycopg.connect(pg.dsn(port), autocommit=True)  # cleartext still served
            assert not plain.pgconn.ssl_in_use
            assert plain.execute("SELECT 2").fetchone() == (2,)
            until(lambda: sessions(admin) == {"idle": 2, "transaction": 1, "query": 0})
            # bytes after an SSLRequest, before its answer: refused (CVE-2021-23214)
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"\0\0\0\x08\x04\xd2\x16\x2f" + b"\0\0\0\x08\0\3\0\0")
                s.settimeout(10)
                assert s.recv(100) == b""
            q.wait_for(r"closing the connection of 127\.0\.0\.1: client sent 8 bytes after its")
            events = httpx.get(
                f"http://127.0.0.1:{admin}/api/v1/events",
                params={"kind": "protocol_error"},
                auth=AUTH,
            ).json()
            assert [e["detail"]["service"] for e in events] == ["pg"], events

            r = cli(admin, "set", "server", "db/pg1", "maintenance", "--force-guard")
            assert r.returncode == 0, r
            with pytest.raises(psycopg.errors.AdminShutdown):  # idle over TLS: at once
                until(lambda: backends(pg) <= 1)
                idle.execute("SELECT 3")
            with pytest.raises(psycopg.errors.AdminShutdown):
                plain.execute("SELECT 3")
            assert sessions(admin) == {"idle": 0, "transaction": 1, "query": 0}
            intx.execute("INSERT INTO t VALUES (2)")
            intx.commit()  # the open transaction commits, then its session is closed
            until(lambda: backends(pg) == 0)
            with pytest.raises(psycopg.OperationalError):
                intx.execute("SELECT 4")
            assert pg.psql("SELECT string_agg(v::text, ',' ORDER BY v) FROM t").strip() == "1,2"
            for conn in (intx, idle, plain):
                conn.close()
        finally:
            q.stop()


def test_asyncpg_and_graceful_disable_timeout(tmp_path: Path) -> None:
    """asyncpg (the extended protocol, named prepared statements) through a postgresql
    service: a transaction open across maintenance commits and the session closes right
    after; an idle one is closed at once with 57P01. ``disable server --graceful`` lets an
    open transaction run until the pool's ``graceful_disable_timeout`` and cuts it then
    (rolled back)."""
    asyncpg = pytest.importorskip("asyncpg")
    gone = (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)
    with postgres_server() as pg:
        pg.psql("CREATE TABLE t (v int); GRANT ALL ON t TO app")
        text = config(pg.port).replace("  db:\n", "  db:\n    graceful_disable_timeout: 1s\n")
        (tmp_path / "quiesce.yaml").write_text(text)
        q, port, admin = run(tmp_path)

        async def scenario() -> None:
            async def connect() -> Any:
                return await asyncpg.connect(
                    host="127.0.0.1",
                    port=port,
                    user=USER,
                    password=PASSWORD,
                    database="postgres",
                    ssl=False,
                )

            intx, idle = await connect(), await connect()
            tx = intx.transaction()
            await tx.start()
            await intx.execute("INSERT INTO t VALUES ($1)", 1)  # Parse/Bind/Execute/Sync
            assert await idle.fetchval("SELECT $1::int", 7) == 7
            until(lambda: sessions(admin) == {"idle": 1, "transaction": 1, "query": 0})
            r = cli(admin, "set", "server", "db/pg1", "maintenance", "--force-guard")
            assert r.returncode == 0, r
            until(lambda: backends(pg) == 1)  # the idle one, at once
            with pytest.raises(gone) as shut:
                await idle.fetchval("SELECT 1")
            print("asyncpg, idle session in maintenance:", repr(shut.value))
            await intx.execute("INSERT INTO t VALUES ($1)", 2)
            await tx.commit()
            until(lambda: backends(pg) == 0)
            for _ in range(500):  # asyncpg reads the 57P01 and the close as its loop runs
                if intx.is_closed():
                    break
                await asyncio.sleep(0.01)
            with pytest.raises(gone):
                await intx.fetchval("SELECT 1")
            assert pg.psql("SELECT string_agg(v::text, ',' ORDER BY v) FROM t").strip() == "1,2"

            r = cli(admin, "clear", "server", "db/pg1", "maintenance")
            assert r.returncode == 0, r
            late = await connect()
            tx = late.transaction()
            await tx.start()
            await late.execute("INSERT INTO t VALUES (3)")
            began = time.monotonic()
            # through the API: the command and the view as two CLI processes took more than
            # the 1 s graceful_disable_timeout at load 9 (the transaction was cut: 0 == 1)
            api = f"http://127.0.0.1:{admin}/api/v1/servers/db/pg1"
            body = {"graceful": True, "force_guard": True, "reason": "graceful"}
            done = httpx.post(f"{api}/disable", json=body, auth=AUTH, timeout=10)
            assert done.status_code == 200, done.text
            view = httpx.get(api, auth=AUTH, timeout=10).json()
            assert view["sessions"] == {"idle": 0, "transaction": 1, "query": 0}  # carries on
            until(lambda: backends(pg) == 0)  # cut at the deadline
            assert time.monotonic() - began >= 0.9
            with pytest.raises(gone):
                await tx.commit()
            assert pg.psql("SELECT count(*) FROM t WHERE v = 3").strip() == "0"

        # in a thread of its own: a browser test before this one (playwright's sync API)
        # leaves an event loop running in this one
        failed: list[BaseException] = []

        def in_thread() -> None:
            try:
                asyncio.run(scenario())
            except BaseException as exc:  # re-raised below, in the test
                failed.append(exc)

        try:
            worker = threading.Thread(target=in_thread)
            worker.start()
            worker.join(120)
            assert not worker.is_alive(), "the asyncpg scenario did not finish"
            if failed:
                raise failed[0]
        finally:
            q.stop()


def test_tls_to_the_server_after_an_ssl_request(tmp_path: Path) -> None:
    """A pool with ``tls`` in front of a PostgreSQL 15 with ``ssl = on``: the relay sends its
    own SSLRequest, speaks TLS to the server (pg_stat_ssl says so) and still follows the
    session inside it: an open transaction commits across maintenance, then 57P01. A server
    without TLS answers N: that connection is closed with a log line and a protocol_error."""
    with postgres_server(tls=True) as pg, postgres_server() as plain_pg:
        assert pg.ca_file is not None
        pg.psql("CREATE TABLE t (v int)")
        text = config(pg.port, plain_pg.port).replace(
            "  db:\n", f'  db:\n    tls: {{ca: "{pg.ca_file}"}}\n'
        )
        (tmp_path / "quiesce.yaml").write_text(text)
        q, port, admin = run(tmp_path)
        try:
            r = cli(admin, "set", "server", "db/pg2", "maintenance", "--force-guard")
            assert r.returncode == 0, r  # (pg2 has no TLS: used at the end)
            intx = psycopg.connect(pg.dsn(port))
            ssl_on = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            assert intx.execute(ssl_on).fetchone() == (True,)  # TLS from quiesce to the server
            intx.execute("INSERT INTO t VALUES (1)")
            idle = psycopg.connect(pg.dsn(port), autocommit=True)
            assert idle.execute("SELECT 1").fetchone() == (1,)
            until(lambda: sessions(admin) == {"idle": 1, "transaction": 1, "query": 0})
            r = cli(admin, "set", "server", "db/pg1", "maintenance", "--force-guard")
            assert r.returncode == 0, r
            until(lambda: backends(pg) == 1)
            with pytest.raises(psycopg.errors.AdminShutdown):
                idle.execute("SELECT 3")
            intx.execute("INSERT INTO t VALUES (2)")
            intx.commit()
            until(lambda: backends(pg) == 0)
            assert pg.psql("SELECT string_agg(v::text, ',' ORDER BY v) FROM t").strip() == "1,2"
            # pg1 in maintenance: the next one goes to pg2, which has no TLS and answers N
            r = cli(admin, "clear", "server", "db/pg2", "maintenance")
            assert r.returncode == 0, r
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(pg.dsn(port))
            q.wait_for(r"server answered the relay's SSLRequest with no TLS")
            intx.close()
            idle.close()
        finally:
            q.stop()
