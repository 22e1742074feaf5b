"""``type: mysql`` monitors through a real ``quiesce run`` against real MariaDB 10.11 (issue
20): logged in, ``SELECT @@read_only`` is the role (on: a replica), wrong credentials are
AUTH_FAILED, a maintenance query's true is "down for maintenance"; in an active-standby pool
with ``role: primary`` a read-only server is never elected, the primary in maintenance
leaves no primary until the other server turns writable, which is then elected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_access_log import _hash, cli, until
from tests.e2e.test_mysql import run
from tests.support.mariadb import PASSWORD, mariadb_server

pytest.importorskip("aiomysql")
AUTH = ("admin", "pw")

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def monitor_config(primary: int, other: int, good: Path, bad: Path) -> str:
    timing = "send_interval: 0.5s, receive_timeout: 0.4s, successful_checks: 1, failed_checks: 1"
    maint = "SELECT coalesce(max(flag), '0') FROM app.maint"  # a VARCHAR flag: '0' is no
    settings = {
        "my_primary": f'user: app, password_file: "{good}", role: primary, '
        f'maintenance_query: "{maint}"',
        "my_bad": f'user: app, password_file: "{bad}"',
        "my_replica": f'user: app, password_file: "{good}", role: replica',
    }
    lines = ["healthmonitors:"]
    for name, s in settings.items():
        lines.append(f"  {name}: {{type: mysql, {timing}, mysql_monitor: {{{s}}}}}")
    lines += [
        "pools:",
        "  db:",
        "    mode: active_standby",
        "    healthmonitors: [my_primary]",
        "    servers:",
        f"      - {{name: my1, address: 127.0.0.1:{primary}}}",
        f"      - {{name: my2, address: 127.0.0.1:{other}}}",
    ]
    for pool, monitor in (("bad", "my_bad"), ("rep", "my_replica")):
        lines.append(
            f"  {pool}: {{healthmonitors: [{monitor}], servers: [{{name: my1, "
            f"address: 127.0.0.1:{primary}}}]}}"
        )
    head = f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state:
  sqlite: ./state.db
services:
  my: {{listen: 127.0.0.1:0, protocol: mysql, pool: db}}
"""
    return head + "\n".join(lines) + "\n"


