"""The ``mysql`` probe (MySQL, MariaDB): log in, run the monitor's query, ask the role, ask
for maintenance.

It uses aiomysql (an optional dependency: ``pip install quiesce[mysql]``), an asyncio driver
on PyMySQL's protocol code: the handshake, the authentication (mysql_native_password,
caching_sha2_password over cleartext, ed25519 is not supported by it) and the queries never
block the event loop. One connection per check, closed at the end, all within
``receive_timeout``; no TLS.

Verdicts (quiesce.health.probes.postgresql's :func:`classify`): wrong credentials (error
1045, or 1044 for the database) are ``AUTH_FAILED`` (down); a failing query is
``QUERY_FAILED``; ``maintenance_query``'s first column true is ``MAINTENANCE_QUERY_MATCH``;
``SELECT @@read_only`` on is a replica, off a primary, and a role other than the one asked
for is ``ROLE_MISMATCH``.

Replication status: ``SHOW REPLICA STATUS`` (``SHOW SLAVE STATUS`` where that is unknown)
is read too (:func:`replication`). A server that replicates from another (its I/O thread
running or connecting, or its SQL thread running) is a replica even when it is writable,
so a writable replica is never taken for the primary; the check's detail names its source
and how far behind it is. With ``role: replica``, a replica whose replication has stopped
fails (``ROLE_MISMATCH``: its data is going stale). Without the privilege to read it
(``REPLICA MONITOR``/``REPLICATION CLIENT``: error 1227) ``@@read_only`` alone decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quiesce.config.models import DatabaseMonitor, HealthMonitor
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.states import Verdict
from quiesce.health.probes.base import Target, error_result, failure, outcome
from quiesce.health.probes.postgresql import DatabaseProber, classify, in_maintenance

_AUTH_ERRORS = (1044, 1045)  # ER_DBACCESS_DENIED_ERROR, ER_ACCESS_DENIED_ERROR
_NO_PRIVILEGE = (1227, 1142)  # ER_SPECIFIC_ACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR
_PARSE_ERROR = 1064  # ER_PARSE_ERROR: a server that knows only SHOW SLAVE STATUS


@dataclass(frozen=True, slots=True)
class Replication:
    """A server's replication from another (a row of ``SHOW REPLICA STATUS``)."""

    source: str  # host:port
    io: str  # Yes, No, Connecting
    sql: str  # Yes, No
    behind: str  # seconds behind its source ("" when unknown: NULL)
    error: str  # the last I/O or SQL error, if any

    @property
    def running(self) -> bool:
        """Replicating (or trying to): a replica by what it does, whatever its read_only."""
        return self.io != "No" or self.sql == "Yes"

    def text(self) -> str:
        behind = f", {self.behind} s behind" if self.behind else ""
        error = f": {self.error}" if self.error else ""
        return f"from {self.source}: IO {self.io}, SQL {self.sql}{behind}{error}"


def replication(row: Mapping[str, Any] | None) -> Replication | None:
    """The replication a ``SHOW REPLICA STATUS`` row (column name -> value; MySQL 8.0.22+'s
    ``Replica_``/``Source_`` names or the older ``Slave_``/``Master_`` ones) describes;
    None: no replication configured (no row)."""
    if not row:
        return None

    def col(*names: str) -> str:
        for name in names:
            value = row.get(name)
            if value is not None:
                return str(value)
        return ""

    host = col("Source_Host", "Master_Host")
    port = col("Source_Port", "Master_Port")
    return Replication(
        source=f"{host}:{port}",
        io=col("Replica_IO_Running", "Slave_IO_Running") or "No",
        sql=col("Replica_SQL_Running", "Slave_SQL_Running") or "No",
        behind=col("Seconds_Behind_Source", "Seconds_Behind_Master"),
        error=col("Last_IO_Error") or col("Last_SQL_Error"),
    )


def classify_mysql(
    settings: DatabaseMonitor, read_only: bool, repl: Replication | None, maintenance: bool
) -> tuple[Verdict, Reason, str]:
    """The verdict of a mysql check (sans-IO): :func:`classify` with the role from
    ``@@read_only`` and the replication status, the replication named in the detail."""
    replica = read_only or (repl is not None and repl.running)
    verdict, reason, detail = classify(settings, replica, maintenance)
    if repl is not None:
        detail = f"{detail} ({'replicating' if repl.running else 'replication stopped'} "
        detail += f"{repl.text()})"
        if verdict is Verdict.PASS and settings.role == "replica" and not repl.running:
            return Verdict.FAIL, Reason.ROLE_MISMATCH, f"{detail}, expected a running replica"
    return verdict, reason, detail


class MysqlProber(DatabaseProber):
    driver = "aiomysql"
    extra = "mysql"

    async def login(
        self,
        driver: Any,
        secret: str | None,
        target: Target,
        monitor: HealthMonitor,
        name: str,
        started: float,
    ) -> CheckResult:
        import pymysql  # (installed with aiomysql)

        clock = self.clock
        aiomysql = driver
        settings = monitor.mysql_monitor
        assert settings is not None
        conn: Any = None
        try:
            async with asyncio.timeout(monitor.receive_timeout):
                conn = await aiomysql.connect(
                    host=target.host,
                    port=target.port,
                    user=settings.user,
                    password=secret or "",
                    db=settings.database,
                    connect_timeout=monitor.receive_timeout,
                    autocommit=True,
                )
                async with conn.cursor() as cur:
                    step = "query"
                    try:
                        await cur.execute(settings.query)
                        await cur.fetchall()
                        step = "SELECT @@read_only"
                        await cur.execute("SELECT @@read_only")
                        read_only = bool((await cur.fetchone())[0])
                        step = "SHOW REPLICA STATUS"
                        repl = await _replication(cur, pymysql)
                        maintenance = False
                        if settings.maintenance_query:
                            step = "maintenance_query"
                            await cur.execute(settings.maintenance_query)
                            row = await cur.fetchone()
                            maintenance = row is not None and in_maintenance(row[0])
                    except pymysql.err.MySQLError as exc:
                        return failure(name, clock, started, Reason.QUERY_FAILED, f"{step}: {exc}")
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] in _AUTH_ERRORS:
                return failure(name, clock, started, Reason.AUTH_FAILED, str(exc.args[-1]))
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, OSError | TimeoutError):
                return error_result(name, clock, started, cause)
            return failure(name, clock, started, Reason.CONNECTION_ERROR, str(exc))
        except pymysql.err.MySQLError as exc:
            return failure(name, clock, started, Reason.CONNECTION_ERROR, str(exc))
        except (OSError, TimeoutError) as exc:
            return error_result(name, clock, started, exc)
        finally:
            if conn is not None:
                conn.close()
        return outcome(
            name, clock, started, *classify_mysql(settings, read_only, repl, maintenance)
        )


async def _replication(cur: Any, pymysql: Any) -> Replication | None:
    """``SHOW REPLICA STATUS`` (``SHOW SLAVE STATUS`` on a server that does not know it); None
    without replication, or without the privilege to read it."""
    for statement in ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS"):
        try:
            await cur.execute(statement)
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            if code in _NO_PRIVILEGE:
                return None
            if code == _PARSE_ERROR and statement == "SHOW REPLICA STATUS":
                continue
            raise
        row = await cur.fetchone()
        if row is None:
            return None
        names: Sequence[str] = [d[0] for d in cur.description]
        return replication(dict(zip(names, row, strict=True)))
    return None


__all__ = ["MysqlProber", "Replication", "classify_mysql", "replication"]
