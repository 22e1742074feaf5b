"""The mysql monitor's verdict with the replication status (sans-IO:
quiesce.health.probes.mysql.replication and classify_mysql). Real MariaDB replication:
tests/e2e/test_mysql_monitor.py."""

from __future__ import annotations

from typing import Any

import pytest

from quiesce.config.models import MysqlMonitor
from quiesce.core.checks import Reason
from quiesce.core.states import Verdict
from quiesce.health.probes.mysql import classify_mysql, replication

MARIADB_ROW = {  # SHOW SLAVE STATUS's names (MariaDB 10.11, MySQL before 8.0.22)
    "Master_Host": "10.0.0.1",
    "Master_Port": 3306,
    "Slave_IO_Running": "Yes",
    "Slave_SQL_Running": "Yes",
    "Seconds_Behind_Master": 3,
    "Last_IO_Error": "",
    "Last_SQL_Error": "",
}
MYSQL_ROW = {  # SHOW REPLICA STATUS's names (MySQL 8.0.22+)
    "Source_Host": "10.0.0.1",
    "Source_Port": 3306,
    "Replica_IO_Running": "Connecting",
    "Replica_SQL_Running": "Yes",
    "Seconds_Behind_Source": None,
    "Last_IO_Error": "error connecting to source",
}
STOPPED = {**MARIADB_ROW, "Slave_IO_Running": "No", "Slave_SQL_Running": "No"}


def monitor(role: str) -> MysqlMonitor:
    return MysqlMonitor.model_validate({"user": "app", "role": role})


def test_no_row_is_no_replication_and_either_column_names_read() -> None:
    assert replication(None) is None and replication({}) is None
    a = replication(MARIADB_ROW)
    assert a is not None and a.running
    assert a.text() == "from 10.0.0.1:3306: IO Yes, SQL Yes, 3 s behind"
    b = replication(MYSQL_ROW)
    assert b is not None and b.running  # connecting counts: it is trying to replicate
    assert b.text() == "from 10.0.0.1:3306: IO Connecting, SQL Yes: error connecting to source"
    c = replication(STOPPED)
    assert c is not None and not c.running


@pytest.mark.parametrize(
    ("role", "read_only", "row", "verdict", "reason", "detail"),
    [
        # a writable server that replicates is a replica, never a primary
        (
            "primary",
            False,
            MARIADB_ROW,
            Verdict.FAIL,
            Reason.ROLE_MISMATCH,
            "replica, expected primary (replicating from 10.0.0.1:3306: IO Yes, SQL Yes, "
            "3 s behind)",
        ),
        ("primary", False, None, Verdict.PASS, Reason.OK, "primary"),
        ("replica", True, None, Verdict.PASS, Reason.OK, "replica"),
        (
            "replica",
            True,
            STOPPED,
            Verdict.FAIL,
            Reason.ROLE_MISMATCH,
            "replica (replication stopped from 10.0.0.1:3306: IO No, SQL No, 3 s behind), "
            "expected a running replica",
        ),
        (
            "any",
            False,
            STOPPED,
            Verdict.PASS,
            Reason.OK,
            "primary (replication stopped from 10.0.0.1:3306: IO No, SQL No, 3 s behind)",
        ),
    ],
)
def test_the_role_and_the_verdict(
    role: str,
    read_only: bool,
    row: dict[str, Any] | None,
    verdict: Verdict,
    reason: Reason,
    detail: str,
) -> None:
    got = classify_mysql(monitor(role), read_only, replication(row), False)
    assert got == (verdict, reason, detail)


def test_maintenance_wins_and_names_the_replication() -> None:
    got = classify_mysql(monitor("primary"), False, replication(MARIADB_ROW), True)
    assert got[:2] == (Verdict.MAINTENANCE, Reason.MAINTENANCE_QUERY_MATCH)
    assert got[2].startswith("replica: maintenance_query (replicating from 10.0.0.1:3306")