def test_mysql_monitor_roles_and_active_standby(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text(f"{PASSWORD}\n")
    bad.write_text("wrong\n")
    with mariadb_server() as db1, mariadb_server() as db2:
        for db in (db1, db2):
            db.sql("CREATE TABLE app.maint (flag VARCHAR(8))")
        db2.sql("SET GLOBAL read_only = 1")  # a replica, as far as the role goes
        (tmp_path / "quiesce.yaml").write_text(monitor_config(db1.port, db2.port, good, bad))
        q, _, admin = run(tmp_path)
        try:

            def get(path: str, **params: str) -> object:
                r = httpx.get(f"http://127.0.0.1:{admin}/api/v1{path}", params=params, auth=AUTH)
                assert r.status_code == 200, r.text
                return r.json()

            def last(ref: str) -> tuple[object, object, object]:
                v = get(f"/servers/{ref}")
                assert isinstance(v, dict)
                checks = v["last_checks"] or [{"reason": None, "detail": None}]
                return v["oper"], checks[-1]["reason"], checks[-1]["detail"]

            def primary_of_pool() -> object:
                view = get("/pools/db")
                assert isinstance(view, dict)
                return view["primary"]

            until(lambda: last("db/my1") == ("up", "OK", "primary"))
            until(lambda: last("db/my2") == ("down", "ROLE_MISMATCH", "replica, expected primary"))
            until(lambda: last("bad/my1")[:2] == ("down", "AUTH_FAILED"))
            assert "Access denied" in str(last("bad/my1")[2])
            until(lambda: last("rep/my1") == ("down", "ROLE_MISMATCH", "primary, expected replica"))
            until(lambda: primary_of_pool() == "my1")

            db1.sql("INSERT INTO app.maint VALUES ('1')")  # maintenance, by the database
            until(lambda: last("db/my1")[:2] == ("maintenance", "MAINTENANCE_QUERY_MATCH"))
            until(lambda: primary_of_pool() is None)  # never the read-only one
            db2.sql("SET GLOBAL read_only = 0")  # promoted
            until(lambda: primary_of_pool() == "my2")
            assert last("db/my2") == ("up", "OK", "primary")
            events = get("/events", kind="election")
            assert isinstance(events, list)
            assert [(e["from"], e["to"]) for e in events][-2:] == [("my1", None), (None, "my2")]
            db1.sql("DELETE FROM app.maint")
            until(lambda: last("db/my1") == ("up", "OK", "primary"))
        finally:
            q.stop()


def test_replication_status_makes_a_writable_replica_a_replica(tmp_path: Path) -> None:
    """A real MariaDB replica (replicating from a real primary with a binary log) left
    writable (read_only off): the monitor reads SHOW REPLICA STATUS, so it is a replica
    (named with its source in the detail), never elected primary, even with the primary in
    maintenance; a role: replica monitor passes it. Once its replication stops it is a primary
    by its own database: the replica monitor fails it, and it is elected (an election
    event)."""
    pw = tmp_path / "pw"
    pw.write_text(f"{PASSWORD}\n")
    timing = "send_interval: 0.5s, receive_timeout: 0.4s, successful_checks: 1, failed_checks: 1"
    with mariadb_server(binlog=True) as src, mariadb_server(primary=src) as rep:
        monitors = "".join(
            f'  {name}: {{type: mysql, {timing}, mysql_monitor: {{user: app, password_file: "{pw}",'
            f" role: {role}}}}}\n"
            for name, role in (("my_primary", "primary"), ("my_replica", "replica"))
        )
        (tmp_path / "quiesce.yaml").write_text(
            f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state:
  sqlite: ./state.db
services:
  my: {{listen: 127.0.0.1:0, protocol: mysql, pool: db}}
healthmonitors:
{monitors}pools:
  db:
    mode: active_standby
    healthmonitors: [my_primary]
    servers:
      - {{name: my1, address: 127.0.0.1:{src.port}}}
      - {{name: my2, address: 127.0.0.1:{rep.port}}}
  rep: {{healthmonitors: [my_replica], servers: [{{name: my2, address: 127.0.0.1:{rep.port}}}]}}
"""
        )
        q, _, admin = run(tmp_path)
        try:

            def get(path: str, **params: str) -> Any:
                r = httpx.get(f"http://127.0.0.1:{admin}/api/v1{path}", params=params, auth=AUTH)
                assert r.status_code == 200, r.text
                return r.json()

            def last(ref: str) -> tuple[object, str, str]:
                v = get(f"/servers/{ref}")
                checks = v["last_checks"] or [{"reason": "", "detail": ""}]
                return v["oper"], str(checks[-1]["reason"]), str(checks[-1]["detail"])

            assert rep.sql("SELECT @@read_only") == [(0,)]  # writable
            src.sql("INSERT INTO app.t (v) VALUES (42)")
            until(lambda: rep.sql("SELECT count(*) FROM app.t WHERE v = 42") == [(1,)])
            source = f"from 127.0.0.1:{src.port}: IO Yes, SQL Yes, 0 s behind"
            until(lambda: last("db/my1") == ("up", "OK", "primary"))
            until(
                lambda: (
                    last("db/my2")
                    == (
                        "down",
                        "ROLE_MISMATCH",
                        f"replica, expected primary (replicating {source})",
                    )
                )
            )
            until(lambda: last("rep/my2") == ("up", "OK", f"replica (replicating {source})"))
            until(lambda: get("/pools/db")["primary"] == "my1")

            r = cli(admin, "set", "server", "db/my1", "maintenance", "--force-guard")
            assert r.returncode == 0, r
            until(lambda: get("/pools/db")["primary"] is None)  # never the writable replica
            assert last("db/my2")[1] == "ROLE_MISMATCH"

            rep.sql("STOP SLAVE")  # promoted: replication stopped, writable
            until(lambda: last("rep/my2")[:2] == ("down", "ROLE_MISMATCH"))
            detail = last("rep/my2")[2]
            assert detail.startswith("primary, expected replica (replication stopped from"), detail
            until(lambda: get("/pools/db")["primary"] == "my2")
            assert last("db/my2")[:2] == ("up", "OK")
            assert last("db/my2")[2].startswith("primary (replication stopped from"), last("db/my2")
            events = get("/events", kind="election")
            assert [(e["from"], e["to"]) for e in events][-2:] == [("my1", None), (None, "my2")]
        finally:
            q.stop()
